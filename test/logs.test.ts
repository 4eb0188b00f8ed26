// App logs never hold tokens, Authorization headers, grants or recording
// paths (paths hold phone numbers). They are JSON lines, and a request's log
// line and its audit records share one request id.
import t from 'tap'
import { createSigner } from 'fast-jwt'
import { bearer, get, rawPlain, rawTls, startStubNas, startTestGateway, statusOf } from './helpers/gateway.js'
import { waitFor } from './helpers/wait.js'

const PHONE = '46701234567'
const PATH = `/medicall/2016/01/01/083012_${PHONE}.wav`
const GRANT = 'SECRETGRANT123'

t.test('logs hold no token, Authorization, grant, phone number or path', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const good = gw.token()
  const wrongKey = createSigner({ key: 'another-secret-that-is-at-least-32-bytes!', algorithm: 'HS256' })({ sub: 'mallory', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 600 })
  const expired = gw.token({ exp: Math.floor(Date.now() / 1000) - 3600 })
  // Sent in plain HTTP below: revoked then (a token seen in the clear), so a token of its own.
  const exposed = gw.token()
  const tokens = [good, wrongKey, expired, 'not.a.jwt', exposed]

  t.equal((await get(gw, PATH, { headers: bearer(good) })).status, 200, 'valid token')
  t.equal((await get(gw, PATH, { headers: bearer(wrongKey) })).status, 401, 'bad signature')
  t.equal((await get(gw, PATH, { headers: bearer(expired) })).status, 401, 'expired')
  t.equal((await get(gw, PATH, { headers: bearer('not.a.jwt') })).status, 401, 'malformed')
  t.equal((await get(gw, `${PATH}?grant=${GRANT}`, { headers: bearer(good) })).status, 200, 'grant-like query string')
  t.equal((await get(gw, `/medicall/2016/01/01/${PHONE}/`, { headers: bearer(good) })).status, 403, 'directory with a phone number')
  t.equal((await get(gw, `/stockholm/${PHONE}.wav`, { headers: bearer(good) })).status, 403, 'other scope, phone number path')
  // A request the parser refuses, with the secrets in it.
  const bad = await rawTls(gw, `GET ${PATH}?grant=${GRANT} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${good}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, { untilClose: true })
  t.equal(statusOf(bad.text), 400, 'ambiguous framing refused')
  const plain = await rawPlain(gw, `GET ${PATH}?grant=${GRANT} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${exposed}\r\n\r\n`)
  t.equal(statusOf(plain.text), 400, 'plaintext with Authorization refused (and its token revoked, logged without it)')
  nas.handle((req) => { req.socket.destroy() })
  t.equal((await get(gw, `${PATH}?grant=${GRANT}`, { headers: bearer(good) })).status, 502, 'NAS outage')
  nas.handle((_req, res) => { res.writeHead(500); res.end(`error for ${PATH}`) })
  t.equal((await get(gw, PATH, { headers: bearer(good) })).status, 502, 'NAS error')

  // The last request's completion line lands after its response closed.
  await waitFor('the 502 completion log lines', () =>
    gw.logs.filter((l) => l.includes('"msg":"request"') && l.includes('"status":502')).length >= 2 ? true : undefined)

  t.ok(gw.logs.length > 10, `the scenario produced log lines (${gw.logs.length})`)
  const offending = (needle: string | RegExp): string[] =>
    gw.logs.filter((l) => typeof needle === 'string' ? l.includes(needle) : needle.test(l))
  for (const [i, tok] of tokens.entries()) t.same(offending(tok), [], `token ${i + 1} is not logged`)
  for (const tok of tokens) {
    // Not even a piece of one: the signature alone is the secret part.
    const sig = tok.split('.')[2]
    if (sig && sig.length > 8) t.same(offending(sig), [], 'no token signature is logged')
  }
  t.same(offending('Bearer'), [], 'no "Bearer"')
  t.same(offending(/authorization/i), [], 'no "authorization", in any case')
  t.same(offending(GRANT), [], 'no grant')
  t.same(offending(PHONE), [], 'no phone number')
  t.same(offending('/medicall'), [], 'no recording path')
  t.same(offending('/stockholm'), [], 'no path of another rule')
})

t.test('logs are JSON lines; a request line, its response and its audit records share the request id', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  const refused = await get(gw, PATH)
  t.equal(refused.status, 401)
  const requestId = res.headers['x-request-id']
  t.type(requestId, 'string')
  t.not(refused.headers['x-request-id'], requestId, 'each request has its own id')

  const line = await waitFor('the request log line', () =>
    gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.reqId === requestId))
  const refusedLine = await waitFor('the refused request log line', () =>
    gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.reqId === refused.headers['x-request-id']))

  const parsed = gw.logs.map((l, i) => {
    try {
      return JSON.parse(l) as Record<string, unknown>
    } catch {
      return { unparsable: i }
    }
  })
  t.same(parsed.filter((p) => 'unparsable' in p), [], 'every log line is JSON')
  for (const p of parsed) {
    t.type(p.level, 'number')
    t.type(p.time, 'number')
    t.type(p.msg, 'string')
  }

  t.equal(line.reqId, requestId, 'the log line carries the x-request-id')
  t.match(line, { method: 'GET', status: 200, outcome: 'complete', rule: 'recordings' })
  t.equal(refusedLine.status, 401)

  const fetch = await waitFor('the fetch audit record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.requestId, line.reqId, 'audit requestId = log reqId = x-request-id')
  const access = gw.auditRecords().find((r) => r.event === 'access' && r.requestId === requestId)
  t.equal(access?.requestId, requestId)
  t.equal(nas.requests[0].headers['x-request-id'], requestId, 'the NAS sees the same request id')
  const refusal = await waitFor('the refusal audit record', () =>
    gw.auditRecords().find((r) => r.event === 'refusal' && r.requestId === refused.headers['x-request-id']))
  t.equal(refusal.requestId, refusedLine.reqId)
})
