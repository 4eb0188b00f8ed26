// buildGateway(config): the public TLS app and the admin app, wired to one
// audit writer and one metrics registry, not yet listening. Tests build it
// and talk to it over real sockets; server.ts owns the process around it.
//
// Every request passes the gate (one onRequest hook): the stages declared in
// src/gate/stages.ts, in that order. Only then is it proxied.
import { randomUUID } from 'node:crypto'
import type { Http2SecureServer } from 'node:http2'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest, type FastifyServerFactoryHandler } from 'fastify'
import type { Config } from './config/schema.js'
import type { Keyring } from './sealing/keyring.js'
import { Errors } from './errors.js'
import { createTlsServer, type TlsServer } from './tls/server.js'
import { Authenticator } from './auth/identity.js'
import { JwksCache } from './auth/keys.js'
import { revocationsOf } from './gateway/revocations.js'
import { retentionPartsOf } from './gateway/retention.js'
import { budgetPartsOf } from './gateway/budgets.js'
import { exposedTokensOf } from './gateway/exposed.js'
import type { LeasingStore } from './budgets/store.js'
import type { QuotaControl } from './admin.js'
import { GrantSigner } from './auth/grants.js'
import { registerGrantsRoute } from './gateway/grants-route.js'
import { readinessOf } from './gateway/readiness.js'
import { Records } from './gateway/records.js'
import { announceTrail, openTrail } from './gateway/audit-trail.js'
import { Deliveries } from './gateway/deliveries.js'
import { gateRequestOf, registerGate } from './gateway/gate-hook.js'
import { closer } from './gateway/close.js'
import { fastifyOptions } from './gateway/fastify-options.js'
import { LiveConfig } from './gateway/live-config.js'
import { nasHooks, UPSTREAM_FAILURE_KINDS } from './gateway/nas-hooks.js'
import { exposureWatchOf, type ExposureWatch } from './gateway/exposure.js'
import { registerResponses } from './gateway/responses.js'
import { CLIENT_CONNECTIONS, PROXY_HEADER, frontDoorHooks } from './gateway/front-door.js'
import type { GateContext, RequestState } from './gate/state.js'
import { registerUpstream } from './proxy/upstream.js'
import { Admission } from './proxy/admission.js'
import { RefusalTally } from './limits/refusal-tally.js'
import type { AuditRecord, AuditWriter } from './audit/writer.js'
import { GatewayMetrics, type IngestOutcome } from './metrics/registry.js'
import { methodsOf } from './policy/rules.js'
import { adminCredential, buildAdmin, type Readiness } from './admin.js'
import { grantsSecret, processShare } from './config/derived.js'
import type { ReloadResult } from './config/reload.js'

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
  /** Reads sealing.keyring again (SIGHUP); false when it no longer loads (the one in use stays). */
  reloadKeyring: () => boolean
  /** `nasguard quota show|reset` as this gateway answers them (a worker's, for the primary's admin listener). */
  quota: QuotaControl
  /** The NAS lockdown check (upstream.exposureCheckSec). */
  exposure: ExposureWatch
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
  /** The clock retention and budgets are judged by, ms since the epoch (tests move it). Default Date.now. */
  clock?: () => number
  /** Where the budgets are kept, when the caller shares them (a worker: the primary's); else state.redis or this process's memory. */
  budgets?: LeasingStore
  /** A config reloaded since `config` was started with (a worker restarted after a reload): applied before the first request, and the JWT keys are read from it, not from `config`. */
  applied?: Readonly<Config>
}

export async function buildGateway (config: Readonly<Config>, opts: GatewayOptions = {}): Promise<Gateway> {
  const metrics = new GatewayMetrics()
  metrics.initialise(
    Object.values(Errors).map((E) => E.spec.reason).filter((r) => r !== 'not_found' && r !== 'range' && r !== 'internal'),
    UPSTREAM_FAILURE_KINDS,
    ['protocol_version', 'no_shared_cipher', 'client_certificate', 'malformed', 'reset', 'other'])
  metrics.refuse(CLIENT_CONNECTIONS, 0)
  const audit = await openTrail(config, opts.auditChain, metrics, () => log)
  const records = new Records(audit, metrics, () => log)
  const revocations = revocationsOf(config, () => log)
  metrics.setRevocationState(() => revocations.source.loadError === null)
  const g = config.auth.grants
  const grants = new GrantSigner(opts.grantsSecret ?? grantsSecret(config), g.bindIp)
  const jwksCfg = config.auth.jwt.jwks
  const authenticator = new Authenticator(config, { revocations: revocations.source, grants, jwks: jwksCfg ? new JwksCache(jwksCfg) : undefined, clientCrls: () => tls?.clientCrls }, opts.applied?.auth.jwt)
  const hsts = `max-age=${config.tls.hstsMaxAge}; includeSubDomains`
  const connections = processShare(config, config.upstream.connections)
  const admission = new Admission({ connections, queueTimeoutMs: config.upstream.queueTimeoutMs, clientFetches: processShare(config, config.limits.clientFetches) })
  metrics.setUpstreamUse({ inUse: () => admission.active, queued: () => admission.waiting })
  const clock = opts.clock ?? Date.now
  // The budgets' store needs the live settings, which need the deliveries: spent through a late binding.
  let spend: (ledger: string, bytes: number) => void = () => {}
  const deliveries = new Deliveries(metrics, records, { windowMs: config.limits.sendTimeoutMs, minBytesPerSec: config.limits.minSendRate }, (ledger, bytes) => spend(ledger, bytes))
  // The NAS exchange forgets files opened with keys the keyring no longer holds: told through a late binding (it is registered later).
  let keyringChanged: (keyring: Keyring | undefined) => void = () => {}
  // The keyring directory is watched (and its first listing taken) before the
  // keyring is read: an erasure that comes between is then in the keyring
  // read, and any after it differs from that listing (src/files/watch.ts).
  const retention = retentionPartsOf(config, metrics, () => live.reloadKeyring(), () => log)
  const live = new LiveConfig(config, { admission, sendWatch: deliveries.sendWatch, metrics, log: () => log, keyringChanged: (k) => { keyringChanged(k) }, replaceJwtKeys: (jwt) => authenticator.replaceKeys(jwt) })
  const budgets = budgetPartsOf(config, { store: opts.budgets, clock, testClock: opts.clock, metrics, records, live: () => live.settings, log: () => log })
  spend = budgets.spend
  // One record and one line a second per address, however many connections it opens.
  const connectionRefusals = new RefusalTally((address, count) => {
    log.warn({ remoteAddress: address, connections: count }, 'connections over limits.clientConnections closed at accept')
    records.refusal({ requestId: randomUUID(), clientIp: address, status: 0, reason: CLIENT_CONNECTIONS, count })
  })

  const proxyRefusals = new RefusalTally((key, count) => {
    const [problem, address] = key.split(' ')
    log.warn({ remoteAddress: address, problem, connections: count }, 'connections from a trusted proxy without a valid PROXY header (listen.proxyProtocol): closed before TLS')
    records.refusal({ requestId: randomUUID(), clientIp: address, status: 0, reason: PROXY_HEADER, count })
  })

  let log: FastifyBaseLogger
  let tls: TlsServer | undefined
  const serverFactory = (handler: FastifyServerFactoryHandler): Http2SecureServer => {
    tls = createTlsServer(config, handler as never, {
      ticketKeys: opts.ticketKeys,
      ...frontDoorHooks({ metrics, log: () => log, record: (r) => records.refusal(r), connectionRefusals, proxyRefusals, hsts, methods: () => methodsOf(live.settings.rules), exposed: exposedTokensOf(config, { authenticator, revocations, metrics, records, log: () => log }) })
    })
    return tls.server
  }

  // The raw request and response are Node's HTTP/2 compatibility objects
  // (HTTP/1.1 clients get node:http's own); the app uses the API they share,
  // so it is typed as the default server.
  const options = fastifyOptions({ config, logger: opts.logger, serverFactory: serverFactory as never, hsts, metrics, records, deliveries, log: () => log })
  const app = Fastify(options as never) as unknown as FastifyInstance
  log = app.log
  const stopRevocations = revocations.follow()
  announceTrail(config, opts.auditChain, audit, log)
  app.decorateRequest('ng', null as unknown as RequestState)

  // HTTP/2 sessions stay open across requests: tell them to go away (streams
  // in flight finish) so that closing the server can complete.
  app.addHook('preClose', (done) => {
    tls?.stopWatching()
    tls?.closeSessions()
    done()
  })
  const ownHeaders = registerResponses(app, { records, metrics, hsts })

  const gate: GateContext = { live: () => live.settings, fileSystem: config.upstream.fileSystem, admission, record: async (r) => await records.write(r), sealing: () => live.sealing, periodKey: (period, upload) => live.periodKey(period, upload), holds: retention.holds, now: clock, charge: budgets.charge }
  registerGate(app, { gate, authenticator, deliveries, records, bodyDeadlineMs: config.limits.headersTimeoutMs * 3 })
  registerGrantsRoute(app, {
    signer: grants,
    settings: g,
    gate,
    gateRequest: (request, reply) => gateRequestOf(authenticator, request, reply),
    record: async (request, grant) => await records.write({ event: 'grant', time: new Date().toISOString(), ...records.fields(request), ...grant }, request.log)
  })
  await authenticator.register(app)
  let exposure: ExposureWatch | undefined
  const hooks = nasHooks(metrics, (nasPath) => { exposure?.check.served(nasPath) }, (request, reply) => { deliveries.cut(request, reply) })
  const uploads = {
    holdSealingKey: (period: string) => live.holdSealingKey(period),
    limits: () => ({ maxBytes: live.settings.maxUploadBytes, windowMs: live.settings.sendTimeoutMs, minBytesPerSec: live.settings.minSendRate }),
    record: async (request: FastifyRequest, fields: Pick<AuditRecord, 'bytes' | 'keyId' | 'sha256' | 'status' | 'reason'>) => await records.write({ event: 'ingest', time: new Date().toISOString(), ...records.fields(request), ...fields }, request.log),
    onUpstreamError: hooks.onUpstreamError,
    onIngest: (outcome: IngestOutcome, bytes: number) => { metrics.ingests.inc({ outcome }); metrics.ingestBytes.inc(bytes) }
  }
  const upstream = registerUpstream(app, { upstream: config.upstream, connections, checkMagic: config.files.checkMagic, ownHeaders, sealing: () => live.sealing, uploads }, hooks)
  keyringChanged = upstream.keyringChanged

  exposure = exposureWatchOf(config.upstream, { request: upstream.anonymous, metrics, log: () => log })
  const watch = exposure
  app.addHook('onReady', (done) => { watch.start(); done() })
  // Before the pool closes: a check in flight is cancelled, and none starts.
  app.addHook('preClose', (done) => { watch.stop(); done() })
  const readiness = readinessOf({
    audit,
    record: async (r) => await records.write(r),
    nas: async () => await upstream.check(),
    revocations: revocations.source,
    tls: () => tls,
    crl: config.tls.clientAuth !== 'off' && Boolean(config.tls.clientCrl),
    exposure: watch.readiness
  })
  const admin = config.admin.enabled && opts.admin !== false
    ? buildAdmin({ contentType: metrics.registry.contentType, text: async () => await metrics.registry.metrics() }, app.log, readiness, adminCredential(config), budgets.quota)
    : null
  const close = closer({ app, admin, deliveries, tls: () => tls, upstream, refusalTallies: [connectionRefusals, proxyRefusals], stopRevocations: async () => { retention.stop(); await budgets.close(); await stopRevocations() }, audit, records, drainTimeoutMs: () => live.drainTimeoutMs })

  return {
    app,
    admin,
    metrics,
    audit,
    close,
    readiness,
    get drainTimeoutMs () { return live.drainTimeoutMs },
    reloadCertificate: () => tls?.reload() ?? false,
    reloadConfig: (next) => {
      // Watched before it is read, as at the start.
      retention.follow(next)
      return live.reload(next)
    },
    reloadKeyring: () => live.reloadKeyring(),
    quota: budgets.quota,
    exposure: watch
  }
}
