// What every answer carries and how an error becomes one: the security
// headers and time-to-first-byte (for Fastify's answers in onSend, for a
// streamed recording just before its headers go out), the error handler,
// and the answer to a route that does not exist.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Errors, isNasguardError, specFor, type NasguardError } from '../errors.js'
import type { RequestState } from '../gate/state.js'
import { statusClass, type GatewayMetrics } from '../metrics/registry.js'
import { elapsedMs } from './deliveries.js'
import type { Records } from './records.js'

export interface ResponseParts {
  records: Records
  metrics: GatewayMetrics
  /** The Strict-Transport-Security value. */
  hsts: string
}

/** The gateway's own headers on every answer, but its request id. */
function fixedHeaders (hsts: string): Readonly<Record<string, string>> {
  return Object.freeze({
    'strict-transport-security': hsts,
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
    'content-security-policy': "default-src 'none'; sandbox"
  })
}

/** Sets the gateway's own headers on an answer Fastify sends. */
export function securityHeaders (hsts: string): (request: FastifyRequest, reply: FastifyReply) => void {
  const fixed = fixedHeaders(hsts)
  return (request, reply) => {
    reply.headers(fixed)
    reply.header('x-request-id', request.id)
  }
}

/**
 * Registers onSend, the error handler and the not-found handler. Returns
 * what a streamed recording calls for its headers (it goes past onSend):
 * the gateway's own, with those already set on the reply.
 */
export function registerResponses (app: FastifyInstance, p: ResponseParts): (request: FastifyRequest, reply: FastifyReply) => Record<string, unknown> {
  const fixed = fixedHeaders(p.hsts)
  const headers = securityHeaders(p.hsts)
  const firstByte = (request: FastifyRequest, reply: FastifyReply): void => {
    const state = request.ng as RequestState | null
    if (state) p.metrics.timeToFirstByte.observe({ status_class: statusClass(reply.statusCode) }, elapsedMs(state.started) / 1000)
  }
  app.addHook('onSend', (request, reply, payload, done) => {
    headers(request, reply)
    firstByte(request, reply)
    done(null, payload)
  })
  app.setErrorHandler((error, request, reply) => {
    // Fastify's body parser asks for `Connection: close` on a body it refused, whatever the
    // protocol; HTTP/2 has no such header (RFC 9113 §8.2.2), and Node warns on stderr for it.
    if (request.raw.httpVersionMajor === 2) reply.removeHeader('connection')
    if (isNasguardError(error) && specFor(error.code)) {
      p.records.refuse(request, reply, error, (error as NasguardError & { required?: string[] }).required)
      return
    }
    const e = error as NodeJS.ErrnoException & { statusCode?: number }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      p.records.refuse(request, reply, new Errors.BadRequest('refused by the request parser'))
      return
    }
    // Log the error, never the request: its URL holds a recording name.
    request.log.error({ err: { type: e.name, code: e.code, stack: e.stack } }, 'unexpected error')
    p.records.refuse(request, reply, new Errors.Internal())
  })
  app.setNotFoundHandler((request, reply) => { p.records.refuse(request, reply, new Errors.NoRule()) })
  return (request, reply) => {
    firstByte(request, reply)
    return Object.assign(reply.getHeaders(), fixed, { 'x-request-id': request.id })
  }
}
