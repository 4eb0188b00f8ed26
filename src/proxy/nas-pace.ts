// A NAS that trickles. upstream.timeoutMs bounds each gap in a NAS's body,
// so without this a NAS that sends a byte a second (a failing disk, a
// misbehaving box, or one in someone else's hands) would hold a download,
// its NAS connection and its client's slot for as long as it kept
// trickling: days, for one recording.
//
// Every request to the NAS goes through this interceptor (downloads, sealed
// chunks, head checks, /readyz, uploads' WebDAV calls). From the moment it
// is sent (a GET or HEAD) or from its first answer (a request with a body,
// which may take long to send), an answer that comes slower than
// upstream.minRate bytes a second over any window of upstream.timeoutMs is
// aborted. Only time in which the gateway waits on the NAS counts: while the
// answer's reader has paused it (its client is slow, or its head is being
// judged on the side) the window starts again, as the slow-reader watch does
// for clients (send-watch.ts, which judges both).
import type { IncomingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import { SendWatch } from './send-watch.js'

/** The code of the error a too-slow NAS answer is aborted with (classified as kind "slow"). */
export const NAS_TOO_SLOW = 'NASGUARD_NAS_TOO_SLOW'
/** One that sent nothing for a window: what undici's bodyTimeout says too (kind "timeout"), whichever comes first. */
export const NAS_STALLED = 'NASGUARD_NAS_STALLED'

export interface NasPace {
  /** Bytes a second the NAS must send while the gateway waits on it (upstream.minRate; 0: off). */
  minBytesPerSec: number
  /** The window, ms (upstream.timeoutMs). */
  windowMs: number
}

/** Watches one answer, passing every event on to the handler it wraps. */
class PacedAnswer implements Dispatcher.DispatchHandler {
  private received = 0
  private watched = false

  /** @param bodiless a GET or HEAD: watched from the moment it is sent, since nothing of it is still to go out. */
  constructor (private readonly inner: Dispatcher.DispatchHandler, private readonly watch: SendWatch, private readonly bodiless: boolean) {}

  onRequestStart (controller: Dispatcher.DispatchController, context: unknown): void {
    if (this.bodiless) this.watchFrom(controller)
    this.inner.onRequestStart?.(controller, context)
  }

  onRequestUpgrade (controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders, socket: Duplex): void {
    this.watch.delete(this)
    this.inner.onRequestUpgrade?.(controller, status, headers, socket)
  }

  /**
   * Any answer, an interim one (1xx) too: undici restarts its headers
   * timeout on each of those, so a NAS sending `102 Processing` forever
   * would otherwise never be timed out. Interim answers do not restart the
   * window; the final one does, once: its body gets a window of its own, as
   * undici gives the headers one and each gap in the body one (a NAS slow
   * to answer and then slow to its first byte, a disk spinning up, is not
   * cut for the sum).
   */
  onResponseStart (controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders, message?: string): void {
    if (status >= 200) this.watched = false
    this.watchFrom(controller)
    this.inner.onResponseStart?.(controller, status, headers, message)
  }

  /**
   * From here the answer must make progress. Nothing but body bytes counts
   * (a request queued behind another on a pipelined connection, or an answer
   * that is only interim ones, has none), and only while its reader has not
   * paused it.
   */
  private watchFrom (controller: Dispatcher.DispatchController): void {
    if (this.watched) return
    this.watched = true
    this.watch.add(this, {
      delivered: () => this.received,
      // "Behind" is the NAS's side here: the gateway is waiting on it.
      backlog: () => controller.paused || controller.aborted ? 0 : 1,
      cut: (reason) => {
        const stalled = reason === 'stalled'
        controller.abort(Object.assign(new Error(stalled ? 'the NAS sent nothing for a window of upstream.timeoutMs' : 'the NAS sent less than upstream.minRate over a window of upstream.timeoutMs'), { code: stalled ? NAS_STALLED : NAS_TOO_SLOW }))
      }
    })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.received += chunk.length
    this.inner.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.watch.delete(this)
    this.inner.onResponseEnd?.(controller, trailers)
  }

  onResponseError (controller: Dispatcher.DispatchController, error: Error): void {
    this.watch.delete(this)
    this.inner.onResponseError?.(controller, error)
  }
}

/** The interceptor for the NAS pool (Dispatcher.compose); undefined when upstream.minRate is 0. */
export function nasPace (pace: NasPace): Dispatcher.DispatcherComposeInterceptor | undefined {
  if (pace.minBytesPerSec === 0) return undefined
  const watch = new SendWatch({ windowMs: pace.windowMs, minBytesPerSec: pace.minBytesPerSec })
  return (dispatch) => (opts, handler) => dispatch(opts, new PacedAnswer(handler, watch, opts.method === 'GET' || opts.method === 'HEAD'))
}
