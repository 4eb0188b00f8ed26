// The connection to Redis (state.redis): the shared state of several
// gateways. ioredis, with the options a gateway needs to fail closed
// rather than wait: no offline queue (a command while Redis is down fails
// at once instead of waiting for a reconnect), a timeout on every command,
// and reconnects every second at most for as long as it takes.
//
// ioredis is loaded when the first client is made: a gateway without
// state.redis never loads it (about 8 MB of memory in every process).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { isIP } from 'node:net'
import type { Redis, RedisOptions } from 'ioredis'
import type { Config } from '../config/schema.js'
import { readSecretFile } from '../config/secrets.js'

export type RedisConfig = NonNullable<Config['state']['redis']>

/** host:port of the configured Redis, for logs and errors (never a credential). */
export function redisAddress (cfg: RedisConfig): string {
  const u = new URL(cfg.url)
  return `${u.protocol}//${u.host}${u.pathname.length > 1 ? u.pathname : ''}`
}

/** The ioredis options for state.redis (the URL itself carries no credentials: load.ts refuses them). */
export function redisOptions (cfg: RedisConfig, name: string, reconnect = true): RedisOptions {
  const u = new URL(cfg.url)
  const tls = u.protocol === 'rediss:'
  const host = u.hostname.replace(/^\[|\]$/g, '')
  return {
    host,
    port: u.port === '' ? 6379 : Number(u.port),
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    username: cfg.username,
    password: cfg.passwordFile === undefined ? undefined : readSecretFile(cfg.passwordFile, 'state.redis.passwordFile'),
    // Only a DNS name is a server name (SNI); an IP address is checked as one.
    tls: tls ? { ...(isIP(host) === 0 ? { servername: host } : {}), ...(cfg.caFile === undefined ? {} : { ca: readFileSync(cfg.caFile) }) } : undefined,
    connectionName: name,
    connectTimeout: cfg.timeoutMs,
    commandTimeout: cfg.timeoutMs,
    // Fail, do not queue: a revocation check must not wait for a reconnect.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // A gateway reconnects for as long as it takes; a command gives up at once.
    retryStrategy: reconnect ? (attempt) => Math.min(100 * attempt, 1000) : () => null,
    lazyConnect: true
  }
}

/** A client for state.redis, not yet connected. Its errors are the caller's to handle ('error' events). */
export function redisClient (cfg: RedisConfig, name: string, reconnect = true, extra: RedisOptions = {}): Redis {
  const { Redis: Client } = load('ioredis') as typeof import('ioredis')
  return new Client({ ...redisOptions(cfg, name, reconnect), ...extra })
}

const load = createRequire(import.meta.url)

/**
 * One command-line action on Redis: connected, fn, closed. A failure
 * rejects with an error naming state.redis.url, the reason (the error
 * behind a bare "Connection is closed": authentication, TLS), and what it
 * means (`consequence`: "nothing was revoked"). explain turns a known
 * reply into what an operator should read.
 */
export async function withRedis<T> (cfg: RedisConfig, consequence: string, explain: (err: Error) => string | undefined, fn: (client: Redis) => Promise<T>): Promise<T> {
  const client = redisClient(cfg, 'nasguard-cli', false)
  let last: Error | undefined
  client.on('error', (err: Error) => { last = err })
  try {
    await client.connect()
    return await fn(client)
  } catch (e) {
    const err = e as Error
    const reason = explain(err) ?? (last && /closed/i.test(err.message) ? last : err).message
    throw new Error(`state.redis.url: ${redisAddress(cfg)} cannot be used: ${reason}; ${consequence}`)
  } finally {
    client.disconnect()
  }
}
