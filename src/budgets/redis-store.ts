// The budgets in Redis (state.redis): one ledger for every gateway and
// worker, sliding windows as in BudgetBook, each check one round trip.
//
// A ledger's keys (one hash tag, so one slot; the ledger's name only as
// a digest keyed by a secret the gateways share (derived from the
// audit key), so that what is in Redis, its files or its backups cannot be
// checked against a guessed subject or phone number):
//   <prefix>{budgets}:<d>:r   sorted set: the last minute's requests, in buckets of a second ("<second>:<count>", score: the latest)
//   <prefix>{budgets}:<d>:h   sorted set: recordings (a keyed digest of the path) by their last access, the last hour
//   <prefix>{budgets}:<d>:d   the same, the last 24 h
//   <prefix>{budgets}:<d>:b   sorted set: the last hour's bytes, in buckets of a minute ("<minute>:<bytes>")
//   <prefix>{budgets}:<d>:m   the budgets it was last charged under (JSON)
//   <prefix>{budgets}:near    sorted set of the ledgers near a budget, for the gauge
//   <prefix>{budgets}:key     a digest that says which key the others were written with
// The buckets are BudgetBook's: at most 60 per ledger, so no check walks
// more than that, however fast a subject sends. Each key expires with its
// window, so an idle ledger leaves nothing.
//
// The time is Redis's (TIME): one clock for every gateway, so a gateway
// whose clock is off neither empties nor stretches anyone's windows. Tests
// pass their own clock instead.
import { createHmac } from 'node:crypto'
import type { Redis } from 'ioredis'
import { redisClient, type RedisConfig } from '../state/redis.js'
import { BUDGETS, type Budget, type Budgets, type Charge, type Verdict } from './book.js'
import { NEAR, type BudgetStore, type LedgerUsage } from './store.js'

// Shared by every script: windows, the caps of a budgets JSON, a ledger's
// pruned usage and whether it is near a budget.
const PRELUDE = `
local MIN, HOUR, DAY = 60000, 3600000, 86400000
local function clock (given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function countOf (member) return tonumber(string.match(member, ':(%d+)$')) or 0 end
local function sum (key)
  local n = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do n = n + countOf(m) end
  return n
end
-- Adds n to the bucket now falls in (the newest, if it is that bucket's), which now ends at now.
local function bump (key, now, unit, n, ttl)
  local b = math.floor(now / unit)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last > 0 and math.floor(tonumber(last[2]) / unit) == b then
    n = n + countOf(last[1])
    redis.call('ZREM', key, last[1])
  end
  redis.call('ZADD', key, now, string.format('%.0f:%.0f', b, n))
  redis.call('PEXPIRE', key, ttl)
end
-- When enough of the oldest buckets have left the window for the sum to be under cap.
local function freeAt (key, cap, window, now)
  local e = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local total = 0
  for i = 1, #e, 2 do total = total + countOf(e[i]) end
  local i, at = 1, now
  while total >= cap and i < #e do
    total = total - countOf(e[i])
    at = tonumber(e[i + 1]) + window
    i = i + 2
  end
  return at
end
local function prune (k, now)
  redis.call('ZREMRANGEBYSCORE', k .. ':r', '-inf', now - MIN)
  redis.call('ZREMRANGEBYSCORE', k .. ':h', '-inf', now - HOUR)
  redis.call('ZREMRANGEBYSCORE', k .. ':d', '-inf', now - DAY)
  redis.call('ZREMRANGEBYSCORE', k .. ':b', '-inf', now - HOUR)
  -- A ledger that emptied is a new one: it forgets the budgets too.
  if redis.call('EXISTS', k .. ':r', k .. ':d', k .. ':b') == 0 then redis.call('DEL', k .. ':m') end
end
local function usage (k)
  return { sum(k .. ':r'), redis.call('ZCARD', k .. ':h'), redis.call('ZCARD', k .. ':d'), sum(k .. ':b') }
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
local function mark (nearKey, k, d, now, caps, u)
  if isNear(u or usage(k), caps) then redis.call('ZADD', nearKey, now, d) else redis.call('ZREM', nearKey, d) end
end
`

// KEYS: the ledger's key base, the near set. ARGV: now ('' for Redis's
// clock), recording digest ('' for none), budgets JSON, the ledger digest.
// Returns {1, fresh} charged, or {0, budget, retryAfterMs}.
const TAKE = PRELUDE + `
local k, now, rec = KEYS[1], clock(ARGV[1]), ARGV[2]
local caps = capsOf(ARGV[3])
prune(k, now)
local u = usage(k)
local function refuse (budget, at, window)
  local ms = at - now
  if ms < 1 then ms = 1 end
  if ms > window then ms = window end
  return { 0, budget, ms }
end
if caps[1] and u[1] >= caps[1] then return refuse('requestsPerMinute', freeAt(k .. ':r', caps[1], MIN, now), MIN) end
local keep = rec ~= '' and (caps[2] ~= nil or caps[3] ~= nil)
local inHour, inDay = false, false
if keep then
  inHour = redis.call('ZSCORE', k .. ':h', rec) ~= false
  inDay = redis.call('ZSCORE', k .. ':d', rec) ~= false
  local windows = { { ':h', caps[2], HOUR, 'recordingsPerHour', inHour, u[2] }, { ':d', caps[3], DAY, 'recordingsPerDay', inDay, u[3] } }
  for _, w in ipairs(windows) do
    local key, cap, n = k .. w[1], w[2], w[6]
    if cap and not w[5] and n >= cap then
      local e = redis.call('ZRANGE', key, n - cap, n - cap, 'WITHSCORES')
      return refuse(w[4], tonumber(e[2]) + w[3], w[3])
    end
  end
end
if caps[4] and u[4] >= caps[4] then return refuse('bytesPerHour', freeAt(k .. ':b', caps[4], HOUR, now), HOUR) end
bump(k .. ':r', now, 1000, 1, MIN)
u[1] = u[1] + 1
if keep then
  redis.call('ZADD', k .. ':h', now, rec)
  redis.call('PEXPIRE', k .. ':h', HOUR)
  redis.call('ZADD', k .. ':d', now, rec)
  redis.call('PEXPIRE', k .. ':d', DAY)
  if not inHour then u[2] = u[2] + 1 end
  if not inDay then u[3] = u[3] + 1 end
end
redis.call('SET', k .. ':m', ARGV[3], 'PX', DAY)
mark(KEYS[2], k, ARGV[4], now, caps, u)
if keep and not inHour then return { 1, 1 } end
return { 1, 0 }
`

// KEYS: the ledger's key base, the near set. ARGV: now ('' for Redis's), bytes, the ledger digest.
const SPEND = PRELUDE + `
local k, now = KEYS[1], clock(ARGV[1])
prune(k, now)
bump(k .. ':b', now, MIN, tonumber(ARGV[2]), HOUR)
mark(KEYS[2], k, ARGV[3], now, capsOf(redis.call('GET', k .. ':m')))
return 1
`

// KEYS: the ledger's key base. ARGV: now ('' for Redis's). Returns {requests, hour, day, bytes, budgets JSON}.
const USAGE = PRELUDE + `
local k, now = KEYS[1], clock(ARGV[1])
prune(k, now)
local u = usage(k)
return { u[1], u[2], u[3], string.format('%.0f', u[4]), redis.call('GET', k .. ':m') or '{}' }
`

// KEYS: the ledger's key base, the near set. ARGV: the ledger digest.
const RESET = `
redis.call('DEL', KEYS[1] .. ':r', KEYS[1] .. ':h', KEYS[1] .. ':d', KEYS[1] .. ':b', KEYS[1] .. ':m')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`

// KEYS: the near set. ARGV: now ('' for Redis's), the key base's prefix, how many to look at.
// The longest-marked ledgers are judged again (their windows slid since);
// returns how many are near. (The ledgers' keys are built here, in the
// near set's slot: one hash tag for every key of the budgets.)
const NEAR_COUNT = PRELUDE + `
local now = clock(ARGV[1])
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

type Now = number | string
interface BudgetCommands {
  budgetTake: (base: string, near: string, now: Now, rec: string, budgets: string, d: string) => Promise<[number, number | string, number?]>
  budgetSpend: (base: string, near: string, now: Now, bytes: number, d: string) => Promise<number>
  budgetUsage: (base: string, now: Now) => Promise<[number, number, number, string, string]>
  budgetNear: (near: string, now: Now, prefix: string, scan: number) => Promise<number>
  budgetReset: (base: string, near: string, d: string) => Promise<number>
}

/** The key of the budgets' digests: derived from the audit key (which every gateway of a fleet shares), apart from its other uses. */
export function budgetsKeyOf (auditKey: Buffer): Buffer {
  return createHmac('sha256', auditKey).update('nasguard budgets v1').digest()
}

export interface RedisBudgetsOptions {
  /** The digests' key (budgetsKeyOf). */
  key: Buffer
  /** A clock of the caller's (tests); else Redis's own. */
  clock?: () => number
  /** A spend that could not be written (its bytes are lost to the budget): counted by the caller. */
  onSpendError: (err: Error) => void
}

export class RedisBudgets implements BudgetStore {
  private readonly client: Redis & BudgetCommands
  private readonly prefix: string
  private readonly nearKey: string
  private connecting: Promise<void> | undefined
  private readonly keyCheck: string
  private keyProblem: string | undefined

  constructor (cfg: RedisConfig, private readonly opts: RedisBudgetsOptions) {
    this.prefix = `${cfg.keyPrefix}{budgets}:`
    this.nearKey = `${this.prefix}near`
    // Checks sent in one turn of the event loop go in one write (each is still its own script).
    const client = redisClient(cfg, 'nasguard-budgets', true, { enableAutoPipelining: true })
    client.defineCommand('budgetTake', { numberOfKeys: 2, lua: TAKE })
    client.defineCommand('budgetSpend', { numberOfKeys: 2, lua: SPEND })
    client.defineCommand('budgetUsage', { numberOfKeys: 1, lua: USAGE })
    client.defineCommand('budgetNear', { numberOfKeys: 1, lua: NEAR_COUNT })
    client.defineCommand('budgetReset', { numberOfKeys: 2, lua: RESET })
    // Its errors are the commands' (each rejects): the event only must have a listener.
    client.on('error', () => {})
    this.client = client as Redis & BudgetCommands
    this.keyCheck = this.digest('nasguard budgets key check')
  }

  /**
   * Connects on first use (or at once: connect()); the client reconnects by
   * itself after that. On every connection the key is checked against the
   * one the budgets in Redis were written with: a gateway with another
   * audit key would keep ledgers of its own, each subject getting its
   * budget once per key, so it answers no check until that is fixed.
   */
  async connect (): Promise<void> {
    if (this.client.status === 'wait') {
      this.client.on('ready', () => { void this.checkKey() })
      this.connecting ??= this.client.connect().then(async () => await this.checkKey()).finally(() => { this.connecting = undefined })
    }
    if (this.connecting) await this.connecting
    if (this.keyProblem !== undefined) throw new Error(this.keyProblem)
  }

  private async checkKey (): Promise<void> {
    const key = `${this.prefix}key`
    try {
      await this.client.set(key, this.keyCheck, 'NX')
      const held = await this.client.get(key)
      this.keyProblem = held === this.keyCheck ? undefined : 'the budgets in Redis were written by gateways with another audit key: give every gateway the same audit.keyFile'
    } catch {
      // Redis went again: the next connection checks.
    }
  }

  /** A fixed-size, key-safe name for a ledger or a recording. */
  private digest (s: string): string {
    return createHmac('sha256', this.opts.key).update(s).digest('base64url').slice(0, 22)
  }

  /** The time the scripts use: the caller's clock, or '' for Redis's. */
  private now (): number | string {
    return this.opts.clock?.() ?? ''
  }

  async take (c: Charge, budgets: Budgets): Promise<Verdict> {
    await this.connect()
    const d = this.digest(c.subject)
    const r = await this.client.budgetTake(this.prefix + d, this.nearKey, this.now(), c.recording === undefined ? '' : this.digest(c.recording), JSON.stringify(budgets), d)
    if (Number(r[0]) === 1) return Number(r[1]) === 1 ? { ok: true, fresh: true } : { ok: true }
    return { ok: false, budget: r[1] as Budget, retryAfterMs: Number(r[2]) }
  }

  spend (ledger: string, bytes: number): void {
    if (bytes <= 0) return
    const d = this.digest(ledger)
    const now = this.now()
    const send = async (): Promise<number> => await this.client.budgetSpend(this.prefix + d, this.nearKey, now, bytes, d)
    // Sent at once on a ready connection, so a check after it sees it (one connection keeps the order).
    const sent = this.client.status === 'ready' && this.keyProblem === undefined ? send() : this.connect().then(send)
    sent.catch((err: Error) => this.opts.onSpendError(err))
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    await this.connect()
    const [requests, hour, day, bytes, json] = await this.client.budgetUsage(this.prefix + this.digest(ledger), this.now())
    return { used: { requestsPerMinute: Number(requests), recordingsPerHour: Number(hour), recordingsPerDay: Number(day), bytesPerHour: Number(bytes) }, budgets: budgetsOf(json) }
  }

  async reset (ledger: string): Promise<void> {
    await this.connect()
    const d = this.digest(ledger)
    await this.client.budgetReset(this.prefix + d, this.nearKey, d)
  }

  async near (): Promise<number> {
    await this.connect()
    return Number(await this.client.budgetNear(this.nearKey, this.now(), this.prefix, NEAR_SCAN))
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
