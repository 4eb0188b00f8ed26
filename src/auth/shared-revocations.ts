// Revocations shared by several gateways through Redis (state.redis).
//
// Kept in Redis as a hash, one field per jti or subject (the entry, merged
// by max as RevocationSet merges), with a sorted set of expiries so that
// lapsed entries are dropped. A revocation is added by one Lua script that
// merges, stores, prunes (by Redis's clock) and PUBLISHes the entry in one
// step: a gateway that subscribed before loading the hash cannot miss it,
// whichever comes first.
//
// An epoch key, made only by `nasguard state init`, says the hash is the
// deployment's whole record. Without it (never initialised, or Redis lost
// its data: restarted without persistence, flushed, evicted, a replica
// promoted before it had the data) an empty hash cannot be told from a
// lost one, so gateways fail closed and revokes are refused until an
// operator has restored Redis or run init again.
//
// A gateway subscribes, then loads the hash and the epoch in one MULTI;
// from then on each published entry is applied as it arrives. A reload
// adds to what the gateway knew: it never forgets an entry before it
// lapses. Pub/sub delivers nothing while disconnected and a cut cable
// sends no FIN, so the subscription is PINGed every HEARTBEAT_MS on the
// connection that carries the messages: a PONG proves that everything
// published before its PING was sent has arrived. A PING unanswered for
// STALE_MS makes the gateway fail closed at once (every token request
// 503, /readyz says why) until it has subscribed again and reloaded: a
// revocation published during a silent partition is served for STALE_MS
// plus one heartbeat at most.
import type { Redis } from 'ioredis'
import { entryOf, RevocationSet, type Revocable, type RevocationEntry, type RevocationSource } from './revocation.js'
import { redisAddress, redisClient, withRedis, type RedisConfig } from '../state/redis.js'
import { registerInstance } from '../state/instances.js'

/** How often the subscription is PINGed, ms. */
const HEARTBEAT_MS = 200
/** A PING unanswered this long, and the revocations are not trusted, ms. */
const STALE_MS = 800
/** How soon a failed reload is tried again, ms. */
const RETRY_MS = 500

export const NOT_INITIALISED = 'Redis holds no nasguard state (no epoch): run `nasguard state init` (after a data loss: restore Redis, or init again and re-issue the revocations)'

/**
 * The keys and channel of one deployment (state.redis.keyPrefix). One hash
 * tag, so all keys sit in one slot. Pub/sub ignores the database number:
 * the channel carries it, so deployments told apart by db do not hear
 * each other.
 */
export function revocationKeys (cfg: Pick<RedisConfig, 'keyPrefix' | 'url'>): { hash: string, expiries: string, epoch: string, channel: string } {
  const db = new URL(cfg.url).pathname.slice(1) || '0'
  const p = cfg.keyPrefix
  return { hash: `${p}{revocations}`, expiries: `${p}{revocations}:expiry`, epoch: `${p}{revocations}:epoch`, channel: `${p}{revocations}@${db}` }
}

/** The hash field an entry is kept under: one per token, one per subject. */
function fieldOf (e: RevocationEntry): string {
  return e.type === 'jti' ? `jti:${e.jti}` : `sub:${e.sub}`
}

// KEYS: hash, expiries, epoch. ARGV: field, entry JSON, channel.
// Returns { entries kept, subscribers that got it }.
const ADD_SCRIPT = `
if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('NOEPOCH') end
local e = cjson.decode(ARGV[2])
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local ok, p = pcall(cjson.decode, prev or 'null')
if ok and type(p) == 'table' then
  if type(p.expiresAt) == 'number' and p.expiresAt > e.expiresAt then e.expiresAt = p.expiresAt end
  if e.type == 'sub' and type(p.issuedBefore) == 'number' and p.issuedBefore > e.issuedBefore then e.issuedBefore = p.issuedBefore end
end
local json = cjson.encode(e)
redis.call('HSET', KEYS[1], ARGV[1], json)
redis.call('ZADD', KEYS[2], e.expiresAt, ARGV[1])
local now = tonumber(redis.call('TIME')[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, f in ipairs(lapsed) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
local heard = redis.call('PUBLISH', ARGV[3], json)
return { redis.call('HLEN', KEYS[1]), heard }
`

/** The script's refusal when there is no epoch, as the operator should read it. */
function notInitialised (err: Error): string | undefined {
  return /NOEPOCH/.test(err.message) ? NOT_INITIALISED : undefined
}

/** Redis's clock, seconds: one clock for every revocation, whatever the admin host's says. */
async function redisNow (client: Redis): Promise<number> {
  const [sec] = await client.time()
  return Number(sec)
}

/**
 * Adds a revocation (the CLI side), its times from Redis's clock: an admin
 * host whose clock is off by more than the tolerance is refused, as its
 * entry would lapse early or late. One atomic script, published to every
 * gateway. Resolves with the entries kept and the gateway connections that
 * heard it; rejects, naming state.redis.url, when nothing was revoked.
 */
export async function addSharedRevocation (cfg: RedisConfig, make: (now: number) => RevocationEntry, toleranceSec: number): Promise<{ kept: number, heard: number, entry: RevocationEntry }> {
  const keys = revocationKeys(cfg)
  return await withRedis(cfg, 'nothing was revoked', notInitialised, async (client) => {
    const now = await redisNow(client)
    const skew = Math.floor(Date.now() / 1000) - now
    if (Math.abs(skew) > toleranceSec) throw new Error(`this host's clock is ${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} Redis's (more than auth.jwt.clockToleranceSec, ${toleranceSec} s): fix it (NTP)`)
    const entry = make(now)
    const [kept, heard] = await client.eval(ADD_SCRIPT, 3, keys.hash, keys.expiries, keys.epoch, fieldOf(entry), JSON.stringify(entry), keys.channel) as [number, number]
    return { kept: Number(kept), heard: Number(heard), entry }
  })
}

/**
 * `nasguard state init`: makes the epoch, so that gateways trust the hash,
 * and adds the live entries of a denylist file (moving from files to
 * Redis loses no revocation). Says whether the epoch was new.
 */
export async function initSharedRevocations (cfg: RedisConfig, imported: readonly RevocationEntry[], toleranceSec: number): Promise<{ created: boolean, imported: number }> {
  const keys = revocationKeys(cfg)
  return await withRedis(cfg, 'nothing was changed', notInitialised, async (client) => {
    const created = await client.set(keys.epoch, new Date().toISOString(), 'NX') === 'OK'
    let n = 0
    const now = await redisNow(client)
    for (const e of imported) {
      if (e.expiresAt < now - toleranceSec) continue
      await client.eval(ADD_SCRIPT, 3, keys.hash, keys.expiries, keys.epoch, fieldOf(e), JSON.stringify(e), keys.channel)
      n++
    }
    return { created, imported: n }
  })
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
  /** When the oldest PING not yet answered was sent (ms), or 0. */
  private unanswered = 0
  private problem: string | null
  /** The last error a connection reported: the reason behind a "connection lost". */
  private lastError = ''

  constructor (private readonly cfg: RedisConfig, private readonly opts: SharedRevocationsOptions = {}) {
    this.problem = `not loaded yet from ${redisAddress(cfg)}`
  }

  /** Where they come from, for logs. */
  get source (): string {
    return redisAddress(this.cfg)
  }

  /** Why they cannot be trusted now: a known problem, or a PING unanswered for STALE_MS (checked on every request). */
  get loadError (): string | null {
    if (this.problem !== null) return this.problem
    if (this.unanswered !== 0 && Date.now() - this.unanswered > STALE_MS) return `Redis has not answered a heartbeat for over ${STALE_MS} ms (${redisAddress(this.cfg)})`
    return null
  }

  check (t: Revocable, now = Math.floor(Date.now() / 1000)): string | null {
    return this.set.check(t, now)
  }

  /** Connects and follows; the returned function stops (and closes both connections). */
  start (): () => Promise<void> {
    const keys = revocationKeys(this.cfg)
    // resync() subscribes itself after every connect: ioredis's own
    // resubscription would be a second, unawaited one (a rejection of it
    // would end the process).
    const sub = this.sub = redisClient(this.cfg, 'nasguard-revocations-sub', true, { autoResubscribe: false })
    const cmd = this.cmd = redisClient(this.cfg, 'nasguard-revocations')
    for (const c of [sub, cmd]) c.on('error', (err: Error) => { this.lastError = err.message })
    sub.on('message', (channel: string, message: string) => { if (channel === keys.channel) this.apply(message) })
    sub.on('ready', () => { void this.resync() })
    for (const ev of ['close', 'reconnecting', 'end']) sub.on(ev, () => this.lost('the connection to Redis was lost'))
    sub.connect().catch(() => {})
    cmd.connect().catch(() => {})
    this.heartbeat = setInterval(() => { this.beat() }, HEARTBEAT_MS)
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
  /** An entry this process added (and published): in force here at once, not only when its message comes back. */
  adopt (e: RevocationEntry): void {
    this.set.add(e)
    this.pending?.push(e)
  }

  private apply (message: string): void {
    let e: RevocationEntry | undefined
    try { e = entryOf(JSON.parse(message)) } catch { e = undefined }
    // Only the script publishes here; anything else is not an entry.
    if (!e) return
    this.set.add(e)
    this.pending?.push(e)
  }

  /** Subscribed (again): load the hash and the epoch, then trust them. */
  private async resync (): Promise<void> {
    const gen = ++this.generation
    clearTimeout(this.retry)
    const keys = revocationKeys(this.cfg)
    this.pending = []
    try {
      await this.sub?.subscribe(keys.channel)
      const cmd = await this.ready(this.cmd as Redis)
      const [[e1, all], [e2, epoch]] = await cmd.multi().hgetall(keys.hash).get(keys.epoch).exec() as [[Error | null, Record<string, string>], [Error | null, string | null]]
      if (e1 ?? e2) throw (e1 ?? e2) as Error
      if (gen !== this.generation || this.stopped) return
      if (epoch === null) throw new Error(NOT_INITIALISED)
      // What this gateway knew stays known until it lapses: a Redis that
      // lost its data and was initialised again must not un-revoke a
      // token here (a gateway started after such a loss cannot know).
      const set = this.set.current(Math.floor(Date.now() / 1000))
      for (const [field, v] of Object.entries(all)) {
        let e: RevocationEntry | undefined
        try { e = entryOf(JSON.parse(v)) } catch { e = undefined }
        if (!e) throw new Error(`the shared revocations hold a field that is not an entry (${field}): repair or delete it in Redis`)
        set.add(e)
      }
      for (const e of this.pending ?? []) set.add(e)
      this.pending = undefined
      if (this.sub?.status !== 'ready') return
      this.set = set
      this.unanswered = 0
      this.setProblem(null)
      if (this.opts.instance !== undefined) await registerInstance(cmd, this.cfg.keyPrefix, this.opts.instance).catch(() => {})
    } catch (err) {
      if (gen !== this.generation || this.stopped) return
      this.pending = undefined
      this.setProblem(`cannot load the shared revocations from ${redisAddress(this.cfg)}: ${(err as Error).message}`)
      this.retry = setTimeout(() => { void this.resync() }, RETRY_MS)
      this.retry.unref()
    }
  }

  /** The command connection once it is ready (the two connect independently). */
  private async ready (cmd: Redis): Promise<Redis> {
    if (cmd.status === 'ready') return cmd
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { cmd.off('ready', done); reject(new Error(`the command connection is not ready (${this.lastError || cmd.status})`)) }, this.cfg.timeoutMs)
      function done (): void { clearTimeout(timer); resolve() }
      cmd.once('ready', done)
    })
    return cmd
  }

  /** One PING on the subscription, unless one is still out (its age is what loadError judges). */
  private beat (): void {
    const sub = this.sub
    if (!sub || sub.status !== 'ready' || this.problem !== null || this.unanswered !== 0) return
    const sent = Date.now()
    this.unanswered = sent
    sub.ping().then(() => {
      if (this.unanswered === sent) this.unanswered = 0
    }, () => {
      if (this.stopped || this.unanswered !== sent) return
      this.lost('Redis did not answer a heartbeat')
      // Reconnect: the subscription may have missed entries meanwhile.
      sub.disconnect(true)
    })
  }

  private lost (why: string): void {
    if (this.stopped) return
    this.generation++
    this.pending = undefined
    this.unanswered = 0
    this.setProblem(`${why} (${redisAddress(this.cfg)}${this.lastError ? `: ${this.lastError}` : ''})`)
  }

  private setProblem (problem: string | null): void {
    if (problem === this.problem) return
    this.problem = problem
    this.opts.onState?.(problem)
  }
}
