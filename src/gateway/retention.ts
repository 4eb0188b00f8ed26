// What retention needs in a running gateway: the legal holds (read through
// a HoldView from the file, or from Redis over a connection of its own),
// the last sweep's findings for the metrics, and a watch on the sealing
// keyring, so that a period erased by `nasguard retention sweep --apply`
// (its <period>.erased tombstone) is dropped from memory at once: from then
// on its recordings answer 410 here too, without waiting for a SIGHUP.
import type { FastifyBaseLogger } from 'fastify'
import { loadAuditKey } from '../audit/key.js'
import { auditKeyFile } from '../config/derived.js'
import type { Config } from '../config/schema.js'
import { watchNames } from '../files/watch.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { HoldView, type HoldsNow } from '../retention/hold-view.js'
import { holdsKeyOf } from '../retention/holds.js'
import { holdsStoreOf } from '../retention/holds-redis.js'
import { readRetentionStatus } from '../retention/status.js'
import { redisAddress, redisClient } from '../state/redis.js'

export interface RetentionParts {
  holds: () => Promise<HoldsNow>
  stop: () => void
}

export function retentionPartsOf (config: Readonly<Config>, metrics: GatewayMetrics, reloadKeyring: () => void, log: () => FastifyBaseLogger): RetentionParts {
  metrics.setRetentionStatus(() => readRetentionStatus(config.audit.dir))
  const stops: Array<() => void> = []
  const keyring = config.sealing.mode === 'off' ? undefined : config.sealing.keyring
  if (keyring) stops.push(watchNames([keyring], (name) => name.endsWith('.erased') || name.endsWith('.key'), reloadKeyring))
  if (config.retention.length === 0) return { holds: async () => ({ ok: true, holds: [] }), stop: () => { for (const s of stops) s() } }
  const redisCfg = config.state.redis
  const client = redisCfg ? redisClient(redisCfg, 'nasguard-holds') : undefined
  if (client && redisCfg) {
    let warned = false
    client.on('error', (err: Error) => { if (!warned) log().warn({ redis: redisAddress(redisCfg), problem: err.message }, 'the legal holds cannot be read from Redis: recordings past their retention are refused with 503 until it is back') ; warned = true })
    client.on('ready', () => { warned = false })
    client.connect().catch(() => {})
    stops.push(() => client.disconnect())
  }
  const view = new HoldView(holdsStoreOf(config, client), holdsKeyOf(loadAuditKey(auditKeyFile(config))))
  return { holds: async () => await view.current(), stop: () => { for (const s of stops) s() } }
}
