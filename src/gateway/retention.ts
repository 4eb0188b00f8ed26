// What retention needs in a running gateway: the legal holds (read through
// a HoldView from the file, or from Redis over a connection of its own,
// made on first use: retention may be turned on by a reload), the last
// sweep's findings for the metrics, and a watch on the sealing keyring, so
// that a period erased by `nasguard retention sweep --apply` (its
// <period>.erased tombstone) is dropped from memory at once: from then on
// its recordings answer 410 here too, without waiting for a SIGHUP. The
// watch follows sealing.keyring across reloads.
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import { loadAuditKey } from '../audit/key.js'
import { auditKeyFile } from '../config/derived.js'
import type { Config } from '../config/schema.js'
import { watchNames } from '../files/watch.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { auditedGeneration } from '../retention/audited-generation.js'
import { HoldView, type HoldsNow } from '../retention/hold-view.js'
import { holdsKeyOf } from '../retention/holds.js'
import { holdsStoreOf } from '../retention/holds-redis.js'
import { readRetentionStatus } from '../retention/status.js'
import { redisAddress, redisClient } from '../state/redis.js'

export interface RetentionParts {
  holds: () => Promise<HoldsNow>
  /** A reloaded config: the keyring watched is its own. */
  follow: (config: Readonly<Config>) => void
  stop: () => void
}

/** A connection of its own to state.redis, for the holds; its failures logged once per outage. */
function holdsClient (config: Readonly<Config>, log: () => FastifyBaseLogger): Redis | undefined {
  const cfg = config.state.redis
  if (!cfg) return undefined
  const client = redisClient(cfg, 'nasguard-holds')
  let warned = false
  client.on('error', (err: Error) => {
    if (!warned) log().warn({ redis: redisAddress(cfg), problem: err.message }, 'the legal holds cannot be read from Redis: recordings past their retention are refused with 503 until it is back')
    warned = true
  })
  client.on('ready', () => { warned = false })
  client.connect().catch(() => {})
  return client
}

/** How often the keyring directory is listed besides its watch. */
const KEYRING_POLL_MS = 2000

export function retentionPartsOf (config: Readonly<Config>, metrics: GatewayMetrics, reloadKeyring: () => void, log: () => FastifyBaseLogger): RetentionParts {
  metrics.setRetentionStatus(() => readRetentionStatus(config.audit.dir))
  let view: HoldView | undefined
  let client: Redis | undefined
  let lastProblem: string | undefined
  let watched: string | undefined
  let unwatch = (): void => {}
  const follow = (c: Readonly<Config>): void => {
    const dir = c.sealing.mode === 'off' ? undefined : c.sealing.keyring
    if (dir === watched) return
    unwatch()
    watched = dir
    // Also polled: an erasure on another host sharing the keyring (NFS) is no inotify event, and a watch can fail.
    unwatch = dir === undefined
      ? () => {}
      : watchNames([dir], (name) => name.endsWith('.erased') || name.endsWith('.key'), reloadKeyring, 200, {
        pollMs: KEYRING_POLL_MS,
        onError: (_d, err) => { log().warn({ problem: err.message }, `the keyring directory cannot be watched: an erasure is seen within ${KEYRING_POLL_MS / 1000} s (its poll) or on SIGHUP`) }
      })
  }
  follow(config)
  return {
    holds: async () => {
      if (!view) {
        client = holdsClient(config, log)
        view = new HoldView(holdsStoreOf(config, client), holdsKeyOf(loadAuditKey(auditKeyFile(config))), undefined, async () => await auditedGeneration(config))
      }
      const now = await view.current()
      // Said once per problem, and once when it clears.
      const problem = now.ok ? undefined : now.problem
      if (problem !== lastProblem) {
        if (problem) log().warn({ problem }, 'the legal holds cannot be trusted: recordings past their retention are refused with 503')
        else log().info('the legal holds can be read again')
        lastProblem = problem
      }
      return now
    },
    follow,
    stop: () => { unwatch(); client?.disconnect() }
  }
}
