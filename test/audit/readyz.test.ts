// /readyz on the admin listener: ready only when the NAS answers, the audit
// trail is writable and the certificate is valid; nasguard_audit_available
// follows the audit writer.
import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { bearer, get, scrape, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { freePort } from '../helpers/process.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

interface Ready { status: number, body: { status: string, checks: Record<string, string> } }

async function readyz (adminUrl: string): Promise<Ready> {
  const res = await fetch(adminUrl + '/readyz')
  return { status: res.status, body: await res.json() as Ready['body'] }
}


t.test('a healthy gateway is ready', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const r = await readyz(gw.adminUrl)
  t.equal(r.status, 200)
  t.same(r.body, { status: 'ready', checks: { nas: 'ok', revocation: 'ok', audit: 'ok', certificate: 'ok', nasLockdown: r.body.checks.nasLockdown } })
  t.type(r.body.checks.nasLockdown, 'string')
  t.notMatch(r.body.checks.nasLockdown, /^exposed|^check failed/, 'the stub NAS refuses the lockdown check')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 1)
  t.equal((await fetch(gw.adminUrl + '/healthz')).status, 200)
  // The public listener does not serve it.
  const pub = await get(gw, '/readyz')
  t.not(pub.status, 200)
  t.notMatch(pub.body.toString(), /"checks"/)
})

t.test('an audit trail that cannot be written: not ready, gauge 0; writable again and one request later: ready, gauge 1', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-readyz-'))
  mkdirSync(join(dir, 'audit.jsonl')) // a directory where the trail goes
  const gw = await startTestGateway(t, nas, { audit: { dir } })

  const blocked = await readyz(gw.adminUrl)
  t.equal(blocked.status, 503)
  t.equal(blocked.body.status, 'not ready')
  t.not(blocked.body.checks.audit, 'ok', `checks.audit: ${blocked.body.checks.audit}`)
  t.match(blocked.body.checks.audit, /^failing/)
  t.equal(blocked.body.checks.nas, 'ok', 'only the audit check fails')
  t.equal(blocked.body.checks.certificate, 'ok')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 0)

  const refused = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(refused.status, 503)
  t.equal((JSON.parse(refused.body.toString()) as { error: string }).error, 'NASGUARD_ERR_AUDIT_UNAVAILABLE')
  t.equal((await readyz(gw.adminUrl)).status, 503, 'still not ready after a failed write')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 0)

  rmdirSync(join(dir, 'audit.jsonl'))
  const served = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(served.status, 200)
  const ready = await readyz(gw.adminUrl)
  t.equal(ready.status, 200)
  t.same(ready.body, { status: 'ready', checks: { nas: 'ok', revocation: 'ok', audit: 'ok', certificate: 'ok', nasLockdown: ready.body.checks.nasLockdown } })
  t.notMatch(ready.body.checks.nasLockdown, /^exposed|^check failed/)
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 1)
})

t.test('a trail that can be written again makes /readyz ready by itself, with no request in between', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-readyz-'))
  mkdirSync(join(dir, 'audit.jsonl'))
  const gw = await startTestGateway(t, nas, { audit: { dir } })
  t.equal((await readyz(gw.adminUrl)).status, 503, 'not ready while the trail cannot be written')
  t.equal((await readyz(gw.adminUrl)).status, 503, 'still not ready: the re-check fails too')
  rmdirSync(join(dir, 'audit.jsonl'))
  const ready = await readyz(gw.adminUrl)
  t.equal(ready.status, 200, 'ready again: /readyz re-checked the trail itself')
  t.equal(ready.body.checks.audit, 'ok')
  t.equal(nas.requests.length, 0, 'no request was needed')
  const records = (): Array<Record<string, unknown>> => readFileSync(join(dir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  const checks = records().filter((r) => r.event === 'check')
  t.equal(checks.length, 1, 'the successful re-check is one record in the trail')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 1)
  t.equal((await readyz(gw.adminUrl)).status, 200)
  t.equal(records().filter((r) => r.event === 'check').length, 1, 'a healthy trail is not written to by /readyz')
})

t.test('a NAS that does not answer: not ready, with the reason under checks.nas', async (t) => {
  const port = await freePort()
  const gw = await startTestGateway(t, { url: `http://127.0.0.1:${port}` })
  const r = await readyz(gw.adminUrl)
  t.equal(r.status, 503)
  t.equal(r.body.status, 'not ready')
  t.not(r.body.checks.nas, 'ok')
  t.equal(r.body.checks.nas, 'unreachable (ECONNREFUSED)')
  t.equal(r.body.checks.audit, 'ok', 'the audit trail is fine')
  t.equal(r.body.checks.certificate, 'ok')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_audit_available'), 1)
})

t.test('readiness follows the NAS: down, then back', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  t.equal((await readyz(gw.adminUrl)).status, 200)
  await new Promise<void>((resolve) => { nas.server.closeAllConnections(); nas.server.close(() => resolve()) })
  const down = await readyz(gw.adminUrl)
  t.equal(down.status, 503)
  t.equal(down.body.checks.nas, 'unreachable (ECONNREFUSED)')
  await new Promise<void>((resolve) => nas.server.listen(nas.port, '127.0.0.1', resolve))
  t.equal((await readyz(gw.adminUrl)).status, 200, 'ready again when the NAS answers')
})
