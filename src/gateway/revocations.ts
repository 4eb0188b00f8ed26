// Where this gateway learns of revocations: Redis when state.redis is set
// (shared by every gateway, src/auth/shared-revocations.ts), else the
// denylist file that `nasguard token revoke` writes. Either way a change
// of trust is logged once: while revocations cannot be trusted every token
// request is refused (503) and /readyz says why.
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { Denylist, type RevocationEntry, type RevocationSource } from '../auth/revocation.js'
import { SharedRevocations } from '../auth/shared-revocations.js'
import type { Config } from '../config/schema.js'

export interface Revocations {
  source: RevocationSource
  /** Starts following changes (once the logger exists: the first state is logged); returns the stop. */
  follow: () => () => Promise<void>
  /** Takes in a revocation this process just added, before it answers: the file read again now; with Redis, applied at once (it is published to the others). */
  adopt: (entry: RevocationEntry) => Promise<void>
}

export function revocationsOf (config: Readonly<Config>, log: () => FastifyBaseLogger): Revocations {
  const redis = config.state.redis
  if (redis) {
    const shared = new SharedRevocations(redis, {
      instance: config.audit.instance ?? hostname(),
      onState: (problem) => {
        if (problem) log().error({ redis: shared.source, problem }, 'the shared revocations cannot be trusted: every token request is refused (503) until they are')
        else log().info({ redis: shared.source }, 'following the shared revocations')
      }
    })
    return { source: shared, follow: () => shared.start(), adopt: async (entry) => { shared.adopt(entry) } }
  }
  const denylist = new Denylist(config.auth.revocation.file ?? join(config.audit.dir, 'revoked.jsonl'))
  const follow = (): () => Promise<void> => {
    const stop = denylist.watch(config.auth.revocation.pollMs, (problem) => {
      // Once per change: the file is polled every pollMs, the log is not.
      if (problem) log().error({ file: denylist.file, problem }, 'the revocation denylist is not valid: every token request is refused (503) until it is')
      else log().warn({ file: denylist.file }, 'the revocation denylist is valid again')
    })
    return async () => { stop() }
  }
  return { source: denylist, follow, adopt: async () => await denylist.reload() }
}
