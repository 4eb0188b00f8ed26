// One download from the NAS, as an undici dispatch handler writing straight
// into the client's response: no body stream of its own, no pipe. Each NAS
// chunk is counted and written to the response (short ones gathered into
// one write, GATHER_BYTES); when the response
// says it is full, the NAS connection is paused until it drains, so what is
// buffered per download is bounded by the client's pace, not the NAS's.
//
// Before a byte is sent the answer is judged (answer.ts), and with
// files.checkMagic its first bytes too: those are held back until there
// are enough of them, or, for an answer that does not hold the file's first
// MAGIC_BYTES (a seek, a short probe such as `bytes=0-1`), until the file's
// head was judged (head-check.ts).
//
// Every way out ends the response: a client that left still has it ended,
// so that its 'close' comes and its completion is recorded.
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import { Errors, type NasguardError } from '../errors.js'
import { contentTypeFor } from '../policy/file-types.js'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'
import { headerValue, judgeAnswer } from './answer.js'
import { lastModifiedRefusal } from '../gate/retention.js'
import type { HeadCheck } from './head-check.js'
import { classify, UpstreamSignal, type UpstreamHooks } from './nas-failures.js'
import { dropRawHeaders } from './raw-headers.js'

/**
 * NAS chunks shorter than this are gathered and written together, once the
 * NAS read that carried them is parsed (or when this many are in): a NAS
 * that sends 1-byte chunks would otherwise cost a write per byte (and over
 * HTTP/1.1 an HTTP chunk header and a TLS record each), and hold a paused
 * client's queue of 16 KiB as thousands of buffers.
 */
const GATHER_BYTES = 4096

/** NAS failures that are retried once, before any byte was sent: a reset connection. */
const RESETS = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

export interface ExchangeParts {
  pool: Dispatcher
  /** The request headers for the NAS (allow-listed, with the gateway's own credentials). */
  nasHeaders: (request: FastifyRequest) => Record<string, string>
  hooks: UpstreamHooks
  heads: HeadCheck
  checkMagic: boolean
  /** The gateway's own response headers (a fresh object), asked for just before the NAS's go out. */
  ownHeaders: (request: FastifyRequest, reply: FastifyReply) => Record<string, unknown>
}

type Raw = FastifyReply['raw'] & { stream?: { rstCode?: number } }

/** Whether the client is gone: its response closed before it was complete. */
function clientGone (reply: FastifyReply): boolean {
  const raw = reply.raw as Raw
  return raw.destroyed || (raw.stream?.rstCode !== undefined && raw.stream.rstCode !== 0)
}

const clientLeft = (): Error => Object.assign(new Error('the client went away'), { name: 'AbortError', code: 'UND_ERR_ABORTED' })

class NasExchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  /** 'waiting' for the answer; 'held' while its first bytes are judged; 'streaming'; 'over' once it is refused, cut or done. */
  private phase: 'waiting' | 'held' | 'streaming' | 'over' = 'waiting'
  private held: Buffer[] = []
  private heldBytes = 0
  private ended = false
  private written = 0
  private declared = NaN
  private status = 0
  private headers: Record<string, string> = {}
  private whole = true
  /** Fetches the file's head on the side (seeks); aborted with the exchange. */
  private headSignal: UpstreamSignal | undefined
  /** The file's head is being fetched and judged on the side. */
  private seeking = false
  /** The response is full: the NAS connection is paused until it drains. */
  private draining = false
  private headWritten = false
  /** Short chunks passed but not yet written (GATHER_BYTES). */
  private gathered: Buffer[] = []
  private gatheredBytes = 0
  private readonly asked = process.hrtime.bigint()

  constructor (private readonly p: ExchangeParts, private readonly request: FastifyRequest, private readonly reply: FastifyReply, private readonly attempt: number) {}

  /** The client left: the NAS request is cancelled, wherever it is. */
  cancel (): void {
    if (this.phase === 'over') return
    this.phase = 'over'
    this.controller?.abort(clientLeft())
    this.headSignal?.abort()
    this.abandon()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.phase === 'over') controller.abort(clientLeft())
  }

  onResponseStart (controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200) return
    dropRawHeaders(controller)
    this.guard(() => { this.answer(controller, status, headers) })
  }

  private answer (controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    this.p.hooks.onUpstreamResponse(this.request, Number(process.hrtime.bigint() - this.asked) / 1e9, status, this.p.hooks.target(this.request).path)
    if (this.phase === 'over' || this.reply.sent) { this.phase = 'over'; controller.abort(clientLeft()); return }
    const answer = judgeAnswer(status, headers, this.request.headers.range, false, this.request.method === 'HEAD')
    // A 416 is judged too when it says when the file was modified; one that does not, under a rule dated by it, does not tell the size.
    const dated = answer.kind === 'recording' || answer.kind === 'not-modified' || (answer.kind === 'unsatisfiable' && headers['last-modified'] !== undefined)
    const expired = dated ? lastModifiedRefusal(this.request.ng, headerValue(headers, 'last-modified')) : undefined
    if (expired) { this.refuse(expired, null); return }
    switch (answer.kind) {
      case 'recording':
        this.status = status
        this.headers = answer.headers
        this.declared = answer.declared
        this.whole = answer.whole
        this.hold(answer.start)
        return
      case 'not-modified':
        // Only an answer to a question the client asked: a 304 to an unconditional request would leave it an empty body.
        if (this.request.headers['if-none-match'] === undefined && this.request.headers['if-modified-since'] === undefined) { this.refuse(new Errors.UpstreamError(), 'status_3xx'); return }
        this.stopNas()
        this.reply.code(304).headers(answer.headers).send()
        return
      case 'unsatisfiable': {
        this.stopNas()
        const unknownAge = this.request.ng?.retention !== undefined && headers['last-modified'] === undefined
        if (answer.contentRange && !unknownAge) this.reply.header('content-range', answer.contentRange)
        this.reply.send(new Errors.RangeNotSatisfiable())
        return
      }
      case 'refused':
        if (answer.reason) this.request.log.warn({ reason: answer.reason }, answer.upstreamKind === 'range' ? 'the NAS answered another range than was asked for' : 'the NAS answered with a body whose end could not be checked or that is not the file\'s bytes (no length nor chunks, another transfer coding, a content coding)')
        this.refuse(answer.err, answer.upstreamKind)
    }
  }

  /** With files.checkMagic, a GET's first bytes wait for their verdict; anything else streams at once. */
  private hold (start: number): void {
    if (!this.p.checkMagic || this.request.method !== 'GET') { this.begin(); return }
    this.phase = 'held'
    // From byte 0 it is judged in onResponseData, once MAGIC_BYTES are in.
    if (start !== 0) {
      this.controller?.pause()
      this.askHead()
    }
  }

  /** The answer does not hold the file's head: that is fetched (once per file version) and judged. */
  private askHead (): void {
    this.seeking = true
    this.headSignal = new UpstreamSignal()
    const { path, extension } = this.p.hooks.target(this.request)
    const version = { etag: this.headers.etag, lastModified: this.headers['last-modified'] }
    // judge() settles every NAS failure as a verdict: a rejection is a bug.
    this.p.heads.judge({ path, extension, ...version }, this.headSignal).then(
      (verdict) => { this.guard(() => { this.judged(verdict === 'ok' || verdict === 'mismatch' ? verdict === 'ok' : undefined) }) },
      (e: unknown) => { this.broken(e) })
  }

  /** The verdict on the file's first bytes: true passes, false is not its type, undefined could not be had. */
  private judged (ok: boolean | undefined): void {
    if (this.phase !== 'held') return
    if (clientGone(this.reply) || this.reply.sent) { this.cancel(); return }
    if (ok === undefined) { this.refuse(new Errors.UpstreamError(), 'body'); return }
    if (!ok) { this.refuse(new Errors.UpstreamListing(), 'magic'); return }
    this.begin()
    const held = this.held
    this.held = []
    for (const chunk of held) if (!this.pass(chunk)) return
    if (this.ended) this.end()
    else if (this.seeking && !this.draining) this.controller?.resume()
  }

  /** The answer passed: from here every chunk is passed on as it comes (short ones gathered). */
  private begin (): void {
    this.phase = 'streaming'
  }

  /**
   * The response headers go out with the first byte of the body (or its
   * end): a NAS that fails before that still gets a refusal, not a cut.
   */
  private writeHead (): void {
    this.headWritten = true
    const { request, reply } = this
    reply.code(this.status)
    const headers = Object.assign(this.p.ownHeaders(request, reply), this.headers)
    headers['content-type'] = contentTypeFor(this.p.hooks.target(request).extension)
    reply.hijack()
    reply.raw.writeHead(this.status, headers as never)
  }

  onResponseData (_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.phase === 'streaming') { this.guard(() => { this.pass(chunk) }); return }
    if (this.phase !== 'held') return
    this.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes >= MAGIC_BYTES && !this.seeking) this.guard(() => { this.judged(magicMatches(this.extension(), Buffer.concat(this.held))) })
  }

  /**
   * Counts and writes one chunk (a short one is gathered first); never more
   * than the answer declared (a NAS that sends more is cut, not passed on).
   * False once the response was cut.
   */
  private pass (chunk: Buffer): boolean {
    this.written += chunk.length
    if (this.written > this.declared) {
      // Before the headers went out it is still a refusal (a 502 the client and the record can tell), after them a cut.
      if (!this.headWritten) { this.refuse(new Errors.UpstreamError(), 'range'); return false }
      this.p.hooks.onUpstreamError(this.request, 'range')
      this.flush()
      this.cut()
      return false
    }
    if (!this.headWritten) this.writeHead()
    if (chunk.length >= GATHER_BYTES) {
      this.flush()
      this.write(chunk)
      return true
    }
    this.gathered.push(chunk)
    this.gatheredBytes += chunk.length
    if (this.gatheredBytes >= GATHER_BYTES) this.flush()
    else if (this.gathered.length === 1) queueMicrotask(() => { if (this.phase === 'streaming') this.guard(() => { this.flush() }) })
    return true
  }

  /** Writes what was gathered, unless the client is gone. */
  private flush (): void {
    if (this.gatheredBytes === 0) return
    const data = this.gathered.length === 1 ? this.gathered[0] : Buffer.concat(this.gathered, this.gatheredBytes)
    this.gathered = []
    this.gatheredBytes = 0
    if (!clientGone(this.reply)) this.write(data)
  }

  /** Counts a chunk as sent and writes it; a full response pauses the NAS until it drains. */
  private write (chunk: Buffer): void {
    this.p.hooks.onBody(this.request, chunk.length)
    if (!this.reply.raw.write(chunk) && !this.draining) {
      this.draining = true
      this.controller?.pause()
      this.reply.raw.once('drain', () => {
        this.draining = false
        if (this.phase === 'streaming') this.controller?.resume()
      })
    }
  }

  onResponseEnd (): void {
    this.ended = true
    this.guard(() => {
      if (this.phase === 'streaming') { this.end(); return }
      if (this.phase !== 'held' || this.seeking) return
      if (this.short(this.heldBytes)) { this.failInBody('body', new Errors.UpstreamError()); return }
      // Fewer than MAGIC_BYTES: the whole file is judged as it is; a part of it by the file's head.
      if (this.whole) this.judged(magicMatches(this.extension(), Buffer.concat(this.held), true))
      else this.askHead()
    })
  }

  /** A body of this many bytes is not the one the answer declared (a HEAD's has none). */
  private short (bytes: number): boolean {
    return this.request.method !== 'HEAD' && Number.isFinite(this.declared) && bytes !== this.declared
  }

  /** The NAS's body ended: the response ends too, unless the NAS sent less than it declared. */
  private end (): void {
    if (this.short(this.written)) {
      this.failInBody('body', new Errors.UpstreamError())
      return
    }
    this.phase = 'over'
    if (!this.headWritten) this.writeHead()
    this.flush()
    this.reply.raw.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    const phase = this.phase
    this.phase = 'over'
    if (phase === 'over') return
    try {
      this.failed(phase, err as NasguardError & { cause?: { code?: string } })
    } catch (e) {
      this.broken(e)
    }
  }

  private failed (phase: 'waiting' | 'held' | 'streaming', error: NasguardError & { cause?: { code?: string } }): void {
    if (clientGone(this.reply)) { this.abandon(); return }
    if (phase === 'waiting' && this.attempt === 0 && RESETS.has(error.code ?? '')) {
      // A NAS that reset a connection before it answered (a keep-alive
      // connection it closed as it was reused, a small NAS shedding load) is
      // asked once more: nothing was sent, and the method is safe.
      fetchRecording(this.p, this.request, this.reply, 1)
      return
    }
    const { err: refusal, kind } = classify(error)
    if (phase === 'waiting') {
      this.p.hooks.onUpstreamError(this.request, kind)
      this.reply.send(refusal)
      return
    }
    // In the body: a NAS that stops sending is a timeout, one that trickles is slow, any other failure a body error.
    this.failInBody(kind === 'timeout' || kind === 'slow' ? kind : 'body', refusal)
  }

  /** The NAS failed in the body: once bytes are out, the client sees a cut, not an end; before, a refusal. */
  private failInBody (kind: string, refusal: NasguardError): void {
    this.phase = 'over'
    this.controller?.abort(clientLeft())
    this.p.hooks.onUpstreamError(this.request, kind)
    // What the NAS sent before it failed goes out before the cut, as it came.
    this.flush()
    if (this.headWritten) this.p.hooks.cut(this.request, this.reply)
    else this.reply.send(refusal)
  }

  /**
   * Runs a step of the exchange. A bug in it is logged (never the request)
   * and ends the request as an internal error, rather than being taken by
   * undici for a NAS failure or leaving the response open.
   */
  private guard (step: () => void): void {
    try {
      step()
    } catch (e) {
      this.broken(e)
    }
  }

  private broken (e: unknown): void {
    this.phase = 'over'
    const err = e as NodeJS.ErrnoException
    this.request.log.error({ err: { type: err?.name, code: err?.code, stack: err?.stack } }, 'unexpected error in the NAS exchange')
    try {
      this.controller?.abort(clientLeft())
      if (this.headWritten || this.reply.sent) this.p.hooks.cut(this.request, this.reply)
      else this.reply.send(new Errors.Internal())
    } catch {
      this.reply.raw.destroy()
    }
  }

  /**
   * The client left before its response was ended: it is ended anyway. An
   * HTTP/2 HEAD stream the client reset emits 'close' only once its response
   * ends, and until then the request would hold its admission and never get
   * its completion record.
   */
  private abandon (): void {
    if (this.reply.sent) return
    this.reply.hijack()
    if (!(this.reply.raw as Raw).destroyed) this.reply.raw.end()
  }

  /** The NAS's body is not wanted (a 304's, a 416's). */
  private stopNas (): void {
    this.phase = 'over'
    this.controller?.abort(clientLeft())
  }

  private refuse (err: NasguardError, kind: string | null): void {
    this.stopNas()
    if (kind) this.p.hooks.onUpstreamError(this.request, kind)
    this.reply.send(err)
  }

  private cut (): void {
    this.stopNas()
    this.p.hooks.cut(this.request, this.reply)
  }

  private extension (): string {
    return this.p.hooks.target(this.request).extension
  }
}

/**
 * Asks the NAS for the gate's canonical path (no query string) and streams
 * the answer into the reply. A client that leaves cancels the NAS request.
 */
export function fetchRecording (p: ExchangeParts, request: FastifyRequest, reply: FastifyReply, attempt = 0): void {
  const exchange = new NasExchange(p, request, reply, attempt)
  // An HTTP/2 stream that closes before the exchange is over was reset by
  // the client (its response's own 'close' would not come for a HEAD,
  // whose writable side Node ends at once). Over HTTP/1.1 the response
  // closes unfinished.
  const stream = (request.raw as { stream?: NodeJS.EventEmitter }).stream
  if (stream) stream.once('close', () => { exchange.cancel() })
  else reply.raw.once('close', () => { if (!reply.raw.writableFinished) exchange.cancel() })
  if (clientGone(reply) || request.ng.closed) {
    exchange.cancel()
    return
  }
  p.pool.dispatch({ method: request.method as 'GET', path: p.hooks.target(request).path, headers: p.nasHeaders(request) }, exchange)
}
