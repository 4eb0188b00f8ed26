// /readyz asks the NAS with the gateway's credentials (an authenticated
// HEAD), not only for a TCP connection: a wrong NAS password made every
// request 502 while /readyz said ready and nothing logged a reason.
import t from 'tap'
import { bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const GOOD = 'Basic ' + Buffer.from('nasguard:right-password').toString('base64')

async function readyz (adminUrl: string): Promise<{ status: number, checks: Record<string, string> }> {
  const res = await fetch(adminUrl + '/readyz')
  return { status: res.status, checks: ((await res.json()) as { checks: Record<string, string> }).checks }
}

t.test('a NAS that refuses the gateway\'s password: not ready, saying why, and the 502s are logged with the reason', async (t) => {
  const nas = await startStubNas(t, (req, res) => {
    if (req.headers.authorization !== GOOD) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="nas"' })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 4 })
    res.end(req.method === 'HEAD' ? undefined : 'RIFF')
  })
  const wrong = await startTestGateway(t, nas, { upstream: { username: 'nasguard', password: 'wrong-password' } })
  const r = await readyz(wrong.adminUrl)
  t.equal(r.status, 503, 'not ready')
  t.match(r.checks.nas, /^credentials refused \(401\): check upstream\.username and upstream\.password/)
  const head = nas.checks.find((q) => q.method === 'HEAD')
  t.ok(head, 'the NAS was asked with a HEAD')
  t.match(head?.headers.authorization, /^Basic /, 'with the gateway\'s credentials')

  t.equal((await get(wrong, PATH, { headers: bearer(wrong.token()) })).status, 502, 'a download gets 502')
  const line = await waitFor('the log line that says why', () => wrong.logs.find((l) => l.includes('"kind":"auth"')))
  t.match(line, /the NAS refused the gateway \(401\/403\): check upstream\.username/)
  t.notMatch(line, /46701234567|medicall/, 'no path in the log line')
  const done = await waitFor('the request line', () => wrong.logs.find((l) => l.includes('"msg":"request"') && l.includes('"status":502')))
  t.match(done, /"upstream":"auth"/, 'the request line names the failure')
  t.match(done, /"reason":"NASGUARD_ERR_UPSTREAM_ERROR"/, 'and the refusal code')
  t.match(done, /"reqId":"[0-9a-f-]{36}"/, 'and the request id')

  const right = await startTestGateway(t, nas, { upstream: { username: 'nasguard', password: 'right-password' } })
  const ok = await readyz(right.adminUrl)
  t.equal(ok.status, 200, 'the right password: ready')
  t.equal(ok.checks.nas, 'ok')
})

t.test('a NAS that answers 5xx is not ready; one that is down says so; a 403 or 404 on the health path is an answer', async (t) => {
  let status = 503
  const nas = await startStubNas(t, (_req, res) => { res.writeHead(status); res.end() })
  const gw = await startTestGateway(t, nas)
  const failing = await readyz(gw.adminUrl)
  t.equal(failing.status, 503)
  t.equal(failing.checks.nas, 'failing (503)')
  for (const s of [403, 404, 200]) {
    status = s
    const r = await readyz(gw.adminUrl)
    t.equal(r.checks.nas, 'ok', `${s}: the NAS answered and took the credentials`)
  }
  const down = await startTestGateway(t, { url: 'http://127.0.0.1:9' })
  const r = await readyz(down.adminUrl)
  t.equal(r.status, 503)
  t.match(r.checks.nas, /^unreachable \(ECONNREFUSED\)/)
})

t.test('upstream.healthPath is what is asked for', async (t) => {
  const nas = await startStubNas(t, (_req, res) => { res.writeHead(200); res.end() })
  const gw = await startTestGateway(t, nas, { upstream: { healthPath: '/health/ping' } })
  t.equal((await readyz(gw.adminUrl)).status, 200)
  t.ok(nas.checks.some((q) => q.method === 'HEAD' && q.url === '/health/ping'))
})

t.test('one NAS failure kind right after another is still logged: each kind has its own once-a-second line, over HTTP/1.1 and HTTP/2', async (t) => {
  for (const proto of PROTOCOLS) {
    let refuse = false
    const nas = await startStubNas(t, (_req, res) => {
      res.writeHead(refuse ? 401 : 503, {})
      res.end()
    })
    const gw = await startTestGateway(t, nas)
    t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 502, `${proto}: a 503 from the NAS`)
    await waitFor('the 5xx line', () => gw.logs.find((l) => l.includes('"kind":"status_5xx"')))
    refuse = true
    t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 502, `${proto}: then the NAS refuses the gateway`)
    const line = await waitFor('the credentials line, within the first one\'s second', () => gw.logs.find((l) => l.includes('"kind":"auth"')))
    t.match(line, /the NAS refused the gateway/)
  }
})
