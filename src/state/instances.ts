// The gateways of a deployment, as Redis knows them (state.redis): each
// registers its audit.instance when it starts following Redis, so that
// `nasguard audit verify` over a collection of chains knows which hosts
// must be in it, and reports one whose whole directory is missing.
import type { Redis } from 'ioredis'
import { withRedis, type RedisConfig } from './redis.js'

function registryKey (prefix: string): string {
  return `${prefix}instances`
}

/** Records an instance (first seen, kept: a later start does not move it). */
export async function registerInstance (client: Redis, prefix: string, instance: string): Promise<void> {
  await client.hsetnx(registryKey(prefix), instance, new Date().toISOString())
}

/** Every instance that has ever followed this Redis. */
export async function registeredInstances (cfg: RedisConfig): Promise<string[]> {
  return await withRedis(cfg, 'the instances registered there are unknown', () => undefined, async (client) => (await client.hkeys(registryKey(cfg.keyPrefix))).sort())
}
