// The README's framing promises, over both protocols: a GET or HEAD carries
// no body (over HTTP/2 its headers must end the stream, since a body without
// content-length is otherwise invisible); an HTTP/1.1 request needs Host and
// an HTTP/2 one :authority. Each refusal is a 400 NASGUARD_ERR_BAD_REQUEST,
// audited, and nothing reaches the NAS.
//
// Documented limit: an HTTP/2 header field whose value holds CR, LF or NUL
// is dropped by Node's HTTP/2 binding (node_http2.cc, OnInvalidHeader)
// before any JavaScript sees the request, so the gateway cannot refuse it
// (RFC 9113 §8.2.1 would have the stream refused). What this file pins
// instead: the dropped field never reaches the NAS, and the request is
// judged without it (a mangled Authorization is a missing token, a mangled
// Range is no range).
import t, { type Test } from 'tap'
import { RECORDING, rawTls, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { H2_ERROR, baseHeaders, h2Raw, type H2StreamRequest, type RawHeader } from '../helpers/h2-raw.js'
import { parseRaw } from '../helpers/raw-http.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const BAD_REQUEST = 'NASGUARD_ERR_BAD_REQUEST'

function auth (gw: TestGateway): RawHeader {
  return ['authorization', `Bearer ${gw.token()}`]
}

/** The refusal record of the request the gateway answered with this x-request-id. */
async function refusalRecord (gw: TestGateway, requestId: string | undefined): Promise<Record<string, unknown>> {
  return await waitFor(`the refusal record of ${String(requestId)}`, () => gw.auditRecords().find((r) => r.event === 'refusal' && r.requestId === requestId))
}

interface BodyRow {
  name: string
  method: 'GET' | 'HEAD'
  request: (gw: TestGateway) => H2StreamRequest
}

const BODY_ROWS: BodyRow[] = [
  { name: 'GET with a body and no content-length', method: 'GET', request: (gw) => ({ headers: baseHeaders(PATH, [auth(gw)]), endStream: false, data: [Buffer.from('hello')] }) },
  { name: 'HEAD with a body and no content-length', method: 'HEAD', request: (gw) => ({ headers: [[':method', 'HEAD'], ...baseHeaders(PATH, [auth(gw)]).slice(1)], endStream: false, data: [Buffer.from('hello')] }) },
  { name: 'GET whose headers leave the stream open, then an empty DATA with END_STREAM', method: 'GET', request: (gw) => ({ headers: baseHeaders(PATH, [auth(gw)]), endStream: false, data: [Buffer.alloc(0)] }) },
  { name: 'HEAD whose headers leave the stream open, then an empty DATA with END_STREAM', method: 'HEAD', request: (gw) => ({ headers: [[':method', 'HEAD'], ...baseHeaders(PATH, [auth(gw)]).slice(1)], endStream: false, data: [Buffer.alloc(0)] }) }
]

t.test('HTTP/2: a GET or HEAD whose headers do not end the stream is refused', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  for (const row of BODY_ROWS) {
    const res = await h2Raw(gw, [row.request(gw)])
    const s = res.streams[0]
    t.equal(s.status, 400, `${row.name}: 400 (got ${String(s.status)}, rst ${String(s.rstCode)})`)
    if (row.method === 'GET') t.equal(s.json?.error, BAD_REQUEST, `${row.name}: ${BAD_REQUEST}`)
    t.equal(nas.requests.length, 0, `${row.name}: nothing reached the NAS`)
    const record = await refusalRecord(gw, s.headers['x-request-id'])
    t.match(record, { event: 'refusal', method: row.method, path: PATH, status: 400, reason: BAD_REQUEST }, `${row.name}: audited`)
  }

  // Control: the same request with END_STREAM on its headers is served.
  const res = await h2Raw(gw, [{ headers: baseHeaders(PATH, [auth(gw)]) }])
  t.equal(res.streams[0].status, 200, 'control: a normal HTTP/2 GET is served')
  t.ok(res.streams[0].body.equals(RECORDING), 'control: the whole recording')
  t.equal(nas.requests.length, 1, 'control: it reached the NAS')
})

t.test('HTTP/1.1 without Host and HTTP/2 without :authority are refused', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  const h1 = await rawTls(gw, `GET /medicall/a.wav HTTP/1.1\r\nAuthorization: Bearer ${gw.token()}\r\n\r\n`)
  const h1Answer = parseRaw(h1.text)
  t.equal(h1Answer.status, 400, `HTTP/1.1 without Host: 400 (got ${JSON.stringify(h1.text.slice(0, 60))})`)
  t.equal(h1Answer.json?.error, BAD_REQUEST, `HTTP/1.1 without Host: ${BAD_REQUEST}`)
  t.equal(nas.requests.length, 0, 'HTTP/1.1 without Host: nothing reached the NAS')
  t.match(await refusalRecord(gw, h1Answer.headers['x-request-id']), { event: 'refusal', method: 'GET', status: 400, reason: BAD_REQUEST }, 'HTTP/1.1 without Host: audited')

  // HTTP/2 without :authority or host: nghttp2 holds such a request malformed
  // (RFC 9113 §8.3.1) and resets the stream before the gateway sees it, so
  // the refusal is RST_STREAM(PROTOCOL_ERROR), not a 400 (the gateway's own
  // :authority check cannot be reached). It never reaches the NAS.
  const h2 = await h2Raw(gw, [{ headers: [[':method', 'GET'], [':scheme', 'https'], [':path', PATH], auth(gw)] }])
  const s = h2.streams[0]
  t.equal(s.status, undefined, `HTTP/2 without :authority or host: no response (got ${String(s.status)})`)
  t.equal(s.rstCode, H2_ERROR.PROTOCOL_ERROR, `HTTP/2 without :authority or host: RST_STREAM(PROTOCOL_ERROR) (got ${String(s.rstCode)})`)
  t.equal(nas.requests.length, 0, 'HTTP/2 without :authority or host: nothing reached the NAS')

  // Control: a host header stands in for :authority.
  const withHost = await h2Raw(gw, [{ headers: [[':method', 'GET'], [':scheme', 'https'], [':path', PATH], ['host', 'localhost'], auth(gw)] }])
  t.equal(withHost.streams[0].status, 200, 'control: HTTP/2 with host instead of :authority is served')
  t.equal(nas.requests.length, 1, 'control: it reached the NAS')

  // Control: HTTP/1.0 has no Host requirement.
  const h10 = await rawTls(gw, `GET /medicall/a.wav HTTP/1.0\r\nAuthorization: Bearer ${gw.token()}\r\n\r\n`, { untilClose: true })
  t.equal(parseRaw(h10.text).status, 200, `control: HTTP/1.0 without Host is served (got ${JSON.stringify(h10.text.slice(0, 60))})`)
  t.equal(nas.requests.length, 2, 'control: it reached the NAS')
})

// RFC 9112 §3.2: more than one Host, or a Host that is not an authority,
// gets 400. The gateway never forwards Host, but a front end and the
// gateway must not read one request two ways.
const HOST_ROWS: Array<{ name: string, host: string[] }> = [
  { name: 'two Host lines', host: ['a', 'b'] },
  { name: 'two Host lines, one empty', host: ['', 'localhost'] },
  { name: 'a space inside', host: ['a b'] },
  { name: 'a path and query', host: ['evil.com/x?y'] },
  { name: 'user info', host: ['a@b:99'] },
  { name: 'two ports', host: ['x:1:2'] },
  { name: 'a backslash', host: ['a\\b'] },
  { name: 'an unbracketed IPv6 address', host: ['::1'] },
  { name: 'a port over 65535', host: ['localhost:65536'] },
  { name: 'a port of six digits', host: ['localhost:443443'] }
]

t.test('HTTP/1.1: a repeated or malformed Host is refused before anything else', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  for (const row of HOST_ROWS) {
    const lines = row.host.map((h) => `Host: ${h}\r\n`).join('')
    const res = await rawTls(gw, `GET ${PATH} HTTP/1.1\r\n${lines}Authorization: Bearer ${gw.token()}\r\n\r\n`)
    const answer = parseRaw(res.text)
    t.equal(answer.status, 400, `${row.name}: 400 (got ${JSON.stringify(res.text.slice(0, 40))})`)
    t.equal(answer.json?.error, BAD_REQUEST, `${row.name}: ${BAD_REQUEST}`)
    t.equal(nas.requests.length, 0, `${row.name}: nothing reached the NAS`)
  }
  for (const host of ['localhost', 'localhost:8443', '127.0.0.1:443', '[::1]:443', '[fe80::1%25eth0]:443', 'nas.lan:65535', 'nas.lan', '']) {
    const res = await rawTls(gw, `GET ${PATH} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${gw.token()}\r\nConnection: close\r\n\r\n`, { untilClose: true })
    t.equal(parseRaw(res.text).status, 200, `control: Host ${JSON.stringify(host)} is served`)
  }
})

interface DroppedRow {
  name: string
  headers: (gw: TestGateway) => RawHeader[]
  check: (t: Test, s: { status?: number, json?: Record<string, unknown>, body: Buffer }, nas: { requests: Array<{ headers: Record<string, unknown> }> }, before: number) => void
}

const DROPPED_ROWS: DroppedRow[] = [
  {
    name: 'authorization with CR LF in its value',
    headers: (gw) => baseHeaders(PATH, [['authorization', `Bearer ${gw.token()}\r\nx: y`]]),
    check: (t, s, nas, before) => {
      t.equal(s.status, 401, 'judged without Authorization: 401')
      t.equal(s.json?.error, 'NASGUARD_ERR_TOKEN_MISSING', 'the token is missing')
      t.equal(nas.requests.length - before, 0, 'nothing reached the NAS')
    }
  },
  {
    name: 'range with a NUL in its value',
    headers: (gw) => baseHeaders(PATH, [auth(gw), ['range', 'bytes=0-9\u0000']]),
    check: (t, s, nas, before) => {
      t.equal(s.status, 200, 'judged without Range: 200')
      t.ok(s.body.equals(RECORDING), 'the full body')
      t.equal(nas.requests.length - before, 1, 'one request reached the NAS')
      t.equal(nas.requests.at(-1)?.headers.range, undefined, 'no Range reached the NAS')
    }
  },
  {
    name: 'x-evil with CR LF and a host line in its value',
    headers: (gw) => baseHeaders(PATH, [auth(gw), ['x-evil', 'a\r\nhost: evil']]),
    check: (t, s, nas, before) => {
      t.equal(s.status, 200, 'served: 200')
      t.equal(nas.requests.length - before, 1, 'one request reached the NAS')
      const seen = nas.requests.at(-1)?.headers ?? {}
      t.equal(seen['x-evil'], undefined, 'no x-evil reached the NAS')
      t.not(seen.host, 'evil', 'the NAS Host is not "evil"')
      t.notOk(JSON.stringify(seen).includes('evil'), 'nothing of the field reached the NAS')
    }
  }
]

t.test('HTTP/2 header values with CR, LF or NUL: dropped by Node, never reach the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  for (const row of DROPPED_ROWS) {
    await t.test(row.name, async (t) => {
      const before = nas.requests.length
      const res = await h2Raw(gw, [{ headers: row.headers(gw) }])
      const s = res.streams[0]
      t.equal(s.rstCode, undefined, `answered, not reset (rst ${String(s.rstCode)})`)
      row.check(t, s, nas, before)
    })
  }
})
