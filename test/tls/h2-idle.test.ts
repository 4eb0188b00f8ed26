// An HTTP/2 session with no request for limits.keepAliveTimeoutMs is closed,
// like an idle HTTP/1.1 keep-alive connection, PINGs or not: it used to be
// held for twelve times the setting (60 s for 5 s). The bound below is
// generous (a busy machine) but under the old twelve times.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { connect as http2Connect } from 'node:http2'
import { bearer, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'

t.test('a session that only PINGs is closed once it has been idle for its timeout', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 1000 } })
  const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  const status = await new Promise<number>((resolve, reject) => {
    const s = session.request({ ':path': '/medicall/a.wav', ...bearer(gw.token()) })
    let code = 0
    s.on('response', (h) => { code = Number(h[':status']) })
    s.resume()
    s.on('end', () => resolve(code))
    s.on('error', reject)
    s.end()
  })
  t.equal(status, 200, 'one request is served')
  const started = Date.now()
  const pinger = setInterval(() => { if (!session.destroyed && !session.closed) session.ping(() => {}) }, 200)
  t.teardown(() => clearInterval(pinger))
  const closedAfter = await new Promise<number>((resolve) => {
    session.once('close', () => resolve(Date.now() - started))
    session.once('goaway', () => resolve(Date.now() - started))
    setTimeout(() => resolve(-1), 30000).unref()
  })
  clearInterval(pinger)
  t.not(closedAfter, -1, 'the gateway ended the PING-only session')
  t.ok(closedAfter < 8000, `within a margin of the 1000 ms setting, not twelve times it (${closedAfter} ms)`)
})
