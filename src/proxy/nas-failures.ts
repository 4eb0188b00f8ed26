// How a NAS failure is named and answered: the catalogued error a client
// gets, the bounded label the metrics and logs use, and how a response that
// cannot be completed is cut.
import { EventEmitter } from 'node:events'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Errors, type NasguardError } from '../errors.js'
import { NAS_STALLED, NAS_TOO_SLOW } from './nas-pace.js'

/** What the gateway decided about a request, filled in by the gate. */
export interface ProxyTarget { path: string, extension: string }

export interface UpstreamHooks {
  target: (request: FastifyRequest) => ProxyTarget
  /** Called for every body chunk passed on to the client. */
  onBody: (request: FastifyRequest, bytes: number) => void
  /** The NAS's response headers (this status, for this NAS path) arrived this many seconds after it was asked. */
  onUpstreamResponse: (request: FastifyRequest, seconds: number, status: number, nasPath: string) => void
  /** The NAS failed or answered something that is not passed on; kind is a bounded label. */
  onUpstreamError: (request: FastifyRequest, kind: string) => void
  /** Cuts a response that cannot be completed, reading first what of it was delivered (cutResponse). */
  cut: (request: FastifyRequest, reply: FastifyReply) => void
}

/**
 * A signal for undici that fires when the client goes away (undici takes an
 * EventEmitter with `aborted`: cheaper than an AbortController).
 */
export class UpstreamSignal extends EventEmitter {
  aborted = false
  reason: Error | undefined
  abort (): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = Object.assign(new Error('the client went away'), { name: 'AbortError', code: 'UND_ERR_ABORTED' })
    this.emit('abort')
  }
}

export function classify (error: NasguardError & { cause?: { code?: string } }): { err: NasguardError, kind: string } {
  const code = error.cause?.code ?? error.code
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case NAS_STALLED:
      return { err: new Errors.UpstreamTimeout(), kind: 'timeout' }
    case NAS_TOO_SLOW:
      return { err: new Errors.UpstreamTimeout(), kind: 'slow' }
    case 'UND_ERR_CONNECT_TIMEOUT':
      return { err: new Errors.UpstreamTimeout(), kind: 'connect_timeout' }
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return { err: new Errors.UpstreamUnreachable(), kind: 'unreachable' }
    default:
      if (/^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_SSL)/.test(String(code))) return { err: new Errors.UpstreamUnreachable(), kind: 'tls' }
      return { err: new Errors.UpstreamError(), kind: 'other' }
  }
}

/**
 * Ends a response that cannot be completed (the NAS failed mid-body, it sent
 * more than it declared, a slow reader, the drain deadline). HTTP/1.1 closes
 * the connection. An HTTP/2 stream is destroyed with an error, which resets
 * it with INTERNAL_ERROR (a bare destroy says NO_ERROR, which a client cannot
 * tell from a complete body) and frees it at once: stream.close() would wait
 * to write its RST_STREAM, which never happens on a socket the client no
 * longer reads, and the stream, its NAS connection and its record with it.
 */
export function cutResponse (reply: FastifyReply): void {
  const stream = (reply.raw as unknown as { stream?: { destroyed: boolean, on: (e: 'error', l: () => void) => void, destroy: (err: Error) => void } }).stream
  if (stream && !stream.destroyed) {
    stream.on('error', () => {})
    stream.destroy(Object.assign(new Error('cut by the gateway'), { code: 'NASGUARD_CUT' }))
    // The response of a HEAD emits 'close' only once it is ended, even on a
    // destroyed stream: without this its request would never be completed.
    if (!reply.raw.writableEnded) reply.raw.end()
  } else {
    reply.raw.destroy()
  }
}
