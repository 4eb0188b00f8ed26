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

/** The gateway's own headers on every answer. */
export function securityHeaders (hsts: string): (request: FastifyRequest, reply: FastifyReply) => void {
  return (request, reply) => {
    reply.header('strict-transport-security', hsts)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('cache-control', 'no-store')
    reply.header('referrer-policy', 'no-referrer')
    reply.header('content-security-policy', "default-src 'none'; sandbox")
    reply.header('x-request-id', request.id)
  }
}

/**
 * Registers onSend, the error handler and the not-found handler; returns
 * what a streamed recording calls before its headers go out.
 */
export function registerResponses (app: FastifyInstance, p: ResponseParts): (request: FastifyRequest, reply: FastifyReply) => void {
  const headers = securityHeaders(p.hsts)
  const beforeHeaders = (request: FastifyRequest, reply: FastifyReply): void => {
    headers(request, reply)
    const state = request.ng as RequestState | null
    if (state) p.metrics.timeToFirstByte.observe({ status_class: statusClass(reply.statusCode) }, elapsedMs(state.started) / 1000)
  }
  app.addHook('onSend', (request, reply, payload, done) => {
    beforeHeaders(request, reply)
    done(null, payload)
  })
  app.setErrorHandler((error, request, reply) => {
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
  return beforeHeaders
}
