// One download from the NAS, as an undici dispatch handler writing straight
// into the client's response: no body stream of its own, no pipe, no copy.
// Each NAS chunk is counted and written to the response; when the response
// says it is full, the NAS connection is paused until it drains, so what is
// buffered per download is bounded by the client's pace, not the NAS's.
//
// Before a byte is sent the answer is judged (answer.ts), and with
// files.checkMagic its first bytes too: those are held back until there
// are enough of them, or, for an answer that does not start at byte 0, until
// the file's head was judged (head-check.ts).
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import { Errors, type NasguardError } from '../errors.js'
import { contentTypeFor } from '../policy/file-types.js'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'
import { judgeAnswer } from './answer.js'
import type { HeadCheck } from './head-check.js'
import { classify, cutResponse, UpstreamSignal, type UpstreamHooks } from './nas-failures.js'

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
  /** The answer starts past byte 0: the file's head is being fetched and judged on the side. */
  private seeking = false
  /** The response is full: the NAS connection is paused until it drains. */
  private draining = false
  private headWritten = false
  private readonly asked = process.hrtime.bigint()

  constructor (private readonly p: ExchangeParts, private readonly request: FastifyRequest, private readonly reply: FastifyReply, private readonly attempt: number) {}

  /** The client left: the NAS request is cancelled, wherever it is. */
  cancel (): void {
    if (this.phase === 'over') return
    this.phase = 'over'
    this.controller?.abort(clientLeft())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.phase === 'over') controller.abort(clientLeft())
  }

  onResponseStart (controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200) return
    this.p.hooks.onUpstreamResponse(this.request, Number(process.hrtime.bigint() - this.asked) / 1e9)
    if (this.phase === 'over' || this.reply.sent) { this.phase = 'over'; controller.abort(clientLeft()); return }
    const answer = judgeAnswer(status, headers, this.request.headers.range)
    switch (answer.kind) {
      case 'recording':
        this.status = status
        this.headers = answer.headers
        this.declared = answer.declared
        this.whole = answer.whole
        this.hold(answer.start, headers)
        return
      case 'not-modified':
        this.finish(controller)
        this.reply.code(304).headers(answer.headers).send()
        return
      case 'unsatisfiable':
        this.finish(controller)
        if (answer.contentRange) this.reply.header('content-range', answer.contentRange)
        this.reply.send(new Errors.RangeNotSatisfiable())
        return
      case 'refused':
        if (answer.reason) this.request.log.warn({ reason: answer.reason }, 'the NAS answered another range than was asked for')
        this.refuse(answer.err, answer.upstreamKind)
    }
  }

  /** With files.checkMagic, a GET's first bytes wait for their verdict; anything else streams at once. */
  private hold (start: number, headers: IncomingHttpHeaders): void {
    if (!this.p.checkMagic || this.request.method !== 'GET') { this.begin(); return }
    this.phase = 'held'
    if (start === 0) return // judged in onResponseData, once MAGIC_BYTES are in
    this.seeking = true
    this.controller?.pause()
    const signal = new UpstreamSignal()
    this.reply.raw.once('close', () => signal.abort())
    const { path, extension } = this.p.hooks.target(this.request)
    const etag = typeof headers.etag === 'string' ? headers.etag : undefined
    const lastModified = typeof headers['last-modified'] === 'string' ? headers['last-modified'] : undefined
    this.p.heads.judge({ path, extension, etag, lastModified }, signal).then(
      (verdict) => { this.judged(verdict === 'ok' || verdict === 'mismatch' ? verdict === 'ok' : undefined) },
      () => { this.judged(undefined) })
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

  /** The answer passed: from here every chunk is passed on as it comes. */
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
    if (this.phase === 'streaming') { this.pass(chunk); return }
    if (this.phase !== 'held') return
    this.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes >= MAGIC_BYTES && !this.seeking) this.judged(magicMatches(this.p.hooks.target(this.request).extension, Buffer.concat(this.held)))
  }

  /**
   * Counts and writes one chunk; never more than the answer declared (a NAS
   * that sends more is cut, not passed on). False once the response was cut.
   */
  private pass (chunk: Buffer): boolean {
    this.written += chunk.length
    if (this.written > this.declared) {
      this.p.hooks.onUpstreamError(this.request, 'range')
      this.cut()
      return false
    }
    if (!this.headWritten) this.writeHead()
    this.p.hooks.onBody(this.request, chunk.length)
    if (!this.reply.raw.write(chunk) && !this.draining) {
      this.draining = true
      this.controller?.pause()
      this.reply.raw.once('drain', () => {
        this.draining = false
        if (this.phase === 'streaming') this.controller?.resume()
      })
    }
    return true
  }

  onResponseEnd (): void {
    this.ended = true
    if (this.phase === 'streaming') { this.end(); return }
    if (this.phase !== 'held' || this.seeking) return
    // The whole body was shorter than MAGIC_BYTES: judged as it is.
    this.judged(magicMatches(this.p.hooks.target(this.request).extension, Buffer.concat(this.held), this.whole))
  }

  private end (): void {
    this.phase = 'over'
    if (!this.headWritten) this.writeHead()
    this.reply.raw.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    const phase = this.phase
    this.phase = 'over'
    if (phase === 'over' || clientGone(this.reply)) return
    const error = err as NasguardError & { cause?: { code?: string } }
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
    // In the body: a NAS that stops sending is a timeout, any other failure a body error.
    this.p.hooks.onUpstreamError(this.request, kind === 'timeout' ? 'timeout' : 'body')
    // Once bytes are out, the client must see a cut, not an end.
    if (this.headWritten) cutResponse(this.reply)
    else this.reply.send(refusal)
  }

  private finish (controller: Dispatcher.DispatchController): void {
    this.phase = 'over'
    controller.abort(clientLeft())
  }

  private refuse (err: NasguardError, kind: string | null): void {
    this.phase = 'over'
    this.controller?.abort(clientLeft())
    if (kind) this.p.hooks.onUpstreamError(this.request, kind)
    this.reply.send(err)
  }

  private cut (): void {
    this.phase = 'over'
    this.controller?.abort(clientLeft())
    cutResponse(this.reply)
  }
}

/**
 * Asks the NAS for the gate's canonical path (no query string) and streams
 * the answer into the reply. A client that leaves cancels the NAS request.
 */
export function fetchRecording (p: ExchangeParts, request: FastifyRequest, reply: FastifyReply, attempt = 0): void {
  const exchange = new NasExchange(p, request, reply, attempt)
  // Over HTTP/2 a stream the client reset also reads writableFinished: its reset code says it was not complete.
  reply.raw.once('close', () => { if (!reply.raw.writableFinished || clientGone(reply)) exchange.cancel() })
  if (clientGone(reply)) exchange.cancel()
  p.pool.dispatch({ method: request.method as 'GET', path: p.hooks.target(request).path, headers: p.nasHeaders(request) }, exchange)
}
