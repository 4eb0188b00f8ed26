// Slow readers (issue 13): a client that takes a recording slower than
// limits.minSendRate over a window of limits.sendTimeoutMs, or takes nothing
// for that long while bytes wait for it, is cut off, audited as
// `client-too-slow`, counted in nasguard_slow_clients_total, and its NAS
// request is cancelled. Time in which nothing waits for the client (the NAS
// is the slow one) never counts against it, and a client that keeps up is
// never cut. Over HTTP/1.1 and HTTP/2.
//
// What throttles delivery has to be real at the TCP / flow-control level:
// a paused Node stream still lets the kernel absorb a few MB, hence a NAS
// body of 512 MB pumped under backpressure. Slow HTTP/2 readers use a raw
// client (below) that opens its stream window by hand:
// SETTINGS_INITIAL_WINDOW_SIZE 0, then WINDOW_UPDATEs of exactly the bytes
// it means to take. Clients that keep up use node:https and node:http2.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect as http2Connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { ServerResponse } from 'node:http'
import { connect as tlsConnect } from 'node:tls'
import { bearer, scrape, startStubNas, startTestGateway, testCerts, type StubNas, type Teardown, type TestGateway } from '../helpers/gateway.js'
import { baseHeaders, encodeHeaderBlock, H2_ERROR } from '../helpers/h2-raw.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor, within } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const MB = 1024 * 1024
const BIG = 512 * MB
const CHUNK = Buffer.alloc(64 * 1024, 0x33)
/** Generous bounds for what follows within moments of an event (a record after a close). */
const WAIT = { tries: 300, intervalMs: 100 } // 30 s
/**
 * The bound on a cut that comes ~1.5 s after the download starts when the
 * defence works: long enough for a slow machine, short enough that four of
 * them (the defence removed) fail well within tap's 120 s for the file.
 */
const CUT_WAIT_MS = 12000

// ---------------------------------------------------------------------------
// The stub NAS: every request is tracked by the x-request-id the gateway
// sends it, and whether its response was closed before it was finished (the
// gateway cancelled it).

interface NasCall { id: string, url: string, closed: boolean, cancelled: boolean, sent: number }

interface SlowNas extends StubNas {
  calls: NasCall[]
  call: (id: string) => NasCall | undefined
}

/**
 * /…/big.wav: 512 MB, pumped under backpressure. /…/trickle-N.wav: N KB, one
 * KB every 100 ms. /…/size-N.wav: N bytes, under backpressure.
 */
async function slowNas (t: Teardown): Promise<SlowNas> {
  const calls: NasCall[] = []
  const nas: StubNas = await startStubNas(t, (req, res: ServerResponse) => {
    const call: NasCall = { id: String(req.headers['x-request-id']), url: req.url ?? '', closed: false, cancelled: false, sent: 0 }
    calls.push(call)
    res.once('close', () => { call.closed = true; call.cancelled = !res.writableFinished })
    const trickle = /trickle-(\d+)\.wav$/.exec(call.url)
    if (trickle) {
      const chunks = Number(trickle[1])
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': chunks * 1024 })
      const timer = setInterval(() => {
        if (res.destroyed) { clearInterval(timer); return }
        res.write(Buffer.alloc(1024, 0x54))
        call.sent += 1024
        if (call.sent >= chunks * 1024) { clearInterval(timer); res.end() }
      }, 100)
      res.once('close', () => clearInterval(timer))
      return
    }
    const sized = /size-(\d+)\.wav$/.exec(call.url)
    const size = sized ? Number(sized[1]) : BIG
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': size })
    const pump = (): void => {
      while (call.sent < size && !res.destroyed) {
        const chunk = size - call.sent >= CHUNK.length ? CHUNK : CHUNK.subarray(0, size - call.sent)
        call.sent += chunk.length
        if (!res.write(chunk)) return
      }
      if (call.sent >= size && !res.writableEnded) res.end()
    }
    res.on('drain', pump)
    pump()
  })
  // A NAS that has written a whole answer into the kernel must not close
  // the connection under a gateway still reading it at the client's pace
  // (Node's default keep-alive timeout of 5 s would).
  nas.server.keepAliveTimeout = 600000
  return Object.assign(nas, { calls, call: (id: string) => calls.find((c) => c.id === id) })
}

// ---------------------------------------------------------------------------
// Clients. Each gives the response's status and x-request-id as soon as the
// headers arrive, and `done` once the download is over (ended or cut).

interface Download {
  /** Status and request id, once the response headers arrived. */
  head: Promise<{ status: number, id: string }>
  /** Body bytes the client took. */
  got: () => number
  done: Promise<{ got: number, complete: boolean, rstCode?: number, body?: Buffer }>
  /**
   * Starts taking everything. A paused HTTP/1.1 client cannot see its
   * connection closed until it reads what the kernel holds for it: this is
   * how it learns that the download was cut.
   */
  drain: () => void
  close: () => void
}

type Reading =
  /** Takes nothing, ever. */
  | { kind: 'never' }
  /** Takes `bytes` every `everyMs` (HTTP/1.1: read() from the paused response; HTTP/2: WINDOW_UPDATE). */
  | { kind: 'trickle', bytes: number, everyMs: number }
  /** Takes at most `bytesPerSec` (a token bucket), keeping the body. */
  | { kind: 'rate', bytesPerSec: number }
  /** Takes everything as it comes, keeping the body. */
  | { kind: 'all' }

function h1Download (gw: TestGateway, path: string, reading: Reading): Download {
  let got = 0
  let setHead: (h: { status: number, id: string }) => void = () => {}
  const head = new Promise<{ status: number, id: string }>((resolve) => { setHead = resolve })
  const timers: NodeJS.Timeout[] = []
  const chunks: Buffer[] = []
  let req: ReturnType<typeof httpsRequest> | undefined
  let drain = (): void => {}
  const done = new Promise<{ got: number, complete: boolean, body?: Buffer }>((resolve) => {
    const finish = (complete: boolean): void => {
      for (const timer of timers) clearInterval(timer)
      resolve({ got, complete, body: Buffer.concat(chunks) })
    }
    req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path, headers: bearer(gw.token()), ca: CA, agent: false }, (res) => {
      setHead({ status: res.statusCode ?? 0, id: String(res.headers['x-request-id']) })
      res.on('error', () => {})
      res.on('close', () => finish(res.complete))
      drain = () => {
        for (const timer of timers) clearInterval(timer)
        res.on('data', (c: Buffer) => { got += c.length })
        res.resume()
      }
      if (reading.kind === 'never') return
      if (reading.kind === 'trickle') {
        timers.push(setInterval(() => {
          const c = res.read(reading.bytes) as Buffer | null
          if (c) got += c.length
        }, reading.everyMs))
        return
      }
      const started = Date.now()
      res.on('data', (c: Buffer) => {
        got += c.length
        chunks.push(c)
        if (reading.kind !== 'rate') return
        const ahead = got - reading.bytesPerSec * (Date.now() - started) / 1000
        if (ahead > 0) {
          res.pause()
          timers.push(setTimeout(() => res.resume(), Math.ceil(ahead / reading.bytesPerSec * 1000)))
        }
      })
    })
    req.on('error', () => finish(false))
    req.end()
  })
  return { head, got: () => got, done, drain: () => drain(), close: () => req?.destroy() }
}

/** The fully-reading and rate-limited HTTP/2 client: node:http2, whose stream window follows what the stream consumes. */
function h2NodeDownload (gw: TestGateway, path: string, reading: Reading & { kind: 'all' | 'rate' }): Download {
  let got = 0
  let setHead: (h: { status: number, id: string }) => void = () => {}
  const head = new Promise<{ status: number, id: string }>((resolve) => { setHead = resolve })
  const session = http2Connect(`https://localhost:${gw.port}`, { ca: CA })
  session.on('error', () => {})
  const stream = session.request({ ':path': path, ...bearer(gw.token()) })
  const timers: NodeJS.Timeout[] = []
  const chunks: Buffer[] = []
  const done = new Promise<{ got: number, complete: boolean, rstCode?: number, body?: Buffer }>((resolve) => {
    let ended = false
    stream.on('response', (h) => { setHead({ status: Number(h[':status']), id: String(h['x-request-id']) }) })
    const started = Date.now()
    stream.on('data', (c: Buffer) => {
      got += c.length
      chunks.push(c)
      if (reading.kind !== 'rate') return
      const ahead = got - reading.bytesPerSec * (Date.now() - started) / 1000
      if (ahead > 0) {
        stream.pause()
        timers.push(setTimeout(() => stream.resume(), Math.ceil(ahead / reading.bytesPerSec * 1000)))
      }
    })
    stream.on('end', () => { ended = true })
    stream.on('error', () => {})
    stream.on('close', () => {
      for (const timer of timers) clearTimeout(timer)
      session.close()
      resolve({ got, complete: ended && stream.rstCode === 0, rstCode: stream.rstCode, body: Buffer.concat(chunks) })
    })
    stream.end()
  })
  return { head, got: () => got, done, drain: () => {}, close: () => session.destroy() }
}

// A minimal raw HTTP/2 client for one GET whose stream window is opened by
// hand: the stream starts with a window of 0, and the client then grants
// `bytes` every `everyMs` (or never). The connection window is opened wide,
// so the stream window alone throttles the server.
const hpack = createRequire(import.meta.url)('hpack.js') as {
  decompressor: { create: (opts: { table: { size: number } }) => { write: (b: Buffer) => void, execute: () => void, read: () => { name: string, value: string } | null } }
}

function frame (type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(streamId, 5)
  return Buffer.concat([head, payload])
}
const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b }
const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 }

function h2WindowDownload (gw: TestGateway, path: string, reading: Reading & { kind: 'never' | 'trickle' }): Download {
  let got = 0
  let setHead: (h: { status: number, id: string }) => void = () => {}
  const head = new Promise<{ status: number, id: string }>((resolve) => { setHead = resolve })
  const decompressor = hpack.decompressor.create({ table: { size: 4096 } })
  let timer: NodeJS.Timeout | undefined
  const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: CA, ALPNProtocols: ['h2'] }, () => {
    const settings = Buffer.concat([Buffer.from([0, 4]), u32(0)]) // SETTINGS_INITIAL_WINDOW_SIZE = 0
    const headers = encodeHeaderBlock(baseHeaders(path, [['authorization', `Bearer ${gw.token()}`]]))
    socket.write(Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
      frame(FRAME.SETTINGS, 0, 0, settings),
      frame(FRAME.WINDOW_UPDATE, 0, 0, u32(1024 * MB)),
      frame(FRAME.HEADERS, 0x1 | 0x4, 1, headers) // END_STREAM | END_HEADERS
    ]))
    if (reading.kind === 'trickle') {
      timer = setInterval(() => { if (socket.writable) socket.write(frame(FRAME.WINDOW_UPDATE, 0, 1, u32(reading.bytes))) }, reading.everyMs)
    }
  })
  const done = new Promise<{ got: number, complete: boolean, rstCode?: number }>((resolve) => {
    let inbuf = Buffer.alloc(0)
    let rstCode: number | undefined
    let complete = false
    const finish = (): void => {
      clearInterval(timer)
      socket.destroy()
      resolve({ got, complete, rstCode })
    }
    socket.on('data', (chunk: Buffer) => {
      inbuf = Buffer.concat([inbuf, chunk])
      while (inbuf.length >= 9) {
        const len = inbuf.readUIntBE(0, 3)
        if (inbuf.length < 9 + len) break
        const [type, flags] = [inbuf[3], inbuf[4]]
        const streamId = inbuf.readUInt32BE(5) & 0x7fffffff
        const payload = inbuf.subarray(9, 9 + len)
        inbuf = inbuf.subarray(9 + len)
        if (type === FRAME.SETTINGS && !(flags & 0x1)) socket.write(frame(FRAME.SETTINGS, 0x1, 0))
        else if (type === FRAME.PING && !(flags & 0x1)) socket.write(frame(FRAME.PING, 0x1, 0, payload))
        else if (type === FRAME.HEADERS && streamId === 1) {
          decompressor.write(payload) // the gateway sends neither padding nor priority
          decompressor.execute()
          const fields: Record<string, string> = {}
          for (let h = decompressor.read(); h !== null; h = decompressor.read()) fields[h.name] = h.value
          if (fields[':status'] !== undefined) setHead({ status: Number(fields[':status']), id: fields['x-request-id'] })
        } else if (type === FRAME.DATA && streamId === 1) {
          got += len
          if (flags & 0x1) { complete = true; finish(); return }
        } else if (type === FRAME.RST_STREAM && streamId === 1) {
          rstCode = payload.readUInt32BE(0)
          finish()
          return
        } else if (type === FRAME.GOAWAY) {
          finish()
          return
        }
      }
    })
    socket.on('error', () => {})
    socket.on('close', finish)
  })
  return { head, got: () => got, done, drain: () => {}, close: () => socket.destroy() }
}

function download (proto: Protocol, gw: TestGateway, path: string, reading: Reading): Download {
  if (proto === 'h1') return h1Download(gw, path, reading)
  if (reading.kind === 'never' || reading.kind === 'trickle') return h2WindowDownload(gw, path, reading)
  return h2NodeDownload(gw, path, reading)
}


const STALLED = 'nasguard_slow_clients_total{reason="stalled"}'
const TOO_SLOW = 'nasguard_slow_clients_total{reason="too_slow"}'

async function slowCounts (gw: TestGateway): Promise<{ stalled: number, tooSlow: number }> {
  const m = await scrape(gw.adminUrl)
  return { stalled: m.get(STALLED) ?? NaN, tooSlow: m.get(TOO_SLOW) ?? NaN }
}

async function fetchRecord (gw: TestGateway, id: string): Promise<Record<string, unknown>> {
  return await waitFor(`the completion record of ${id}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id), WAIT)
}

async function activeStreamsBackToZero (gw: TestGateway): Promise<number> {
  return await waitFor('nasguard_active_streams back to 0', async () => ((await scrape(gw.adminUrl)).get('nasguard_active_streams') === 0 ? 0 : undefined), WAIT)
}

/** The NAS's view of the request once its response was closed (by its end, or by the gateway's cancel). */
async function nasClosed (nas: SlowNas, id: string, ms = CUT_WAIT_MS): Promise<NasCall> {
  return await waitFor(`the NAS request of ${id} to be closed`, () => { const c = nas.call(id); return c?.closed ? c : undefined }, { tries: Math.ceil(ms / 100), intervalMs: 100 })
}

/**
 * What the gateway knows a client took is what its completed writes carried:
 * over HTTP/2 a write (the stream's buffer, up to ~256 KiB) completes once
 * it has all gone out, so the record of a cut download is within one write
 * of what the client got (README, limits.minSendRate).
 */
const H2_WRITE_BYTES = 256 * 1024

/** Small settings so that a cut comes within a couple of seconds. */
const LIMITS = { sendTimeoutMs: 1000, minSendRate: 65536 }
const UPSTREAM = { timeoutMs: 600000 }

for (const proto of PROTOCOLS) {
  t.test(`${proto}: a client that reads 5 bytes a second is cut off, and its NAS request with it`, async (t) => {
    const nas = await slowNas(t)
    const gw = await startTestGateway(t, nas, { limits: LIMITS, upstream: UPSTREAM })
    t.same(await slowCounts(gw), { stalled: 0, tooSlow: 0 }, 'no slow client counted yet')
    // HTTP/1.1: the application takes 5 bytes a second out of the paused
    // response (what the kernel and Node buffered lasts it for hours: the
    // socket is not read again). HTTP/2: the stream window grows by one
    // byte every 200 ms, so exactly 5 bytes a second leave the gateway.
    const reading: Reading = proto === 'h1' ? { kind: 'trickle', bytes: 5, everyMs: 1000 } : { kind: 'trickle', bytes: 1, everyMs: 200 }
    const d = download(proto, gw, '/medicall/big.wav', reading)
    t.teardown(d.close)
    const head = await within('the response headers', d.head)
    t.equal(head.status, 200, 'the download started')

    const call = await nasClosed(nas, head.id)
    t.ok(call.cancelled, `the NAS request was cancelled after ${call.sent} of ${BIG} bytes`)
    d.drain()
    const end = await within('the client to see the download cut', d.done)
    t.notOk(end.complete, `the client saw an incomplete download (${end.got} bytes)`)
    if (proto === 'h2') t.equal(end.rstCode, H2_ERROR.INTERNAL_ERROR, 'the stream was reset with INTERNAL_ERROR, not ended')

    const rec = await fetchRecord(gw, head.id)
    t.equal(rec.outcome, 'client-too-slow', 'audited as client-too-slow')
    t.equal(rec.status, 200, 'with the status that was sent')
    t.ok(Number(rec.bytes) < BIG, `bytes recorded (${String(rec.bytes)}) are less than the recording`)
    // A write still in progress at the cut may or may not have gone out: unconfirmedBytes (the client had between bytes and bytes + unconfirmedBytes).
    if (proto === 'h1') t.ok(Number(rec.bytes) + Number(rec.unconfirmedBytes ?? 0) >= end.got, `bytes recorded (${String(rec.bytes)} + ${String(rec.unconfirmedBytes ?? 0)} unconfirmed) cover what the client got (${end.got})`)
    else t.ok(Math.abs(Number(rec.bytes) - end.got) <= H2_WRITE_BYTES, `bytes recorded (${String(rec.bytes)}) are within one write of what the client got (${end.got})`)
    const counts = await slowCounts(gw)
    t.comment(`${proto}: counted ${JSON.stringify(counts)}; the client got ${end.got} bytes, the record says ${String(rec.bytes)}`)
    t.equal(counts.stalled + counts.tooSlow, 1, 'one slow client counted, as stalled or too_slow')
    t.equal(await activeStreamsBackToZero(gw), 0, 'nasguard_active_streams back to 0')
  })

  t.test(`${proto}: a client that never reads is cut off (HTTP/2: as stalled), and its NAS request with it`, async (t) => {
    const nas = await slowNas(t)
    const gw = await startTestGateway(t, nas, { limits: LIMITS, upstream: UPSTREAM })
    // HTTP/1.1: no data listener on the response; HTTP/2: a stream window of 0, never opened.
    const d = download(proto, gw, '/medicall/big.wav', { kind: 'never' })
    t.teardown(d.close)
    const head = await within('the response headers', d.head)
    t.equal(head.status, 200, 'the download started')

    const call = await nasClosed(nas, head.id)
    t.ok(call.cancelled, `the NAS request was cancelled after ${call.sent} of ${BIG} bytes`)
    d.drain()
    const end = await within('the client to see the download cut', d.done)
    t.notOk(end.complete, `the client saw an incomplete download (${end.got} bytes)`)
    if (proto === 'h2') {
      t.equal(end.rstCode, H2_ERROR.INTERNAL_ERROR, 'the stream was reset with INTERNAL_ERROR')
      t.equal(end.got, 0, 'not a byte got through a window of 0')
    }
    const rec = await fetchRecord(gw, head.id)
    t.equal(rec.outcome, 'client-too-slow', 'audited as client-too-slow')
    t.ok(Number(rec.bytes) < BIG, `bytes recorded (${String(rec.bytes)}) are less than the recording`)
    t.ok(Number(rec.bytes) + Number(rec.unconfirmedBytes ?? 0) >= end.got, `bytes recorded (${String(rec.bytes)} + ${String(rec.unconfirmedBytes ?? 0)} unconfirmed) cover what the client got (${end.got})`)
    // HTTP/2's window of 0 lets no byte through: no progress, ever. Over
    // HTTP/1.1 the socket's buffers take bytes while they fill, and a watch
    // tick that falls in that filling sees progress: too slow, then.
    if (proto === 'h2') t.same(await slowCounts(gw), { stalled: 1, tooSlow: 0 }, 'counted as stalled')
    else t.equal(Object.values(await slowCounts(gw)).reduce((a, b) => a + b, 0), 1, 'one slow client counted, as stalled (or too_slow, when a watch tick fell while the buffers filled)')
    t.equal(await activeStreamsBackToZero(gw), 0, 'nasguard_active_streams back to 0')
    if (proto === 'h2') t.equal(rec.bytes, 0, 'nothing left the gateway, nothing is recorded')
  })

  t.test(`${proto}: a slow NAS is not the client's fault`, async (t) => {
    const nas = await slowNas(t)
    const gw = await startTestGateway(t, nas, { limits: LIMITS, upstream: UPSTREAM })
    // 1 KB every 100 ms: 10 KB/s, far under minSendRate, for 3.5 windows;
    // the client takes every byte as it comes, so nothing waits for it.
    const size = 35 * 1024
    const d = download(proto, gw, '/medicall/trickle-35.wav', { kind: 'all' })
    t.teardown(d.close)
    const head = await within('the response headers', d.head)
    t.equal(head.status, 200)
    const end = await within('the download to end', d.done)
    t.ok(end.complete, 'the client got the whole recording')
    t.equal(end.got, size)
    t.ok(end.body?.equals(Buffer.alloc(size, 0x54)), 'byte for byte')
    const rec = await fetchRecord(gw, head.id)
    t.match(rec, { outcome: 'complete', bytes: size, status: 200 }, 'audited complete')
    t.notOk(nas.call(head.id)?.cancelled, 'the NAS request ran to its end')
    t.same(await slowCounts(gw), { stalled: 0, tooSlow: 0 }, 'no slow client counted')
  })

  t.test(`${proto}: a client taking 16 times minSendRate is not cut`, async (t) => {
    const nas = await slowNas(t)
    // Windows of 4 s: over HTTP/1.1 the kernel lets the writer know about
    // what the client took in steps of a third of its send buffer (~1.4 MB
    // on loopback), 1.4 s apart at 1 MB/s (README, limits.minSendRate).
    const gw = await startTestGateway(t, nas, { limits: { ...LIMITS, sendTimeoutMs: 4000 }, upstream: UPSTREAM })
    // 1 MB/s against 64 KB/s, for 8 MB: what the kernel and the stream
    // windows absorb (a few MB over HTTP/1.1, ~64 KB over HTTP/2) goes at
    // once, the rest over several 1 s windows with bytes waiting.
    const size = 8 * MB
    const d = download(proto, gw, `/medicall/size-${size}.wav`, { kind: 'rate', bytesPerSec: MB })
    t.teardown(d.close)
    const head = await within('the response headers', d.head)
    t.equal(head.status, 200)
    const started = Date.now()
    const end = await within('the download to end', d.done)
    t.comment(`${proto}: ${end.got} of ${size} bytes in ${Date.now() - started} ms`)
    t.ok(end.complete, 'the client got the whole recording')
    t.equal(end.got, size, 'every byte')
    const rec = await fetchRecord(gw, head.id)
    t.match(rec, { outcome: 'complete', bytes: size, status: 200 }, 'audited complete')
    t.same(await slowCounts(gw), { stalled: 0, tooSlow: 0 }, 'no slow client counted')
  })
}

t.test('h2: a client taking 3 times minSendRate, in small window grants, is not cut', async (t) => {
  const nas = await slowNas(t)
  // 16 KB/s required over 10 s windows; the stream window grows by 9600
  // bytes every 200 ms (48 KB/s) for 600 KB: each window sees ~480 KB
  // taken, more than the ~256 KiB a completed write can carry, so progress
  // shows in every window (README: progress is seen per completed write).
  const gw = await startTestGateway(t, nas, { limits: { sendTimeoutMs: 10000, minSendRate: 16 * 1024 }, upstream: UPSTREAM })
  const size = 600 * 1024
  const d = h2WindowDownload(gw, `/medicall/size-${size}.wav`, { kind: 'trickle', bytes: 9600, everyMs: 200 })
  t.teardown(d.close)
  const head = await within('the response headers', d.head)
  t.equal(head.status, 200)
  const end = await within('the download to end', d.done)
  t.ok(end.complete, `the client got the whole recording (${end.got} of ${size} bytes)`)
  t.equal(end.got, size, 'every byte')
  const rec = await fetchRecord(gw, head.id)
  t.match(rec, { outcome: 'complete', bytes: size, status: 200 }, 'audited complete')
  t.same(await slowCounts(gw), { stalled: 0, tooSlow: 0 }, 'no slow client counted')
})
