// The budgets in Redis (state.redis): one ledger for every gateway and
// worker, sliding windows as in BudgetBook, each check one round trip.
//
// A ledger's keys (one hash tag, so one slot; the ledger's name only as a
// digest, so no subject reaches a key name):
//   <prefix>{budgets}:<d>:r   sorted set: the last minute's requests (score: time)
//   <prefix>{budgets}:<d>:h   sorted set: recordings (a digest of the path) by their last access, the last hour
//   <prefix>{budgets}:<d>:d   the same, the last 24 h
//   <prefix>{budgets}:<d>:b   sorted set: "<id>:<bytes>" of ended responses, the last hour
//   <prefix>{budgets}:<d>:bt  their sum, kept as they come and go
//   <prefix>{budgets}:<d>:m   the budgets it was last charged under (JSON)
//   <prefix>{budgets}:near    sorted set of the ledgers near a budget, for the gauge
// Each key expires with its window, so an idle ledger leaves nothing.
//
// The times are the gateway's clock (ms), which every gateway keeps by
// NTP: a window's edge moves by the clocks' skew. A ledger's sorted sets
// are exact; distinct recordings are counted as members of a set, not
// estimated.
import { createHash, randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { redisClient, type RedisConfig } from '../state/redis.js'
import { BUDGETS, type Budget, type Budgets, type Charge, type Verdict } from './book.js'
import { NEAR, type BudgetStore, type LedgerUsage } from './store.js'

// Shared by every script: windows, the caps of a budgets JSON, a ledger's
// pruned usage and whether it is near a budget.
const PRELUDE = `
local MIN, HOUR, DAY = 60000, 3600000, 86400000
local function bytesOf (member) return tonumber(string.match(member, ':(%d+)$')) or 0 end
local function prune (k, now)
  redis.call('ZREMRANGEBYSCORE', k .. ':r', '-inf', now - MIN)
  redis.call('ZREMRANGEBYSCORE', k .. ':h', '-inf', now - HOUR)
  redis.call('ZREMRANGEBYSCORE', k .. ':d', '-inf', now - DAY)
  local old = redis.call('ZRANGEBYSCORE', k .. ':b', '-inf', now - HOUR)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + bytesOf(m) end
    redis.call('ZREMRANGEBYSCORE', k .. ':b', '-inf', now - HOUR)
    if redis.call('DECRBY', k .. ':bt', gone) <= 0 then redis.call('DEL', k .. ':bt') end
  end
  -- A ledger that emptied is a new one: it forgets the budgets too.
  if redis.call('EXISTS', k .. ':r', k .. ':d', k .. ':b') == 0 then redis.call('DEL', k .. ':m') end
end
local function usage (k)
  return { redis.call('ZCARD', k .. ':r'), redis.call('ZCARD', k .. ':h'), redis.call('ZCARD', k .. ':d'), tonumber(redis.call('GET', k .. ':bt') or '0') }
end
local function capsOf (json)
  local ok, b = pcall(cjson.decode, json or '{}')
  if not ok or type(b) ~= 'table' then b = {} end
  return { tonumber(b.requestsPerMinute), tonumber(b.recordingsPerHour), tonumber(b.recordingsPerDay), tonumber(b.bytesPerHour) }
end
local function isNear (u, caps)
  for i = 1, 4 do
    if caps[i] and u[i] >= ${NEAR} * caps[i] then return true end
  end
  return false
end
local function mark (nearKey, k, d, now, caps)
  if isNear(usage(k), caps) then redis.call('ZADD', nearKey, now, d) else redis.call('ZREM', nearKey, d) end
end
`

// KEYS: the ledger's key base, the near set. ARGV: now, request id,
// recording digest ('' for none), budgets JSON, the ledger digest.
// Returns {1, fresh} charged, or {0, budget, retryAfterMs}.
const TAKE = PRELUDE + `
local k, now, rec = KEYS[1], tonumber(ARGV[1]), ARGV[3]
local caps = capsOf(ARGV[4])
prune(k, now)
local function refuse (budget, freeAt, window)
  local ms = freeAt - now
  if ms < 1 then ms = 1 end
  if ms > window then ms = window end
  return { 0, budget, ms }
end
local function nth (key, n, cap)
  local e = redis.call('ZRANGE', key, n - cap, n - cap, 'WITHSCORES')
  return tonumber(e[2])
end
if caps[1] then
  local n = redis.call('ZCARD', k .. ':r')
  if n >= caps[1] then return refuse('requestsPerMinute', nth(k .. ':r', n, caps[1]) + MIN, MIN) end
end
local keep = rec ~= '' and (caps[2] ~= nil or caps[3] ~= nil)
if keep then
  local windows = { { ':h', caps[2], HOUR, 'recordingsPerHour' }, { ':d', caps[3], DAY, 'recordingsPerDay' } }
  for _, w in ipairs(windows) do
    local key, cap = k .. w[1], w[2]
    if cap and not redis.call('ZSCORE', key, rec) then
      local n = redis.call('ZCARD', key)
      if n >= cap then return refuse(w[4], nth(key, n, cap) + w[3], w[3]) end
    end
  end
end
if caps[4] then
  local total = tonumber(redis.call('GET', k .. ':bt') or '0')
  if total >= caps[4] then
    local e = redis.call('ZRANGE', k .. ':b', 0, -1, 'WITHSCORES')
    local i, freeAt = 1, now
    while total >= caps[4] and i < #e do
      total = total - bytesOf(e[i])
      freeAt = tonumber(e[i + 1]) + HOUR
      i = i + 2
    end
    return refuse('bytesPerHour', freeAt, HOUR)
  end
end
redis.call('ZADD', k .. ':r', now, ARGV[2])
redis.call('PEXPIRE', k .. ':r', MIN)
local fresh = 0
if keep then
  if not redis.call('ZSCORE', k .. ':h', rec) then fresh = 1 end
  redis.call('ZADD', k .. ':h', now, rec)
  redis.call('PEXPIRE', k .. ':h', HOUR)
  redis.call('ZADD', k .. ':d', now, rec)
  redis.call('PEXPIRE', k .. ':d', DAY)
end
redis.call('SET', k .. ':m', ARGV[4], 'PX', DAY)
mark(KEYS[2], k, ARGV[5], now, caps)
return { 1, fresh }
`

// KEYS: the ledger's key base, the near set. ARGV: now, "<id>:<bytes>", bytes, the ledger digest.
const SPEND = PRELUDE + `
local k, now = KEYS[1], tonumber(ARGV[1])
prune(k, now)
redis.call('ZADD', k .. ':b', now, ARGV[2])
redis.call('INCRBY', k .. ':bt', ARGV[3])
redis.call('PEXPIRE', k .. ':b', HOUR)
redis.call('PEXPIRE', k .. ':bt', HOUR)
mark(KEYS[2], k, ARGV[4], now, capsOf(redis.call('GET', k .. ':m')))
return 1
`

// KEYS: the ledger's key base. ARGV: now. Returns {requests, hour, day, bytes, budgets JSON}.
const USAGE = PRELUDE + `
local k, now = KEYS[1], tonumber(ARGV[1])
prune(k, now)
local u = usage(k)
return { u[1], u[2], u[3], tostring(u[4]), redis.call('GET', k .. ':m') or '{}' }
`

// KEYS: the near set. ARGV: now, the key base's prefix, how many to look at.
// The longest-marked ledgers are judged again (their windows slid since);
// returns how many are near.
const NEAR_COUNT = PRELUDE + `
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - DAY)
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  local k = ARGV[2] .. d
  prune(k, now)
  mark(KEYS[1], k, d, now, capsOf(redis.call('GET', k .. ':m')))
end
return redis.call('ZCARD', KEYS[1])
`

/** Ledgers judged again per scrape of the near gauge: a bound on the script's work. */
const NEAR_SCAN = 1000

interface BudgetCommands {
  budgetTake: (base: string, near: string, now: number, id: string, rec: string, budgets: string, d: string) => Promise<[number, number | string, number?]>
  budgetSpend: (base: string, near: string, now: number, member: string, bytes: number, d: string) => Promise<number>
  budgetUsage: (base: string, now: number) => Promise<[number, number, number, string, string]>
  budgetNear: (near: string, now: number, prefix: string, scan: number) => Promise<number>
}

/** A fixed-size, key-safe name for a ledger or a recording. */
function digest (s: string): string {
  return createHash('sha256').update(s).digest('base64url').slice(0, 22)
}

export interface RedisBudgetsOptions {
  clock: () => number
  /** A spend that could not be written (its bytes are lost to the budget): counted by the caller. */
  onSpendError: (err: Error) => void
}

export class RedisBudgets implements BudgetStore {
  private readonly client: Redis & BudgetCommands
  private readonly prefix: string
  private readonly nearKey: string
  private readonly idPrefix = randomBytes(6).toString('base64url')
  private n = 0
  private connecting: Promise<void> | undefined

  constructor (cfg: RedisConfig, private readonly opts: RedisBudgetsOptions) {
    this.prefix = `${cfg.keyPrefix}{budgets}:`
    this.nearKey = `${this.prefix}near`
    const client = redisClient(cfg, 'nasguard-budgets')
    client.defineCommand('budgetTake', { numberOfKeys: 2, lua: TAKE })
    client.defineCommand('budgetSpend', { numberOfKeys: 2, lua: SPEND })
    client.defineCommand('budgetUsage', { numberOfKeys: 1, lua: USAGE })
    client.defineCommand('budgetNear', { numberOfKeys: 1, lua: NEAR_COUNT })
    // Its errors are the commands' (each rejects): the event only must have a listener.
    client.on('error', () => {})
    this.client = client as Redis & BudgetCommands
  }

  /** Connects on first use (or at once: connect()); the client reconnects by itself after that. */
  async connect (): Promise<void> {
    if (this.client.status === 'wait') this.connecting ??= this.client.connect().finally(() => { this.connecting = undefined })
    if (this.connecting) await this.connecting
  }

  private base (ledger: string): string {
    return this.prefix + digest(ledger)
  }

  async take (c: Charge, budgets: Budgets): Promise<Verdict> {
    await this.connect()
    const id = `${this.idPrefix}${(this.n++).toString(36)}`
    const d = digest(c.subject)
    const r = await this.client.budgetTake(this.prefix + d, this.nearKey, this.opts.clock(), id, c.recording === undefined ? '' : digest(c.recording), JSON.stringify(budgets), d)
    if (Number(r[0]) === 1) return Number(r[1]) === 1 ? { ok: true, fresh: true } : { ok: true }
    return { ok: false, budget: r[1] as Budget, retryAfterMs: Number(r[2]) }
  }

  spend (ledger: string, bytes: number): void {
    if (bytes <= 0) return
    const d = digest(ledger)
    const member = `${this.idPrefix}${(this.n++).toString(36)}:${bytes}`
    const now = this.opts.clock()
    const send = async (): Promise<number> => await this.client.budgetSpend(this.prefix + d, this.nearKey, now, member, bytes, d)
    // Sent at once on a ready connection, so a check after it sees it (one connection keeps the order).
    const sent = this.client.status === 'ready' ? send() : this.connect().then(send)
    sent.catch((err: Error) => this.opts.onSpendError(err))
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    await this.connect()
    const [requests, hour, day, bytes, json] = await this.client.budgetUsage(this.base(ledger), this.opts.clock())
    return { used: { requestsPerMinute: Number(requests), recordingsPerHour: Number(hour), recordingsPerDay: Number(day), bytesPerHour: Number(bytes) }, budgets: budgetsOf(json) }
  }

  async reset (ledger: string): Promise<void> {
    await this.connect()
    const d = digest(ledger)
    const base = this.prefix + d
    await this.client.multi().del(...['r', 'h', 'd', 'b', 'bt', 'm'].map((s) => `${base}:${s}`)).zrem(this.nearKey, d).exec()
  }

  async near (): Promise<number> {
    await this.connect()
    return Number(await this.client.budgetNear(this.nearKey, this.opts.clock(), this.prefix, NEAR_SCAN))
  }

  async close (): Promise<void> {
    this.client.disconnect()
  }
}

/** The budgets a ledger's JSON holds (only the known ones, as numbers). */
function budgetsOf (json: string): Budgets {
  const out: Budgets = {}
  try {
    const b = JSON.parse(json) as Record<string, unknown>
    for (const k of BUDGETS) if (typeof b[k] === 'number') out[k] = b[k]
  } catch {}
  return out
}
