// The public app's Fastify options: HTTP/2 with HTTP/1.1 on the same TLS
// server, no request logging of Fastify's own (its lines would log the URL,
// which holds a recording name), and the answers Fastify gives outside the
// hooks (a malformed request, an undecodable URL) in the gateway's shape.
import { randomUUID } from 'node:crypto'
import { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest, type FastifyServerFactory } from 'fastify'
import type { Config } from '../config/schema.js'
import { Errors } from '../errors.js'
import { createLogger } from '../logging.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { clientErrorHandler } from './client-errors.js'
import type { Deliveries } from './deliveries.js'
import type { Records } from './records.js'
import { securityHeaders } from './responses.js'
import { TrustedProxies } from '../tls/proxy-protocol.js'

export interface OptionParts {
  config: Readonly<Config>
  logger?: FastifyBaseLogger
  serverFactory: FastifyServerFactory
  hsts: string
  metrics: GatewayMetrics
  records: Records
  deliveries: Deliveries
  log: () => FastifyBaseLogger
}

/** Fastify's trustProxy for listen.trustedProxies: false for none, else whether a hop's address is one of them. */
function trustedProxies (entries: readonly string[]): false | ((address: string) => boolean) {
  if (entries.length === 0) return false
  const trusted = new TrustedProxies(entries, 'listen.trustedProxies')
  return (address) => trusted.includes(address)
}

export function fastifyOptions (p: OptionParts): object {
  const { config } = p
  const headers = securityHeaders(p.hsts)
  return {
    loggerInstance: p.logger ?? createLogger(config.log.level),
    serverFactory: p.serverFactory,
    http2: true,
    // X-Forwarded-For is believed only from the configured proxies, matched as the PROXY protocol's
    // are: IPv4 and IPv6 apart (proxy-addr's own list would match an IPv4 client against
    // an IPv6 range holding ::ffff:0:0/96, so ::/16 would trust every IPv4 host).
    trustProxy: trustedProxies(config.listen.trustedProxies),
    // Request bodies (the grants endpoint) are validated, never repaired:
    // unknown keys and wrong types are refused, not stripped or coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    genReqId: () => randomUUID(),
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    return503OnClosing: true,
    // A malformed request (bad framing, CL+TE, oversized headers) never
    // reaches a route: answer it on the socket in our error shape.
    clientErrorHandler: clientErrorHandler({
      hsts: p.hsts,
      count: (reason) => p.metrics.refuse(reason),
      log: (fields, message) => p.log().info(fields, message),
      record: (r) => p.records.refusal(r),
      requestId: randomUUID
    }),
    // Fastify answers these (e.g. an undecodable URL) outside the hooks, so
    // the request is tracked and the headers are set here.
    frameworkErrors: (_error: Error, request: FastifyRequest, reply: FastifyReply) => {
      p.deliveries.track(request, reply)
      headers(request, reply)
      p.records.refuse(request, reply, new Errors.BadPath('the URL could not be parsed'))
    }
  }
}
