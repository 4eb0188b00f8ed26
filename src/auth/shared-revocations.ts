// Revocations shared by several gateways through Redis (state.redis).
//
// Kept in Redis as a hash, one field per jti or subject (the entry, merged
// by max as RevocationSet merges), with a sorted set of expiries so that
// lapsed entries are dropped. A revocation is added by one Lua script that
// merges, stores, prunes and PUBLISHes the entry in one step: a gateway
// that subscribed before loading the hash cannot miss it, whichever comes
// first.
//
// A gateway subscribes, then loads the whole hash; from then on each
// published entry is applied as it arrives (milliseconds after the revoke).
// A reload adds to what the gateway knew, it never forgets an entry before
// it lapses: Redis losing its data does not un-revoke anything here (a
// gateway started after such a loss cannot know, hence Redis with AOF).
// Pub/sub delivers nothing while disconnected, so the gateway fails closed
// from the moment its connection is lost, or a heartbeat PING goes
// unanswered, until it has subscribed again and reloaded the hash. Every
// token request meanwhile is refused (503) and /readyz says why: a
// revocation made while the gateway could not hear it must not be missed.
import type { Redis } from 'ioredis'
import { entryOf, RevocationSet, type Revocable, type RevocationEntry, type RevocationSource } from './revocation.js'
import { redisAddress, redisClient, redisFailure, type RedisConfig } from '../state/redis.js'

/** How often a gateway checks that its subscription is alive, ms. */
const HEARTBEAT_MS = 1000
/** How soon a failed reload is tried again, ms. */
const RETRY_MS = 500

/** The keys and channel of one deployment (state.redis.keyPrefix). One hash tag: both keys sit in one slot. */
export function revocationKeys (prefix: string): { hash: string, expiries: string, channel: string } {
  return { hash: `${prefix}{revocations}`, expiries: `${prefix}{revocations}:expiry`, channel: `${prefix}revocations` }
}

/** The hash field an entry is kept under: one per token, one per subject. */
function fieldOf (e: RevocationEntry): string {
  return e.type === 'jti' ? `jti:${e.jti}` : `sub:${e.sub}`
}

// KEYS: hash, expiries. ARGV: field, entry JSON, now (s), channel.
// Returns the number of entries kept.
const ADD_SCRIPT = `
local e = cjson.decode(ARGV[2])
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then
  local p = cjson.decode(prev)
  if p.expiresAt > e.expiresAt then e.expiresAt = p.expiresAt end
  if e.type == 'sub' and p.issuedBefore > e.issuedBefore then e.issuedBefore = p.issuedBefore end
end
local json = cjson.encode(e)
redis.call('HSET', KEYS[1], ARGV[1], json)
redis.call('ZADD', KEYS[2], e.expiresAt, ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
for _, f in ipairs(lapsed) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
redis.call('PUBLISH', ARGV[4], json)
return redis.call('HLEN', KEYS[1])
`

/**
 * Adds a revocation (the CLI side): one round trip, atomic, published to
 * every gateway. Resolves with the number of entries kept; rejects, naming
 * state.redis.url, when Redis cannot be reached (nothing was revoked then).
 */
export async function addSharedRevocation (cfg: RedisConfig, entry: RevocationEntry, now: number): Promise<number> {
  const client = redisClient(cfg, 'nasguard-cli', false)
  client.on('error', () => {})
  const keys = revocationKeys(cfg.keyPrefix)
  try {
    await client.connect()
    const kept = await client.eval(ADD_SCRIPT, 2, keys.hash, keys.expiries, fieldOf(entry), JSON.stringify(entry), String(now), keys.channel)
    return Number(kept)
  } catch (err) {
    const e = redisFailure(cfg, err)
    e.message += '; nothing was revoked'
    throw e
  } finally {
    client.disconnect()
  }
}

export interface SharedRevocationsOptions {
  /** Called whenever loadError changes (like Denylist.watch's onState); must not throw. */
  onState?: (problem: string | null) => void
  /** audit.instance, registered in Redis so that `audit verify` over a collection knows every gateway. */
  instance?: string
}

/** The gateway side: follows the shared revocations; loadError while they cannot be trusted. */
export class SharedRevocations implements RevocationSource {
  private set = new RevocationSet()
  /** Entries published while a reload runs, applied on top of what it loaded. */
  private pending: RevocationEntry[] | undefined
  private sub: Redis | undefined
  private cmd: Redis | undefined
  private heartbeat: NodeJS.Timeout | undefined
  private retry: NodeJS.Timeout | undefined
  private stopped = false
  private generation = 0
  loadError: string | null

  constructor (private readonly cfg: RedisConfig, private readonly opts: SharedRevocationsOptions = {}) {
    this.loadError = `not loaded yet from ${redisAddress(cfg)}`
  }

  /** Where they come from, for logs. */
  get source (): string {
    return redisAddress(this.cfg)
  }

  check (t: Revocable, now = Math.floor(Date.now() / 1000)): string | null {
    return this.set.check(t, now)
  }

  /** Connects and follows; the returned function stops (and closes both connections). */
  start (): () => Promise<void> {
    const keys = revocationKeys(this.cfg.keyPrefix)
    const sub = this.sub = redisClient(this.cfg, 'nasguard-revocations-sub')
    const cmd = this.cmd = redisClient(this.cfg, 'nasguard-revocations')
    // Errors come with a state change ('close', 'reconnecting'): that is what counts.
    sub.on('error', () => {})
    cmd.on('error', () => {})
    sub.on('message', (channel: string, message: string) => { if (channel === keys.channel) this.apply(message) })
    sub.on('ready', () => { void this.resync() })
    for (const ev of ['close', 'reconnecting', 'end']) sub.on(ev, () => this.lost('the connection to Redis was lost'))
    sub.connect().catch(() => {})
    cmd.connect().catch(() => {})
    this.heartbeat = setInterval(() => { void this.beat() }, HEARTBEAT_MS)
    this.heartbeat.unref()
    return async () => {
      this.stopped = true
      clearInterval(this.heartbeat)
      clearTimeout(this.retry)
      sub.disconnect()
      cmd.disconnect()
    }
  }

  /** One published entry: applied now, and kept for a reload in progress. */
  private apply (message: string): void {
    let e: RevocationEntry | undefined
    try { e = entryOf(JSON.parse(message)) } catch { e = undefined }
    // Only the script publishes here; anything else is not an entry.
    if (!e) return
    this.set.add(e)
    this.pending?.push(e)
  }

  /** Subscribed (again): load the whole hash, then trust it. */
  private async resync (): Promise<void> {
    const gen = ++this.generation
    clearTimeout(this.retry)
    const keys = revocationKeys(this.cfg.keyPrefix)
    this.pending = []
    try {
      await this.sub?.subscribe(keys.channel)
      const all = await (this.cmd as Redis).hgetall(keys.hash)
      if (gen !== this.generation || this.stopped) return
      // What this gateway knew stays known until it lapses: a Redis that
      // lost its data (restarted without persistence, a replica promoted
      // before it had the entry) must not un-revoke a token here.
      const set = this.set.current(Math.floor(Date.now() / 1000))
      for (const v of Object.values(all)) {
        let e: RevocationEntry | undefined
        try { e = entryOf(JSON.parse(v)) } catch { e = undefined }
        if (!e) throw new Error('the shared revocations hold an entry that is not one')
        set.add(e)
      }
      for (const e of this.pending ?? []) set.add(e)
      this.pending = undefined
      if (this.sub?.status !== 'ready') return
      this.set = set
      this.setProblem(null)
      if (this.opts.instance !== undefined) await this.cmd?.hsetnx(`${this.cfg.keyPrefix}instances`, this.opts.instance, new Date().toISOString()).catch(() => {})
    } catch (err) {
      if (gen !== this.generation || this.stopped) return
      this.pending = undefined
      this.setProblem(`cannot load the shared revocations: ${(err as Error).message}`)
      this.retry = setTimeout(() => { void this.resync() }, RETRY_MS)
      this.retry.unref()
    }
  }

  /** The subscription is alive only if it answers: a cut cable sends no 'close'. */
  private async beat (): Promise<void> {
    const sub = this.sub
    if (!sub || sub.status !== 'ready' || this.loadError !== null) return
    try {
      await sub.ping()
    } catch {
      if (this.stopped) return
      this.lost('Redis did not answer a heartbeat')
      // Reconnect: the subscription may have missed entries meanwhile.
      sub.disconnect(true)
    }
  }

  private lost (why: string): void {
    if (this.stopped) return
    this.generation++
    this.pending = undefined
    this.setProblem(`${why} (${redisAddress(this.cfg)})`)
  }

  private setProblem (problem: string | null): void {
    if (problem === this.loadError) return
    this.loadError = problem
    this.opts.onState?.(problem)
  }
}
