// Issue 13's evidence: 500 slow readers from one address, plus one
// legitimate client from another. The slow readers get at most
// limits.clientFetches downloads (the rest 429 NASGUARD_ERR_CLIENT_BUSY with
// Retry-After, never reaching the NAS); the legitimate client is served in
// full while every admitted slow reader is still held; and memory stays
// bounded, because each held download is backpressured all the way to the
// NAS. Ordering is asserted, not timing: the machine may be slow.
import t from 'tap'
import { readFileSync } from 'node:fs'
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { bearer, RECORDING, scrape, serveRecording, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { waitFor, within } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const MB = 1024 * 1024
const BIG = 512 * MB
const CHUNK = Buffer.alloc(64 * 1024, 0x33)
const SLOW_READERS = 500
const CLIENT_FETCHES = 64
const NAS_CONNECTIONS = 128
/** Handshakes in flight at once while the crowd arrives (see below). */
const RAMP = 50

interface NasCall { id: string, url: string, sent: number, closed: boolean, cancelled: boolean }

interface SlowReader {
  req: ClientRequest
  /** 'streaming': 200 and held; 'refused': any other status; 'closed': the connection failed before an answer. */
  state: 'pending' | 'streaming' | 'refused' | 'closed'
  status?: number
  retryAfter?: string
  body?: Record<string, unknown>
  id?: string
  /** The streaming response ended or was cut (the client's view). */
  ended: boolean
  got: number
  timer?: NodeJS.Timeout
}

/**
 * One slow reader: a 200 is held and read 5 bytes a second out of the
 * paused response (the socket is not read again for hours); any other
 * answer is read in full. Resolves once it has an answer (or failed).
 */
function slowReader (gw: TestGateway, i: number, token: string, readers: SlowReader[]): Promise<void> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: `/medicall/slow-${i}.wav`, headers: bearer(token), ca: CA, agent: false }, (res: IncomingMessage) => {
      r.status = res.statusCode
      r.id = String(res.headers['x-request-id'])
      res.on('error', () => {})
      res.on('close', () => { r.ended = true; clearInterval(r.timer) })
      if (res.statusCode === 200) {
        r.state = 'streaming'
        r.timer = setInterval(() => {
          const c = res.read(5) as Buffer | null
          if (c) r.got += c.length
        }, 1000)
        resolve()
        return
      }
      r.state = 'refused'
      r.retryAfter = res.headers['retry-after']
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try { r.body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> } catch { r.body = {} }
        resolve()
      })
    })
    const r: SlowReader = { req, state: 'pending', ended: false, got: 0 }
    readers.push(r)
    req.on('error', () => {
      if (r.state === 'pending') { r.state = 'closed'; resolve() }
    })
    req.end()
  })
}

/** A whole download from 127.0.0.2: another client address, with caps of its own. */
function legitDownload (gw: TestGateway, path: string): Promise<{ status: number, body: Buffer, complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', localAddress: '127.0.0.2', servername: 'localhost', port: gw.port, path, headers: bearer(gw.token({ sub: 'bob' })), ca: CA, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete: res.complete }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}


t.test('500 slow readers and one legitimate client: the legitimate client is served, memory stays bounded', async (t) => {
  const calls: NasCall[] = []
  const nas = await startStubNas(t, (req, res: ServerResponse) => {
    if (req.url?.includes('/legit')) { serveRecording(req, res); return }
    const call: NasCall = { id: String(req.headers['x-request-id']), url: req.url ?? '', sent: 0, closed: false, cancelled: false }
    calls.push(call)
    res.once('close', () => { call.closed = true; call.cancelled = !res.writableFinished })
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': BIG })
    const pump = (): void => {
      while (call.sent < BIG && !res.destroyed) {
        call.sent += CHUNK.length
        if (!res.write(CHUNK)) return
      }
    }
    res.on('drain', pump)
    pump()
  })
  // The defaults, written out; a send timeout far longer than the test, so
  // that no slow reader is cut while the legitimate client is served: what
  // serves it is the caps, not the cuts.
  const gw = await startTestGateway(t, nas, {
    limits: { clientFetches: CLIENT_FETCHES, clientConnections: 256, sendTimeoutMs: 3600000, minSendRate: 1024 },
    upstream: { connections: NAS_CONNECTIONS, queueTimeoutMs: 3000, timeoutMs: 600000 }
  })
  const readers: SlowReader[] = []
  t.teardown(() => { for (const r of readers) { clearInterval(r.timer); r.req.destroy() } })

  // A first download warms the process up (TLS, the pool, the JIT), so that
  // what grows after it is what the crowd costs.
  const warm = await within('the warm-up download', legitDownload(gw, '/medicall/legit-warmup.wav'), 30000)
  t.equal(warm.status, 200, 'warm-up download served')
  const before = process.memoryUsage()

  // The crowd arrives RAMP handshakes at a time: with the 64 held
  // downloads, 127.0.0.1 never has more than limits.clientConnections (256)
  // connections open, so every download over its share gets a 429 instead
  // of a socket closed at accept.
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < SLOW_READERS) await slowReader(gw, next++, gw.token(), readers)
  }
  await within('every slow reader to get an answer', Promise.all(Array.from({ length: RAMP }, worker)), 90000)

  const streaming = readers.filter((r) => r.state === 'streaming')
  const refused = readers.filter((r) => r.state === 'refused')
  const closed = readers.filter((r) => r.state === 'closed')
  t.comment(`slow readers: ${streaming.length} streaming, ${refused.length} refused, ${closed.length} closed before an answer`)
  t.equal(readers.length, SLOW_READERS, 'every slow reader asked')
  t.ok(streaming.length <= CLIENT_FETCHES, `at most limits.clientFetches (${CLIENT_FETCHES}) streaming at once: ${streaming.length}`)
  t.equal(streaming.length, CLIENT_FETCHES, 'and no fewer: nothing released a slot')
  t.equal(closed.length, 0, 'no connection closed before its answer')
  t.equal(refused.length, SLOW_READERS - streaming.length, 'every other one was refused')
  t.ok(refused.every((r) => r.status === 429), 'with 429')
  t.ok(refused.every((r) => r.body?.error === 'NASGUARD_ERR_CLIENT_BUSY'), 'NASGUARD_ERR_CLIENT_BUSY')
  t.ok(refused.every((r) => r.retryAfter !== undefined && Number(r.retryAfter) > 0), 'and Retry-After')
  t.ok(calls.length <= CLIENT_FETCHES, `the NAS was asked at most ${CLIENT_FETCHES} times by the crowd: ${calls.length}`)
  t.same(new Set(calls.map((c) => c.id)), new Set(streaming.map((r) => r.id)), 'only for the downloads that stream')
  const held = await scrape(gw.adminUrl)
  t.equal(held.get('nasguard_active_streams'), streaming.length, 'nasguard_active_streams counts the held downloads')

  // Every slow reader is still held: the legitimate client, from another
  // address, downloads a recording in full.
  t.ok(streaming.every((r) => !r.ended) && calls.every((c) => !c.closed), 'every admitted slow reader is still held')
  const started = Date.now()
  const legit = await within('the legitimate download', legitDownload(gw, '/medicall/legit.wav'), 30000)
  const latency = Date.now() - started
  t.equal(legit.status, 200, 'the legitimate client is served')
  t.ok(legit.complete && legit.body.equals(RECORDING), 'with the whole recording, byte for byte')
  t.comment(`legitimate client: ${legit.body.length} bytes in ${latency} ms with ${streaming.length} slow readers held`)

  // ... and it finished while none of them had been cut.
  const after = await scrape(gw.adminUrl)
  t.equal(after.get('nasguard_slow_clients_total{reason="stalled"}'), 0, 'no slow reader was cut as stalled')
  t.equal(after.get('nasguard_slow_clients_total{reason="too_slow"}'), 0, 'nor as too_slow')
  t.ok(streaming.every((r) => !r.ended) && calls.every((c) => !c.closed), 'every slow reader still held after the legitimate download')

  // Memory: every held download is backpressured to the NAS.
  const mem = process.memoryUsage()
  const rssGrowth = mem.rss - before.rss
  const nasSent = calls.map((c) => c.sent)
  t.comment(`memory: rss ${Math.round(before.rss / MB)} -> ${Math.round(mem.rss / MB)} MB (+${Math.round(rssGrowth / MB)} MB), heapUsed ${Math.round(before.heapUsed / MB)} -> ${Math.round(mem.heapUsed / MB)} MB, external ${Math.round(before.external / MB)} -> ${Math.round(mem.external / MB)} MB (gateway, stub NAS and ${SLOW_READERS + 1} clients in one process)`)
  t.comment(`the NAS sent at most ${(Math.max(...nasSent) / MB).toFixed(1)} MB, ${(nasSent.reduce((a, b) => a + b, 0) / MB).toFixed(0)} MB in all, of ${streaming.length} recordings of 512 MB`)
  t.ok(rssGrowth < 256 * MB, `rss grew by less than 256 MB (${Math.round(rssGrowth / MB)} MB)`)
  t.ok(nasSent.every((n) => n < 64 * MB), 'no held download took more than 64 MB from the NAS: backpressure reaches it')

  // The crowd leaves: every NAS request is cancelled, every stream released.
  for (const r of readers) { clearInterval(r.timer); r.req.destroy() }
  await waitFor('every NAS request to be closed', () => calls.every((c) => c.closed) ? true : undefined, { tries: 300, intervalMs: 100 })
  t.ok(calls.every((c) => c.cancelled), 'every held NAS request was cancelled')
  await waitFor('nasguard_active_streams back to 0', async () => ((await scrape(gw.adminUrl)).get('nasguard_active_streams') === 0 ? true : undefined), { tries: 300, intervalMs: 100 })
  const fetches = await waitFor('a completion record for every held download', () => {
    const done = gw.auditRecords().filter((r) => r.event === 'fetch' && streaming.some((s) => s.id === r.requestId))
    return done.length === streaming.length ? done : undefined
  }, { tries: 300, intervalMs: 100 })
  t.ok(fetches.every((r) => r.outcome === 'client-aborted'), 'each audited as client-aborted when the crowd left')
})
