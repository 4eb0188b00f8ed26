// buildGateway(config): the public TLS app and the admin app, wired to one
// audit writer and one metrics registry, not yet listening. Tests build it
// and talk to it over real sockets; server.ts owns the process around it.
//
// Every request passes the gate (one onRequest hook): the stages declared in
// src/gate/stages.ts, in that order. Only then is it proxied.
import { randomUUID } from 'node:crypto'
import type { Http2SecureServer } from 'node:http2'
import { isIP, type Socket } from 'node:net'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerFactoryHandler } from 'fastify'
import type { Config } from './config/schema.js'
import { Errors, errorBody, isNasguardError, specFor, type NasguardError } from './errors.js'
import { createTlsServer, type TlsServer } from './tls/server.js'
import { rawAnswer } from './tls/raw-answer.js'
import { closeWithConnection } from './tls/pipelined.js'
import type { ServerResponse } from 'node:http'
import { Authenticator, type Identity } from './auth/identity.js'
import { JwksCache } from './auth/keys.js'
import { Denylist } from './auth/revocation.js'
import { GrantSigner } from './auth/grants.js'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { chainKey, CHAINS_FILE, recordChains } from './audit/chains.js'
import { hostname } from 'node:os'
import { loadAuditKey } from './audit/key.js'
import { Type, type Static } from '@sinclair/typebox'
import { claimsUsed, compileRules, grantingScopes } from './policy/rules.js'
import { GRANTS_GATE, RECORDING_GATE, runGate } from './gate/stages.js'
import { GRANTS_PATH } from './gate/paths.js'
import { requestFields as gateFields } from './gate/record-fields.js'
import { canonicalTarget } from './gate/canonical-path.js'
import { authorize } from './gate/policy.js'
import { guardFile } from './gate/file-guard.js'
import type { GateContext, GateRequest, LiveSettings, RequestState } from './gate/state.js'
import { cutResponse, registerUpstream, upstreamRefusal } from './proxy/upstream.js'
import { Admission } from './proxy/admission.js'
import { SendWatch } from './proxy/send-watch.js'
import { RefusalTally } from './limits/refusal-tally.js'
import { AuditWriter, type AuditRecord, type Outcome } from './audit/writer.js'
import { redactTokens, refusedTarget } from './audit/record-bounds.js'
import { GatewayMetrics, methodLabel, statusClass } from './metrics/registry.js'
import { LogThrottle, createLogger } from './logging.js'
import { adminCredential, buildAdmin, type Readiness } from './admin.js'
import { auditKeyFile, grantsSecret, processShare } from './config/derived.js'
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

/** Refusal reason of a connection closed at accept (limits.clientConnections): no HTTP answer is possible. */
const CLIENT_CONNECTIONS = 'client_connections'

/**
 * The client address for the audit record: request.ip (which is the
 * X-Forwarded-For client only when the socket peer is a trusted proxy), and
 * the peer itself when the two differ. A forwarded value that is not an IP
 * address is not believed: the peer stands for the client.
 */
function clientOf (request: FastifyRequest): { clientIp: string, peerIp?: string } {
  const peer = request.socket?.remoteAddress
  const ip = isIP(request.ip) !== 0 ? request.ip : peer ?? ''
  return peer && peer !== ip ? { clientIp: ip, peerIp: peer } : { clientIp: ip }
}

const GrantRequest = Type.Object({
  path: Type.String({ minLength: 1, maxLength: 8192 }),
  ttlSec: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

/** Method and target of the request line at the start of what a client sent, when it is one. */
function requestLine (raw: Buffer | undefined): { method: string, target: string } | undefined {
  const m = raw ? /^([A-Z]{1,16}) ([^\s]{1,8192}) HTTP\/1\.[01]\r?\n/.exec(raw.subarray(0, 8300).toString('latin1')) : null
  return m ? { method: m[1], target: m[2] } : undefined
}

function elapsedMs (since: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - since) / 1e4) / 100
}

function wwwAuthenticate (err: NasguardError, required?: string[]): string | undefined {
  if (err.statusCode === 401) {
    const desc = err.message.replace(/["\\]/g, '')
    return `Bearer realm="nasguard", error="invalid_token", error_description="${desc}"`
  }
  if (err.code === Errors.InsufficientScope.spec.code || err.code === Errors.NoRule.spec.code) {
    return `Bearer realm="nasguard", error="insufficient_scope"${required ? `, scope="${required.join(' ')}"` : ''}`
  }
  return undefined
}

export async function buildGateway (config: Readonly<Config>, opts: GatewayOptions = {}): Promise<Gateway> {
  const metrics = new GatewayMetrics()
  metrics.initialise(
    Object.values(Errors).map((E) => E.spec.reason).filter((r) => r !== 'not_found' && r !== 'range' && r !== 'internal'),
    ['unreachable', 'timeout', 'connect_timeout', 'listing', 'redirect', 'magic', 'range', 'auth', 'status_5xx', 'body', 'tls', 'other'],
    ['protocol_version', 'no_shared_cipher', 'client_certificate', 'malformed', 'reset', 'other'])
  metrics.refuse(CLIENT_CONNECTIONS, 0)
  const auditKey = loadAuditKey(auditKeyFile(config), config.audit.dir)
  const audit = await AuditWriter.open({
    dir: opts.auditChain === undefined ? config.audit.dir : join(config.audit.dir, opts.auditChain),
    durability: config.audit.durability,
    batchMs: config.audit.batchMs,
    key: chainKey(auditKey, opts.auditChain ?? '.'),
    legacyKey: opts.auditChain === undefined ? undefined : auditKey,
    instance: config.audit.instance ?? hostname(),
    rotateBytes: config.audit.rotateBytes,
    onBatch: (n, ms) => {
      metrics.auditBatchSize.observe(n)
      metrics.auditWriteSeconds.observe(ms / 1000)
    },
    onSyncError: (err) => {
      metrics.auditFailures.inc({ event: 'sync' })
      log.error({ code: (err as NodeJS.ErrnoException).code }, 'audit fsync failed (batched mode): records acknowledged since the last sync may be lost')
    }
  })
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
  const sendWatch = new SendWatch({ windowMs: config.limits.sendTimeoutMs, minBytesPerSec: config.limits.minSendRate })
  // One record and one line a second per address, however many connections it opens.
  const connectionRefusals = new RefusalTally((address, count) => {
    log.warn({ remoteAddress: address, connections: count }, 'connections over limits.clientConnections closed at accept')
    recordRefusal({ requestId: randomUUID(), clientIp: address, status: 0, reason: CLIENT_CONNECTIONS, count })
  })

  let log: FastifyBaseLogger
  /** Responses of fetches in flight (access record written, not yet completed). */
  const fetching = new Set<FastifyReply>()
  let tls: TlsServer | undefined
  const refusedSockets = new WeakSet<Socket>()
  const serverFactory = (handler: FastifyServerFactoryHandler): Http2SecureServer => {
    tls = createTlsServer(config, handler as never, {
      ticketKeys: opts.ticketKeys,
      onPlaintext: (socket) => {
        metrics.plaintextOnTls.inc()
        metrics.refuse(Errors.PlaintextOnTlsPort.spec.reason)
        log.warn({ remoteAddress: socket.remoteAddress }, 'plain HTTP sent to the TLS port: answered 400 and closed')
        recordRefusal({ requestId: randomUUID(), clientIp: socket.remoteAddress ?? '', status: 400, reason: Errors.PlaintextOnTlsPort.spec.code })
      },
      onClientConnectionsRefused: (socket) => {
        metrics.refuse(CLIENT_CONNECTIONS)
        connectionRefusals.note(socket.remoteAddress ?? '')
      },
      onHandshakeFailure: (reason, socket) => {
        metrics.tlsHandshakeFailures.inc({ reason })
        log.debug({ remoteAddress: socket.remoteAddress, reason }, 'TLS handshake failed')
      },
      onCertificate: (m) => {
        metrics.certificateExpiry.set({ cert: 'server' }, m.expiresAt)
        // The first call is the start, not a reload.
        metrics.tlsReloads.inc({ result: 'ok' }, tls ? 1 : 0)
        log?.info({ fingerprint256: m.fingerprint256, expires: new Date(m.expiresAt * 1000).toISOString() }, 'server certificate in use')
      },
      onClientCrl: (nextUpdate) => {
        if (nextUpdate === undefined) {
          metrics.crlNextUpdate.remove({ crl: 'client' })
          return
        }
        metrics.crlNextUpdate.set({ crl: 'client' }, nextUpdate)
        const at = new Date(nextUpdate * 1000).toISOString()
        // Deferred: at start this runs while the logger is being built.
        queueMicrotask(() => {
          if (nextUpdate * 1000 < Date.now()) log?.error({ nextUpdate: at }, 'tls.clientCrl has expired: every client certificate is refused until it is re-signed (nasguard cert crl)')
          else log?.info({ nextUpdate: at }, 'client CRL in use')
        })
      },
      onReloadFailure: (err) => {
        metrics.tlsReloads.inc({ result: 'failed' })
        log.error({ reason: err.message }, 'certificate reload refused: the previous certificate stays in use')
      },
      onProtocolResets: (count, remoteAddress) => {
        metrics.refuse(Errors.ProtocolReset.spec.reason, count)
        log.warn({ remoteAddress, streams: count }, 'HTTP/2 streams reset by the protocol layer (malformed header block): refused before any of it reached the gateway')
        recordRefusal({ requestId: randomUUID(), clientIp: remoteAddress ?? '', status: Errors.ProtocolReset.spec.status, reason: Errors.ProtocolReset.spec.code, count })
      },
      onConnect: (req) => {
        const err = new Errors.MethodNotAllowed()
        metrics.refuse(Errors.MethodNotAllowed.spec.reason)
        log.info({ remoteAddress: req.remoteAddress }, 'CONNECT refused')
        const target = req.url ?? String(req.headers[':authority'] ?? '')
        recordRefusal({ requestId: randomUUID(), clientIp: req.remoteAddress ?? '', method: 'CONNECT', path: refusedTarget(target), status: err.statusCode, reason: err.code, userAgent: req.headers['user-agent'] })
        return { status: err.statusCode, body: errorBody(err), headers: { allow: 'GET, HEAD', 'strict-transport-security': hsts } }
      }
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
    clientErrorHandler: (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => {
      // One refusal per connection: errors that follow the first (the
      // socket torn down under the parser) are not requests.
      if (refusedSockets.has(socket)) return
      refusedSockets.add(socket)
      const remoteAddress = socket.remoteAddress
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
      const slow = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      const refusal = tooLarge ? new Errors.HeadersTooLarge() : slow ? new Errors.RequestTimeout() : new Errors.BadRequest('the request could not be parsed')
      // Node's own rule: answer only if no response has started on this
      // connection, so no client gets a 400 spliced into another response.
      const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
      if (socket.writable && !socket.destroyed && !inFlight?.headersSent) {
        socket.end(rawAnswer(refusal.statusCode, errorBody(refusal), { 'Strict-Transport-Security': hsts }))
        // The rest of the request is read and dropped, so the client reads
        // the answer instead of a reset; then the socket goes for good.
        socket.on('error', () => {})
        socket.resume()
        setTimeout(() => socket.destroy(), 2000).unref()
      } else {
        socket.destroy()
      }
      // A reset sent no request to refuse.
      if (err.code === 'ECONNRESET') return
      metrics.refuse(specFor(refusal.code)?.reason ?? 'other')
      log.info({ code: err.code, remoteAddress }, tooLarge ? 'request headers too large: refused' : slow ? 'request headers too slow: refused' : 'unparsable request refused')
      const line = requestLine(err.rawPacket)
      recordRefusal({
        requestId: randomUUID(),
        clientIp: remoteAddress ?? '',
        ...(line ? { method: line.method, path: refusedTarget(line.target) } : {}),
        status: refusal.statusCode,
        reason: tooLarge || slow ? refusal.code : `${refusal.code}:${err.code ?? 'parse'}`
      })
    },
    // Fastify answers these (e.g. an undecodable URL) outside the hooks, so
    // the request is tracked and the headers are set here.
    frameworkErrors: (_error: Error, request: FastifyRequest, reply: FastifyReply) => {
      track(request, reply)
      setResponseHeaders(request, reply)
      refuse(request, reply, new Errors.BadPath('the URL could not be parsed'))
    }
  } as never) as unknown as FastifyInstance
  log = app.log
  const stopDenylist = denylist.watch(config.auth.revocation.pollMs, (problem) => {
    // Once per change: the file is polled every pollMs, the log is not.
    if (problem) log.error({ file: denylist.file, problem }, 'the revocation denylist is not valid: every token request is refused (503) until it is')
    else log.warn({ file: denylist.file }, 'the revocation denylist is valid again')
  })
  // A single process writing in an audit.dir that workers used before: its
  // trail joins the sealed list of chains, so its removal is reported too.
  if (opts.auditChain === undefined && !audit.startupError && existsSync(join(config.audit.dir, CHAINS_FILE))) {
    try {
      recordChains(config.audit.dir, auditKey, ['.'])
    } catch (err) {
      log.error({ reason: (err as Error).message }, 'the list of audit chains could not be updated')
    }
  }
  if (audit.startupError) {
    log.error({ code: audit.startupError.code, file: audit.file }, 'the audit file cannot be opened: recording requests get 503 until it can')
  }

  /**
   * Writes a record and counts it. Resolves false when it could not be
   * written, after counting and logging that (nothing is dropped silently);
   * the caller decides whether that refuses the request.
   */
  async function writeAudit (record: AuditRecord, logger: FastifyBaseLogger): Promise<boolean> {
    try {
      await audit.append(record)
      metrics.auditRecords.inc({ event: record.event })
      return true
    } catch (err) {
      metrics.auditFailures.inc({ event: record.event })
      auditFailureLog.line((repeated) => {
        logger.error({ reqId: record.requestId, event: record.event, code: (err as NodeJS.ErrnoException).code, ...(repeated > 0 ? { repeated } : {}) }, 'audit record could not be written')
      })
      return false
    }
  }
  const auditFailureLog = new LogThrottle()
  const upstreamFailureLog = new LogThrottle()

  /** What every audit record of a request says about it (src/gate/record-fields.ts). */
  function requestFields (request: FastifyRequest): Omit<AuditRecord, 'event' | 'time'> {
    const state = request.ng as RequestState | null
    return gateFields(request, state ?? { started: 0n, client: clientOf(request), fetch: false, bytes: 0, closed: false })
  }

  function recordRefusal (r: Omit<AuditRecord, 'event' | 'time'>): void {
    void writeAudit({ event: 'refusal', time: new Date().toISOString(), ...r }, log)
  }

  function refuse (request: FastifyRequest, reply: FastifyReply, err: NasguardError, required?: string[]): void {
    const spec = specFor(err.code)
    const state = request.ng as RequestState | null
    if (state) state.refused = err.code
    if (!state?.fetch || err.code === Errors.UpstreamListing.spec.code) {
      metrics.refuse(spec?.reason ?? 'other')
      if (spec?.reason === 'no_rule' || spec?.reason === 'insufficient_scope' || spec?.reason === 'method') metrics.policyDenials.inc({ rule: state?.deniedBy ?? 'none' })
    }
    if (!state?.fetch) {
      const fields = requestFields(request)
      recordRefusal({ ...fields, path: fields.path === undefined ? undefined : redactTokens(fields.path), range: undefined, auth: undefined, status: err.statusCode, reason: err.code })
    }
    const challenge = wwwAuthenticate(err, required)
    if (challenge) reply.header('www-authenticate', challenge)
    if (spec?.retryAfterSec !== undefined) reply.header('retry-after', String(spec.retryAfterSec))
    if (err.statusCode === 405) reply.header('allow', request.url.split('?', 1)[0] === GRANTS_PATH ? 'POST' : 'GET, HEAD')
    reply.code(err.statusCode).type('application/json; charset=utf-8').send(errorBody(err))
  }

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
      refuse(request, reply, error, (error as NasguardError & { required?: string[] }).required)
      return
    }
    // The NAS's body failed before a byte was sent (it stalled after its headers).
    const upstream = upstreamRefusal(error)
    if (upstream) {
      refuse(request, reply, upstream)
      return
    }
    const e = error as NodeJS.ErrnoException & { statusCode?: number }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      refuse(request, reply, new Errors.BadRequest('refused by the request parser'))
      return
    }
    // Log the error, never the request: its URL holds a recording name.
    request.log.error({ err: { type: e.name, code: e.code, stack: e.stack } }, 'unexpected error')
    refuse(request, reply, new Errors.Internal())
  })

  app.setNotFoundHandler((request, reply) => { refuse(request, reply, new Errors.NoRule()) })

  function setResponseHeaders (request: FastifyRequest, reply: FastifyReply): void {
    reply.header('strict-transport-security', hsts)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('cache-control', 'no-store')
    reply.header('referrer-policy', 'no-referrer')
    reply.header('content-security-policy', "default-src 'none'; sandbox")
    reply.header('x-request-id', request.id)
  }

  app.addHook('onSend', (request, reply, payload, done) => {
    setResponseHeaders(request, reply)
    const state = request.ng as RequestState | null
    if (state) metrics.timeToFirstByte.observe({ status_class: statusClass(reply.statusCode) }, elapsedMs(state.started) / 1000)
    done(null, payload)
  })

  /** Per-request state, and the one place a finished response is counted, audited and logged. */
  function track (request: FastifyRequest, reply: FastifyReply): RequestState {
    const state: RequestState = { started: process.hrtime.bigint(), client: clientOf(request), fetch: false, bytes: 0, closed: false }
    request.ng = state
    reply.raw.once('close', () => onFinished(request, reply))
    const raw = request.raw as typeof request.raw & { stream?: unknown }
    if (raw.stream === undefined && raw.socket) closeWithConnection(raw.socket, reply.raw as unknown as ServerResponse)
    return state
  }

  /** The completion record of a fetch whose access record is on disk. */
  function recordCompletion (request: FastifyRequest, state: RequestState, status: number, outcome: Outcome, durationMs: number): void {
    void writeAudit({ event: 'fetch', time: new Date().toISOString(), ...requestFields(request), status, bytes: state.bytes, durationMs, outcome }, request.log)
  }

  /**
   * Whether the response was handed over in full, and how many body bytes
   * left the gateway. Node's HTTP/2 compatibility response emits 'finish'
   * when its stream closes for any reason (a reset after 1 MB of 500, a
   * window never opened): only writableFinished says the last byte was
   * written without error. What was queued but never written (still in the
   * stream's or the socket's buffer when it closed, or in a pipelined
   * response that never got the socket) was not delivered.
   */
  function delivery (request: FastifyRequest, reply: FastifyReply): { complete: boolean, bytes: number } {
    const state = request.ng
    const raw = request.raw as typeof request.raw & { stream?: { rstCode?: number } }
    // A stream reset with an error code (by the client, or by the gateway's
    // own cut, which ends the writable side first) is not complete either.
    const reset = raw.stream?.rstCode !== undefined && raw.stream.rstCode !== 0
    if (reply.raw.writableFinished && !reset) return { complete: true, bytes: state.bytes }
    return { complete: false, bytes: Math.max(0, state.bytes - (backlog(request, reply) ?? state.bytes)) }
  }

  /**
   * Bytes written for the client that it has not taken: in its HTTP/2
   * stream's buffer, or its connection's. Undefined for a pipelined
   * HTTP/1.1 response still queued behind another (it has no socket yet).
   */
  function backlog (request: FastifyRequest, reply: FastifyReply): number | undefined {
    const raw = request.raw as typeof request.raw & { stream?: { bufferSize: number } }
    if (raw.stream) return raw.stream.bufferSize
    return (reply.raw as unknown as ServerResponse).socket ? raw.socket?.writableLength ?? 0 : undefined
  }

  /**
   * Cuts a response the gateway gives up on (a slow reader, the drain
   * deadline). Over HTTP/2 what was delivered is read first: once the stream
   * is destroyed its buffer reads empty, and the record would count every
   * byte ever queued. (An HTTP/1.1 socket still counts what it holds.)
   */
  function cut (request: FastifyRequest, reply: FastifyReply): void {
    const state = request.ng
    if ((request.raw as { stream?: unknown }).stream !== undefined) state.deliveredAtCut = Math.max(0, state.bytes - (backlog(request, reply) ?? state.bytes))
    cutResponse(reply)
  }

  /** Slow readers: the response is cut once the client takes too little of it (limits.minSendRate). */
  function watchDelivery (request: FastifyRequest, reply: FastifyReply): void {
    const state = request.ng
    sendWatch.add(reply, {
      delivered: () => Math.max(0, state.bytes - (backlog(request, reply) ?? state.bytes)),
      // A queued pipelined response waits on the one before it, not on its client.
      backlog: () => backlog(request, reply) ?? 0,
      cut: (reason) => {
        state.tooSlow = true
        metrics.slowClients.inc({ reason })
        cut(request, reply)
      }
    })
  }

  function onFinished (request: FastifyRequest, reply: FastifyReply): void {
    const state = request.ng
    state.closed = true
    const headersSent = reply.raw.headersSent
    const status = headersSent ? reply.statusCode : 0
    const { complete, bytes } = delivery(request, reply)
    state.bytes = Math.min(bytes, state.deliveredAtCut ?? bytes)
    state.ticket?.release()
    const outcome: Outcome = state.upstreamError ? 'upstream-error' : complete ? 'complete' : state.shutdown ? 'shutdown' : state.tooSlow ? 'client-too-slow' : 'client-aborted'
    const durationMs = elapsedMs(state.started)
    metrics.requests.inc({ method: methodLabel(request.method), status_class: headersSent ? statusClass(status) : 'aborted', rule: state.rule ?? 'none' })
    metrics.requestDuration.observe({ status_class: headersSent ? statusClass(status) : 'aborted' }, durationMs / 1000)
    if (state.fetch) {
      fetching.delete(reply)
      sendWatch.delete(reply)
      metrics.activeStreams.dec()
      metrics.bytesSent.inc(state.bytes)
      recordCompletion(request, state, status, outcome, durationMs)
    }
    // The request id comes with the logger; never the path or a token.
    request.log.info({ method: request.method, status, rule: state.rule, bytes: state.bytes, durationMs, outcome, ...(state.refused ? { reason: state.refused } : {}), ...(state.upstreamError ? { upstream: state.upstreamError } : {}) }, 'request')
  }

  const gate: GateContext = {
    live: () => live,
    fileSystem: config.upstream.fileSystem,
    admission,
    record: async (r) => await writeAudit(r, log)
  }

  /** The request as the gate's stages see it (src/gate/state.ts). */
  function gateRequest (request: FastifyRequest, reply: FastifyReply): GateRequest {
    const raw = request.raw as typeof request.raw & { stream?: { endAfterHeaders: boolean } }
    return {
      id: request.id,
      method: request.method,
      url: request.url,
      headers: request.headers,
      rawHeaders: raw.rawHeaders,
      httpVersion: raw.httpVersion,
      endAfterHeaders: raw.stream?.endAfterHeaders,
      authenticate: async (path) => await authenticator.authenticate(request, path),
      turn: async () => {
        const queued = reply.raw as unknown as ServerResponse
        if (raw.stream !== undefined || queued.socket || request.ng.closed) return
        await new Promise<void>((resolve) => { queued.once('socket', () => resolve()); queued.once('close', () => resolve()) })
      }
    }
  }

  app.addHook('onRequest', async (request, reply) => {
    const state = track(request, reply)
    const grants = request.url.split('?', 1)[0] === GRANTS_PATH
    const passed = await runGate(grants ? GRANTS_GATE : RECORDING_GATE, gateRequest(request, reply), state, gate)
    if (grants) return
    if (passed === 'gone') {
      // The client left: before its access record, nothing was recorded and
      // nothing is fetched; after it, the trail gets its completion.
      if (state.accessRecorded) recordCompletion(request, state, 0, 'client-aborted', elapsedMs(state.started))
      reply.hijack()
      return
    }
    state.fetch = true
    fetching.add(reply)
    metrics.activeStreams.inc()
    watchDelivery(request, reply)
  })

  app.post<{ Body: Static<typeof GrantRequest> }>(GRANTS_PATH, { bodyLimit: 4096, schema: { body: GrantRequest } }, async (request, reply) => {
    const identity = request.ng.identity as Identity
    // A grant opens one recording; it never mints others.
    if (identity.method === 'grant') throw new Errors.GrantInvalid('a grant cannot mint grants')
    // The path it opens passes the recording gate's own stages, as a GET would.
    const target: RequestState = { ...request.ng, path: undefined, segments: undefined, rule: undefined }
    const asGet = { ...gateRequest(request, reply), method: 'GET', url: request.body.path }
    try {
      for (const stage of [canonicalTarget, authorize, guardFile]) void stage(asGet, target, gate)
    } finally {
      request.ng.deniedBy = target.deniedBy
    }
    const canonical = { path: target.path as string }
    const rule = target.rule as string
    const granting = live.rules.find((r) => r.name === rule)!
    const used = claimsUsed(granting.glob)
    // What the rule granted to now: the grant works only while it still does.
    const basis = 'cert' in identity.grantee ? { m: identity.grantee.cert, n: identity.certSerial } : 'scopes' in identity.grantee ? { g: grantingScopes(granting, identity.grantee.scopes) } : {}
    const now = Math.floor(Date.now() / 1000)
    const ttl = Math.min(request.body.ttlSec ?? g.ttlSec, g.ttlSec)
    // A grant never outlives the token it was minted from.
    const exp = Math.min(now + ttl, identity.exp ?? Number.MAX_SAFE_INTEGER)
    const value = grants.sign({
      p: canonical.path,
      s: identity.subject,
      r: rule,
      i: now,
      e: exp,
      ...(identity.jti ? { j: identity.jti } : {}),
      ...(identity.iat !== undefined ? { t: identity.iat } : {}),
      ...(g.bindIp ? { a: request.ip } : {}),
      ...basis,
      ...(used.length > 0 ? { c: Object.fromEntries(used.map((n) => [n, String(identity.claims?.[n])])) } : {})
    })
    const granted = { ...requestFields(request), method: 'GET', path: canonical.path, range: undefined, rule, grantExpiresAt: new Date(exp * 1000).toISOString() }
    if (!await writeAudit({ event: 'grant', time: new Date().toISOString(), ...granted }, request.log)) {
      throw new Errors.AuditUnavailable()
    }
    reply.code(201)
    return { url: `${canonical.path}?grant=${value}`, expiresAt: new Date(exp * 1000).toISOString() }
  })

  await authenticator.register(app)
  const upstream = await registerUpstream(app, { upstream: config.upstream, connections: processShare(config, config.upstream.connections), checkMagic: config.files.checkMagic }, {
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

  metrics.setAuditState({ healthy: () => audit.healthy, chain: opts.auditChain ?? '.', sequence: () => audit.durableLastSeq })

  /** /readyz: the NAS answers an authenticated HEAD, the audit trail is writable, the denylist is valid, the certificate (and CRL) are current. */
  const readiness = async (): Promise<Readiness> => {
    // A trail that failed is tried again here, with a record of the check:
    // otherwise only a request could clear the failure, and a load balancer
    // that routes by readiness sends none to a gateway it thinks is down.
    if (!audit.healthy) await writeAudit({ event: 'check', time: new Date().toISOString(), reason: 'readiness re-check after an audit failure' }, log)
    // An authenticated HEAD, not a TCP connect: a NAS that refuses the
    // gateway's password answers every download 502 while its port is open.
    const nas = await upstream.check()
    const expiry = tls?.expiresAt ?? 0
    const checks = {
      nas,
      revocation: denylist.loadError ? `failing (${denylist.loadError})` : 'ok',
      audit: audit.healthy ? 'ok' : `failing${audit.startupError ? ` (${audit.startupError.code ?? 'error'})` : ''}`,
      certificate: expiry * 1000 > Date.now() ? 'ok' : 'expired',
      // An expired CRL refuses every client certificate (OpenSSL under
      // require, the gate under optional): not ready until it is re-signed.
      ...(config.tls.clientAuth !== 'off' && config.tls.clientCrl ? { crl: tls?.clientCrls?.expired() === true ? 'expired' : 'ok' } : {})
    }
    return { ready: Object.values(checks).every((c) => c === 'ok'), checks }
  }
  const admin = config.admin.enabled && opts.admin !== false
    ? buildAdmin({ contentType: metrics.registry.contentType, text: async () => await metrics.registry.metrics() }, app.log, readiness, adminCredential(config))
    : null

  // Stop accepting, let downloads in flight finish for limits.drainTimeoutMs,
  // cut what is left (its completion records say `shutdown`), then release
  // the NAS pool and flush the audit trail and its lock. Safe to call more
  // than once.
  let drainTimeoutMs = config.limits.drainTimeoutMs
  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const closed = Promise.all([app.close(), admin?.close()])
      let deadline: NodeJS.Timeout | undefined
      const drained = await Promise.race([
        closed.then(() => true),
        new Promise<false>((resolve) => { deadline = setTimeout(() => resolve(false), drainTimeoutMs) })
      ])
      clearTimeout(deadline)
      if (!drained) {
        log.warn({ streams: fetching.size }, 'drain deadline passed: cutting the downloads still in flight')
        for (const reply of [...fetching]) {
          reply.request.ng.shutdown = true
          cut(reply.request, reply)
        }
        // Connections that still do not close (a client that stopped
        // reading its socket) are destroyed a moment later.
        const stragglers = setTimeout(() => tls?.destroyConnections(), 1000)
        await closed
        clearTimeout(stragglers)
      }
      await upstream.close()
      connectionRefusals.flush()
      stopDenylist()
      await audit.close()
    })()
    return closing
  }

  /** Applies what can change in place; reports the rest as needing a restart. */
  const reloadConfig = (next: Readonly<Config>): ReloadResult => {
    const changed = changedKeys(config, next)
    const applied = changed.filter((k) => (RELOADABLE as readonly string[]).includes(k))
    live = liveSettings(next)
    admission.setLimits({ queueTimeoutMs: next.upstream.queueTimeoutMs, clientFetches: processShare(next, next.limits.clientFetches) })
    sendWatch.setLimits({ windowMs: next.limits.sendTimeoutMs, minBytesPerSec: next.limits.minSendRate })
    drainTimeoutMs = next.limits.drainTimeoutMs
    const restart = changed.filter((k) => !applied.includes(k))
    metrics.configReloads.inc({ result: 'ok' })
    log.info({ applied, ...(restart.length > 0 ? { restart } : {}) }, restart.length > 0 ? 'config reloaded; some changes need a restart' : 'config reloaded')
    return { applied, restart }
  }

  return { app, admin, metrics, audit, close, readiness, get drainTimeoutMs () { return drainTimeoutMs }, reloadCertificate: () => tls?.reload() ?? false, reloadConfig }
}
