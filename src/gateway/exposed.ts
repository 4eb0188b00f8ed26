// auth.revocation.revokeExposed, wired: a bearer token seen in plain HTTP
// on the TLS port is verified by this gateway's rules and, if it is one of
// ours, revoked where the deployment keeps revocations (the denylist file
// every worker polls, or Redis, published to every gateway). Audited
// (event token-exposed: subject and jti, never the token), counted in
// nasguard_exposed_tokens_total{outcome}, and logged.
import type { FastifyBaseLogger } from 'fastify'
import type { Authenticator } from '../auth/identity.js'
import { revokeExposed } from '../auth/exposed.js'
import { revoke } from '../auth/revoke.js'
import type { Config } from '../config/schema.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import type { Records } from './records.js'
import type { Revocations } from './revocations.js'

export function exposedTokensOf (config: Readonly<Config>, o: { authenticator: Authenticator, revocations: Revocations, metrics: GatewayMetrics, records: Records, log: () => FastifyBaseLogger | undefined }): ((token: string, clientIp: string) => Promise<boolean>) | undefined {
  if (!config.auth.revocation.revokeExposed) return undefined
  return async (token, clientIp) => await revokeExposed(token, {
    verify: async (t) => await o.authenticator.verifyToken(t),
    revoke: async (target) => {
      const r = await revoke(config, target, (m) => o.log()?.warn({ problem: m }, 'the denylist was damaged and rewritten'))
      // In force here before the client is answered; other workers poll the file (Redis: published to all).
      await o.revocations.refresh()
      return r
    },
    report: (r) => {
      const who = { subject: r.subject, ...(r.jti !== undefined ? { jti: r.jti } : {}) }
      o.metrics.exposedTokens.inc({ outcome: r.revoked ? 'revoked' : 'failed' })
      if (r.revoked) {
        o.log()?.warn({ remoteAddress: clientIp, ...who }, 'a valid token was sent in plain HTTP (in the clear): revoked')
      } else {
        o.log()?.error({ remoteAddress: clientIp, ...who, problem: r.problem }, 'a valid token was sent in plain HTTP (in the clear) and could NOT be revoked: revoke it by hand (nasguard token revoke)')
      }
      void o.records.write({ event: 'token-exposed', time: new Date().toISOString(), clientIp, ...who, reason: r.revoked ? 'sent in plain HTTP to the TLS port: revoked' : `sent in plain HTTP to the TLS port: NOT revoked (${r.problem})` })
    }
  })
}
