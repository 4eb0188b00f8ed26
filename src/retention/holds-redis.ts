// The legal holds document in Redis (state.redis), for several gateways:
// one string under <prefix>{revocations}:holds (the deployment's one hash
// tag, so that it sits in the slot of the epoch it is checked against). A
// change is one script: the epoch must exist (a Redis that lost its data
// is not trusted as "no holds"), and the text must still be the one read.
// Also: which store a config names.
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import type { Config } from '../config/schema.js'
import type { RedisConfig } from '../state/redis.js'
import { fileHoldsStore, HoldsProblem, type HoldsStore } from './holds.js'

const REPLACE_SCRIPT = `
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOEPOCH no nasguard epoch') end
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`

/** Resolves once the client is ready; rejects after timeoutMs. */
async function ready (client: Redis, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { client.off('ready', onReady); reject(new Error(`not connected within ${timeoutMs} ms`)) }, timeoutMs)
    const onReady = (): void => { clearTimeout(timer); resolve() }
    client.once('ready', onReady)
  })
}

export function holdsKey (cfg: Pick<RedisConfig, 'keyPrefix' | 'url'>): string {
  return `${cfg.keyPrefix}{revocations}:holds`
}

/**
 * The store on Redis: through `client` (a gateway's, connected for good),
 * or one connection per call (the command line). A failure to reach
 * Redis, or a Redis without the epoch, is a HoldsProblem.
 */
export function redisHoldsStore (cfg: RedisConfig, client?: Redis): HoldsStore {
  const key = holdsKey(cfg)
  const where = `Redis ${key}`
  // Loaded when used: the holds commands on a host without Redis do not load its client.
  const redis = async (): Promise<{ epoch: string, NOT_INITIALISED: string, withRedis: typeof import('../state/redis.js').withRedis }> => {
    const [{ NOT_INITIALISED, revocationKeys }, { withRedis }] = await Promise.all([import('../auth/shared-revocations.js'), import('../state/redis.js')])
    return { epoch: revocationKeys(cfg).epoch, NOT_INITIALISED, withRedis }
  }
  const use = async <T>(fn: (c: Redis, epoch: string) => Promise<T>): Promise<T> => {
    const { epoch, NOT_INITIALISED, withRedis } = await redis()
    try {
      if (client) {
        // A gateway's first read may come while its connection is still being made.
        if (client.status !== 'ready') await ready(client, cfg.timeoutMs)
        return await fn(client, epoch)
      }
      return await withRedis(cfg, 'the legal holds cannot be read or changed', (err) => /NOEPOCH/.test(err.message) ? NOT_INITIALISED : undefined, async (c) => await fn(c, epoch))
    } catch (err) {
      throw new HoldsProblem(/NOEPOCH/.test((err as Error).message) ? NOT_INITIALISED : (err as Error).message)
    }
  }
  return {
    where,
    read: async () => await use(async (c, epoch) => {
      const res = await c.multi().exists(epoch).get(key).exec()
      if (!res || res.some(([err]) => err)) throw new Error('the read of the legal holds failed')
      if (res[0][1] === 0) throw new Error('NOEPOCH')
      return (res[1][1] as string | null) ?? undefined
    }),
    replace: async (expected, next) => await use(async (c, epoch) => Number(await c.eval(REPLACE_SCRIPT, 2, key, epoch, expected ?? '', next)) === 1)
  }
}

/** Where a config keeps its holds file: state.holdsFile, or <audit.dir>/legal-holds.json. */
export function holdsFileOf (config: Readonly<Config>): string {
  return config.state.holdsFile ?? join(config.audit.dir, 'legal-holds.json')
}

/** The store a config names: Redis when state.redis is set (through `client` when given), else the file. */
export function holdsStoreOf (config: Readonly<Config>, client?: Redis): HoldsStore {
  const redis = config.state.redis
  return redis ? redisHoldsStore(redis, client) : fileHoldsStore(holdsFileOf(config))
}
