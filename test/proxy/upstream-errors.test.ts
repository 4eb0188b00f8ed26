// When the NAS fails, the client gets a gateway error in the gateway's own
// shape (never the NAS's page), the NAS is asked once (a reset before it
// answered is asked twice: test/proxy/retry.test.ts), and the gateway keeps
// serving.
import t, { type Test } from 'tap'
import { freePort } from '../helpers/process.js'
import { RECORDING, bearer, get, serveRecording, scrape, startStubNas, startTestGateway, type NasHandler, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { H2_ERROR, baseHeaders, h2Raw } from '../helpers/h2-raw.js'
import { getLoose, waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

function errorCode (body: Buffer): string {
  return (JSON.parse(body.toString()) as { error: string }).error
}

/** A following good request is served, and reaches the NAS exactly once more. */
async function stillServes (t: Test, gw: TestGateway, nas: StubNas): Promise<void> {
  nas.handle(serveRecording)
  const before = nas.requests.length
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200, 'the gateway keeps serving')
  t.ok(res.body.equals(RECORDING), 'and the body is whole')
  t.equal(nas.requests.length, before + 1)
}

t.test('NAS unreachable (nothing listens on its port): 502 UPSTREAM_UNREACHABLE', async (t) => {
  // A port nothing listens on: connecting to it is refused.
  const port = await freePort()

  const gw = await startTestGateway(t, { url: `http://127.0.0.1:${port}` })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_UNREACHABLE')

  // The NAS comes back on the same port: the gateway serves again.
  const nas = await startStubNasOn(t, port)
  await stillServes(t, gw, nas)
})

t.test('NAS that never sends headers: 504 UPSTREAM_TIMEOUT', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 300 } })
  nas.handle(() => { /* never answer */ })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 504)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_TIMEOUT')
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  await stillServes(t, gw, nas)
})

t.test('NAS 500: 502 UPSTREAM_ERROR, NAS body not passed', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => { res.writeHead(500, { 'content-type': 'text/html' }); res.end('<h1>NAS-INTERNAL-TRACE</h1>') })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_ERROR')
  t.notOk(res.body.toString().includes('NAS-INTERNAL-TRACE'))
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  await stillServes(t, gw, nas)
})

t.test('NAS 503 with Retry-After: 502, and still asked only once', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => { res.writeHead(503, { 'retry-after': '0', 'content-type': 'text/plain' }); res.end('busy') })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_ERROR')
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  await stillServes(t, gw, nas)
})

t.test('NAS 404: 404 NOT_FOUND, NAS body not passed', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => { res.writeHead(404, { 'content-type': 'text/html', 'content-length': 24 }); res.end('<p>NAS-404-PAGE-XYZ</p>\n') })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 404)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_NOT_FOUND')
  t.notOk(res.body.toString().includes('NAS-404-PAGE-XYZ'), 'the NAS page is not passed on')
  t.equal(nas.requests.length, 1)
  await stillServes(t, gw, nas)
})

t.test('NAS 401 (gateway credentials wrong): 502 UPSTREAM_ERROR', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => { res.writeHead(401, { 'www-authenticate': 'Basic realm="NAS"', 'content-type': 'text/plain' }); res.end('NAS-LOGIN') })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_ERROR')
  t.equal(res.headers['www-authenticate'], undefined, 'the NAS challenge is not passed on')
  t.notOk(res.body.toString().includes('NAS-LOGIN'))
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  await stillServes(t, gw, nas)
})

t.test('NAS that resets the connection before answering, twice: 502 UNREACHABLE, asked twice', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((req) => { req.socket.destroy() })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_UNREACHABLE')
  t.equal(nas.requests.length, 2, 'asked once more after the reset, then given up')
  await stillServes(t, gw, nas)
})

t.test('NAS that dies mid-body: the client sees a cut response, audit says upstream-error', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 100000 })
    res.write(Buffer.alloc(1000, 1), () => { req.socket.destroy() })
  })
  const res = await getLoose(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200, 'the headers had already gone out')
  t.equal(res.headers['content-length'], '100000')
  t.equal(res.complete, false, 'the response is incomplete')
  t.ok(res.body.length < 100000, `the client got fewer bytes than announced (${res.body.length})`)
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  const requestId = res.headers['x-request-id']
  t.type(requestId, 'string')
  const fetch = await waitFor('the fetch audit record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.outcome, 'upstream-error')
  t.equal(fetch.status, 200)
  t.ok((fetch.bytes as number) <= 1000, 'bytes counts at most what the NAS sent')
  await stillServes(t, gw, nas)
})

t.test('NAS that dies mid-body on a chunked response: the client still sees it cut, not ended', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((req, res) => {
    // No content-length: the client can only tell a cut from an end by the
    // gateway not sending the last chunk.
    res.writeHead(200, { 'content-type': 'audio/wav' })
    res.write(Buffer.alloc(1000, 1), () => { req.socket.destroy() })
  })
  const res = await getLoose(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.equal(res.headers['content-length'], undefined)
  t.equal(res.complete, false, 'the response is not terminated as if it were whole')
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  const requestId = res.headers['x-request-id']
  const fetch = await waitFor('the fetch audit record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.outcome, 'upstream-error')
  await stillServes(t, gw, nas)
})

t.test('NAS that stalls mid-body past timeoutMs: cut response, audit upstream-error, counted as a timeout', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 300 } })
  nas.handle((_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 100000 })
    res.write(Buffer.alloc(1000, 1))
    // ...and nothing more.
  })
  const before = await scrape(gw.adminUrl)
  const res = await getLoose(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.equal(res.complete, false, 'the response is incomplete')
  t.equal(nas.requests.length, 1, 'asked once, not retried')
  const requestId = res.headers['x-request-id']
  const fetch = await waitFor('the fetch audit record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.outcome, 'upstream-error')
  const after = await scrape(gw.adminUrl)
  const key = 'nasguard_upstream_errors_total{kind="timeout"}'
  t.equal((after.get(key) ?? 0) - (before.get(key) ?? 0), 1, 'one NAS timeout counted')
  await stillServes(t, gw, nas)
})

/** A stub NAS on a given port (the one the gateway was pointed at). */
async function startStubNasOn (t: { teardown: (fn: () => unknown) => void }, port: number): Promise<StubNas> {
  const nas = await startStubNas(t)
  await new Promise<void>((resolve) => nas.server.close(() => resolve()))
  await new Promise<void>((resolve, reject) => {
    nas.server.once('error', reject)
    nas.server.listen(port, '127.0.0.1', () => { nas.server.removeListener('error', reject); resolve() })
  })
  return { ...nas, port, url: `http://127.0.0.1:${port}` }
}

t.test('NAS that stalls after its headers: 504 UPSTREAM_TIMEOUT, counted as a timeout, not logged as a bug (h1 and h2)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 300 } })
  nas.handle((_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 100000 })
    res.flushHeaders()
    // ...and no byte of the body.
  })
  for (const proto of PROTOCOLS) {
    const before = await scrape(gw.adminUrl)
    const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(res.status, 504, `${proto}: 504`)
    t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_TIMEOUT', `${proto}: UPSTREAM_TIMEOUT`)
    const after = await scrape(gw.adminUrl)
    const key = 'nasguard_upstream_errors_total{kind="timeout"}'
    t.equal((after.get(key) ?? 0) - (before.get(key) ?? 0), 1, `${proto}: counted as a timeout`)
    const fetch = await waitFor('the fetch audit record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === res.headers['x-request-id']))
    t.match(fetch, { status: 504, outcome: 'upstream-error' }, `${proto}: audited`)
  }
  t.notOk(gw.logs.some((l) => l.includes('unexpected error')), 'no "unexpected error" (bug) log line')
})

t.test('over HTTP/2 a stream the NAS fails mid-body is reset with INTERNAL_ERROR, not NO_ERROR', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 300 } })
  const cases: Array<[string, NasHandler]> = [
    ['the NAS dies', (req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 100000 })
      res.write(Buffer.alloc(1000, 1), () => { req.socket.destroy() })
    }],
    ['the NAS stalls', (_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 100000 })
      res.write(Buffer.alloc(1000, 1))
    }]
  ]
  for (const [what, handler] of cases) {
    nas.handle(handler)
    const res = await h2Raw(gw, [{ headers: baseHeaders(PATH, [['authorization', `Bearer ${gw.token()}`]]) }])
    const s = res.streams[0]
    t.equal(s.status, 200, `${what}: the headers had gone out`)
    t.ok(s.body.length < 100000, `${what}: a short body (${s.body.length})`)
    t.equal(s.rstCode, H2_ERROR.INTERNAL_ERROR, `${what}: RST_STREAM INTERNAL_ERROR (got ${String(s.rstCode)})`)
  }
})
