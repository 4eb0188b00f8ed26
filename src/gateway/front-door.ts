// What the TLS front door reports (src/tls/server.ts): connections refused
// before any request (plain HTTP, over the per-address cap, failed
// handshakes, streams reset by the HTTP/2 layer, CONNECT and methods the
// app has no route for), and the certificate and CRL in use. Each is
// counted, logged and, where a client was refused, audited.
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { Errors, errorBody, methodNotAllowed } from '../errors.js'
import { bearerIn } from '../auth/exposed.js'
import { FIELD_BOUNDS, refusedTarget } from '../audit/record-bounds.js'
import type { AuditRecord } from '../audit/writer.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import type { RefusalTally } from '../limits/refusal-tally.js'
import type { TlsServerHooks } from '../tls/server.js'

/** Refusal reason of a connection closed at accept (limits.clientConnections): no HTTP answer is possible. */
export const CLIENT_CONNECTIONS = 'client_connections'
/** Refusal reason of a trusted proxy's connection without a valid PROXY header (listen.proxyProtocol). */
export const PROXY_HEADER = 'proxy_header'

export interface FrontDoorParts {
  metrics: GatewayMetrics
  /** The gateway's logger; undefined while it is being built (the first certificate and CRL). */
  log: () => FastifyBaseLogger | undefined
  record: (r: Omit<AuditRecord, 'event' | 'time'>) => void
  connectionRefusals: RefusalTally
  /** listen.proxyProtocol refusals, noted as "<problem> <address>". */
  proxyRefusals: RefusalTally
  hsts: string
  /** The methods the policy's rules take (a 405's Allow). */
  methods: () => string[]
  /** auth.revocation.revokeExposed: revokes a bearer token seen in plain HTTP (src/auth/exposed.ts); resolves whether it did. */
  exposed?: (token: string, clientIp: string) => Promise<boolean>
}

export function frontDoorHooks (p: FrontDoorParts): Omit<TlsServerHooks, 'ticketKeys'> {
  const { metrics } = p
  // Exported at 0 from the start, like every refusal reason.
  metrics.refuse(PROXY_HEADER, 0)
  let started = false
  return {
    onPlaintext: (socket, head) => {
      metrics.plaintextOnTls.inc()
      metrics.refuse(Errors.PlaintextOnTlsPort.spec.reason)
      p.log()?.warn({ remoteAddress: socket.remoteAddress }, 'plain HTTP sent to the TLS port: answered 400 and closed')
      p.record({ requestId: randomUUID(), clientIp: socket.remoteAddress ?? '', status: 400, reason: Errors.PlaintextOnTlsPort.spec.code })
      const token = p.exposed === undefined ? undefined : bearerIn(head)
      return token === undefined || p.exposed === undefined ? false : p.exposed(token, socket.remoteAddress ?? '')
    },
    onClientConnectionsRefused: (socket) => {
      metrics.refuse(CLIENT_CONNECTIONS)
      p.connectionRefusals.note(socket.remoteAddress ?? '')
    },
    onProxyHeaderRefused: (problem, socket) => {
      // The peer is the trusted proxy itself (or a host that shares its
      // address): a misconfigured load balancer, or one not sending the
      // header. Summed per address and problem (`problem` is the gateway's
      // own word, never client bytes), like connections over the cap.
      metrics.refuse(PROXY_HEADER)
      p.proxyRefusals.note(`${problem} ${socket.remoteAddress ?? ''}`)
    },
    onHandshakeFailure: (reason, socket) => {
      metrics.tlsHandshakeFailures.inc({ reason })
      p.log()?.debug({ remoteAddress: socket.remoteAddress, reason }, 'TLS handshake failed')
    },
    onCertificate: (m) => {
      metrics.certificateExpiry.set({ cert: 'server' }, m.expiresAt)
      // The first call is the start, not a reload.
      metrics.tlsReloads.inc({ result: 'ok' }, started ? 1 : 0)
      started = true
      p.log()?.info({ fingerprint256: m.fingerprint256, expires: new Date(m.expiresAt * 1000).toISOString() }, 'server certificate in use')
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
        if (nextUpdate * 1000 < Date.now()) p.log()?.error({ nextUpdate: at }, 'tls.clientCrl has expired: every client certificate is refused until it is re-signed (nasguard cert crl)')
        else p.log()?.info({ nextUpdate: at }, 'client CRL in use')
      })
    },
    onReloadFailure: (err) => {
      metrics.tlsReloads.inc({ result: 'failed' })
      p.log()?.error({ reason: err.message }, 'certificate reload refused: the previous certificate stays in use')
    },
    onProtocolResets: (count, remoteAddress) => {
      metrics.refuse(Errors.ProtocolReset.spec.reason, count)
      p.log()?.warn({ remoteAddress, streams: count }, 'HTTP/2 streams reset by the protocol layer (malformed header block): refused before any of it reached the gateway')
      p.record({ requestId: randomUUID(), clientIp: remoteAddress ?? '', status: Errors.ProtocolReset.spec.status, reason: Errors.ProtocolReset.spec.code, count })
    },
    onUnroutedMethod: (req) => {
      const err = methodNotAllowed(p.methods())
      metrics.refuse(Errors.MethodNotAllowed.spec.reason)
      // The method is the client's word: no more of it than the audit record keeps.
      const method = req.method.slice(0, FIELD_BOUNDS.method)
      p.log()?.info({ remoteAddress: req.remoteAddress, method }, 'method refused: not one the gateway serves')
      const target = req.url ?? String(req.headers[':authority'] ?? '')
      p.record({ requestId: randomUUID(), clientIp: req.remoteAddress ?? '', method, path: refusedTarget(target), status: err.statusCode, reason: err.code, userAgent: req.headers['user-agent'] })
      return { status: err.statusCode, body: errorBody(err), headers: { allow: err.allow, 'strict-transport-security': p.hsts } }
    }
  }
}
