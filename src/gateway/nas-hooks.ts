// What the gateway does with the NAS exchange's events: the request's byte
// count and NAS failure for its records, the latency and failure metrics,
// and a log line that says why the NAS failed (at most once a second).
import type { FastifyRequest } from 'fastify'
import type { UpstreamHooks } from '../proxy/upstream.js'
import type { SealedHooks } from '../proxy/sealed-exchange.js'
import { LogThrottle } from '../logging.js'
import type { GatewayMetrics } from '../metrics/registry.js'

/** What an upstream failure kind means, for the log line an operator reads. */
const UPSTREAM_FAILURES: Record<string, string> = {
  auth: 'the NAS refused the gateway (401/403): check upstream.username and upstream.password / passwordFile',
  status_5xx: 'the NAS answered with a server error (5xx)',
  status_4xx: 'the NAS answered with an unexpected client error (4xx)',
  unreachable: 'the NAS could not be reached (refused, reset, or no route)',
  timeout: 'the NAS did not answer within upstream.timeoutMs',
  slow: 'the NAS sent less than upstream.minRate bytes a second over a window of upstream.timeoutMs',
  connect_timeout: 'no connection to the NAS within upstream.connectTimeoutMs',
  tls: 'the TLS handshake with the NAS failed (check upstream.caFile and its certificate)',
  listing: 'the NAS answered with something that is not a recording (a listing or an error page)',
  redirect: 'the NAS answered with a redirect',
  status_3xx: 'the NAS answered 304 Not Modified to a request without If-None-Match or If-Modified-Since',
  magic: 'the file does not look like its type (files.checkMagic)',
  range: 'the NAS answered another range than was asked for',
  body: 'the NAS failed in the middle of a body, or answered a whole file without saying where it ends'
}

/** The bounded labels of nasguard_upstream_errors_total{kind}. */
export const UPSTREAM_FAILURE_KINDS = ['unreachable', 'timeout', 'slow', 'connect_timeout', 'listing', 'redirect', 'magic', 'range', 'auth', 'status_5xx', 'body', 'tls', 'other']

/** @param cut cuts a response that cannot be completed (Deliveries.cut) */
export function nasHooks (metrics: GatewayMetrics, served: (nasPath: string) => void, cut: UpstreamHooks['cut']): UpstreamHooks & SealedHooks {
  // One throttle per kind: a burst of one kind (timeouts) must not hide the first of another (credentials refused).
  const failureLogs = new Map<string, LogThrottle>()
  const integrityLog = new LogThrottle()
  const plaintextLog = new LogThrottle()
  return {
    target: (request: FastifyRequest) => ({ path: request.ng.path as string, extension: request.ng.extension as string }),
    onBody: (request, n) => { request.ng.bytes += n },
    cut,
    onUpstreamResponse: (_request, seconds, status, nasPath) => {
      metrics.upstreamLatency.observe(seconds)
      // The lockdown check asks for a recording the NAS really has.
      if (status === 200 || status === 206) served(nasPath)
    },
    onUpstreamError: (request, kind) => {
      request.ng.upstreamError = kind
      metrics.upstreamErrors.inc({ kind })
      let failureLog = failureLogs.get(kind)
      if (failureLog === undefined) failureLogs.set(kind, failureLog = new LogThrottle())
      failureLog.line((repeated) => {
        request.log.warn({ kind, ...(repeated > 0 ? { repeated } : {}) }, UPSTREAM_FAILURES[kind] ?? 'the NAS request failed')
      })
    },
    // The reason says what failed (the header's MAC, chunk 7, another
    // period's key), never the path or any key material.
    onIntegrityError: (request, where, reason) => {
      request.ng.integrityError = true
      metrics.sealedIntegrityFailures.inc({ where })
      integrityLog.line((repeated) => {
        request.log.warn({ where, reason, keyId: request.ng.sealed?.keyId, ...(repeated > 0 ? { repeated } : {}) }, 'a sealed recording failed its integrity check: altered, truncated, swapped or sealed to another key')
      })
    },
    onPlaintextOnNas: (request, served) => {
      metrics.plaintextOnNas.inc({ action: served ? 'served' : 'refused' })
      plaintextLog.line((repeated) => {
        request.log.warn({ ...(repeated > 0 ? { repeated } : {}) }, served
          ? 'a recording of a period with a key is in plaintext on the NAS (sealing.mode migrate): served unauthenticated; seal it'
          : 'a recording is in plaintext on the NAS, and sealing.mode is require: refused; seal it')
      })
    },
    onDecrypted: (seconds) => { metrics.sealedDecryptSeconds.observe(seconds) }
  }
}
