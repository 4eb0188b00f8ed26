// A response from the gate to its end: the per-request state, the
// downloads in flight, slow readers cut off (limits.minSendRate), and the
// one place a finished response is counted, audited and logged, with what
// the client actually took.
import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Outcome } from '../audit/writer.js'
import type { RequestState } from '../gate/state.js'
import { REQUEST_LINE } from '../logging.js'
import { methodLabel, statusClass, type GatewayMetrics } from '../metrics/registry.js'
import { SendWatch } from '../proxy/send-watch.js'
import { cutResponse } from '../proxy/upstream.js'
import { closeWithConnection } from '../tls/pipelined.js'
import { clientOf, type Records } from './records.js'

export function elapsedMs (since: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - since) / 1e4) / 100
}

type RawRequest = FastifyRequest['raw'] & {
  stream?: {
    aborted: boolean
    closed: boolean
    destroyed: boolean
    writableFinished: boolean
    errored: Error | null
    bufferSize: number
    once: (event: 'aborted' | 'end', listener: () => void) => void
    destroy: () => void
  }
}

/**
 * Bytes written for the client that it has not taken: in its HTTP/2
 * stream's buffer, or its connection's. Undefined for a pipelined
 * HTTP/1.1 response still queued behind another (it has no socket yet).
 */
function backlog (request: FastifyRequest, reply: FastifyReply): number | undefined {
  const raw = request.raw as RawRequest
  if (raw.stream) return raw.stream.bufferSize
  return (reply.raw as unknown as ServerResponse).socket ? raw.socket?.writableLength ?? 0 : undefined
}

/**
 * An HTTP/2 response written in full whose stream is still open: its
 * END_STREAM waits on a window the client does not open. Until it goes, the
 * stream holds its admission and NAS tickets, so the slow-reader watch
 * counts it as a byte the client has not taken.
 */
function endHeld (request: FastifyRequest, reply: FastifyReply): boolean {
  const stream = (request.raw as RawRequest).stream
  return stream !== undefined && reply.raw.writableFinished && !stream.closed
}

/** Body bytes the client has taken so far. */
function taken (request: FastifyRequest, reply: FastifyReply): number {
  const bytes = request.ng.bytes
  return Math.max(0, bytes - (backlog(request, reply) ?? bytes))
}

/**
 * Whether the response was handed over in full, and how many body bytes
 * left the gateway. Node's HTTP/2 compatibility response emits 'finish'
 * when its stream closes for any reason (a reset after 1 MB of 500, a
 * window never opened): only writableFinished says the last byte was
 * written without error. What was queued but never written (still in the
 * stream's or the socket's buffer when it closed, or in a pipelined
 * response that never got the socket) was not delivered.
 *
 * An HTTP/2 stream's write completes only once the session has written it
 * to the socket, so writableFinished means every body byte went out, as
 * over HTTP/1.1. Its END_STREAM may still be unsent: a client that had
 * every byte and closed its connection at once (curl does) leaves the
 * stream to be reset with CANCEL as the session goes. That download is
 * complete; the reset code alone does not say otherwise. Not complete: a
 * stream the client reset before the gateway ended it (Node then ends the
 * writable side itself, and writableFinished holds with nothing sent; the
 * stream says aborted; a HEAD's stream is ended from the start, so its
 * headers must have been sent), and one the gateway cut (a slow reader, the
 * drain deadline, a NAS failing mid-body), destroyed with an error.
 */
function delivery (request: FastifyRequest, reply: FastifyReply): { complete: boolean, bytes: number } {
  const stream = (request.raw as RawRequest).stream
  const cutShort = stream !== undefined && (stream.aborted || stream.errored != null)
  if (reply.raw.writableFinished && reply.raw.headersSent && !cutShort) return { complete: true, bytes: request.ng.bytes }
  return { complete: false, bytes: taken(request, reply) }
}

/**
 * An HTTP/2 client that resets its stream with NO_ERROR before it had the
 * whole response has left as surely as one that says CANCEL, but Node
 * destroys only the latter: the former's stream stays, closed, with its
 * response's bytes queued for ever (and with them its admission, its NAS
 * request and its place among the connection's streams). Node says so with
 * 'aborted' when the response was not yet ended, and otherwise only by
 * ending the request side: either way, a stream closed with bytes it can
 * no longer send is destroyed here, so that the response closes.
 */
function endWhenReset (stream: NonNullable<RawRequest['stream']>): void {
  const reset = (): void => { if (stream.closed && !stream.destroyed && !stream.writableFinished) stream.destroy() }
  stream.once('aborted', reset)
  stream.once('end', reset)
}

export class Deliveries {
  /** Responses of fetches in flight (access record written, not yet completed). */
  private readonly fetching = new Set<FastifyReply>()
  readonly sendWatch: SendWatch

  /**
   * @param spent adds a response's bytes (once it ended) to the budgets of the subject it was charged to
   */
  constructor (private readonly metrics: GatewayMetrics, private readonly records: Records, limits: { windowMs: number, minBytesPerSec: number }, private readonly spent: (subject: string, bytes: number) => void = () => {}) {
    this.sendWatch = new SendWatch(limits)
  }

  get inFlight (): number { return this.fetching.size }

  /** Per-request state; the response's end is counted, audited and logged once. */
  track (request: FastifyRequest, reply: FastifyReply): RequestState {
    const state: RequestState = { started: process.hrtime.bigint(), client: clientOf(request), fetch: false, bytes: 0, closed: false }
    request.ng = state
    reply.raw.once('close', () => this.finished(request, reply))
    const raw = request.raw as RawRequest
    if (raw.stream) endWhenReset(raw.stream)
    // Only a response queued behind another (pipelined) has no socket yet; Node closes one that has.
    const res = reply.raw as unknown as ServerResponse
    if (raw.stream === undefined && raw.socket && !res.socket) closeWithConnection(raw.socket, res)
    return state
  }

  /** The gate passed: the fetch is in flight, and its client is watched for taking it too slowly. */
  start (request: FastifyRequest, reply: FastifyReply): void {
    const state = request.ng
    state.fetch = true
    this.fetching.add(reply)
    this.metrics.activeStreams.inc()
    this.sendWatch.add(reply, {
      delivered: () => taken(request, reply),
      // A queued pipelined response waits on the one before it, not on its client.
      backlog: () => (backlog(request, reply) ?? 0) || (endHeld(request, reply) ? 1 : 0),
      cut: (reason) => {
        state.tooSlow = true
        this.metrics.slowClients.inc({ reason })
        this.cut(request, reply)
      }
    })
  }

  /** The drain deadline passed: every download still in flight is cut (outcome shutdown). */
  cutAll (): void {
    for (const reply of [...this.fetching]) {
      reply.request.ng.shutdown = true
      this.cut(reply.request, reply)
    }
  }

  /**
   * Cuts a response the gateway gives up on (a slow reader, the drain
   * deadline, a NAS failing mid-body). What was delivered is read first:
   * once destroyed, an HTTP/2 stream's buffer and an HTTP/1.1 socket's
   * both read empty, and the record would count every byte ever queued as
   * delivered. Over HTTP/1.1 Node holds a response's writes (the socket is
   * corked) until the tick ends: they are let go first, and what a write
   * still in progress keeps back is not counted.
   */
  cut (request: FastifyRequest, reply: FastifyReply): void {
    if ((request.raw as RawRequest).stream === undefined) (reply.raw as unknown as ServerResponse).socket?.uncork()
    // A second cut finds the response destroyed, its buffers empty: the first one's reading stands.
    request.ng.deliveredAtCut ??= taken(request, reply)
    cutResponse(reply)
  }

  private finished (request: FastifyRequest, reply: FastifyReply): void {
    const state = request.ng
    state.closed = true
    const headersSent = reply.raw.headersSent
    const status = headersSent ? reply.statusCode : 0
    // Every byte handed to the response: the most the client can have had.
    const handed = state.bytes
    const { complete, bytes } = delivery(request, reply)
    state.bytes = Math.min(bytes, state.deliveredAtCut ?? bytes)
    state.unconfirmed = handed - state.bytes
    state.ticket?.release()
    const outcome: Outcome = state.integrityError ? 'integrity-error' : state.upstreamError ? 'upstream-error' : complete ? 'complete' : state.shutdown ? 'shutdown' : state.tooSlow ? 'client-too-slow' : 'client-aborted'
    const durationMs = elapsedMs(state.started)
    const statusLabel = headersSent ? statusClass(status) : 'aborted'
    this.metrics.requests.inc({ method: methodLabel(request.method), status_class: statusLabel, rule: state.rule ?? 'none' })
    this.metrics.requestDuration.observe({ status_class: statusLabel }, durationMs / 1000)
    if (state.fetch) {
      this.fetching.delete(reply)
      this.sendWatch.delete(reply)
      this.metrics.activeStreams.dec()
      this.metrics.bytesSent.inc(state.bytes)
      this.metrics.servedBytes.inc({ storage: state.sealed ? 'sealed' : 'plaintext' }, state.bytes)
      this.records.completion(request, status, outcome, durationMs)
      // A budget is a ceiling: it is charged what may have left, not what was confirmed. (An HTTP/2
      // write completes only once all of it is sent: a client whose window stops short of one would
      // otherwise take up to a write per request for nothing, and walk a recording by Range.)
      if (state.charged !== undefined) this.spent(state.charged, handed)
    }
    // The request id comes with the logger; never the path or a token.
    request.log.info({ method: request.method, status, rule: state.rule, bytes: state.bytes, durationMs, outcome, ...(state.refused ? { reason: state.refused } : {}), ...(state.upstreamError ? { upstream: state.upstreamError } : {}) }, REQUEST_LINE)
  }
}
