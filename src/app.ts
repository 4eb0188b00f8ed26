// buildGateway(config): the public TLS app and the admin app, wired to one
// audit writer and one metrics registry, not yet listening. Tests build it
// and talk to it over real sockets; server.ts owns the process around it.
//
// Every request passes the gate (one onRequest hook): the stages declared in
// src/gate/stages.ts, in that order. Only then is it proxied.
import { randomUUID } from 'node:crypto'
import type { Http2SecureServer } from 'node:http2'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerFactoryHandler } from 'fastify'
import type { Config } from './config/schema.js'
import { Errors, isNasguardError, specFor, type NasguardError } from './errors.js'
import { createTlsServer, type TlsServer } from './tls/server.js'
import { Authenticator } from './auth/identity.js'
import { JwksCache } from './auth/keys.js'
import { Denylist } from './auth/revocation.js'
import { GrantSigner } from './auth/grants.js'
import { join } from 'node:path'
import { compileRules } from './policy/rules.js'
import { registerGrantsRoute } from './gateway/grants-route.js'
import { readinessOf } from './gateway/readiness.js'
import { Records } from './gateway/records.js'
import { announceTrail, openTrail } from './gateway/audit-trail.js'
import { Deliveries, elapsedMs } from './gateway/deliveries.js'
import { gateRequestOf, registerGate } from './gateway/gate-hook.js'
import { closer } from './gateway/close.js'
import { clientErrorHandler } from './gateway/client-errors.js'
import { CLIENT_CONNECTIONS, frontDoorHooks } from './gateway/front-door.js'
import type { GateContext, LiveSettings, RequestState } from './gate/state.js'
import { registerUpstream } from './proxy/upstream.js'
import { Admission } from './proxy/admission.js'
import { RefusalTally } from './limits/refusal-tally.js'
import type { AuditWriter } from './audit/writer.js'
import { GatewayMetrics, statusClass } from './metrics/registry.js'
import { LogThrottle, createLogger } from './logging.js'
import { adminCredential, buildAdmin, type Readiness } from './admin.js'
import { grantsSecret, processShare } from './config/derived.js'
import { RELOADABLE, changedKeys, type ReloadResult } from './config/reload.js'

export { auditKeyFile, grantsSecret } from './config/derived.js'
export { GRANTS_PATH } from './gate/paths.js'
export type { Readiness } from './admin.js'

declare module 'fastify' {
  interface FastifyRequest { ng: RequestState }
}

export interface Gateway {
  app: FastifyInstance
  admin: FastifyInstance | null
  metrics: GatewayMetrics
  audit: AuditWriter
  close: () => Promise<void>
  /** What /readyz reports: the NAS, the audit trail, the denylist, the certificate. */
  readiness: () => Promise<Readiness>
  /** How long close() lets downloads in flight go on before it cuts them (limits.drainTimeoutMs). */
  drainTimeoutMs: number
  /** Re-reads tls.cert and tls.key (SIGHUP, or the file watcher); false when the new pair was refused. */
  reloadCertificate: () => boolean
  /** Applies a new, checked config: the policy, extensions and per-request limits now; the rest is reported as needing a restart. */
  reloadConfig: (next: Readonly<Config>) => ReloadResult
}

export interface GatewayOptions {
  /** A pino logger to use instead of one built from config.log (tests pass a sink). */
  logger?: FastifyBaseLogger
  /** This process's audit chain when not audit.dir itself: a worker's, worker-<i>, a directory under audit.dir sealed with its own key (src/audit/chains.ts). */
  auditChain?: string
  /** The playback-grant key, when the caller shares one (workers); else auth.grants or a random one. */
  grantsSecret?: string
  /** TLS session ticket keys (48 bytes), when shared (workers); else Node makes its own. */
  ticketKeys?: Buffer
  /** Serve the admin listener from this gateway (false in workers: the primary serves it). Default true. */
  admin?: boolean
}

/** The settings a request reads afresh, which a config reload replaces whole. */
function liveSettings (c: Readonly<Config>): LiveSettings {
  return { rules: compileRules(c.policy), extensions: new Set(c.files.extensions), maxPathLength: c.limits.maxPathLength, maxRanges: c.limits.maxRanges }
}
/** What an upstream failure kind means, for the log line an operator reads. */
const UPSTREAM_FAILURES: Record<string, string> = {
  auth: 'the NAS refused the gateway (401/403): check upstream.username and upstream.password / passwordFile',
  status_5xx: 'the NAS answered with a server error (5xx)',
  status_4xx: 'the NAS answered with an unexpected client error (4xx)',
  unreachable: 'the NAS could not be reached (refused, reset, or no route)',
  timeout: 'the NAS did not answer within upstream.timeoutMs',
  connect_timeout: 'no connection to the NAS within upstream.connectTimeoutMs',
  tls: 'the TLS handshake with the NAS failed (check upstream.caFile and its certificate)',
  listing: 'the NAS answered with something that is not a recording (a listing or an error page)',
  redirect: 'the NAS answered with a redirect',
  magic: 'the file does not look like its type (files.checkMagic)',
  range: 'the NAS answered another range than was asked for',
  body: 'the NAS failed in the middle of a body'
}


export async function buildGateway (config: Readonly<Config>, opts: GatewayOptions = {}): Promise<Gateway> {
  const metrics = new GatewayMetrics()
  metrics.initialise(
    Object.values(Errors).map((E) => E.spec.reason).filter((r) => r !== 'not_found' && r !== 'range' && r !== 'internal'),
    ['unreachable', 'timeout', 'connect_timeout', 'listing', 'redirect', 'magic', 'range', 'auth', 'status_5xx', 'body', 'tls', 'other'],
    ['protocol_version', 'no_shared_cipher', 'client_certificate', 'malformed', 'reset', 'other'])
  metrics.refuse(CLIENT_CONNECTIONS, 0)
  const audit = await openTrail(config, opts.auditChain, metrics, () => log)
  const records = new Records(audit, metrics, () => log)
  // What a config reload may change in place (config/reload.ts).
  let live = liveSettings(config)
  const denylist = new Denylist(config.auth.revocation.file ?? join(config.audit.dir, 'revoked.jsonl'))
  const g = config.auth.grants
  const grants = new GrantSigner(opts.grantsSecret ?? grantsSecret(config), g.bindIp)
  const jwksCfg = config.auth.jwt.jwks
  const authenticator = new Authenticator(config, { denylist, grants, jwks: jwksCfg ? new JwksCache(jwksCfg) : undefined, clientCrls: () => tls?.clientCrls })
  const hsts = `max-age=${config.tls.hstsMaxAge}; includeSubDomains`
  const admission = new Admission({
    connections: processShare(config, config.upstream.connections),
    queueTimeoutMs: config.upstream.queueTimeoutMs,
    clientFetches: processShare(config, config.limits.clientFetches)
  })
  metrics.setUpstreamUse({ inUse: () => admission.active, queued: () => admission.waiting })
  const deliveries = new Deliveries(metrics, records, { windowMs: config.limits.sendTimeoutMs, minBytesPerSec: config.limits.minSendRate })
  // One record and one line a second per address, however many connections it opens.
  const connectionRefusals = new RefusalTally((address, count) => {
    log.warn({ remoteAddress: address, connections: count }, 'connections over limits.clientConnections closed at accept')
    records.refusal({ requestId: randomUUID(), clientIp: address, status: 0, reason: CLIENT_CONNECTIONS, count })
  })

  let log: FastifyBaseLogger
  let tls: TlsServer | undefined
  const serverFactory = (handler: FastifyServerFactoryHandler): Http2SecureServer => {
    tls = createTlsServer(config, handler as never, {
      ticketKeys: opts.ticketKeys,
      ...frontDoorHooks({ metrics, log: () => log, record: (r) => records.refusal(r), connectionRefusals, hsts })
    })
    return tls.server
  }

  // The raw request and response are Node's HTTP/2 compatibility objects
  // (HTTP/1.1 clients get the usual ones); the app uses the API they share,
  // so it is typed as the default server.
  const app = Fastify({
    loggerInstance: opts.logger ?? createLogger(config.log.level),
    serverFactory,
    http2: true,
    // X-Forwarded-For is believed only from the configured proxies.
    trustProxy: config.listen.trustedProxies.length > 0 ? [...config.listen.trustedProxies] : false,
    // Request bodies (the grants endpoint) are validated, never repaired:
    // unknown keys and wrong types are refused, not stripped or coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    genReqId: () => randomUUID(),
    // Fastify's own request lines would log the URL, which holds a recording name.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    return503OnClosing: true,
    // A malformed request (bad framing, CL+TE, oversized headers) never
    // reaches a route: answer it on the socket in our error shape.
    clientErrorHandler: clientErrorHandler({
      hsts,
      count: (reason) => metrics.refuse(reason),
      log: (fields, message) => log.info(fields, message),
      record: (r) => records.refusal(r),
      requestId: randomUUID
    }),
    // Fastify answers these (e.g. an undecodable URL) outside the hooks, so
    // the request is tracked and the headers are set here.
    frameworkErrors: (_error: Error, request: FastifyRequest, reply: FastifyReply) => {
      deliveries.track(request, reply)
      setResponseHeaders(request, reply)
      records.refuse(request, reply, new Errors.BadPath('the URL could not be parsed'))
    }
  } as never) as unknown as FastifyInstance
  log = app.log
  const stopDenylist = denylist.watch(config.auth.revocation.pollMs, (problem) => {
    // Once per change: the file is polled every pollMs, the log is not.
    if (problem) log.error({ file: denylist.file, problem }, 'the revocation denylist is not valid: every token request is refused (503) until it is')
    else log.warn({ file: denylist.file }, 'the revocation denylist is valid again')
  })
  announceTrail(config, opts.auditChain, audit, log)

  const upstreamFailureLog = new LogThrottle()

  app.decorateRequest('ng', null as unknown as RequestState)

  // HTTP/2 sessions stay open across requests: tell them to go away (streams
  // in flight finish) so that closing the server can complete.
  app.addHook('preClose', (done) => {
    tls?.stopWatching()
    tls?.closeSessions()
    done()
  })

  app.setErrorHandler((error, request, reply) => {
    if (isNasguardError(error) && specFor(error.code)) {
      records.refuse(request, reply, error, (error as NasguardError & { required?: string[] }).required)
      return
    }
    const e = error as NodeJS.ErrnoException & { statusCode?: number }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      records.refuse(request, reply, new Errors.BadRequest('refused by the request parser'))
      return
    }
    // Log the error, never the request: its URL holds a recording name.
    request.log.error({ err: { type: e.name, code: e.code, stack: e.stack } }, 'unexpected error')
    records.refuse(request, reply, new Errors.Internal())
  })

  app.setNotFoundHandler((request, reply) => { records.refuse(request, reply, new Errors.NoRule()) })

  function setResponseHeaders (request: FastifyRequest, reply: FastifyReply): void {
    reply.header('strict-transport-security', hsts)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('cache-control', 'no-store')
    reply.header('referrer-policy', 'no-referrer')
    reply.header('content-security-policy', "default-src 'none'; sandbox")
    reply.header('x-request-id', request.id)
  }

  /** Every answer's last step before its headers go out: Fastify's (onSend), or a recording's streamed past it. */
  function beforeHeaders (request: FastifyRequest, reply: FastifyReply): void {
    setResponseHeaders(request, reply)
    const state = request.ng as RequestState | null
    if (state) metrics.timeToFirstByte.observe({ status_class: statusClass(reply.statusCode) }, elapsedMs(state.started) / 1000)
  }

  app.addHook('onSend', (request, reply, payload, done) => {
    beforeHeaders(request, reply)
    done(null, payload)
  })

  const gate: GateContext = {
    live: () => live,
    fileSystem: config.upstream.fileSystem,
    admission,
    record: async (r) => await records.write(r)
  }

  registerGate(app, { gate, authenticator, deliveries, records })

  registerGrantsRoute(app, {
    signer: grants,
    settings: g,
    gate,
    gateRequest: (request, reply) => gateRequestOf(authenticator, request, reply),
    record: async (request, grant) => await records.write({ event: 'grant', time: new Date().toISOString(), ...records.fields(request), ...grant }, request.log)
  })

  await authenticator.register(app)
  const upstream = registerUpstream(app, { upstream: config.upstream, connections: processShare(config, config.upstream.connections), checkMagic: config.files.checkMagic, beforeHeaders }, {
    target: (request) => ({ path: request.ng.path as string, extension: request.ng.extension as string }),
    onBody: (request, n) => { request.ng.bytes += n },
    onUpstreamResponse: (_request, seconds) => { metrics.upstreamLatency.observe(seconds) },
    onUpstreamError: (request, kind) => {
      request.ng.upstreamError = kind
      metrics.upstreamErrors.inc({ kind })
      // Why the NAS failed, at most once a second (the metric counts each).
      upstreamFailureLog.line((repeated) => {
        request.log.warn({ kind, ...(repeated > 0 ? { repeated } : {}) }, UPSTREAM_FAILURES[kind] ?? 'the NAS request failed')
      })
    }
  })


  const readiness = readinessOf({
    audit,
    record: async (r) => await records.write(r),
    nas: async () => await upstream.check(),
    denylist,
    tls: () => tls,
    crl: config.tls.clientAuth !== 'off' && Boolean(config.tls.clientCrl)
  })
  const admin = config.admin.enabled && opts.admin !== false
    ? buildAdmin({ contentType: metrics.registry.contentType, text: async () => await metrics.registry.metrics() }, app.log, readiness, adminCredential(config))
    : null

  let drainTimeoutMs = config.limits.drainTimeoutMs
  const close = closer({ app, admin, deliveries, tls: () => tls, upstream, connectionRefusals, stopDenylist, audit, drainTimeoutMs: () => drainTimeoutMs })

  /** Applies what can change in place; reports the rest as needing a restart. */
  const reloadConfig = (next: Readonly<Config>): ReloadResult => {
    const changed = changedKeys(config, next)
    const applied = changed.filter((k) => (RELOADABLE as readonly string[]).includes(k))
    live = liveSettings(next)
    admission.setLimits({ queueTimeoutMs: next.upstream.queueTimeoutMs, clientFetches: processShare(next, next.limits.clientFetches) })
    deliveries.sendWatch.setLimits({ windowMs: next.limits.sendTimeoutMs, minBytesPerSec: next.limits.minSendRate })
    drainTimeoutMs = next.limits.drainTimeoutMs
    const restart = changed.filter((k) => !applied.includes(k))
    metrics.configReloads.inc({ result: 'ok' })
    log.info({ applied, ...(restart.length > 0 ? { restart } : {}) }, restart.length > 0 ? 'config reloaded; some changes need a restart' : 'config reloaded')
    return { applied, restart }
  }

  return { app, admin, metrics, audit, close, readiness, get drainTimeoutMs () { return drainTimeoutMs }, reloadCertificate: () => tls?.reload() ?? false, reloadConfig }
}
