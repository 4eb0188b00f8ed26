// Pipelined HTTP/1.1 requests whose client leaves early. Node's HTTP/1.1
// server never closes a response that is still queued behind another when
// the connection goes, so every such request used to keep its access record
// open, nasguard_active_streams raised and a NAS connection held. Every
// accepted request must reach exactly one completion, whatever happens to
// its connection.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import type { ServerResponse } from 'node:http'
import { scrape, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const CHUNK = Buffer.alloc(64 * 1024, 0x52)

/** Two pipelined GETs on one TLS connection; the client leaves once `leaveAfter` bytes have arrived. */
function pipelinedPair (gw: TestGateway, leaveAfter: number): Promise<void> {
  return new Promise((resolve) => {
    const token = gw.token()
    const req = (n: number): string => `GET /medicall/2016/01/01/pair-${n}.wav HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: CA }, () => socket.write(req(1) + req(2)))
    let got = 0
    socket.on('data', (c: Buffer) => {
      got += c.length
      if (got >= leaveAfter) socket.destroy()
    })
    socket.on('error', () => {})
    socket.on('close', () => resolve())
  })
}

t.test('50 pipelined pairs dropped early: every access completed, no stream or NAS connection left, close finishes', async (t) => {
  let open = 0
  const nas = await startStubNas(t, (_req, res: ServerResponse) => {
    // A long recording, written as the gateway reads it.
    open++
    res.once('close', () => { open-- })
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 256 * 1024 * 1024 })
    const pump = (): void => { while (!res.destroyed && res.write(CHUNK)) { /* until backpressure */ } }
    res.on('drain', pump)
    pump()
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 600000 } })
  for (let i = 0; i < 50; i++) await pipelinedPair(gw, 1)

  const accesses = await waitFor('an access record per request that reached the gate', () => {
    const a = gw.auditRecords().filter((r) => r.event === 'access')
    return a.length > 0 ? a : undefined
  })
  const completed = await waitFor('a completion for every access', () => {
    const records = gw.auditRecords()
    const ids = new Set(records.filter((r) => r.event === 'fetch').map((r) => r.requestId))
    const all = records.filter((r) => r.event === 'access')
    return all.every((r) => ids.has(r.requestId)) ? all.length : undefined
  }, { tries: 300, intervalMs: 50 }).catch(() => -1)
  t.ok(accesses.length >= 50, `at least the first request of each pair was accepted (${accesses.length})`)
  t.not(completed, -1, 'every access record has its completion')
  const fetches = gw.auditRecords().filter((r) => r.event === 'fetch')
  const perId = new Map<unknown, number>()
  for (const f of fetches) perId.set(f.requestId, (perId.get(f.requestId) ?? 0) + 1)
  t.ok([...perId.values()].every((n) => n === 1), 'and exactly one each')
  t.ok(fetches.every((f) => f.outcome === 'client-aborted'), 'each is a client abort')

  const active = await waitFor('nasguard_active_streams back to 0', async () => (await scrape(gw.adminUrl)).get('nasguard_active_streams') === 0 ? 0 : undefined, { tries: 200, intervalMs: 50 }).catch(async () => (await scrape(gw.adminUrl)).get('nasguard_active_streams'))
  t.equal(active, 0, 'no stream is counted as active')
  const held = await waitFor('the NAS connections to be released', () => open === 0 ? 0 : undefined, { tries: 200, intervalMs: 50 }).catch(() => open)
  t.equal(held, 0, 'no NAS response is left open')

  // The second request of each pair, queued behind the first when its
  // client left, is finished too (counted, logged), not left waiting for
  // a turn that never comes.
  const finishedRequests = async (): Promise<number> => [...(await scrape(gw.adminUrl)).entries()].filter(([k]) => k.startsWith('nasguard_http_requests_total{')).reduce((n, [, v]) => n + v, 0)
  const finished = await waitFor('both requests of every pair finished', async () => await finishedRequests() === 100 ? 100 : undefined, { tries: 200, intervalMs: 50 }).catch(finishedRequests)
  t.equal(finished, 100, 'all 100 pipelined requests were finished')

  const closing = gw.gateway.close().then(() => 'closed' as const)
  const bound = new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), 20000).unref())
  t.equal(await Promise.race([closing, bound]), 'closed', 'the gateway closes: no response holds it')
})
