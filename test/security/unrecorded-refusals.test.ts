// Refusals that happen below the gateway's routes (Node's HTTP/1.1 parser,
// its CONNECT event, nghttp2's stream resets and GOAWAYs) used to leave no
// trace. Each is now answered (where the protocol allows), counted in
// nasguard_refusals_total, logged and audited as a refusal, and never
// reaches the NAS; a token carried by such a request is written nowhere.
import t from 'tap'
import { rawTls, scrape, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { H2_ERROR, baseHeaders, h2Raw, type H2StreamRequest, type RawHeader } from '../helpers/h2-raw.js'
import { parseRaw, refuseThenProbe } from '../helpers/raw-http.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const PROTOCOL_RESET = 'NASGUARD_ERR_PROTOCOL_RESET'
const RESET_LOG = 'HTTP/2 streams reset by the protocol layer'

type Rec = Record<string, unknown>

/** The refusal counter for `reason`, whatever its class label. */
async function refusals (gw: TestGateway, reason: string): Promise<number> {
  const metrics = await scrape(gw.adminUrl)
  for (const [k, v] of metrics) {
    if (k.startsWith('nasguard_refusals_total{') && k.includes(`reason="${reason}"`)) return v
  }
  return 0
}

function refusalRecords (gw: TestGateway, reason: string): Rec[] {
  return gw.auditRecords().filter((r) => r.event === 'refusal' && r.reason === reason)
}

function parsedLogs (gw: TestGateway): Rec[] {
  return gw.logs.map((l) => JSON.parse(l) as Rec)
}

function resetLogLines (gw: TestGateway): Rec[] {
  return parsedLogs(gw).filter((l) => typeof l.msg === 'string' && l.msg.startsWith(RESET_LOG))
}

function sumCounts (records: Rec[]): number {
  return records.reduce((n, r) => n + Number(r.count ?? 0), 0)
}

interface ResetTally { metric: number, audited: number, logged: number }

async function resetTally (gw: TestGateway): Promise<ResetTally> {
  return {
    metric: await refusals(gw, 'protocol_reset'),
    audited: sumCounts(refusalRecords(gw, PROTOCOL_RESET)),
    logged: resetLogLines(gw).reduce((n, l) => n + Number(l.streams ?? 0), 0)
  }
}

/**
 * Polls (generously) until the protocol_reset counter, the audited counts and
 * the streams named in log lines all reach `target`, and returns what they
 * are then, so a shortfall shows in the assertions that follow.
 */
async function resetsSettled (gw: TestGateway, target: ResetTally, tries = 100, intervalMs = 50): Promise<ResetTally> {
  try {
    return await waitFor('protocol_reset refusals', async () => {
      const now = await resetTally(gw)
      return now.metric >= target.metric && now.audited >= target.audited && now.logged >= target.logged ? now : undefined
    }, { tries, intervalMs })
  } catch {
    return await resetTally(gw)
  }
}

function authorized (gw: TestGateway, extra: RawHeader[] = []): RawHeader[] {
  return baseHeaders(PATH, [['authorization', `Bearer ${gw.token()}`], ...extra])
}

interface OversizedRow {
  name: string
  proto: 'h1' | 'h2'
  /** Bytes of padding in the token's claims (base64url makes it 4/3 as long). */
  padBytes: number
  /** The request line is known to the gateway when it refuses (under Node's 128 KiB parser limit). */
  requestLine: boolean
}

const OVERSIZED: OversizedRow[] = [
  { name: 'HTTP/1.1, a 20 KB token', proto: 'h1', padBytes: 14 * 1024, requestLine: true },
  { name: 'HTTP/1.1, a 64 KB token', proto: 'h1', padBytes: 48 * 1024, requestLine: true },
  { name: 'HTTP/1.1, a 160 KB token (past the parser limit)', proto: 'h1', padBytes: 120 * 1024, requestLine: false },
  // Over HTTP/2 a field over 64 KiB cannot be decoded at all (see the GOAWAY test below).
  { name: 'HTTP/2, a 20 KB token', proto: 'h2', padBytes: 14 * 1024, requestLine: true }
]

/** Well-formed, authorized, and refused 403 by the file-type guard: it never reaches the NAS. */
function probe (token: string): string {
  return `GET /medicall/2016/01/01/probe.txt HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
}

function isOversizeLogLine (l: Rec): boolean {
  return l.msg === 'request headers too large: refused' || (l.msg === 'request' && l.status === 431)
}

t.test('request headers over 16 KiB: 431, counted, logged and audited without the token', async (t) => {
  const nas = await startStubNas(t)
  // A long keep-alive: a connection kept open after the 431 would answer the probe.
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 60000 } })

  for (const row of OVERSIZED) {
    await t.test(row.name, async (t) => {
      // A real, signed token, inflated past 16 KiB by a large claim.
      const token = gw.token({ pad: 'p'.repeat(row.padBytes) })
      t.ok(token.length > 16 * 1024, `the token is over 16 KiB (${token.length} bytes)`)
      const signature = token.slice(token.lastIndexOf('.') + 1)
      const tokenMiddle = token.slice(Math.floor(token.length / 2), Math.floor(token.length / 2) + 64)
      const before = await refusals(gw, 'headers_too_large')
      const recordsBefore = refusalRecords(gw, 'NASGUARD_ERR_HEADERS_TOO_LARGE').length
      const logsBefore = gw.logs.length

      if (row.proto === 'h1') {
        const payload = `GET ${PATH}?grant=abc HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
        const res = await refuseThenProbe(gw, payload, probe(gw.token()))
        const answer = parseRaw(res.text)
        t.equal(answer.status, 431, `answered 431 (got ${JSON.stringify(res.text.slice(0, 60))})`)
        t.equal(answer.json?.error, 'NASGUARD_ERR_HEADERS_TOO_LARGE', 'NASGUARD_ERR_HEADERS_TOO_LARGE')
        // Past the parser's limit the request was never framed: the connection must go. A
        // request the gateway parsed whole and refused leaves the connection usable.
        if (!row.requestLine) t.equal(res.closed, true, `the connection was closed after the 431 (answers on it: ${res.statuses.join(', ')})`)
        else t.same(res.statuses, [431, 403], 'a parsed request refused 431 keeps the connection: the probe behind it is judged on its own')
      } else {
        const res = await h2Raw(gw, [{ headers: baseHeaders(`${PATH}?grant=abc`, [['authorization', `Bearer ${token}`]]) }])
        const s = res.streams[0]
        t.equal(s.status, 431, `answered 431 (got ${String(s.status)}, rst ${String(s.rstCode)}, goaway ${String(res.goawayCode)})`)
        t.equal(s.json?.error, 'NASGUARD_ERR_HEADERS_TOO_LARGE', 'NASGUARD_ERR_HEADERS_TOO_LARGE')
      }
      t.equal(nas.requests.length, 0, 'nothing reached the NAS')

      await waitFor('the headers_too_large refusal to be counted', async () => (await refusals(gw, 'headers_too_large')) >= before + 1 ? true : undefined)
      t.equal(await refusals(gw, 'headers_too_large'), before + 1, 'refusals{reason="headers_too_large"} +1')
      const metrics = await scrape(gw.adminUrl)
      t.ok([...metrics.keys()].some((k) => k.startsWith('nasguard_refusals_total{') && k.includes('reason="headers_too_large"') && k.includes('class="smuggling"')), 'counted in the smuggling class')

      const line = await waitFor('a log line for the refusal', () => gw.logs.slice(logsBefore).find((l) => isOversizeLogLine(JSON.parse(l) as Rec)), { tries: 150, intervalMs: 20 })
      t.notOk(line.includes(signature) || line.includes(tokenMiddle), 'the log line holds no part of the token')
      t.notOk(gw.logs.some((l) => l.includes(signature) || l.includes(tokenMiddle)), 'no log line holds any part of the token')

      const record = await waitFor('the refusal record', () => refusalRecords(gw, 'NASGUARD_ERR_HEADERS_TOO_LARGE')[recordsBefore])
      t.match(record, { event: 'refusal', status: 431, reason: 'NASGUARD_ERR_HEADERS_TOO_LARGE' }, 'audited as a 431 refusal')
      t.equal(record.clientIp, '127.0.0.1', 'the record names the client address')
      if (row.requestLine) {
        t.equal(record.method, 'GET', 'the record holds the method')
        t.equal(record.path, PATH, 'the record holds the path, without its query')
      }
      const trail = JSON.stringify(gw.auditRecords())
      t.notOk(trail.includes('grant=abc') || trail.includes('?grant'), 'the query is in no audit record')
      t.notOk(trail.includes(signature) || trail.includes(tokenMiddle), 'no part of the token is in the audit trail')
      t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')
    })
  }
})

t.test('CONNECT over HTTP/1.1 and HTTP/2: 405 with Allow, counted and audited', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  const ways: Array<{ proto: string, send: () => Promise<{ status?: number, allow?: string, error?: unknown }> }> = [
    {
      proto: 'h1',
      send: async () => {
        const res = await rawTls(gw, 'CONNECT nas.lan:443 HTTP/1.1\r\nHost: nas.lan:443\r\n\r\n')
        const answer = parseRaw(res.text)
        return { status: answer.status, allow: answer.headers.allow, error: answer.json?.error }
      }
    },
    {
      proto: 'h2',
      send: async () => {
        const res = await h2Raw(gw, [{ headers: [[':method', 'CONNECT'], [':authority', 'nas.lan:443']] }])
        const s = res.streams[0]
        return { status: s.status, allow: s.headers.allow, error: s.json?.error }
      }
    }
  ]

  for (const way of ways) {
    const before = await refusals(gw, 'method')
    const recordsBefore = refusalRecords(gw, 'NASGUARD_ERR_METHOD_NOT_ALLOWED').length
    const answer = await way.send()
    t.equal(answer.status, 405, `${way.proto}: answered 405`)
    t.equal(answer.error, 'NASGUARD_ERR_METHOD_NOT_ALLOWED', `${way.proto}: NASGUARD_ERR_METHOD_NOT_ALLOWED`)
    t.equal(answer.allow, 'GET, HEAD', `${way.proto}: Allow: GET, HEAD`)
    await waitFor(`${way.proto}: the method refusal to be counted`, async () => (await refusals(gw, 'method')) >= before + 1 ? true : undefined)
    t.equal(await refusals(gw, 'method'), before + 1, `${way.proto}: refusals{reason="method"} +1`)
    const record = await waitFor(`${way.proto}: the refusal record`, () => refusalRecords(gw, 'NASGUARD_ERR_METHOD_NOT_ALLOWED')[recordsBefore])
    t.match(record, { event: 'refusal', method: 'CONNECT', path: 'nas.lan:443', status: 405, reason: 'NASGUARD_ERR_METHOD_NOT_ALLOWED' }, `${way.proto}: audited`)
    t.equal(nas.requests.length, 0, `${way.proto}: nothing reached the NAS`)
  }
})

// HTTP/2 takes any token as a method; HTTP/1.1's parser refuses names
// outside Node's list itself (400), and the app's router has no route for
// them: Fastify's fallback answered 404 (turned 400) and logged two warning
// lines with its whole route tree, for anyone, without a token.
const UNROUTED_METHODS = ['FOO', 'get', 'G_T', 'PROPFIND2', 'X'.repeat(200)]

t.test('HTTP/2 methods outside Node\'s list: 405 with Allow, counted, audited, one info line (HTTP/1.1: the parser\'s 400)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  for (const method of UNROUTED_METHODS) {
    const name = method.length > 20 ? `a ${method.length}-character method` : method
    const before = await refusals(gw, 'method')
    const recordsBefore = refusalRecords(gw, 'NASGUARD_ERR_METHOD_NOT_ALLOWED').length
    const logsBefore = gw.logs.length
    const res = await h2Raw(gw, [{ headers: authorized(gw).map(([k, v]) => k === ':method' ? [k, method] : [k, v]) }])
    const s = res.streams[0]
    t.equal(s.status, 405, `${name}: 405`)
    t.equal(s.json?.error, 'NASGUARD_ERR_METHOD_NOT_ALLOWED', `${name}: NASGUARD_ERR_METHOD_NOT_ALLOWED`)
    t.equal(s.headers.allow, 'GET, HEAD', `${name}: Allow: GET, HEAD`)
    await waitFor(`${name}: the refusal to be counted`, async () => (await refusals(gw, 'method')) >= before + 1 ? true : undefined)
    const record = await waitFor(`${name}: the refusal record`, () => refusalRecords(gw, 'NASGUARD_ERR_METHOD_NOT_ALLOWED')[recordsBefore])
    t.match(record, { event: 'refusal', method: method.slice(0, 16), path: PATH, status: 405 }, `${name}: audited, the method cut to its bound`)
    const lines = gw.logs.slice(logsBefore).map((l) => JSON.parse(l) as Rec)
    t.same(lines.filter((l) => Number(l.level) >= 40).map((l) => l.msg), [], `${name}: no warning or error line`)
    t.notOk(gw.logs.slice(logsBefore).some((l) => l.includes(PATH) || l.includes(gw.token())), `${name}: no line holds the path or the token`)
    t.equal(nas.requests.length, 0, `${name}: nothing reached the NAS`)
  }
  // HTTP/1.1: Node's parser refuses them itself (400), as audited elsewhere; no warning either.
  for (const method of ['FOO', 'G_T']) {
    const logsBefore = gw.logs.length
    const answer = parseRaw((await rawTls(gw, `${method} ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${gw.token()}\r\n\r\n`)).text)
    t.equal(answer.status, 400, `h1 ${method}: 400 from the parser`)
    const lines = gw.logs.slice(logsBefore).map((l) => JSON.parse(l) as Rec)
    t.same(lines.filter((l) => Number(l.level) >= 40 && String(l.msg).includes('fastify')).map((l) => l.msg), [], `h1 ${method}: no Fastify warning`)
    t.equal(nas.requests.length, 0, `h1 ${method}: nothing reached the NAS`)
  }
})

interface ResetRow {
  name: string
  headers: (gw: TestGateway) => RawHeader[]
  rst: number
}

const RESET_ROWS: ResetRow[] = [
  { name: 'an upper-case header name', rst: H2_ERROR.PROTOCOL_ERROR, headers: (gw) => authorized(gw, [['X-Foo', '1']]) },
  {
    name: 'a duplicated :path',
    rst: H2_ERROR.PROTOCOL_ERROR,
    headers: (gw) => [[':method', 'GET'], [':scheme', 'https'], [':authority', 'localhost'], [':path', PATH], [':path', PATH], ['authorization', `Bearer ${gw.token()}`]]
  },
  {
    name: '200 extra headers',
    rst: H2_ERROR.ENHANCE_YOUR_CALM,
    headers: (gw) => authorized(gw, Array.from({ length: 200 }, (_, i): RawHeader => [`x-extra-${i}`, 'v']))
  },
  { name: 'connection: close', rst: H2_ERROR.PROTOCOL_ERROR, headers: (gw) => authorized(gw, [['connection', 'close']]) },
  { name: 'te: gzip', rst: H2_ERROR.PROTOCOL_ERROR, headers: (gw) => authorized(gw, [['te', 'gzip']]) },
  { name: 'transfer-encoding: chunked', rst: H2_ERROR.PROTOCOL_ERROR, headers: (gw) => authorized(gw, [['transfer-encoding', 'chunked']]) }
]

t.test('HTTP/2 streams reset by nghttp2: counted, logged and audited per connection', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  for (const row of RESET_ROWS) {
    const before = await resetTally(gw)
    const recordsBefore = refusalRecords(gw, PROTOCOL_RESET).length
    const res = await h2Raw(gw, [{ headers: row.headers(gw) }])
    const s = res.streams[0]
    t.equal(s.rstCode, row.rst, `${row.name}: RST_STREAM ${row.rst} (got ${String(s.rstCode)}, status ${String(s.status)}, goaway ${String(res.goawayCode)})`)
    t.equal(s.status, undefined, `${row.name}: no response headers`)
    t.equal(nas.requests.length, 0, `${row.name}: nothing reached the NAS`)

    // Counted when the connection is over; h2Raw has closed it.
    const want = { metric: before.metric + 1, audited: before.audited + 1, logged: before.logged + 1 }
    const now = await resetsSettled(gw, want)
    t.equal(now.metric, want.metric, `${row.name}: refusals{reason="protocol_reset"} +1`)
    t.equal(now.audited, want.audited, `${row.name}: audited with count 1`)
    t.equal(now.logged, want.logged, `${row.name}: a warn log line names 1 stream`)
    const record = refusalRecords(gw, PROTOCOL_RESET)[recordsBefore]
    if (record) t.match(record, { event: 'refusal', status: 400, reason: PROTOCOL_RESET, count: 1, clientIp: '127.0.0.1' }, `${row.name}: the refusal record`)
    const line = resetLogLines(gw).at(-1)
    if (line) t.equal(line.level, 40, `${row.name}: logged as a warning`)
  }
  t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')
})

t.test('HTTP/2: reset streams are counted however the client leaves (GOAWAY, bare FIN, reset)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const bad = (): H2StreamRequest => ({ headers: authorized(gw, [['X-Up', '1']]) })
  let expected = 0
  for (const hangUp of ['goaway', 'fin', 'reset'] as const) {
    const res = await h2Raw(gw, [bad(), bad(), bad(), bad(), bad()], { hangUp })
    t.same(res.streams.map((s) => s.rstCode), Array(5).fill(H2_ERROR.PROTOCOL_ERROR), `${hangUp}: five streams reset`)
    expected += 5
    const now = await resetsSettled(gw, { metric: expected, audited: expected, logged: expected })
    t.equal(now.metric, expected, `${hangUp}: refusals{reason="protocol_reset"} counts them (${now.metric})`)
    t.equal(now.audited, expected, `${hangUp}: audited (${now.audited})`)
  }
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')
})

t.test('HTTP/2: a client that skips stream ids cannot make its reset count up', async (t) => {
  // Stream ids may grow by more than 2; one served request on id 2^31-3
  // must not be audited as a billion reset streams.
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await h2Raw(gw, [{ headers: authorized(gw) }], { firstStreamId: 0x7ffffffd })
  t.equal(res.streams[0].status, 200, 'the request on a far stream id is served')
  const now = await resetsSettled(gw, { metric: 1, audited: 1, logged: 1 }, 20, 50)
  t.ok(now.metric < 1000, `the count stays bounded by what the client sent (${now.metric})`)
  t.ok(now.audited < 1000, `so do the records (${now.audited})`)
})

t.test('HTTP/2: good and reset streams on one connection', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const good = (): H2StreamRequest => ({ headers: authorized(gw) })
  const requests: H2StreamRequest[] = [
    good(),
    { headers: authorized(gw, [['X-Foo', '1']]) },
    good(),
    { headers: authorized(gw, [['te', 'gzip']]) },
    { headers: authorized(gw, [['transfer-encoding', 'chunked']]) }
  ]
  const res = await h2Raw(gw, requests, { sequential: true })
  t.same(res.streams.map((s) => s.status), [200, undefined, 200, undefined, undefined], 'the good streams are served')
  t.same(res.streams.map((s) => s.rstCode), [undefined, H2_ERROR.PROTOCOL_ERROR, undefined, H2_ERROR.PROTOCOL_ERROR, H2_ERROR.PROTOCOL_ERROR], 'the bad ones are reset')
  t.equal(nas.requests.length, 2, 'only the good streams reached the NAS')

  const now = await resetsSettled(gw, { metric: 3, audited: 3, logged: 3 })
  const records = refusalRecords(gw, PROTOCOL_RESET)
  t.equal(now.metric, 3, 'refusals{reason="protocol_reset"} counts exactly 3 streams')
  t.equal(now.audited, 3, `the records count 3 streams (${records.map((r) => String(r.count)).join(' + ') || 'no record'})`)
  t.equal(now.logged, 3, 'the warn log lines name 3 streams')
  // Nothing more arrives later: the count stays exact.
  const later = await resetsSettled(gw, { metric: 4, audited: 4, logged: 4 }, 10, 50)
  t.same(later, now, 'and no more than 3')
})

t.test('HTTP/2: an oversized header field gets a GOAWAY; the stuck session is found, counted and closed', async (t) => {
  const nas = await startStubNas(t)
  // Idle timeout for HTTP/2 sessions: keepAliveTimeoutMs x 12 = 1.2 s.
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 100 } })
  // A field of 65 KiB, sent as HEADERS + CONTINUATION frames: past nghttp2's
  // HPACK limit for one field (65536 octets), so the whole block cannot be
  // decoded and the connection is failed.
  const res = await h2Raw(gw, [{ headers: authorized(gw, [['x-big', 'b'.repeat(65 * 1024)]]) }])
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')
  t.equal(res.goawayCode, H2_ERROR.COMPRESSION_ERROR, `the connection got a GOAWAY(COMPRESSION_ERROR) (got ${String(res.goawayCode)})`)
  t.equal(res.streams[0].status, undefined, 'no response')

  const now = await resetsSettled(gw, { metric: 1, audited: 1, logged: 1 }, 200, 100)
  t.equal(now.metric, 1, 'refusals{reason="protocol_reset"} is 1')
  t.equal(now.audited, 1, 'audited with count 1')
  t.equal(now.logged, 1, 'logged')
  t.match(refusalRecords(gw, PROTOCOL_RESET), [{ event: 'refusal', status: 400, reason: PROTOCOL_RESET, count: 1, clientIp: '127.0.0.1' }], 'one refusal record')
  t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')

  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), 15000) })
  const outcome = await Promise.race([gw.gateway.close().then(() => 'closed' as const), bound])
  clearTimeout(timer)
  t.equal(outcome, 'closed', 'the gateway closes: no session holds it open')
})

t.test('more than 128 header fields: 431 over HTTP/1.1 too (Node would drop fields past its count without a word)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const filler = (n: number): string => Array.from({ length: n }, (_, i) => `x${i}: y\r\n`).join('')
  const rows: Array<{ name: string, fields: number, status: number }> = [
    { name: '100 extra fields', fields: 100, status: 200 },
    { name: '130 extra fields', fields: 130, status: 431 },
    { name: '2100 tiny fields (past Node\'s 2000)', fields: 2100, status: 431 }
  ]
  for (const row of rows) {
    const before = nas.requests.length
    const res = await rawTls(gw, `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${gw.token()}\r\n${filler(row.fields)}Connection: close\r\n\r\n`)
    const answer = parseRaw(res.text)
    t.equal(answer.status, row.status, `${row.name}: ${row.status}`)
    if (row.status === 431) {
      t.equal(answer.json?.error, 'NASGUARD_ERR_HEADERS_TOO_LARGE', `${row.name}: HEADERS_TOO_LARGE`)
      t.equal(nas.requests.length, before, `${row.name}: nothing reached the NAS`)
    }
  }
})
