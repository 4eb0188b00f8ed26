// A NAS that trickles. upstream.timeoutMs bounds each gap in a NAS's body,
// so without this a NAS that sends a byte a second (a failing disk, a
// misbehaving box, or one in someone else's hands) would hold a download,
// its NAS connection and its client's slot for as long as it kept
// trickling: days, for one recording.
//
// Every request to the NAS goes through this interceptor (downloads, sealed
// chunks, head checks, uploads' WebDAV calls). From its headers on, an answer
// that comes slower than upstream.minRate bytes a second over any window of
// upstream.timeoutMs is aborted. Only time in which the gateway waits on the
// NAS counts: while the answer's reader has paused it (its client is slow,
// or its head is being judged on the side) the window starts again, as the
// slow-reader watch does for clients (send-watch.ts, which judges both).
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

  constructor (private readonly inner: Dispatcher.DispatchHandler, private readonly watch: SendWatch) {}

  onRequestStart (controller: Dispatcher.DispatchController, context: unknown): void {
    this.inner.onRequestStart?.(controller, context)
  }

  onRequestUpgrade (controller: Dispatcher.DispatchController, status: number, headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[2], socket: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[3]): void {
    this.inner.onRequestUpgrade?.(controller, status, headers, socket)
  }

  onResponseStart (controller: Dispatcher.DispatchController, status: number, headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>[2], message?: string): void {
    if (status >= 200) {
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
    this.inner.onResponseStart?.(controller, status, headers, message)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.received += chunk.length
    this.inner.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>>[1]): void {
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
  return (dispatch) => (opts, handler) => dispatch(opts, new PacedAnswer(handler, watch))
}
