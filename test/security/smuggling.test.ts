// Request smuggling and ambiguous framing, over raw TLS. Every request is
// answered 400 and nothing reaches the NAS. When the framing is ambiguous the
// connection is closed after the 400: the gateway cannot know where the next
// request would start.
//
// Each payload is followed, once its answer has arrived, by a well-formed
// probe request on the same connection (refused 403 by the file-type guard,
// so it never reaches the NAS either). A server that closed the connection
// never answers it; one that kept the connection open answers it, so
// "closed" is observed without any timer. Requests on a connection are
// answered in order, so anything smuggled inside a payload has been handled
// (and would have reached the NAS) by the time the probe is answered.
import t from 'tap'
import { rawTls, startStubNas, startTestGateway, statusOf } from '../helpers/gateway.js'
import { parseRaw, refuseThenProbe, statuses } from '../helpers/raw-http.js'

const BAD_REQUEST = 'NASGUARD_ERR_BAD_REQUEST'
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const SMUGGLED_PATH = '/medicall/2016/01/01/090000_46700000000.wav'

interface Row {
  name: string
  payload: (token: string) => string
  /** The framing is ambiguous: the connection must be closed after the 400. */
  ambiguous: boolean
}

function head (token: string, extra: string): string {
  return `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n${extra}`
}

/** A complete, valid request for another recording: what an attacker smuggles. */
function smuggled (token: string): string {
  return `GET ${SMUGGLED_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
}

function chunk (data: string): string {
  return `${Buffer.byteLength(data).toString(16)}\r\n${data}\r\n`
}

const rows: Row[] = [
  // CL.TE / TE.CL
  { name: 'Content-Length and Transfer-Encoding together', ambiguous: true, payload: (k) => head(k, 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  { name: 'Transfer-Encoding then Content-Length', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n') + chunk(smuggled(k)) + '0\r\n\r\n' },
  { name: 'Content-Length: 0 and Transfer-Encoding: chunked', ambiguous: true, payload: (k) => head(k, 'Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n') + chunk(smuggled(k)) + '0\r\n\r\n' },
  // Two lengths
  { name: 'two different Content-Length headers', ambiguous: true, payload: (k) => { const s = smuggled(k); return head(k, `Content-Length: 0\r\nContent-Length: ${Buffer.byteLength(s)}\r\n\r\n`) + s } },
  { name: 'Content-Length list with two values', ambiguous: true, payload: (k) => { const s = smuggled(k); return head(k, `Content-Length: 0, ${Buffer.byteLength(s)}\r\n\r\n`) + s } },
  { name: 'Content-Length with a plus sign', ambiguous: true, payload: (k) => { const s = smuggled(k); return head(k, `Content-Length: +${Buffer.byteLength(s)}\r\n\r\n`) + s } },
  // Transfer-Encoding variants
  { name: 'Transfer-Encoding: xchunked', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding: xchunked\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  { name: 'Transfer-Encoding: chunked, identity', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding: chunked, identity\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  { name: 'two Transfer-Encoding headers, the second unknown', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  { name: 'space before the colon of Transfer-Encoding', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding : chunked\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  // A body on GET, unambiguously framed: refused by the gate, never a request of its own.
  { name: 'Transfer-Encoding: chunked on GET', ambiguous: false, payload: (k) => head(k, 'Transfer-Encoding: chunked\r\n\r\n') + '0\r\n\r\n' },
  { name: 'Transfer-Encoding: chunked on GET, a request inside the chunk', ambiguous: false, payload: (k) => head(k, 'Transfer-Encoding: chunked\r\n\r\n') + chunk(smuggled(k)) + '0\r\n\r\n' },
  { name: 'a body on GET with Content-Length: 5', ambiguous: false, payload: (k) => head(k, 'Content-Length: 5\r\n\r\nhello') },
  { name: 'a body on GET that is a whole request', ambiguous: false, payload: (k) => { const s = smuggled(k); return head(k, `Content-Length: ${Buffer.byteLength(s)}\r\n\r\n`) + s } },
  // Line folding and line endings
  { name: 'obs-fold header line', ambiguous: true, payload: (k) => head(k, 'X-Note: a\r\n folded\r\n\r\n') },
  { name: 'obs-fold Authorization', ambiguous: true, payload: (k) => `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer\r\n ${k}\r\n\r\n` },
  { name: 'obs-fold Transfer-Encoding', ambiguous: true, payload: (k) => head(k, 'Transfer-Encoding: identity\r\n chunked\r\n\r\n') + '0\r\n\r\n' + smuggled(k) },
  { name: 'request line ending in a bare LF', ambiguous: true, payload: (k) => `GET ${PATH} HTTP/1.1\nHost: localhost\r\nAuthorization: Bearer ${k}\r\n\r\n` },
  { name: 'every line ending in a bare LF', ambiguous: true, payload: (k) => `GET ${PATH} HTTP/1.1\nHost: localhost\nAuthorization: Bearer ${k}\n\n` },
  { name: 'a header line ending in a bare CR', ambiguous: true, payload: (k) => head(k, 'X-Note: a\rTransfer-Encoding: chunked\r\n\r\n') + '0\r\n\r\n' },
  // Protocol upgrades
  { name: 'Connection: Upgrade + Upgrade: h2c + HTTP2-Settings', ambiguous: false, payload: (k) => head(k, 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n') },
  { name: 'Upgrade: websocket', ambiguous: false, payload: (k) => head(k, 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n') },
  { name: 'Upgrade: h2c without Connection: Upgrade', ambiguous: false, payload: (k) => head(k, 'Upgrade: h2c\r\n\r\n') },
  // Pipelines whose first request is malformed
  { name: 'pipelined, the first with two Content-Lengths', ambiguous: true, payload: (k) => head(k, 'Content-Length: 1\r\nContent-Length: 2\r\n\r\n') + smuggled(k) },
  { name: 'pipelined, the first with a malformed request line', ambiguous: true, payload: (k) => `GET ${PATH} HTTP/1.1 extra\r\nHost: localhost\r\nAuthorization: Bearer ${k}\r\n\r\n` + smuggled(k) },
  { name: 'pipelined, the first with a space in a header name', ambiguous: true, payload: (k) => head(k, 'Bad Header: x\r\n\r\n') + smuggled(k) },
  { name: 'pipelined, the first with a NUL in a header value', ambiguous: true, payload: (k) => head(k, 'X-Note: a\u0000b\r\n\r\n') + smuggled(k) }
]

function probe (token: string): string {
  // Well-formed, authorized, and refused 403 by the file-type guard: never reaches the NAS.
  return `GET /medicall/2016/01/01/probe.txt HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
}

t.test('smuggling and ambiguous framing: 400, nothing reaches the NAS, ambiguous connections are closed', async (t) => {
  const nas = await startStubNas(t)
  // A long keep-alive, so a connection the gateway keeps open stays open
  // while the probe is answered.
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 60000 } })

  for (const row of rows) {
    const token = gw.token()
    const before = nas.requests.length
    const res = await refuseThenProbe(gw, row.payload(token), probe(token))
    const first = parseRaw(res.text)
    t.equal(statusOf(res.text), 400, `${row.name}: answered 400 (got ${JSON.stringify(res.text.slice(0, 60))})`)
    t.equal(first.json?.error, BAD_REQUEST, `${row.name}: ${BAD_REQUEST}`)
    t.notOk(res.statuses.some((s) => s < 300), `${row.name}: nothing on the connection was served (${res.statuses.join(', ')})`)
    t.equal(nas.requests.length - before, 0, `${row.name}: nothing reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.name}: the NAS has still seen nothing`)
    if (row.ambiguous) {
      t.equal(res.closed, true, `${row.name}: the connection was closed after the 400`)
      t.same(res.statuses, [400], `${row.name}: exactly one answer on the connection`)
    }
  }
})

t.test('untilClose: a CL+TE request is answered once and the connection closes', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const k = gw.token()
  const res = await rawTls(gw, head(k, 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n') + '0\r\n\r\n' + smuggled(k), { untilClose: true })
  t.equal(statusOf(res.text), 400)
  t.equal(res.closed, true)
  t.same(statuses(res.text), [400], 'one answer, the smuggled request was never parsed')
  t.equal(nas.requests.length, 0)
})

t.test('positive control: the probe and a keep-alive pipeline of valid requests are served', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 60000 } })
  const k = gw.token()
  // A valid request followed by the probe: the connection stays open and
  // both are answered, so "closed" above is not an artefact of the helper.
  const res = await refuseThenProbe(gw, `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${k}\r\n\r\n`, probe(k))
  t.equal(statusOf(res.text), 200, 'the valid request is served')
  t.equal(res.closed, false, 'the connection stays open for the next request')
  t.same(res.statuses, [200, 403], 'the probe is answered too, refused 403')
  t.ok(res.text.includes('NASGUARD_ERR_FILE_TYPE'), 'by the file-type guard')
  t.equal(nas.requests.length, 1, 'only the valid request reached the NAS')
})
