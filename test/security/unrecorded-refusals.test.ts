// Refusals that happen below the gateway's routes (Node's HTTP/1.1 parser,
// its CONNECT event, nghttp2's stream resets and GOAWAYs) used to leave no
// trace. Each is now answered (where the protocol allows), counted in
// nasguard_refusals_total, logged and audited as a refusal, and never
// reaches the NAS; a token carried by such a request is written nowhere.
import t from 'tap'
import { rawTls, scrape, startStubNas, startTestGateway, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { H2_ERROR, baseHeaders, h2Raw, type H2StreamRequest, type RawHeader } from '../helpers/h2-raw.js'
import { parseRaw } from '../helpers/raw-http.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const PROTOCOL_RESET = 'NASGUARD_ERR_PROTOCOL_RESET'
const RESET_LOG = 'HTTP/2 streams reset by the protocol layer'

type Record = { [k: string]: unknown }

/** The refusal counter for `reason`, whatever its class label. */
async function refusals (gw: TestGateway, reason: string): Promise<number> {
  const metrics = await scrape(gw.adminUrl)
  for (const [k, v] of metrics) {
    if (k.startsWith('nasguard_refusals_total{') && k.includes(`reason="${reason}"`)) return v
  }
  return 0
}

function refusalRecords (gw: TestGateway, reason: string): Record[] {
  return gw.auditRecords().filter((r) => r.event === 'refusal' && r.reason === reason)
}

function parsedLogs (gw: TestGateway): Record[] {
  return gw.logs.map((l) => JSON.parse(l) as Record)
}

function resetLogLines (gw: TestGateway): Record[] {
  return parsedLogs(gw).filter((l) => typeof l.msg === 'string' && l.msg.startsWith(RESET_LOG))
}

function sumCounts (records: Record[]): number {
  return records.reduce((n, r) => n + Number(r.count ?? 0), 0)
}

/** Polls until the protocol_reset counter, the audit records' counts and the log lines reach their targets. */
async function resetsSettled (gw: TestGateway, metric: number, audited: number, logLines: number): Promise<void> {
  await waitFor(`protocol_reset refusals to reach ${metric} (audited ${audited}, ${logLines} log lines)`, async () => {
    const m = await refusals(gw, 'protocol_reset')
    const a = sumCounts(refusalRecords(gw, PROTOCOL_RESET))
    const l = resetLogLines(gw).length
    return m >= metric && a >= audited && l >= logLines ? true : undefined
  }, { tries: 200, intervalMs: 50 })
}

function authorized (gw: TestGateway, extra: RawHeader[] = []): RawHeader[] {
  return baseHeaders(PATH, [['authorization', `Bearer ${gw.token()}`], ...extra])
}

t.test('HTTP/1.1 headers over 16 KiB: 431, closed, counted, logged and audited without the token', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  // A real, signed token, inflated past Node's header limit by a large claim.
  const token = gw.token({ pad: 'p'.repeat(48 * 1024) })
  t.ok(token.length > 64 * 1024, `the token is over 64 KB (${token.length} bytes)`)
  const signature = token.slice(token.lastIndexOf('.') + 1)
  const tokenMiddle = token.slice(32 * 1024, 32 * 1024 + 64)
  const before = await refusals(gw, 'headers_too_large')

  const payload = `GET ${PATH}?grant=abc HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
  const res = await rawTls(gw, payload, { untilClose: true })
  const answer = parseRaw(res.text)
  t.equal(answer.status, 431, `answered 431 (got ${JSON.stringify(res.text.slice(0, 60))})`)
  t.equal(answer.json?.error, 'NASGUARD_ERR_HEADERS_TOO_LARGE')
  t.equal(res.closed, true, 'the connection was closed')
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')

  await waitFor('the headers_too_large refusal to be counted', async () => (await refusals(gw, 'headers_too_large')) === before + 1 ? true : undefined)
  t.equal(await refusals(gw, 'headers_too_large'), before + 1, 'refusals{reason="headers_too_large"} +1')
  const metrics = await scrape(gw.adminUrl)
  t.ok([...metrics.keys()].some((k) => k.startsWith('nasguard_refusals_total{') && k.includes('reason="headers_too_large"') && k.includes('class="smuggling"')), 'counted in the smuggling class')

  const line = await waitFor('the log line', () => gw.logs.find((l) => (JSON.parse(l) as Record).msg === 'request headers too large: refused'))
  t.notOk(line.includes(signature) || line.includes(tokenMiddle), 'the log line holds no part of the token')
  t.notOk(gw.logs.some((l) => l.includes(signature) || l.includes(tokenMiddle)), 'no log line holds any part of the token')

  const record = await waitFor('the refusal record', () => refusalRecords(gw, 'NASGUARD_ERR_HEADERS_TOO_LARGE')[0])
  t.match(record, { event: 'refusal', status: 431, reason: 'NASGUARD_ERR_HEADERS_TOO_LARGE', method: 'GET', path: PATH }, 'audited with the request line')
  t.equal(record.path, PATH, 'the audited path has no query')
  const trail = JSON.stringify(gw.auditRecords())
  t.notOk(trail.includes('grant=abc') || trail.includes('?grant'), 'the query is in no audit record')
  t.notOk(trail.includes(signature) || trail.includes(tokenMiddle), 'no part of the token is in the audit trail')
  t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')
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
    const metricBefore = await refusals(gw, 'protocol_reset')
    const auditedBefore = sumCounts(refusalRecords(gw, PROTOCOL_RESET))
    const logsBefore = resetLogLines(gw).length
    const res = await h2Raw(gw, [{ headers: row.headers(gw) }])
    const s = res.streams[0]
    t.equal(s.rstCode, row.rst, `${row.name}: RST_STREAM ${row.rst} (got ${String(s.rstCode)}, status ${String(s.status)}, goaway ${String(res.goawayCode)})`)
    t.equal(s.status, undefined, `${row.name}: no response headers`)
    t.equal(nas.requests.length, 0, `${row.name}: nothing reached the NAS`)

    // Counted when the connection closes; h2Raw has closed it.
    await resetsSettled(gw, metricBefore + 1, auditedBefore + 1, logsBefore + 1)
    t.equal(await refusals(gw, 'protocol_reset'), metricBefore + 1, `${row.name}: refusals{reason="protocol_reset"} +1`)
    t.equal(sumCounts(refusalRecords(gw, PROTOCOL_RESET)), auditedBefore + 1, `${row.name}: audited with count 1`)
    const line = resetLogLines(gw)[logsBefore]
    t.equal(line.level, 40, `${row.name}: logged as a warning`)
    t.equal(line.streams, 1, `${row.name}: the log line names one stream`)
  }

  const records = refusalRecords(gw, PROTOCOL_RESET)
  t.equal(records.length, RESET_ROWS.length, 'one audit record per connection')
  for (const r of records) t.match(r, { event: 'refusal', status: 400, reason: PROTOCOL_RESET, count: 1, clientIp: '127.0.0.1' })
  t.equal(await refusals(gw, 'protocol_reset'), RESET_ROWS.length, 'the counter matches the number of reset streams')
  t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')
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

  await resetsSettled(gw, 3, 3, 1)
  t.equal(await refusals(gw, 'protocol_reset'), 3, 'exactly 3 streams counted')
  const records = refusalRecords(gw, PROTOCOL_RESET)
  t.equal(sumCounts(records), 3, `the records count 3 streams (${records.map((r) => String(r.count)).join(' + ')})`)
  t.equal(resetLogLines(gw).reduce((n, l) => n + Number(l.streams), 0), 3, 'the log lines name 3 streams')
})

t.test('HTTP/2: a 64 KB header block gets a GOAWAY; the stuck session is found, counted and closed', async (t) => {
  const nas: StubNas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { keepAliveTimeoutMs: 100 } })
  const res = await h2Raw(gw, [{ headers: authorized(gw, [['x-big', 'b'.repeat(64 * 1024)]]) }])
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')
  t.not(res.goawayCode, undefined, 'the connection got a GOAWAY')
  t.not(res.goawayCode, H2_ERROR.NO_ERROR, `the GOAWAY carries an error (got ${String(res.goawayCode)})`)
  t.equal(res.streams[0].status, undefined, 'no response')

  await waitFor('the stuck session to be counted and audited', async () => {
    const m = await refusals(gw, 'protocol_reset')
    return m >= 1 && refusalRecords(gw, PROTOCOL_RESET).length >= 1 ? true : undefined
  }, { tries: 200, intervalMs: 100 })
  t.equal(await refusals(gw, 'protocol_reset'), 1, 'refusals{reason="protocol_reset"} is 1')
  t.match(refusalRecords(gw, PROTOCOL_RESET), [{ event: 'refusal', status: 400, reason: PROTOCOL_RESET, count: 1 }], 'audited once, count 1')
  t.ok(resetLogLines(gw).length >= 1, 'logged')
  t.equal(nas.requests.length, 0, 'the NAS has still seen nothing')

  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), 15000) })
  const outcome = await Promise.race([gw.gateway.close().then(() => 'closed' as const), bound])
  clearTimeout(timer)
  t.equal(outcome, 'closed', 'the gateway closes: no session holds it open')
})
