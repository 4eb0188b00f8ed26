// One retry on a NAS connection reset (src/proxy/upstream.ts, retriesCount 1
// with retryDelay): a GET or HEAD whose NAS connection is reset before the
// NAS answered is sent once more; a second reset is 502 UPSTREAM_UNREACHABLE.
// Once the NAS has answered nothing is retried (a reset mid-body cuts the
// response), and a request whose client has gone is never sent again.
import t, { type Test } from 'tap'
import { request as httpsRequest } from 'node:https'
import { connect as http2Connect, constants as h2c, type IncomingHttpHeaders } from 'node:http2'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { readFileSync } from 'node:fs'
import { RECORDING, bearer, requestOptions, scrape, serveRecording, startStubNas, startTestGateway, testCerts, type NasHandler, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const SLOW = { tries: 400, intervalMs: 50 }
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

type Rec = Record<string, unknown>

function errorCode (body: Buffer): string {
  return (JSON.parse(body.toString()) as { error: string }).error
}

async function upstreamErrors (gw: TestGateway, kind: string): Promise<number> {
  return (await scrape(gw.adminUrl)).get(`nasguard_upstream_errors_total{kind="${kind}"}`) ?? 0
}

/** The access and completion records of one request, once the completion is written. */
async function recordsOf (gw: TestGateway, requestId: unknown): Promise<{ access: Rec[], fetch: Rec[] }> {
  if (typeof requestId !== 'string') throw new Error('no x-request-id on the response')
  return await waitFor(`the completion record of ${requestId}`, () => {
    const rs = gw.auditRecords().filter((r) => r.requestId === requestId)
    const fetch = rs.filter((r) => r.event === 'fetch')
    return fetch.length > 0 ? { access: rs.filter((r) => r.event === 'access'), fetch } : undefined
  }, SLOW)
}

/** The NAS resets the connection of its first `resets` requests without answering, then serves. */
function resetFirst (resets: number): NasHandler {
  let n = 0
  return (req, res) => {
    if (n++ < resets) { req.socket.destroy(); return }
    serveRecording(req, res)
  }
}

// ---------------------------------------------------------------------------
// A download whose first body bytes can be waited on, and whose cut is seen.

interface Ended {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  complete: boolean
  error?: NodeJS.ErrnoException
  /** HTTP/2: the stream's RST_STREAM code. */
  rstCode?: number
}

interface Download { firstData: Promise<void>, done: Promise<Ended>, abort: () => void }

function download (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string>): Download {
  let gotData!: () => void
  const firstData = new Promise<void>((resolve) => { gotData = resolve })
  let resolveDone!: (e: Ended) => void
  const done = new Promise<Ended>((resolve) => { resolveDone = resolve })
  const chunks: Buffer[] = []
  let status = 0
  let responseHeaders: IncomingHttpHeaders = {}
  let error: NodeJS.ErrnoException | undefined
  const onData = (c: Buffer): void => { chunks.push(c); gotData() }

  if (proto === 'h1') {
    const req = httpsRequest(requestOptions(gw, path, { headers }), (res: IncomingMessage) => {
      status = res.statusCode ?? 0
      responseHeaders = res.headers
      res.on('data', onData)
      res.on('error', (err) => { error ??= err })
      res.on('close', () => resolveDone({ status, headers: responseHeaders, body: Buffer.concat(chunks), complete: res.complete, error }))
    })
    req.on('error', (err) => {
      error ??= err
      if (status === 0) resolveDone({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error })
    })
    req.end()
    return { firstData, done, abort: () => { req.destroy() } }
  }

  const session = http2Connect(`https://localhost:${gw.port}`, { ca: CA })
  session.on('error', (err) => { error ??= err })
  const stream = session.request({ ':method': 'GET', ':path': path, ...headers })
  let ended = false
  stream.on('response', (h) => {
    status = Number(h[':status'])
    responseHeaders = Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith(':'))) as IncomingHttpHeaders
  })
  stream.on('data', onData)
  stream.on('end', () => { ended = true })
  stream.on('error', (err) => { error ??= err })
  stream.on('close', () => {
    session.close()
    resolveDone({ status, headers: responseHeaders, body: Buffer.concat(chunks), complete: ended && stream.rstCode === h2c.NGHTTP2_NO_ERROR && error === undefined, error, rstCode: stream.rstCode })
  })
  stream.end()
  return {
    firstData,
    done,
    abort: () => {
      if (!stream.destroyed) stream.close(h2c.NGHTTP2_CANCEL)
      session.close()
    }
  }
}

// ---------------------------------------------------------------------------

for (const proto of PROTOCOLS) {
  t.test(`${proto}: a NAS connection reset before the answer is retried once, and the client gets the whole recording`, async (t) => {
    const nas = await startStubNas(t, resetFirst(1))
    const gw = await startTestGateway(t, nas)
    const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(res.status, 200, 'served after the retry')
    t.ok(res.body.equals(RECORDING), `the whole recording (${res.body.length} of ${RECORDING.length} bytes)`)
    t.equal(nas.requests.length, 2, 'the NAS saw the request twice: the reset one and the retry')
    t.same(nas.requests.map((r) => r.url), [PATH, PATH], 'the same path both times')
    t.equal(nas.requests[0].headers['x-request-id'], nas.requests[1].headers['x-request-id'], 'the same request, sent again')
    t.notOk(nas.requests[1].headers.authorization, 'the retry forwards no client Authorization either')
    const { access, fetch } = await recordsOf(gw, res.headers['x-request-id'])
    t.equal(access.length, 1, 'one access record: the retry is not a second access')
    t.equal(fetch.length, 1, 'one completion record')
    t.match(fetch[0], { outcome: 'complete', status: 200, bytes: RECORDING.length })
    t.equal(await upstreamErrors(gw, 'unreachable'), 0, 'a reset that was retried successfully is no NAS error')
  })

  t.test(`${proto}: a NAS that resets twice: 502 UPSTREAM_UNREACHABLE after exactly one retry`, async (t) => {
    const nas = await startStubNas(t, (req) => { req.socket.destroy() })
    const gw = await startTestGateway(t, nas)
    const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(res.status, 502)
    t.equal(errorCode(res.body), 'NASGUARD_ERR_UPSTREAM_UNREACHABLE')
    t.equal(nas.requests.length, 2, 'the NAS was asked exactly twice')
    const { access, fetch } = await recordsOf(gw, res.headers['x-request-id'])
    t.equal(access.length, 1)
    t.equal(fetch.length, 1)
    t.match(fetch[0], { outcome: 'upstream-error', status: 502 })
    t.equal(await upstreamErrors(gw, 'unreachable'), 1, 'one NAS error counted, not one per attempt')

    // The NAS recovers: the gateway serves, asking it once.
    nas.handle(serveRecording)
    const ok = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(ok.status, 200)
    t.equal(nas.requests.length, 3, 'a good request reaches the NAS once')
  })

  t.test(`${proto}: a NAS that resets after it answered is not retried: the client sees a cut, the audit says upstream-error`, async (t) => {
    let cut: () => void = () => {}
    const nas = await startStubNas(t, (req, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': RECORDING.length })
      res.write(RECORDING.subarray(0, 1000))
      // Reset only once the client holds some of the body: the headers are out.
      cut = () => { req.socket.destroy() }
    })
    const gw = await startTestGateway(t, nas)
    const d = download(proto, gw, PATH, bearer(gw.token()))
    await d.firstData
    cut()
    const res = await d.done
    t.equal(res.status, 200, 'the headers had gone out')
    t.equal(res.complete, false, 'the client sees the response cut, not ended')
    t.ok(res.body.length < RECORDING.length, `short of the declared length (${res.body.length} of ${RECORDING.length})`)
    t.ok(res.body.equals(RECORDING.subarray(0, res.body.length)), 'what arrived is the start of the recording, nothing else')
    if (proto === 'h1') {
      t.equal(res.headers['content-length'], String(RECORDING.length), 'the declared length')
      t.ok(res.error !== undefined, `the connection closed early (${res.error?.code ?? res.error?.message ?? ''})`)
    } else {
      t.equal(res.rstCode, h2c.NGHTTP2_INTERNAL_ERROR, 'the stream is reset with INTERNAL_ERROR')
      t.equal(res.error?.code, 'ERR_HTTP2_STREAM_ERROR', 'a stream error')
    }
    const { access, fetch } = await recordsOf(gw, res.headers['x-request-id'])
    t.equal(access.length, 1)
    t.equal(fetch.length, 1)
    t.match(fetch[0], { outcome: 'upstream-error', status: 200 })
    t.ok((fetch[0].bytes as number) <= 1000, 'bytes counts at most what the NAS sent')
    t.equal(nas.requests.length, 1, 'no retry once the NAS had answered')
    t.equal(await upstreamErrors(gw, 'body'), 1, 'counted as a body error')
  })

  t.test(`${proto}: a client that leaves before the NAS answers is not retried`, async (t) => {
    let reached: () => void = () => {}
    const atNas = new Promise<void>((resolve) => { reached = resolve })
    let nasSawClose: () => void = () => {}
    const closed = new Promise<void>((resolve) => { nasSawClose = resolve })
    const pending: ServerResponse[] = []
    const nas = await startStubNas(t, (req, res) => {
      // Never answers: only the gateway's cancel ends it.
      pending.push(res)
      req.socket.once('close', () => nasSawClose())
      reached()
    })
    t.teardown(() => { for (const r of pending) r.destroy() })
    const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 60000 } })
    const d = download(proto, gw, '/medicall/left.wav', bearer(gw.token()))
    await atNas
    d.abort()
    const fetch = await waitFor('the completion record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.path === '/medicall/left.wav'), SLOW)
    t.equal(fetch.outcome, 'client-aborted')
    // The gateway cancels the NAS request: its NAS connection closes (bounded
    // generously, far below upstream.timeoutMs, which would end it anyway).
    const cancelled = await Promise.race([closed.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 10000))])
    t.ok(cancelled, 'the gateway cancelled the NAS request of the client that left')
    // A NAS that resets that connection now (shedding load) must not get
    // the departed client's request again. Once cancelled, this is a no-op.
    for (const r of pending) r.socket?.destroy()
    await closed

    // Another request goes through the gateway and the NAS afterwards: a
    // retry of the departed one would have reached the NAS by then.
    nas.handle(serveRecording)
    const ok = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(ok.status, 200)
    t.same(nas.requests.map((r) => r.url), ['/medicall/left.wav', PATH], 'the request of the client that left reached the NAS once, and was not sent again')
    t.equal(gw.auditRecords().filter((r) => r.event === 'access' && r.path === '/medicall/left.wav').length, 1)
  })
}

t.test('a HEAD whose NAS connection is reset before the answer is retried too', async (t: Test) => {
  const nas: StubNas = await startStubNas(t, resetFirst(1))
  const gw = await startTestGateway(t, nas)
  for (const proto of PROTOCOLS) {
    nas.handle(resetFirst(1))
    const before = nas.requests.length
    const res = await fetchAs(proto, gw, PATH, bearer(gw.token()), 'HEAD')
    t.equal(res.status, 200, `${proto}: HEAD served after the retry`)
    t.equal(res.headers['content-length'], String(RECORDING.length), `${proto}: with the recording's length`)
    t.equal(nas.requests.length - before, 2, `${proto}: the NAS saw the HEAD twice`)
    t.ok(nas.requests.slice(before).every((r) => r.method === 'HEAD'), `${proto}: both were HEADs`)
  }
})
