// A raw HTTP/2 client for security tests: it writes frames and HPACK blocks by
// hand, so it can send what node:http2 refuses to send (upper-case names,
// repeated pseudo-headers, CR/LF/NUL in values, connection-specific headers,
// huge header lists, HEADERS + CONTINUATION, HEADERS then DATA), and reports
// exactly what the server answered on the wire: per stream the response
// headers, the body, RST_STREAM; per connection GOAWAY and whether it closed.
// For flow-control tests it also leaves windows and socket reading under the
// test's control: windows opened wide or not at all (then granted by hand),
// the TCP socket read at a bounded rate or not at all, and an AbortSignal
// to end a connection that will never end by itself.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { testCerts } from './certs.js'

/** A header as it goes on the wire: name and value bytes (latin1), untouched. */
export type RawHeader = [name: string, value: string]

export interface H2StreamRequest {
  headers: RawHeader[]
  /**
   * END_STREAM on the HEADERS frame; default true unless `data` is given
   * (true with `data` sends DATA on a closed stream, on purpose).
   */
  endStream?: boolean
  /**
   * DATA frames sent after HEADERS (each Buffer is one frame, sent as is: keep
   * them under 16384 bytes), the last with END_STREAM.
   */
  data?: Buffer[]
  /** RST_STREAM with this error code, in the same write as the request (a client that drops the stream at once). */
  resetWith?: number
}

export interface H2StreamResult {
  /** The stream id (1, 3, 5, ...). */
  id: number
  /** The request was written (false when a GOAWAY or a close came first in sequential mode). */
  sent: boolean
  /** The server ended the stream (END_STREAM or RST_STREAM, or a GOAWAY that excludes it). */
  ended: boolean
  status?: number
  /** The final response headers, pseudo-headers included; repeated names joined with ', '. */
  headers: Record<string, string>
  /** Trailers (a header block after the response headers), if any. */
  trailers?: Record<string, string>
  body: Buffer
  /** DATA payload bytes received on the stream (counted with `discardBody` too). */
  bytes: number
  /** The RST_STREAM error code the server sent, if any. */
  rstCode?: number
  /** The body parsed as JSON when it is a JSON object. */
  json?: Record<string, unknown>
}

export interface H2ConnResult {
  streams: H2StreamResult[]
  goawayCode?: number
  goawayLastStreamId?: number
  /** The server closed (or reset) the connection before the client did. */
  closed: boolean
  /** The safety timeout fired before everything ended. */
  timedOut: boolean
  /** `signal` was aborted before everything ended. */
  aborted: boolean
}

export interface H2RawOptions {
  /** Safety bound; resolves with what arrived so far (timedOut: true). Default 10000. */
  timeoutMs?: number
  /** Send each stream only once the previous one ended. */
  sequential?: boolean
  /**
   * Once every stream ended (or a GOAWAY came), keep waiting until the server
   * closes the connection; `timedOut` then means it never did. Note that
   * node:http2 keeps the socket open after an error GOAWAY until the peer closes.
   */
  awaitClose?: boolean
  /** The first stream's id (odd); the others follow it by 2. Default 1. */
  firstStreamId?: number
  /** How the client leaves at the end: a GOAWAY then FIN (default), a bare FIN, or a reset. */
  hangUp?: 'goaway' | 'fin' | 'reset'
  /**
   * Flow control. 'default': the 65535-byte stream windows of RFC 9113,
   * refilled as DATA arrives, and 8 MB more on the connection. 'wide':
   * SETTINGS_INITIAL_WINDOW_SIZE and the connection window at 2^31-1, so flow
   * control never holds the server back. 'none': SETTINGS_INITIAL_WINDOW_SIZE
   * 0 and stream windows never refilled (only `streamWindowGrant` opens them);
   * the connection window is opened wide. A number: SETTINGS_INITIAL_WINDOW_SIZE
   * of that many bytes, never refilled, and the connection window wide (a
   * response of exactly that size has every byte sent and its END_STREAM held).
   */
  windows?: 'default' | 'wide' | 'none' | number
  /** Every `everyMs` from the connection on, a WINDOW_UPDATE of `bytes` on each stream not ended. */
  streamWindowGrant?: { bytes: number, everyMs: number }
  /**
   * How fast the client reads its TCP socket, in bytes a second (it pauses the
   * socket whenever it is ahead of the rate). 0: it stops reading once every
   * stream's response headers arrived (or it ended), for good; the result then
   * comes only from `timeoutMs` or `signal`. Default: as fast as bytes come.
   */
  readRate?: number
  /** Once a stream has this many body bytes, the client leaves (as `hangUp` says), END_STREAM or not. */
  leaveAfterBytes?: number
  /** Aborting it ends the connection (as `hangUp` says) and resolves with what arrived so far. */
  signal?: AbortSignal
  /** Keep no body (`body` stays empty, `bytes` still counts): for big downloads. */
  discardBody?: boolean
  /** Called when a stream's final response headers arrive, with its result (which stays live: `bytes`, `ended`). */
  onResponse?: (stream: H2StreamResult) => void
}

export const H2_ERROR = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  CONNECT_ERROR: 10,
  ENHANCE_YOUR_CALM: 11,
  INADEQUATE_SECURITY: 12,
  HTTP_1_1_REQUIRED: 13
} as const

/** :method GET, :scheme https, :authority, :path, then `extra`. */
export function baseHeaders (path: string, extra: RawHeader[] = [], authority = 'localhost'): RawHeader[] {
  return [[':method', 'GET'], [':scheme', 'https'], [':authority', authority], [':path', path], ...extra]
}

// hpack.js ships no types; only the decompressor is used.
interface HpackDecompressor {
  write: (buf: Buffer) => boolean
  execute: () => void
  read: () => { name: string, value: string } | null
  on: (event: 'error', fn: (err: Error) => void) => unknown
}
const hpack = createRequire(import.meta.url)('hpack.js') as {
  decompressor: { create: (opts: { table: { size: number } }) => HpackDecompressor }
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const MAX_FRAME = 16384
const CONN_WINDOW_BOOST = 8 * 1024 * 1024
const MAX_WINDOW = 0x7fffffff
const DEFAULT_WINDOW = 65535
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4

const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 }
const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 }

function frame (type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(streamId & 0x7fffffff, 5)
  return Buffer.concat([head, payload])
}

function windowUpdate (streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4)
  p.writeUInt32BE(increment & 0x7fffffff, 0)
  return frame(T.WINDOW_UPDATE, 0, streamId, p)
}

/** RFC 7541 §5.1 integer with an N-bit prefix (the prefix bits above N are zero). */
function hpackInt (n: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1
  if (n < max) return Buffer.from([n])
  const out = [max]
  n -= max
  while (n >= 128) {
    out.push((n % 128) + 128)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Buffer.from(out)
}

/** RFC 7541 §5.2 string literal, no Huffman. */
function hpackStr (s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1')
  return Buffer.concat([hpackInt(bytes.length, 7), bytes])
}

/** RFC 7541 §6.2.2 "literal header field without indexing, new name" for every header. */
export function encodeHeaderBlock (headers: RawHeader[]): Buffer {
  return Buffer.concat(headers.flatMap(([name, value]) => [Buffer.from([0x00]), hpackStr(name), hpackStr(value)]))
}

/** HEADERS, plus CONTINUATION frames when the block is over 16384 bytes. */
function headerFrames (streamId: number, block: Buffer, endStream: boolean): Buffer[] {
  const out: Buffer[] = []
  let pos = 0
  do {
    const chunk = block.subarray(pos, pos + MAX_FRAME)
    pos += chunk.length
    const last = pos >= block.length
    const flags = (last ? F.END_HEADERS : 0) | (out.length === 0 && endStream ? F.END_STREAM : 0)
    out.push(frame(out.length === 0 ? T.HEADERS : T.CONTINUATION, flags, streamId, chunk))
  } while (pos < block.length)
  return out
}

function requestFrames (streamId: number, req: H2StreamRequest): Buffer {
  const data = req.data ?? []
  const endOnHeaders = req.endStream ?? data.length === 0
  const frames = headerFrames(streamId, encodeHeaderBlock(req.headers), endOnHeaders)
  data.forEach((d, i) => frames.push(frame(T.DATA, i === data.length - 1 ? F.END_STREAM : 0, streamId, d)))
  if (req.resetWith !== undefined) {
    const code = Buffer.alloc(4)
    code.writeUInt32BE(req.resetWith, 0)
    frames.push(frame(T.RST_STREAM, 0, streamId, code))
  }
  return Buffer.concat(frames)
}

function addHeader (into: Record<string, string>, name: string, value: string): void {
  into[name] = into[name] === undefined ? value : `${into[name]}, ${value}`
}

function parseJson (body: Buffer): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown
    return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/**
 * Opens one TLS connection (ALPN h2) to 127.0.0.1:<port>, sends each request on
 * its own stream (ids 1, 3, 5, ...), and resolves once every stream has ended
 * (END_STREAM or RST_STREAM), or the server closed the connection. A GOAWAY
 * ends the streams it excludes (all of them when its code is not NO_ERROR);
 * with NO_ERROR the streams it kept are still awaited. Then the client sends
 * GOAWAY(NO_ERROR) and closes. `timeoutMs` is only a safety bound.
 * Rejects only when the TLS connection cannot be made or h2 is not selected.
 */
export function h2Raw (gw: { port: number }, requests: H2StreamRequest[], opts: H2RawOptions = {}): Promise<H2ConnResult> {
  const timeoutMs = opts.timeoutMs ?? 10000
  const first = opts.firstStreamId ?? 1
  const windows = opts.windows ?? 'default'
  const streams: H2StreamResult[] = requests.map((_, i) => ({ id: first + 2 * i, sent: false, ended: false, headers: {}, body: Buffer.alloc(0), bytes: 0 }))
  const byId = new Map(streams.map((s) => [s.id, s]))
  const chunks = new Map<number, Buffer[]>()
  const result: H2ConnResult = { streams, closed: false, timedOut: false, aborted: false }

  return new Promise((resolve, reject) => {
    const decompressor = hpack.decompressor.create({ table: { size: 4096 } })
    let decodeError: Error | undefined
    decompressor.on('error', (err) => { decodeError = err })

    let socket: TLSSocket | undefined
    let connected = false
    let done = false
    let inbuf: Buffer = Buffer.alloc(0)
    let block: { streamId: number, endStream: boolean, parts: Buffer[] } | undefined
    let nextToSend = 0
    let readBytes = 0
    let readStart = 0
    let resumeTimer: NodeJS.Timeout | undefined
    let grantTimer: NodeJS.Timeout | undefined

    const timer = setTimeout(() => { result.timedOut = true; finish() }, timeoutMs)
    const onAbort = (): void => { result.aborted = true; finish() }
    opts.signal?.addEventListener('abort', onAbort, { once: true })

    function write (buf: Buffer): void {
      if (socket && !done && !result.closed && socket.writable) socket.write(buf)
    }

    function finish (): void {
      if (done) return
      done = true
      clearTimeout(timer)
      clearTimeout(resumeTimer)
      clearInterval(grantTimer)
      opts.signal?.removeEventListener('abort', onAbort)
      for (const s of streams) {
        s.body = Buffer.concat(chunks.get(s.id) ?? [])
        const json = parseJson(s.body)
        if (json) s.json = json
      }
      if (socket && (opts.hangUp === 'reset' || !connected)) {
        socket.destroy()
      } else if (socket && opts.hangUp === 'fin' && !result.closed && socket.writable) {
        const sock = socket
        sock.end(() => sock.destroy())
      } else if (socket && !result.closed && socket.writable) {
        const goaway = Buffer.alloc(8)
        goaway.writeUInt32BE(0, 0)
        goaway.writeUInt32BE(H2_ERROR.NO_ERROR, 4)
        const sock = socket
        sock.end(frame(T.GOAWAY, 0, 0, goaway), () => sock.destroy())
      } else {
        socket?.destroy()
      }
      resolve(result)
    }

    function sendNext (): void {
      while (nextToSend < requests.length && result.goawayCode === undefined && !result.closed) {
        const s = streams[nextToSend]
        write(requestFrames(s.id, requests[nextToSend]))
        s.sent = true
        nextToSend++
        if (opts.sequential) return
      }
    }

    function check (): void {
      if (done) return
      if (result.closed) { finish(); return }
      if (opts.sequential && streams.every((s) => !s.sent || s.ended)) sendNext()
      // After a GOAWAY nothing more is sent: the unsent streams will never end.
      if (result.goawayCode !== undefined) for (const s of streams) if (!s.sent) s.ended = true
      if (streams.every((s) => s.ended) && !opts.awaitClose) finish()
    }

    function onHeaderBlock (streamId: number, endStream: boolean, fragment: Buffer): void {
      decompressor.write(fragment)
      decompressor.execute()
      if (decodeError) throw decodeError
      const fields: Record<string, string> = {}
      for (let h = decompressor.read(); h !== null; h = decompressor.read()) addHeader(fields, h.name, h.value)
      const s = byId.get(streamId)
      if (!s) return
      const status = fields[':status'] === undefined ? undefined : Number(fields[':status'])
      if (status !== undefined && status >= 100 && status < 200 && status !== 101) {
        // Informational: skipped, the final response follows.
      } else if (s.status === undefined && Object.keys(s.headers).length === 0) {
        s.headers = fields
        s.status = status
        opts.onResponse?.(s)
      } else {
        s.trailers = fields
      }
      if (endStream) s.ended = true
    }

    function onFrame (type: number, flags: number, streamId: number, payload: Buffer): void {
      switch (type) {
        case T.DATA: {
          let data = payload
          if (flags & F.PADDED) data = payload.subarray(1, payload.length - payload[0])
          const s = byId.get(streamId)
          if (s) s.bytes += payload.length
          if (!opts.discardBody) {
            const list = chunks.get(streamId)
            if (list) list.push(data)
            else chunks.set(streamId, [data])
          }
          if (flags & F.END_STREAM && s) s.ended = true
          if (s && opts.leaveAfterBytes !== undefined && s.bytes >= opts.leaveAfterBytes) { finish(); break }
          if (payload.length > 0) {
            write(windowUpdate(0, payload.length))
            if (s && !s.ended && (windows === 'default' || windows === 'wide')) write(windowUpdate(streamId, payload.length))
          }
          break
        }
        case T.HEADERS: {
          let start = 0
          let end = payload.length
          if (flags & F.PADDED) { start = 1; end -= payload[0] }
          if (flags & F.PRIORITY) start += 5
          const fragment = payload.subarray(start, end)
          const endStream = (flags & F.END_STREAM) !== 0
          if (flags & F.END_HEADERS) onHeaderBlock(streamId, endStream, fragment)
          else block = { streamId, endStream, parts: [fragment] }
          break
        }
        case T.CONTINUATION: {
          if (!block) break
          block.parts.push(payload)
          if (flags & F.END_HEADERS) {
            const b = block
            block = undefined
            onHeaderBlock(b.streamId, b.endStream, Buffer.concat(b.parts))
          }
          break
        }
        case T.RST_STREAM: {
          const s = byId.get(streamId)
          if (s && payload.length >= 4) {
            s.rstCode = payload.readUInt32BE(0)
            s.ended = true
          }
          break
        }
        case T.SETTINGS:
          if (!(flags & F.ACK)) write(frame(T.SETTINGS, F.ACK, 0))
          break
        case T.PING:
          if (!(flags & F.ACK)) write(frame(T.PING, F.ACK, 0, payload))
          break
        case T.GOAWAY: {
          const last = payload.readUInt32BE(0) & 0x7fffffff
          result.goawayLastStreamId = last
          result.goawayCode = payload.readUInt32BE(4)
          for (const s of streams) {
            // Streams above last were not processed; after an error GOAWAY none will end.
            if (s.id > last || result.goawayCode !== H2_ERROR.NO_ERROR) s.ended = true
          }
          break
        }
        default:
          // PRIORITY, WINDOW_UPDATE, PUSH_PROMISE and unknown frames: nothing to record.
          break
      }
    }

    function onData (chunk: Buffer): void {
      inbuf = inbuf.length === 0 ? chunk : Buffer.concat([inbuf, chunk])
      while (inbuf.length >= 9) {
        const len = inbuf.readUIntBE(0, 3)
        if (inbuf.length < 9 + len) break
        const type = inbuf[3]
        const flags = inbuf[4]
        const streamId = inbuf.readUInt32BE(5) & 0x7fffffff
        const payload = inbuf.subarray(9, 9 + len)
        inbuf = inbuf.subarray(9 + len)
        onFrame(type, flags, streamId, payload)
      }
      check()
      throttle()
    }

    /** readRate: pause the socket while the client is ahead of its rate (for good at 0). */
    function throttle (): void {
      const rate = opts.readRate
      if (rate === undefined || done || !socket) return
      if (rate === 0) {
        if (streams.every((s) => s.status !== undefined || s.ended)) socket.pause()
        return
      }
      const ahead = readBytes - rate * (Date.now() - readStart) / 1000
      if (ahead > 0 && resumeTimer === undefined) {
        socket.pause()
        resumeTimer = setTimeout(() => {
          resumeTimer = undefined
          if (!done) socket!.resume()
        }, Math.ceil(ahead / rate * 1000))
      }
    }

    function onClosed (): void {
      if (!connected || done) return
      result.closed = true
      check()
    }

    socket = tlsConnect({
      host: '127.0.0.1',
      port: gw.port,
      servername: 'localhost',
      ca: readFileSync(testCerts().ca),
      ALPNProtocols: ['h2']
    }, () => {
      if (socket!.alpnProtocol !== 'h2') {
        done = true
        clearTimeout(timer)
        socket!.destroy()
        reject(new Error(`the server did not select h2 (ALPN: ${String(socket!.alpnProtocol)})`))
        return
      }
      connected = true
      readStart = Date.now()
      const initialWindow = typeof windows === 'number' ? windows : windows === 'wide' ? MAX_WINDOW : windows === 'none' ? 0 : undefined
      const settings = Buffer.alloc(initialWindow === undefined ? 0 : 6)
      if (initialWindow !== undefined) {
        settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 0)
        settings.writeUInt32BE(initialWindow, 2)
      }
      const connBoost = windows === 'default' ? CONN_WINDOW_BOOST : MAX_WINDOW - DEFAULT_WINDOW
      write(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0, settings), windowUpdate(0, connBoost)]))
      const grant = opts.streamWindowGrant
      if (grant) {
        grantTimer = setInterval(() => {
          for (const s of streams) if (s.sent && !s.ended) write(windowUpdate(s.id, grant.bytes))
        }, grant.everyMs)
      }
      sendNext()
      check()
    })
    socket.on('data', (chunk: Buffer) => {
      if (done) return
      readBytes += chunk.length
      try {
        onData(chunk)
      } catch (err) {
        done = true
        clearTimeout(timer)
        socket!.destroy()
        reject(err)
      }
    })
    socket.on('end', onClosed)
    socket.on('close', onClosed)
    socket.on('error', (err) => {
      if (done) return
      if (connected) { onClosed(); return }
      done = true
      clearTimeout(timer)
      reject(err)
    })
  })
}
