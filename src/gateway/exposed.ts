// auth.revocation.revokeExposed, wired: a bearer token seen in plain HTTP
// on the TLS port is verified by this gateway's rules and, if it is one of
// ours, revoked where the deployment keeps revocations (the denylist file
// every worker polls, or Redis, published to every gateway). Audited
// (event token-exposed: subject and jti, never the token), counted in
// nasguard_exposed_tokens_total{outcome}, and logged.
import type { FastifyBaseLogger } from 'fastify'
import type { Authenticator } from '../auth/identity.js'
import { revokeExposed, type ExposedParts } from '../auth/exposed.js'
import { LOCK_HELD } from '../auth/revocation.js'
import { revoke, type Revoked, type RevocationTarget } from '../auth/revoke.js'
import { LogThrottle } from '../logging.js'
import type { Config } from '../config/schema.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import type { Records } from './records.js'
import type { Revocations } from './revocations.js'

/** How often, and how long, a revocation waits for the denylist's lock (another worker's, the CLI's) without holding the event loop. */
const LOCK_RETRY_MS = 50
const LOCK_TRIES = 40

export function exposedTokensOf (config: Readonly<Config>, o: { authenticator: Authenticator, revocations: Revocations, metrics: GatewayMetrics, records: Records, log: () => FastifyBaseLogger | undefined }): ((token: string, clientIp: string) => Promise<boolean>) | undefined {
  if (!config.auth.revocation.revokeExposed) return undefined
  const failures = new LogThrottle()
  // One revocation at a time per token: the same token sent on many connections at once is revoked once.
  const inFlight = new Map<string, Promise<boolean>>()
  const revokeOnce = async (target: (now: number) => RevocationTarget): Promise<Revoked> => {
    for (let i = 1; ; i++) {
      try {
        // A gateway never rewrites a damaged denylist, nor waits on its event loop for the lock.
        const r = await revoke(config, target, undefined, { salvage: false, waitMs: 0 })
        // In force here before the client is answered; other workers poll the file (Redis: published to all).
        await o.revocations.adopt(r.entry)
        return r
      } catch (err) {
        if (i >= LOCK_TRIES || !(err as Error).message.endsWith(LOCK_HELD)) throw err
        await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS))
      }
    }
  }
  const partsFor = (clientIp: string): ExposedParts => ({
    verify: async (t) => await o.authenticator.verifyToken(t),
    revoked: (c) => o.revocations.source.check(c) !== null,
    revoke: revokeOnce,
    report: (r) => {
      const who = { subject: r.subject, ...(r.jti !== undefined ? { jti: r.jti } : {}) }
      o.metrics.exposedTokens.inc({ outcome: r.revoked ? 'revoked' : 'failed' })
      if (r.revoked) {
        o.log()?.warn({ remoteAddress: clientIp, ...who }, 'a valid token was sent in plain HTTP (in the clear): revoked')
      } else {
        failures.line((repeated) => o.log()?.error({ remoteAddress: clientIp, ...who, problem: r.problem, repeated }, 'a valid token was sent in plain HTTP (in the clear) and could NOT be revoked: revoke it by hand (nasguard token revoke)'))
      }
      // Nobody waits for it: kept and written again until the trail takes it.
      o.records.keep({ event: 'token-exposed', time: new Date().toISOString(), clientIp, ...who, reason: r.revoked ? 'sent in plain HTTP to the TLS port: revoked' : `sent in plain HTTP to the TLS port: NOT revoked (${r.problem})` })
    }
  })
  return async (token, clientIp) => {
    const running = inFlight.get(token)
    if (running !== undefined) return await running
    const done = revokeExposed(token, partsFor(clientIp)).finally(() => inFlight.delete(token))
    inFlight.set(token, done)
    return await done
  }
}
