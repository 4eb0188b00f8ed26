// An HTTP/2 client may end a stream with RST_STREAM(NO_ERROR) (RFC 9113
// §8.1: it no longer needs the response; browsers do this when a seek
// makes a download moot). Before the response ended, that is a client that
// left: the NAS request is cancelled at once, the audit says
// client-aborted (not client-too-slow, which the slow-reader watch would
// say a minute later), and the stream is not held: also when the gateway
// had already ended the response (its last bytes waiting on the client's
// window, or a refusal the client reset in the same write). HTTP/1.1 has
// no such frame: its counterparts, at the end, close their connection. (A
// response the gateway ended has no HTTP/1.1 counterpart: the socket's
// buffers take it whole, and it counts as delivered.)
import t from 'tap'
import { connect, constants, type ClientHttp2Stream } from 'node:http2'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { bearer, scrape, startStubNas, startTestGateway, testCerts, type StubNas } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'
import { baseHeaders, h2Raw } from '../helpers/h2-raw.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const CHUNK = Buffer.alloc(64 * 1024, 0x55)

/** A WAV body of `bytes`: a RIFF head, then filler. */
function wav (bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0x55)
  b.write('RIFF', 0, 'latin1')
  b.write('WAVE', 8, 'latin1')
  return b
}

/** The NAS streams without end (a RIFF head first), 64 KB every 20 ms, until its response closes: whether it had finished then. */
function streamWithoutEnd (nas: StubNas): Promise<{ finished: boolean }> {
  return new Promise((resolve) => {
    nas.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav' })
      res.write(wav(CHUNK.length))
      const timer = setInterval(() => res.write(CHUNK), 20)
      res.once('close', () => { clearInterval(timer); resolve({ finished: res.writableFinished }) })
    })
  })
}

/** When the client resets its stream. */
const CASES: Array<{ when: string, reset: (stream: ClientHttp2Stream, done: () => void) => void }> = [
  { when: 'mid-body', reset: (stream, done) => { stream.once('data', () => { stream.close(constants.NGHTTP2_NO_ERROR); done() }) } },
  { when: 'on the response headers', reset: (stream, done) => { stream.once('response', () => { stream.close(constants.NGHTTP2_NO_ERROR); done() }) } }
]

for (const c of CASES) {
  t.test(`RST_STREAM(NO_ERROR) ${c.when}: NAS request cancelled, audit says client-aborted`, async (t) => {
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas)
    const nasClosed = streamWithoutEnd(nas)
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

t.test('RST_STREAM(NO_ERROR) after the gateway ended the response, its last bytes waiting on the client\'s window', async (t) => {
  const nas = await startStubNas(t)
  // Short enough to be handed over whole (the NAS is done), longer than the 1000-byte window and what a paused client buffers.
  const body = wav(48 * 1024)
  const nasDone = new Promise<void>((resolve) => {
    nas.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': String(body.length) })
      res.end(body, () => { resolve() })
    })
  })
  const gw = await startTestGateway(t, nas)
  const session = connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca), settings: { initialWindowSize: 1000 } })
  t.teardown(() => session.destroy())
  const stream = session.request({ ':path': PATH, ...bearer(gw.token()) })
  stream.pause()
  const requestId = await new Promise<string>((resolve) => stream.once('response', (h) => { resolve(String(h['x-request-id'])) }))
  await nasDone
  // The NAS's last byte is through the gateway's exchange once the access record's stream counts it as in flight and the NAS is done.
  await waitFor('the response ended by the gateway', async () => (await scrape(gw.adminUrl)).get('nasguard_active_streams') === 1 ? true : undefined)
  stream.close(constants.NGHTTP2_NO_ERROR)
  const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.outcome, 'client-aborted', 'the audit says the client left')
  t.ok(typeof fetch.bytes === 'number' && fetch.bytes < body.length, `not every byte counted as delivered (${String(fetch.bytes)} of ${body.length})`)
  const m = await waitFor('no stream in flight', async () => { const s = await scrape(gw.adminUrl); return s.get('nasguard_active_streams') === 0 ? s : undefined })
  t.equal((m.get('nasguard_slow_clients_total{reason="stalled"}') ?? 0) + (m.get('nasguard_slow_clients_total{reason="too_slow"}') ?? 0), 0, 'not counted as a slow client')
})

t.test('a refusal whose stream the client reset with NO_ERROR in the same write is finished, not held', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const N = 5
  // No token: refused (401) by the gate; each stream reset with the request. Then one that asks properly.
  const refused = Array.from({ length: N }, () => ({ headers: baseHeaders(PATH), resetWith: constants.NGHTTP2_NO_ERROR }))
  const total = (m: Map<string, number>): number => [...m].filter(([k]) => k.startsWith('nasguard_http_requests_total')).reduce((a, [, v]) => a + v, 0)
  const conn = await h2Raw(gw, [...refused, { headers: baseHeaders(PATH, [['authorization', bearer(gw.token()).authorization]]) }], { awaitClose: false })
  t.equal(conn.streams[N].status, 200, 'the connection still serves')
  const m = await waitFor(`${N + 1} requests finished`, async () => { const s = await scrape(gw.adminUrl); return total(s) >= N + 1 ? s : undefined })
  t.equal(total(m), N + 1, 'every refused stream is finished and counted')
  t.equal(nas.requests.length, 1, 'the NAS got only the proper request')
})

// The same clients over HTTP/1.1, where leaving means closing the connection.

/** An HTTP/1.1 request on its own TLS connection; `leave` closes it, when `when` says. */
function h1Leave (gw: { port: number }, head: string, when: 'after the first body bytes' | 'as soon as it is sent'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca), ALPNProtocols: ['http/1.1'] }, () => {
      socket.write(head, () => { if (when === 'as soon as it is sent') { socket.destroy(); resolve('') } })
    })
    let got = ''
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      const end = got.indexOf('\r\n\r\n')
      if (when === 'after the first body bytes' && end >= 0 && got.length > end + 4) {
        socket.destroy()
        resolve(/\r\nx-request-id: ([^\r]+)/i.exec(got)?.[1] ?? '')
      }
    })
    socket.on('error', reject)
  })
}

const h1Head = (token?: string): string => `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\n${token ? `Authorization: Bearer ${token}\r\n` : ''}\r\n`

t.test('HTTP/1.1: a client that closes its connection mid-body: NAS request cancelled, audit says client-aborted', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const nasClosed = streamWithoutEnd(nas)
  const requestId = await h1Leave(gw, h1Head(gw.token()), 'after the first body bytes')
  t.equal((await nasClosed).finished, false, 'the NAS response was cut off, not finished')
  const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.outcome, 'client-aborted', 'the audit says the client left')
  const m = await waitFor('no stream in flight', async () => { const s = await scrape(gw.adminUrl); return s.get('nasguard_active_streams') === 0 ? s : undefined })
  t.equal((m.get('nasguard_slow_clients_total{reason="stalled"}') ?? 0) + (m.get('nasguard_slow_clients_total{reason="too_slow"}') ?? 0), 0, 'not counted as a slow client')
})

t.test('HTTP/1.1: refusals whose clients left as soon as they asked are finished and counted', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const N = 5
  for (let i = 0; i < N; i++) await h1Leave(gw, h1Head(), 'as soon as it is sent')
  const total = (m: Map<string, number>): number => [...m].filter(([k]) => k.startsWith('nasguard_http_requests_total')).reduce((a, [, v]) => a + v, 0)
  const m = await waitFor(`${N} requests finished`, async () => { const s = await scrape(gw.adminUrl); return total(s) >= N ? s : undefined })
  t.equal(total(m), N, 'every refused request is finished and counted')
  t.equal(nas.requests.length, 0, 'the NAS got no request')
})
