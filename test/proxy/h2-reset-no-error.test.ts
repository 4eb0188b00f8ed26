// An HTTP/2 client may end a stream with RST_STREAM(NO_ERROR) (RFC 9113
// §8.1: it no longer needs the response; browsers do this when a seek
// makes a download moot). Before the response ended, that is a client that
// left: the NAS request is cancelled at once, the audit says
// client-aborted (not client-too-slow, which the slow-reader watch would
// say a minute later), and the stream is not held. (HTTP/1.1 has no such
// frame: a client that leaves closes its connection, test/proxy/abort.test.ts.)
import t from 'tap'
import { connect, constants, type ClientHttp2Stream } from 'node:http2'
import { readFileSync } from 'node:fs'
import { bearer, scrape, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const CHUNK = Buffer.alloc(64 * 1024, 0x55)

/** When the client resets its stream. */
const CASES: Array<{ when: string, reset: (stream: ClientHttp2Stream, done: () => void) => void }> = [
  { when: 'mid-body', reset: (stream, done) => { stream.once('data', () => { stream.close(constants.NGHTTP2_NO_ERROR); done() }) } },
  { when: 'on the response headers', reset: (stream, done) => { stream.once('response', () => { stream.close(constants.NGHTTP2_NO_ERROR); done() }) } }
]

for (const c of CASES) {
  t.test(`RST_STREAM(NO_ERROR) ${c.when}: NAS request cancelled, audit says client-aborted`, async (t) => {
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas)
    // The NAS streams without end (a RIFF head first), 64 KB every 20 ms, until its response closes.
    const nasClosed = new Promise<{ finished: boolean }>((resolve) => {
      nas.handle((_req, res) => {
        res.writeHead(200, { 'content-type': 'audio/wav' })
        const head = Buffer.from(CHUNK)
        head.write('RIFF', 0, 'latin1')
        head.write('WAVE', 8, 'latin1')
        res.write(head)
        const timer = setInterval(() => res.write(CHUNK), 20)
        res.once('close', () => { clearInterval(timer); resolve({ finished: res.writableFinished }) })
      })
    })
    const session = connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    t.teardown(() => session.destroy())
    const requestId = await new Promise<string>((resolve, reject) => {
      const stream = session.request({ ':path': PATH, ...bearer(gw.token()) })
      let id = ''
      stream.on('response', (h) => { id = String(h['x-request-id']) })
      c.reset(stream, () => { resolve(id) })
      stream.on('error', reject)
    })
    const closed = await nasClosed
    t.equal(closed.finished, false, 'the NAS response was cut off, not finished')
    t.equal(nas.requests.length, 1, 'one NAS request')
    const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
    t.equal(fetch.outcome, 'client-aborted', 'the audit says the client left')
    t.equal(fetch.status, 200)
    const m = await waitFor('no stream in flight', async () => { const s = await scrape(gw.adminUrl); return s.get('nasguard_active_streams') === 0 ? s : undefined })
    t.equal(m.get('nasguard_active_streams'), 0, 'nasguard_active_streams is back to 0')
    t.equal((m.get('nasguard_slow_clients_total{reason="stalled"}') ?? 0) + (m.get('nasguard_slow_clients_total{reason="too_slow"}') ?? 0), 0, 'not counted as a slow client')
    t.ok(!session.destroyed, 'the connection stays up for other streams')
  })
}
