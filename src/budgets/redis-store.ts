// The budgets in Redis (state.redis): one ledger for every gateway and
// worker, sliding windows as in BudgetBook, each check one round trip.
//
// A ledger's keys (one hash tag, so one slot; the ledger's name only as
// a digest keyed by a secret the gateways share (derived from the audit
// key), so that what is in Redis, its files or its backups cannot be
// checked against a guessed subject or phone number):
//   <prefix>{budgets}:<d>:r   sorted set: the last minute's requests, in buckets of a second ("<second>:<count>", score: the latest)
//   <prefix>{budgets}:<d>:h   sorted set: recordings (a keyed digest of the path) by their last access, the last hour
//   <prefix>{budgets}:<d>:d   the same, the last 24 h
//   <prefix>{budgets}:<d>:b   sorted set: the last hour's bytes, in buckets of a minute ("<minute>:<bytes>")
//   <prefix>{budgets}:<d>:t   hash: the sums of :r and :b (r, b), and the budgets it was last charged under (m: "<requestsPerMinute>,<recordingsPerHour>,<recordingsPerDay>,<bytesPerHour>", each empty for none)
//   <prefix>{budgets}:<d>:l   hash: the leases not yet settled (BudgetBook's holds), id -> "<requests>,<slots>,<bytes>,<expires at>"
//   (and in :t, x: until when no lease is handed out, BudgetBook's mixedUntil)
//   <prefix>{budgets}:near    sorted set of the ledgers near a budget, for the gauge
//   <prefix>{budgets}:key     a digest that says which key the others were written with
// The buckets are BudgetBook's: at most 60 per ledger, and their sums are
// kept as buckets come and go, so a check reads two numbers, not a
// history. A sum whose sorted set has expired counts as 0. Each key
// expires with its window, so an idle ledger leaves nothing.
//
// The time is Redis's (TIME): one clock for every gateway, so a gateway
// whose clock is off neither empties nor stretches anyone's windows. Tests
// pass their own clock instead.
import { createHmac } from 'node:crypto'
import type { Redis } from 'ioredis'
import { redisClient, type RedisConfig } from '../state/redis.js'
import { BUDGETS, HOLD_MS, LEASE_HOLDS, NO_HOLD, LEASE_REQUESTS, LEASE_SLOTS, budgetsKey, type Budget, type Budgets, type Charge, type Settlement, type Verdict } from './book.js'
import { NEAR, StoreMisconfigured, type LeasingStore, type LedgerUsage } from './store.js'

// Shared by every script: windows, buckets, a ledger pruned and read
// (L: its sums, usage and newest buckets, as loaded and as changed), and
// whether it is near a budget. Each check is a dozen Redis calls: the
// sums are read, never summed, and a bucket set's expiry is renewed once a
// second (when a bucket is made), not on every request.
const PRELUDE = `
local MIN, HOUR, DAY = 60000, 3600000, 86400000
local HOLD, LEASE_REQUESTS, LEASE_SLOTS, LEASE_HOLDS = ${HOLD_MS}, ${LEASE_REQUESTS}, ${LEASE_SLOTS}, ${LEASE_HOLDS}
local function clock (given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function countOf (member) return tonumber(string.match(member, ':(%d+)$')) or 0 end
local function bucketOf (member) return tonumber(string.match(member, '^(%d+):')) or -1 end
-- Drops the buckets that left the window from a sum; returns it and the
-- newest bucket (false once none is left). Once the newest bucket's
-- second (minute) is out of the window, every bucket is, without a look.
local function trim (key, cutoff, total, newest, unit)
  if total <= 0 or not newest then return 0, false end
  if (bucketOf(newest) + 1) * unit - 1 <= cutoff then
    redis.call('DEL', key)
    return 0, false
  end
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)
  if #old > 0 then
    for _, x in ipairs(old) do total = total - countOf(x) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  end
  if total <= 0 then return 0, false end
  return total, newest
end
-- Adds n to the bucket now falls in (the newest, if it is that bucket's),
-- which now ends at now; a new bucket renews the set's expiry (its window
-- and one bucket more: never before the bucket leaves the window).
-- Returns the newest bucket and whether it is new.
local function bump (key, newest, now, unit, n, window)
  local id = math.floor(now / unit)
  local made = true
  if newest and bucketOf(newest) == id then
    n = n + countOf(newest)
    redis.call('ZREM', key, newest)
    made = false
  end
  local member = string.format('%.0f:%.0f', id, n)
  redis.call('ZADD', key, now, member)
  if made then redis.call('PEXPIRE', key, window + unit) end
  return member, made
end
-- When enough of the oldest buckets have left the window for the sum to be under cap.
local function freeAt (key, total, cap, window, now)
  local e = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local i, at = 1, now
  while total >= cap and i < #e do
    total = total - countOf(e[i])
    at = tonumber(e[i + 1]) + window
    i = i + 2
  end
  return at
end
-- A recording (its digest) taken at time at, in both windows; 1 if it is
-- new to the hour, 1 if new to the day. Each set's expiry is renewed:
-- never before its last access leaves the window.
local function touch (k, rec, at)
  local fresh = redis.call('ZADD', k .. ':h', at, rec)
  local day = redis.call('ZADD', k .. ':d', at, rec)
  redis.call('PEXPIRE', k .. ':h', HOUR + 1000)
  redis.call('PEXPIRE', k .. ':d', DAY + 1000)
  return fresh, day
end
-- The leases' holds: those that ran out unsettled are charged in full, at
-- the time each ran out (requests; each slot a recording of its own); the
-- rest are summed (L.hr, L.hs, L.hb; L.hn: how many). True if any was charged.
local function holds (L, now)
  local l = redis.call('HGETALL', L.k .. ':l')
  L.hr, L.hs, L.hb, L.hn = 0, 0, 0, 0
  local out = {}
  for i = 1, #l, 2 do
    local r, s, b, e = string.match(l[i + 1], '^(%d+),(%d+),(%d+),(%d+)$')
    r, s, b, e = tonumber(r), tonumber(s), tonumber(b), tonumber(e)
    -- One that does not read as a hold (of another version) is dropped, not trusted.
    if not e then redis.call('HDEL', L.k .. ':l', l[i])
    elseif e <= now then out[#out + 1] = { l[i], r, s, e, b } else L.hr, L.hs, L.hb, L.hn = L.hr + r, L.hs + s, L.hb + b, L.hn + 1 end
  end
  table.sort(out, function (a, b) return a[4] < b[4] end)
  for _, h in ipairs(out) do
    redis.call('HDEL', L.k .. ':l', h[1])
    local made
    L.rl, made = bump(L.k .. ':r', L.rl, h[4], 1000, h[2], MIN)
    L.r = L.r + h[2]
    L.renew = L.renew or made
    if h[5] > 0 then
      L.bl, made = bump(L.k .. ':b', L.bl, h[4], MIN, h[5], HOUR)
      L.b = L.b + h[5]
      L.renew = L.renew or made
    end
    for j = 0, h[3] - 1 do touch(L.k, '~' .. h[1] .. ':' .. j, h[4]) end
  end
  return #out > 0
end
-- The ledger pruned to now. L.m is its budgets, false once it emptied (it forgets them).
local function load (k, now)
  local t = redis.call('HMGET', k .. ':t', 'r', 'b', 'm', 'rl', 'bl', 'x')
  local L = { k = k, r0 = tonumber(t[1]) or 0, b0 = tonumber(t[2]) or 0, m0 = t[3], rl0 = t[4], bl0 = t[5], x0 = tonumber(t[6]) or 0 }
  L.x = L.x0
  L.r, L.rl = trim(k .. ':r', now - MIN, L.r0, t[4], 1000)
  L.b, L.bl = trim(k .. ':b', now - HOUR, L.b0, t[5], MIN)
  -- A hold that ran out more than a window ago leaves it at once.
  if holds(L, now) then
    L.r, L.rl = trim(k .. ':r', now - MIN, L.r, L.rl, 1000)
    L.b, L.bl = trim(k .. ':b', now - HOUR, L.b, L.bl, MIN)
  end
  redis.call('ZREMRANGEBYSCORE', k .. ':h', '-inf', now - HOUR)
  redis.call('ZREMRANGEBYSCORE', k .. ':d', '-inf', now - DAY)
  L.h = redis.call('ZCARD', k .. ':h')
  L.d = redis.call('ZCARD', k .. ':d')
  L.m = t[3]
  if L.r == 0 and L.b == 0 and L.d == 0 and L.hr == 0 then
    L.m = false
    L.x = 0
  end
  return L
end
-- What it used, holds included (they count as taken).
local function usageOf (L) return { L.r + L.hr, L.h + L.hs, L.d + L.hs, L.b + L.hb } end
-- Writes back what changed (L.renew: a bucket was made, the hash's expiry is renewed too).
local function save (L)
  local t = L.k .. ':t'
  if not L.m and L.r == 0 and L.b == 0 then
    if L.m0 or L.r0 > 0 or L.b0 > 0 then redis.call('DEL', t) end
    return
  end
  local a = {}
  if L.r ~= L.r0 then a[#a + 1] = 'r'; a[#a + 1] = string.format('%.0f', L.r) end
  if L.b ~= L.b0 then a[#a + 1] = 'b'; a[#a + 1] = string.format('%.0f', L.b) end
  if L.m and L.m ~= L.m0 then a[#a + 1] = 'm'; a[#a + 1] = L.m end
  if L.rl and L.rl ~= L.rl0 then a[#a + 1] = 'rl'; a[#a + 1] = L.rl end
  if L.bl and L.bl ~= L.bl0 then a[#a + 1] = 'bl'; a[#a + 1] = L.bl end
  if L.x > 0 and L.x ~= L.x0 then a[#a + 1] = 'x'; a[#a + 1] = string.format('%.0f', L.x) end
  if #a > 0 then redis.call('HSET', t, unpack(a)) end
  if not L.m and L.m0 then redis.call('HDEL', t, 'm') end
  if L.x == 0 and L.x0 > 0 then redis.call('HDEL', t, 'x') end
  if L.renew then redis.call('PEXPIRE', t, DAY + MIN) end
end
local function capsOf (m)
  local caps = {}
  if not m then return caps end
  local i = 1
  for v in string.gmatch(m .. ',', '([^,]*),') do
    caps[i] = tonumber(v)
    i = i + 1
  end
  return caps
end
local function mark (nearKey, d, now, caps, u)
  for i = 1, 4 do
    if caps[i] and u[i] >= ${NEAR} * caps[i] then
      redis.call('ZADD', nearKey, now, d)
      return
    end
  end
  redis.call('ZREM', nearKey, d)
end
`

const KEY_PROBLEM = 'the budgets in Redis were written by gateways with another audit key: give every gateway the same audit.keyFile'

// KEYS: the ledger's key base, the near set, the key check. ARGV: now (''
// for Redis's clock), recording digest ('' for none), the budgets (as m
// above), the ledger digest, a lease id ('' for none), this gateway's key
// check. Returns {1, fresh, lease requests, slots, bytes} charged (no
// lease: 0 requests), {0, budget, retryAfterMs, held}, or {-1} when the
// budgets were written with another key (checked at every take: after
// Redis lost its data, the first gateway to take sets it again, and one
// with another key is refused, not given ledgers of its own).
const TAKE = PRELUDE + `
if not redis.call('SET', KEYS[3], ARGV[6], 'NX') and redis.call('GET', KEYS[3]) ~= ARGV[6] then return { -1 } end
-- A share of what is left below half the cap (BudgetBook's grant).
local function share (cap, used, most)
  if not cap then return most end
  return math.min(most, math.floor((math.floor(cap / 2) - used) / 2))
end
-- A lease on what is left, held until settled: {requests, slots, bytes (-1: no bytes budget)}, or none.
local function grant (L, id, caps, now)
  if L.x > now or L.hn >= LEASE_HOLDS or redis.call('HEXISTS', L.k .. ':l', id) == 1 then return nil end
  local rq = share(caps[1], L.r + L.hr, LEASE_REQUESTS)
  local sl = 0
  -- Slots only where recordings are counted.
  if caps[2] or caps[3] then sl = math.max(0, math.min(share(caps[2], L.h + L.hs, LEASE_SLOTS), share(caps[3], L.d + L.hs, LEASE_SLOTS))) end
  local by = 0
  if caps[4] then by = share(caps[4], L.b + L.hb, 9007199254740991) end
  if rq <= 0 or (caps[4] and by <= 0) then return nil end
  redis.call('HSET', L.k .. ':l', id, string.format('%.0f,%.0f,%.0f,%.0f', rq, sl, by, now + HOLD))
  redis.call('PEXPIRE', L.k .. ':l', DAY)
  L.hr, L.hs, L.hb = L.hr + rq, L.hs + sl, L.hb + by
  if not caps[4] then by = -1 end
  return { rq, sl, by }
end
local k, now, rec = KEYS[1], clock(ARGV[1]), ARGV[2]
local caps = capsOf(ARGV[3])
local L = load(k, now)
-- Charged under other budgets than the last: no lease for a while.
if L.m and L.m ~= ARGV[3] then L.x = now + HOLD end
-- held: the leases' holds are part of what refuses it.
local function refuse (budget, at, window, held)
  save(L)
  local ms = at - now
  if ms < 1 then ms = 1 end
  if ms > window then ms = window end
  return { 0, budget, ms, held and 1 or 0 }
end
if caps[1] and L.r + L.hr >= caps[1] then return refuse('requestsPerMinute', freeAt(k .. ':r', L.r, caps[1] - L.hr, MIN, now), MIN, L.r < caps[1]) end
local keep = rec ~= '' and (caps[2] ~= nil or caps[3] ~= nil)
if keep then
  local windows = { { ':h', caps[2], HOUR, 'recordingsPerHour', L.h }, { ':d', caps[3], DAY, 'recordingsPerDay', L.d } }
  for _, w in ipairs(windows) do
    local key, cap, n = k .. w[1], w[2], w[5]
    -- At a cap only a recording already taken in the window goes on (it costs nothing more there).
    if cap and n + L.hs >= cap and not redis.call('ZSCORE', key, rec) then
      local i = math.min(n - 1, n + L.hs - cap)
      if i < 0 then return refuse(w[4], now + w[3], w[3], n < cap) end
      local e = redis.call('ZRANGE', key, i, i, 'WITHSCORES')
      return refuse(w[4], tonumber(e[2]) + w[3], w[3], n < cap)
    end
  end
end
if caps[4] and L.b + L.hb >= caps[4] then return refuse('bytesPerHour', freeAt(k .. ':b', L.b, caps[4] - L.hb, HOUR, now), HOUR, L.b < caps[4]) end
local made
L.rl, made = bump(k .. ':r', L.rl, now, 1000, 1, MIN)
L.renew = L.renew or made
L.r = L.r + 1
local fresh = 0
if keep then
  local day
  fresh, day = touch(k, rec, now)
  L.h, L.d = L.h + fresh, L.d + day
end
L.m = ARGV[3]
local lease = ARGV[5] ~= '' and grant(L, ARGV[5], caps, now) or { 0, 0, -1 }
save(L)
mark(KEYS[2], ARGV[4], now, caps, usageOf(L))
return { 1, fresh, lease[1], lease[2], lease[3] }
`

// KEYS: the ledger's key base, the near set. ARGV: now ('' for Redis's),
// the lease id, requests used, bytes, the ledger digest, then the digests
// of the recordings it took. BudgetBook's settle: returns how many
// recordings were new to the hour.
const SETTLE = PRELUDE + `
local k, now, id = KEYS[1], clock(ARGV[1]), ARGV[2]
local L = load(k, now)
local h = redis.call('HGET', k .. ':l', id)
if not h then
  save(L)
  return ${NO_HOLD}
end
redis.call('HDEL', k .. ':l', id)
local hr, slots, hb = string.match(h, '^(%d+),(%d+),(%d+),')
hr, slots, hb = tonumber(hr), tonumber(slots), tonumber(hb)
L.hr, L.hs, L.hb = L.hr - hr, L.hs - slots, L.hb - hb
local n = math.min(tonumber(ARGV[3]), hr)
local made
if n > 0 then
  L.rl, made = bump(k .. ':r', L.rl, now, 1000, n, MIN)
  L.renew = L.renew or made
  L.r = L.r + n
end
local bytes = tonumber(ARGV[4])
if bytes > 0 then
  L.bl, made = bump(k .. ':b', L.bl, now, MIN, bytes, HOUR)
  L.renew = L.renew or made
  L.b = L.b + bytes
end
local news = 0
for i = 6, #ARGV do
  local rec = ARGV[i]
  local new = not redis.call('ZSCORE', k .. ':h', rec) or not redis.call('ZSCORE', k .. ':d', rec)
  if not new or slots > 0 then
    if new then slots = slots - 1 end
    local fresh, day = touch(k, rec, now)
    L.h, L.d = L.h + fresh, L.d + day
    news = news + fresh
  end
end
save(L)
mark(KEYS[2], ARGV[5], now, capsOf(L.m), usageOf(L))
return news
`

// KEYS: the ledger's key base, the near set. ARGV: now ('' for Redis's), bytes, the ledger digest.
const SPEND = PRELUDE + `
local k, now, n = KEYS[1], clock(ARGV[1]), tonumber(ARGV[2])
local L = load(k, now)
local made
L.bl, made = bump(k .. ':b', L.bl, now, MIN, n, HOUR)
L.renew = L.renew or made
L.b = L.b + n
save(L)
mark(KEYS[2], ARGV[3], now, capsOf(L.m), usageOf(L))
return 1
`

// KEYS: the ledger's key base. ARGV: now ('' for Redis's). Returns {requests, hour, day, bytes, budgets, held requests, held slots}.
const USAGE = PRELUDE + `
local L = load(KEYS[1], clock(ARGV[1]))
save(L)
return { L.r, L.h, L.d, string.format('%.0f', L.b), L.m or '', L.hr, L.hs, string.format('%.0f', L.hb) }
`

// KEYS: the ledger's key base, the near set. ARGV: the ledger digest.
const RESET = `
redis.call('DEL', KEYS[1] .. ':r', KEYS[1] .. ':h', KEYS[1] .. ':d', KEYS[1] .. ':b', KEYS[1] .. ':t', KEYS[1] .. ':l')
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
  local L = load(ARGV[2] .. d, now)
  save(L)
  mark(KEYS[1], d, now, capsOf(L.m), usageOf(L))
end
return redis.call('ZCARD', KEYS[1])
`

/** Digests remembered (names to digests; dropped all at once when full). */
const DIGESTS_KEPT = 10000

/** Ledgers judged again per scrape of the near gauge: a bound on the script's work. */
const NEAR_SCAN = 1000

type Now = number | string
interface BudgetCommands {
  budgetTake: (base: string, near: string, keyCheck: string, now: Now, rec: string, budgets: string, d: string, lease: string, check: string) => Promise<[number, number | string, number, number?, number?]>
  budgetSettle: (base: string, near: string, now: Now, id: string, requests: number, bytes: number, d: string, ...recordings: string[]) => Promise<number>
  budgetSpend: (base: string, near: string, now: Now, bytes: number, d: string) => Promise<number>
  budgetUsage: (base: string, now: Now) => Promise<[number, number, number, string, string, number, number, string]>
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

export class RedisBudgets implements LeasingStore {
  private readonly client: Redis & BudgetCommands
  private readonly prefix: string
  private readonly nearKey: string
  private connecting: Promise<void> | undefined
  /** Spends gathered in this turn of the event loop, by ledger. */
  private readonly spends = new Map<string, { d: string, now: Now, bytes: number }>()
  private readonly digests = new Map<string, string>()
  private readonly keyCheck: string
  private keyProblem: string | undefined
  /** Settlements and spends sent and not yet answered: close() waits for them. */
  private readonly sending = new Set<Promise<unknown>>()

  constructor (cfg: RedisConfig, private readonly opts: RedisBudgetsOptions) {
    this.prefix = `${cfg.keyPrefix}{budgets}:`
    this.nearKey = `${this.prefix}near`
    // Checks sent in one turn of the event loop go in one write (each is still its own script).
    const client = redisClient(cfg, 'nasguard-budgets', true, { enableAutoPipelining: true })
    client.defineCommand('budgetTake', { numberOfKeys: 3, lua: TAKE })
    client.defineCommand('budgetSpend', { numberOfKeys: 2, lua: SPEND })
    client.defineCommand('budgetSettle', { numberOfKeys: 2, lua: SETTLE })
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
    await this.connected()
    if (this.keyProblem !== undefined) throw new StoreMisconfigured(this.keyProblem)
  }

  /** Connecting, whatever the key check said: a take checks the key itself, and clears or sets the problem. */
  private async connected (): Promise<void> {
    if (this.client.status === 'wait') {
      this.client.on('ready', () => { void this.checkKey() })
      this.connecting ??= this.client.connect().then(async () => await this.checkKey()).finally(() => { this.connecting = undefined })
    }
    if (this.connecting) await this.connecting
  }

  private async checkKey (): Promise<void> {
    const key = `${this.prefix}key`
    try {
      await this.client.set(key, this.keyCheck, 'NX')
      const held = await this.client.get(key)
      this.keyProblem = held === this.keyCheck ? undefined : KEY_PROBLEM
    } catch {
      // Redis went again: the next connection checks.
    }
  }

  /** A fixed-size, key-safe name for a ledger or a recording (the same few names come again and again: players seek). */
  private digest (s: string): string {
    let d = this.digests.get(s)
    if (d === undefined) {
      d = createHmac('sha256', this.opts.key).update(s).digest('base64url').slice(0, 22)
      if (this.digests.size >= DIGESTS_KEPT) this.digests.clear()
      this.digests.set(s, d)
    }
    return d
  }

  /** The time the scripts use: the caller's clock, or '' for Redis's. */
  private now (): number | string {
    return this.opts.clock?.() ?? ''
  }

  async take (c: Charge, budgets: Budgets, lease?: string): Promise<Verdict> {
    this.flushSpends()
    await this.connected()
    const d = this.digest(c.subject)
    const r = await this.client.budgetTake(this.prefix + d, this.nearKey, `${this.prefix}key`, this.now(), c.recording === undefined ? '' : this.digest(c.recording), budgetsKey(budgets), d, lease ?? '', this.keyCheck)
    // Remembered either way: the other operations (settle, usage, reset, near) refuse while the key is not the budgets'.
    this.keyProblem = Number(r[0]) === -1 ? KEY_PROBLEM : undefined
    if (this.keyProblem !== undefined) throw new StoreMisconfigured(this.keyProblem)
    if (Number(r[0]) !== 1) return { ok: false, budget: r[1] as Budget, retryAfterMs: Number(r[2]), ...(Number(r[3]) === 1 ? { held: true as const } : {}) }
    const bytes = Number(r[4])
    return {
      ok: true,
      ...(Number(r[1]) === 1 ? { fresh: true as const } : {}),
      ...(Number(r[2]) > 0 ? { lease: { requests: Number(r[2]), slots: Number(r[3]), ...(bytes >= 0 ? { bytes } : {}) } } : {})
    }
  }

  /** What a lease's holder used: one script, sent in order with what follows (after the spends gathered); resolves to how many recordings were new. */
  async settle (s: Settlement): Promise<number> {
    this.flushSpends()
    const d = this.digest(s.subject)
    const recordings = s.recordings.map((r) => this.digest(r))
    const now = this.now()
    return Number(await this.inOrder(async () => await this.client.budgetSettle(this.prefix + d, this.nearKey, now, s.id, s.requests, s.bytes, d, ...recordings)))
  }

  reachable (): boolean {
    return this.client.status === 'ready' && this.keyProblem === undefined
  }

  /** Sends at once on a ready connection, so that it keeps its place before what follows. */
  private async inOrder (send: () => Promise<number>): Promise<number> {
    const sent = this.reachable() ? send() : this.connect().then(send)
    const tracked = sent.finally(() => this.sending.delete(tracked)).catch(() => {})
    this.sending.add(tracked)
    return await sent
  }

  /**
   * Adds an ended response's bytes. Spends of one ledger within one turn
   * of the event loop go as one script (sent before any other command, so
   * a check after a spend sees it).
   */
  spend (ledger: string, bytes: number): void {
    if (bytes <= 0) return
    const now = this.now()
    const gathered = this.spends.get(ledger)
    if (gathered !== undefined && gathered.now === now) {
      gathered.bytes += bytes
      return
    }
    // Another time (a test's clock moved): what was gathered goes first.
    if (gathered !== undefined) this.flushSpends()
    if (this.spends.size === 0) setImmediate(() => { this.flushSpends() })
    this.spends.set(ledger, { d: this.digest(ledger), now, bytes })
  }

  private flushSpends (): void {
    if (this.spends.size === 0) return
    const gathered = [...this.spends.values()]
    this.spends.clear()
    // A failure is counted: those bytes are lost to the budget.
    for (const { d, now, bytes } of gathered) this.inOrder(async () => await this.client.budgetSpend(this.prefix + d, this.nearKey, now, bytes, d)).catch((err: Error) => this.opts.onSpendError(err))
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    this.flushSpends()
    await this.connect()
    const [requests, hour, day, bytes, json, heldRequests, heldSlots, heldBytes] = await this.client.budgetUsage(this.prefix + this.digest(ledger), this.now())
    return {
      used: { requestsPerMinute: Number(requests), recordingsPerHour: Number(hour), recordingsPerDay: Number(day), bytesPerHour: Number(bytes) },
      budgets: budgetsOf(json),
      held: { requests: Number(heldRequests), recordings: Number(heldSlots), bytes: Number(heldBytes) }
    }
  }

  async reset (ledger: string): Promise<void> {
    this.flushSpends()
    await this.connect()
    const d = this.digest(ledger)
    await this.client.budgetReset(this.prefix + d, this.nearKey, d)
  }

  async near (): Promise<number> {
    this.flushSpends()
    await this.connect()
    return Number(await this.client.budgetNear(this.nearKey, this.now(), this.prefix, NEAR_SCAN))
  }

  /** Ends the connection once what was sent (settlements, spends) is answered; at once if Redis is not there. */
  async close (): Promise<void> {
    this.flushSpends()
    if (this.client.status !== 'ready') {
      this.client.disconnect()
      return
    }
    // What was sent is answered first (QUIT would go ahead of the pipelined scripts), for 2 s at most.
    const timer = setTimeout(() => { this.client.disconnect() }, 2000)
    await Promise.all(this.sending)
    await this.client.quit().catch(() => {})
    clearTimeout(timer)
  }
}

/** The budgets a ledger's m field holds ("<requestsPerMinute>,<recordingsPerHour>,...", each empty for none). */
function budgetsOf (m: string): Budgets {
  const out: Budgets = {}
  m.split(',').forEach((v, i) => { if (/^\d+$/.test(v) && BUDGETS[i] !== undefined) out[BUDGETS[i]] = Number(v) })
  return out
}
