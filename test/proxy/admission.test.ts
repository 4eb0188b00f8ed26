// Admission of downloads to the NAS (src/proxy/admission.ts): the gateway
// holds at most upstream.connections NAS connections; a download that finds
// none free waits (FIFO) for at most upstream.queueTimeoutMs, then gets 503
// UPSTREAM_BUSY with Retry-After, and a client that leaves while it waits
// gives up its place. A client address has at most limits.clientFetches
// downloads in flight (429 CLIENT_BUSY with Retry-After). A refused request
// never reaches the NAS, leaves an audit refusal record and is counted; every
// admitted one still gets exactly one completion record, and no slot leaks.
import t, { type Test } from 'tap'
import { request as httpsRequest } from 'node:https'
import { connect as http2Connect, constants as h2c, type IncomingHttpHeaders } from 'node:http2'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { readFileSync } from 'node:fs'
import { RECORDING, bearer, requestOptions, scrape, serveRecording, startStubNas, startTestGateway, testCerts, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
/** Polling bounds for conditions nothing emits: 20 s, for a slow machine. */
const SLOW = { tries: 400, intervalMs: 50 }
/** Bytes of a held response sent before the NAS pauses. */
const HEAD_START = 1024

type Rec = Record<string, unknown>

// ---------------------------------------------------------------------------
// A download that can be watched: its head, its first body bytes, its end.

interface Ended {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** The whole body arrived and the response ended cleanly. */
  complete: boolean
  error?: Error
}

interface Download {
  /** The response head (rejects when the request failed before one arrived). */
  head: Promise<{ status: number, headers: IncomingHttpHeaders }>
  /** The response is over, however it ended (never rejects). */
  done: Promise<Ended>
  /** The client goes away (h1: destroys the connection; h2: cancels the stream and closes the session). */
  abort: () => void
}

interface DownloadOpts { method?: string, localAddress?: string }

function download (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string>, opts: DownloadOpts = {}): Download {
  const method = opts.method ?? 'GET'
  let resolveHead!: (h: { status: number, headers: IncomingHttpHeaders }) => void
  let rejectHead!: (err: Error) => void
  const head = new Promise<{ status: number, headers: IncomingHttpHeaders }>((resolve, reject) => { resolveHead = resolve; rejectHead = reject })
  head.catch(() => {})
  let resolveDone!: (e: Ended) => void
  const done = new Promise<Ended>((resolve) => { resolveDone = resolve })
  const chunks: Buffer[] = []
  let status = 0
  let responseHeaders: IncomingHttpHeaders = {}
  let error: Error | undefined

  if (proto === 'h1') {
    const req = httpsRequest({ ...requestOptions(gw, path, { headers, method }), ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) }, (res: IncomingMessage) => {
      status = res.statusCode ?? 0
      responseHeaders = res.headers
      resolveHead({ status, headers: res.headers })
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', (err) => { error = err })
      res.on('close', () => resolveDone({ status, headers: responseHeaders, body: Buffer.concat(chunks), complete: res.complete && error === undefined, error }))
    })
    req.on('error', (err) => {
      error ??= err
      rejectHead(err)
      if (status === 0) resolveDone({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: err })
    })
    req.end()
    return { head, done, abort: () => { req.destroy() } }
  }

  const session = http2Connect(`https://127.0.0.1:${gw.port}`, { ca: CA, servername: 'localhost', ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) })
  session.on('error', (err) => { error ??= err; rejectHead(err) })
  const stream = session.request({ ':method': method, ':path': path, ...headers })
  let ended = false
  stream.on('response', (h) => {
    status = Number(h[':status'])
    responseHeaders = Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith(':'))) as IncomingHttpHeaders
    resolveHead({ status, headers: responseHeaders })
  })
  stream.on('data', (c: Buffer) => chunks.push(c))
  stream.on('end', () => { ended = true })
  stream.on('error', (err) => { error ??= err; rejectHead(err) })
  stream.on('close', () => {
    const clean = ended && stream.rstCode === h2c.NGHTTP2_NO_ERROR && error === undefined
    if (status === 0) rejectHead(error ?? new Error(`stream closed before a response (rstCode ${String(stream.rstCode)})`))
    session.close()
    resolveDone({ status, headers: responseHeaders, body: Buffer.concat(chunks), complete: clean, error })
  })
  stream.end()
  return {
    head,
    done,
    abort: () => {
      if (!stream.destroyed) stream.close(h2c.NGHTTP2_CANCEL)
      session.close()
    }
  }
}

/** One whole request, as download() but awaited to its end. */
async function fetchOnce (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string>, opts: DownloadOpts = {}): Promise<Ended> {
  return await download(proto, gw, path, headers, opts).done
}

// ---------------------------------------------------------------------------
// A NAS that holds the responses of /medicall/hold-* open until the test
// releases them: a GET gets its headers and HEAD_START bytes, then waits; a
// HEAD gets no answer at all until released. Anything else is served at once.

interface HoldingNas extends StubNas {
  /** Ends the held response for this path (sends the rest of the recording). */
  release: (path: string) => void
  /** Paths the NAS is holding right now. */
  held: () => string[]
}

async function startHoldingNas (t: Test): Promise<HoldingNas> {
  const holds = new Map<string, { res: ServerResponse, finish: () => void }>()
  const nas = await startStubNas(t, (req, res) => {
    const url = req.url ?? ''
    if (!url.startsWith('/medicall/hold-')) { serveRecording(req, res); return }
    if (req.method === 'HEAD') {
      holds.set(url, { res, finish: () => serveRecording(req, res) })
      return
    }
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': RECORDING.length })
    res.write(RECORDING.subarray(0, HEAD_START))
    holds.set(url, { res, finish: () => res.end(RECORDING.subarray(HEAD_START)) })
  })
  t.teardown(() => { for (const h of holds.values()) h.res.destroy() })
  return {
    ...nas,
    release: (path) => {
      const h = holds.get(path)
      if (!h) throw new Error(`the NAS holds no response for ${path}`)
      holds.delete(path)
      h.finish()
    },
    held: () => [...holds.keys()]
  }
}

/** A gateway whose NAS timeouts and keep-alives outlast the test (held responses must not be cut by them). */
async function gatewayFor (t: Test, nas: StubNas, upstream: Record<string, unknown>, limits: Record<string, unknown> = {}): Promise<TestGateway> {
  return await startTestGateway(t, nas, {
    upstream: { timeoutMs: 60000, ...upstream },
    limits: { keepAliveTimeoutMs: 60000, headersTimeoutMs: 60000, drainTimeoutMs: 500, ...limits }
  })
}

// ---------------------------------------------------------------------------

function errorCode (body: Buffer): string {
  return (JSON.parse(body.toString()) as { error: string }).error
}

async function gauge (gw: TestGateway, name: string): Promise<number | undefined> {
  return (await scrape(gw.adminUrl)).get(name)
}

async function gaugeReaches (gw: TestGateway, name: string, value: number): Promise<void> {
  await waitFor(`${name} = ${value}`, async () => ((await gauge(gw, name)) === value ? true : undefined), SLOW)
}

/** nasguard_refusals_total for `reason` (its class label must be capacity). */
async function refusals (gw: TestGateway, reason: string): Promise<number> {
  const metrics = await scrape(gw.adminUrl)
  for (const [k, v] of metrics) {
    if (k.startsWith('nasguard_refusals_total{') && k.includes(`reason="${reason}"`) && k.includes('class="capacity"')) return v
  }
  return 0
}

/** The NAS saw these paths, in any order, and no other. */
function nasSaw (t: Test, nas: StubNas, paths: string[], what: string): void {
  t.same(nas.requests.map((r) => r.url).sort(), [...paths].sort(), what)
}

/**
 * Every access record has exactly one completion record, no NAS connection
 * is held and no download waits: nothing leaked.
 */
async function settled (t: Test, gw: TestGateway, accesses: number): Promise<Rec[]> {
  await gaugeReaches(gw, 'nasguard_upstream_connections_in_use', 0)
  await gaugeReaches(gw, 'nasguard_upstream_queue', 0)
  const records = await waitFor('a completion record for every access record', () => {
    const rs = gw.auditRecords()
    const access = rs.filter((r) => r.event === 'access')
    const done = new Set(rs.filter((r) => r.event === 'fetch').map((r) => r.requestId))
    return access.length === accesses && access.every((r) => done.has(r.requestId)) ? rs : undefined
  }, SLOW)
  const access = records.filter((r) => r.event === 'access')
  const fetches = records.filter((r) => r.event === 'fetch')
  t.equal(access.length, accesses, `${accesses} access records`)
  t.equal(fetches.length, accesses, 'one completion record per access record, no more')
  t.equal(new Set(fetches.map((r) => r.requestId)).size, fetches.length, 'no request completed twice')
  t.equal(await gauge(gw, 'nasguard_upstream_connections_in_use'), 0, 'no NAS connection is left held')
  return records
}

/** Waits for the completion record of a response (written once its NAS connection and share are given back). */
async function completed (gw: TestGateway, d: Ended): Promise<Rec> {
  const id = d.headers['x-request-id']
  if (typeof id !== 'string') throw new Error('the response has no x-request-id')
  return await waitFor(`the completion record of ${id}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id), SLOW)
}

function refusalRecord (gw: TestGateway, requestId: unknown): Rec | undefined {
  return gw.auditRecords().find((r) => r.event === 'refusal' && r.requestId === requestId)
}

// ---------------------------------------------------------------------------

for (const proto of PROTOCOLS) {
  t.test(`${proto}: with every NAS connection busy past queueTimeoutMs, a download gets 503 UPSTREAM_BUSY and the NAS is not asked; a freed connection is used again`, async (t) => {
    const nas = await startHoldingNas(t)
    const gw = await gatewayFor(t, nas, { connections: 2, queueTimeoutMs: 500 })
    const auth = bearer(gw.token())

    const a = download(proto, gw, '/medicall/hold-a.wav', auth)
    const b = download(proto, gw, '/medicall/hold-b.wav', auth)
    t.equal((await a.head).status, 200, 'the first download is under way')
    t.equal((await b.head).status, 200, 'the second download is under way')
    t.equal(await gauge(gw, 'nasguard_upstream_connections_in_use'), 2, 'both NAS connections are in use')
    const busyBefore = await refusals(gw, 'upstream_busy')

    const c = await fetchOnce(proto, gw, '/medicall/refused-c.wav', auth)
    t.equal(c.status, 503, 'the third download is refused')
    t.equal(errorCode(c.body), 'NASGUARD_ERR_UPSTREAM_BUSY')
    t.equal(c.headers['retry-after'], '2', 'with Retry-After')
    nasSaw(t, nas, ['/medicall/hold-a.wav', '/medicall/hold-b.wav'], 'the NAS got exactly the two admitted requests')
    t.equal(await refusals(gw, 'upstream_busy'), busyBefore + 1, 'nasguard_refusals_total{reason="upstream_busy",class="capacity"} counted it')
    const refusal = await waitFor('the refusal record', () => refusalRecord(gw, c.headers['x-request-id']), SLOW)
    t.match(refusal, { event: 'refusal', reason: 'NASGUARD_ERR_UPSTREAM_BUSY', status: 503, path: '/medicall/refused-c.wav', clientIp: '127.0.0.1' }, 'audited as a refusal with the error code')
    t.notOk(gw.auditRecords().some((r) => r.event === 'access' && r.requestId === c.headers['x-request-id']), 'no access record for the refused download')
    t.equal(await gauge(gw, 'nasguard_upstream_queue'), 0, 'the refused download left the queue')

    // One held download ends: its connection comes back.
    nas.release('/medicall/hold-a.wav')
    const aDone = await a.done
    t.ok(aDone.complete && aDone.body.equals(RECORDING), 'the released download is whole')
    await gaugeReaches(gw, 'nasguard_upstream_connections_in_use', 1)
    const d = await fetchOnce(proto, gw, '/medicall/after-d.wav', auth)
    t.equal(d.status, 200, 'a new download is served on the connection that came free')
    t.ok(d.body.equals(RECORDING), 'whole')
    t.ok(nas.requests.some((r) => r.url === '/medicall/after-d.wav'), 'and it reached the NAS')
    t.notOk(nas.requests.some((r) => r.url === '/medicall/refused-c.wav'), 'the refused one never did')

    nas.release('/medicall/hold-b.wav')
    t.ok((await b.done).complete, 'the other held download ends whole too')
    await settled(t, gw, 3)
  })

  t.test(`${proto}: a download that waits for a NAS connection is served once one comes free within queueTimeoutMs, first come first served`, async (t) => {
    const nas = await startHoldingNas(t)
    const gw = await gatewayFor(t, nas, { connections: 2, queueTimeoutMs: 20000 })
    const auth = bearer(gw.token())

    const a = download(proto, gw, '/medicall/hold-a.wav', auth)
    const b = download(proto, gw, '/medicall/hold-b.wav', auth)
    await a.head
    await b.head
    const c = download(proto, gw, '/medicall/waiting-c.wav', auth)
    await gaugeReaches(gw, 'nasguard_upstream_queue', 1)
    t.pass('the queue gauge shows the waiting download')
    t.equal(await gauge(gw, 'nasguard_upstream_connections_in_use'), 2, 'both connections are in use')
    nasSaw(t, nas, ['/medicall/hold-a.wav', '/medicall/hold-b.wav'], 'the waiting download has not reached the NAS')
    t.notOk(gw.auditRecords().some((r) => r.event === 'access' && r.path === '/medicall/waiting-c.wav'), 'and has no access record yet')
    // A second waiter, behind the first.
    const e = download(proto, gw, '/medicall/waiting-e.wav', auth)
    await gaugeReaches(gw, 'nasguard_upstream_queue', 2)

    nas.release('/medicall/hold-a.wav')
    const cDone = await c.done
    t.equal(cDone.status, 200, 'the first waiter is served once a connection frees')
    t.ok(cDone.complete && cDone.body.equals(RECORDING), 'whole')
    t.equal(nas.requests[2]?.url, '/medicall/waiting-c.wav', 'the first waiter got the freed connection first')
    const eDone = await e.done
    t.equal(eDone.status, 200, 'the second waiter is served on the connection the first gave back')
    t.ok(eDone.complete && eDone.body.equals(RECORDING), 'whole')
    nasSaw(t, nas, ['/medicall/hold-a.wav', '/medicall/hold-b.wav', '/medicall/waiting-c.wav', '/medicall/waiting-e.wav'], 'each reached the NAS once')
    t.equal(await gauge(gw, 'nasguard_upstream_queue'), 0, 'nothing waits any more')
    t.ok((await a.done).complete, 'the released download ended whole')

    nas.release('/medicall/hold-b.wav')
    t.ok((await b.done).complete)
    t.equal(await refusals(gw, 'upstream_busy'), 0, 'nothing was refused')
    await settled(t, gw, 4)
  })

  t.test(`${proto}: a client that leaves while it waits gives up its place: the next waiter gets the freed connection, the NAS never sees the one that left`, async (t) => {
    const nas = await startHoldingNas(t)
    // A wait far longer than any bound below: a place that is not given up
    // when its client leaves must not be cleared by its timeout meanwhile.
    const gw = await gatewayFor(t, nas, { connections: 2, queueTimeoutMs: 120000 })
    const auth = bearer(gw.token())

    const a = download(proto, gw, '/medicall/hold-a.wav', auth)
    const b = download(proto, gw, '/medicall/hold-b.wav', auth)
    await a.head
    await b.head

    const gone = download(proto, gw, '/medicall/departed.wav', auth)
    await gaugeReaches(gw, 'nasguard_upstream_queue', 1)
    gone.abort()
    const goneEnd = await gone.done
    t.equal(goneEnd.status, 0, 'the departed client got no response')
    await gaugeReaches(gw, 'nasguard_upstream_queue', 0)
    t.pass('the queue is empty once it left')
    t.equal(await gauge(gw, 'nasguard_upstream_connections_in_use'), 2, 'it took no connection')

    const next = download(proto, gw, '/medicall/next.wav', auth)
    await gaugeReaches(gw, 'nasguard_upstream_queue', 1)
    nas.release('/medicall/hold-a.wav')
    const nextEnd = await next.done
    t.equal(nextEnd.status, 200, 'the next waiter gets the freed connection')
    t.ok(nextEnd.complete && nextEnd.body.equals(RECORDING), 'and its download is whole')
    t.notOk(nas.requests.some((r) => r.url === '/medicall/departed.wav'), 'the NAS never got the departed request')
    await a.done

    nas.release('/medicall/hold-b.wav')
    await completed(gw, await b.done)
    // Both connections are free: no phantom holder is left.
    const both = [download(proto, gw, '/medicall/hold-x.wav', auth), download(proto, gw, '/medicall/hold-y.wav', auth)]
    for (const d of both) t.equal((await d.head).status, 200, 'both connections can be taken again')
    t.equal(await gauge(gw, 'nasguard_upstream_queue'), 0, 'without waiting')
    nas.release('/medicall/hold-x.wav')
    nas.release('/medicall/hold-y.wav')
    for (const d of both) t.ok((await d.done).complete)

    const records = await settled(t, gw, 5)
    t.notOk(records.some((r) => r.path === '/medicall/departed.wav' && (r.event === 'access' || r.event === 'fetch')), 'no access or completion record for the departed client')
    t.notOk(nas.requests.some((r) => r.url === '/medicall/departed.wav'), 'still never asked for')
  })

  t.test(`${proto}: limits.clientFetches: a client over its share gets 429 CLIENT_BUSY and the NAS is not asked; another address is served; HEAD counts as GET`, async (t) => {
    const nas = await startHoldingNas(t)
    const gw = await gatewayFor(t, nas, {}, { clientFetches: 2 })
    const auth = bearer(gw.token())

    // A GET and a HEAD in flight for 127.0.0.1.
    const a = download(proto, gw, '/medicall/hold-a.wav', auth)
    t.equal((await a.head).status, 200)
    const h = download(proto, gw, '/medicall/hold-h.wav', auth, { method: 'HEAD' })
    await waitFor('the HEAD to reach the NAS', () => (nas.held().includes('/medicall/hold-h.wav') ? true : undefined), SLOW)
    const busyBefore = await refusals(gw, 'client_busy')

    const c = await fetchOnce(proto, gw, '/medicall/refused-c.wav', auth)
    t.equal(c.status, 429, 'a third download from the same address is refused')
    t.equal(errorCode(c.body), 'NASGUARD_ERR_CLIENT_BUSY')
    t.equal(c.headers['retry-after'], '5', 'with Retry-After')
    const refusal = await waitFor('the refusal record', () => refusalRecord(gw, c.headers['x-request-id']), SLOW)
    t.match(refusal, { reason: 'NASGUARD_ERR_CLIENT_BUSY', status: 429, clientIp: '127.0.0.1', path: '/medicall/refused-c.wav' }, 'audited as a refusal')

    const ch = await fetchOnce(proto, gw, '/medicall/refused-ch.wav', auth, { method: 'HEAD' })
    t.equal(ch.status, 429, 'a HEAD over the share is refused the same way')
    t.equal(ch.headers['retry-after'], '5')
    t.equal(await refusals(gw, 'client_busy'), busyBefore + 2, 'nasguard_refusals_total{reason="client_busy",class="capacity"} counted both')

    const other = await fetchOnce(proto, gw, '/medicall/other.wav', auth, { localAddress: '127.0.0.2' })
    t.equal(other.status, 200, 'a download from 127.0.0.2 is served meanwhile')
    t.ok(other.complete && other.body.equals(RECORDING), 'whole')
    const otherAccess = gw.auditRecords().find((r) => r.event === 'access' && r.path === '/medicall/other.wav')
    t.equal(otherAccess?.clientIp, '127.0.0.2', 'it came from the other address')
    nasSaw(t, nas, ['/medicall/hold-a.wav', '/medicall/hold-h.wav', '/medicall/other.wav'], 'the NAS never got the refused requests')

    // The HEAD's slot comes back when it is answered: a GET fits again.
    nas.release('/medicall/hold-h.wav')
    const hEnd = await h.done
    t.equal(hEnd.status, 200, 'the held HEAD is answered')
    t.equal((await completed(gw, hEnd)).outcome, 'complete', 'and completed')
    const again = await fetchOnce(proto, gw, '/medicall/again.wav', auth)
    t.equal(again.status, 200, 'the share is free again once the HEAD is over')

    nas.release('/medicall/hold-a.wav')
    const aEnd = await a.done
    t.ok(aEnd.complete)
    await completed(gw, aEnd)
    // A refused request leaves no slot taken: two downloads fit again at once.
    const two = [download(proto, gw, '/medicall/hold-x.wav', auth), download(proto, gw, '/medicall/hold-y.wav', auth)]
    for (const d of two) t.equal((await d.head).status, 200, 'the whole share is free again')
    nas.release('/medicall/hold-x.wav')
    nas.release('/medicall/hold-y.wav')
    for (const d of two) t.ok((await d.done).complete)
    await settled(t, gw, 6)
  })
}

for (const proto of PROTOCOLS) {
  t.test(`${proto}: a client that leaves before the NAS answers gives its NAS connection back only with its NAS request: the NAS never sees more than upstream.connections at once`, async (t) => {
    let open = 0
    let most = 0
    const pending: ServerResponse[] = []
    let leftClosed: () => void = () => {}
    const leftGone = new Promise<void>((resolve) => { leftClosed = resolve })
    const nas = await startStubNas(t, (req, res) => {
      open++
      most = Math.max(most, open)
      res.once('close', () => { open-- })
      if (req.url === '/medicall/hold-left.wav') {
        // Never answers: only the gateway's cancel ends it.
        pending.push(res)
        res.once('close', () => leftClosed())
        return
      }
      serveRecording(req, res)
    })
    t.teardown(() => { for (const r of pending) r.destroy() })
    const gw = await gatewayFor(t, nas, { connections: 1, queueTimeoutMs: 20000 })
    const auth = bearer(gw.token())

    const left = download(proto, gw, '/medicall/hold-left.wav', auth)
    await waitFor('the request to reach the NAS', () => (nas.requests.length === 1 ? true : undefined), SLOW)
    left.abort()
    await left.done
    const cancelled = await Promise.race([leftGone.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 10000))])
    t.ok(cancelled, 'the NAS request of the client that left was cancelled')

    const next = await fetchOnce(proto, gw, '/medicall/next.wav', auth)
    t.equal(next.status, 200, 'the next download is served')
    t.equal(most, 1, `the NAS never had more than upstream.connections (1) requests open at once (it had ${most})`)
    // A request the gateway did not cancel is answered (not reset: a reset would be retried), so that it ends.
    for (const r of pending) if (!r.destroyed) r.writeHead(404).end()
    await settled(t, gw, 2)
  })
}
