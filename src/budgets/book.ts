// Per-subject budgets in one process: sliding windows over what each
// subject took. Requests in the last minute; distinct recordings in the
// last hour and day (a recording is counted once while it was accessed
// within the window, however many Range requests a player sends for it);
// bytes in the last hour (added when each response ends). Pure: the clock
// is the caller's. Subjects with nothing left in any window are forgotten.
//
// Requests are kept in buckets of a second and bytes in buckets of a
// minute, each with the time of its latest entry, and a bucket leaves its
// window with that entry: never early (a budget is never loosened), at
// most a second (requests) or a minute (bytes) late. So a ledger holds at
// most 60 of each, however fast its subject sends (src/budgets/redis-store.ts
// keeps the same buckets).
//
// Leases (src/budgets/lease.ts): a take may also hand its caller a slice
// of the ledger's headroom, to spend without asking again for a moment:
// some requests, recording slots and bytes, held here (they count against
// the budgets as if taken) until the caller settles what it used. Used
// requests and bytes are charged when settled (late by the lease's
// length, never early), its new recordings are added then, what it did
// not use is freed. A lease is only handed out while every budget is
// under half used, and each takes at most half of what is left below
// that half, so the holds never pass a budget. A hold not settled within
// HOLD_MS (its holder died) is charged in full: never a way to take more.
// A ledger charged under other budgets than the last (two rules with
// their own perSubject) gets no lease for HOLD_MS: a lease is sized by
// one rule's budgets, and must not decide for, or hold up, another's.
import { createHash } from 'node:crypto'

export const BUDGETS = ['requestsPerMinute', 'recordingsPerHour', 'recordingsPerDay', 'bytesPerHour'] as const
export type Budget = typeof BUDGETS[number]
export type Budgets = Partial<Record<Budget, number>>

/** Every this many charges, subjects with nothing left in any window are forgotten. */
const SWEEP_EVERY = 4096
const MINUTE = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000

/** [time of its latest entry, how many requests or bytes]; a ledger's are oldest first. */
type Bucket = [number, number]
const REQUEST_BUCKET = 1000
const BYTES_BUCKET = MINUTE

/** How long a hold lasts unsettled before it is charged in full, ms (a lease is settled within LEASE_MS: src/budgets/lease.ts). */
export const HOLD_MS = 5000
/** What settling a lease answers when its hold is gone (charged in full when it ran out, or reset): nothing of it was charged now. */
export const NO_HOLD = -1
/** The most requests, and recording slots, one lease holds. */
export const LEASE_REQUESTS = 1024
export const LEASE_SLOTS = 64
/** The most leases one ledger may have out at once (one per worker of each gateway is the usual). */
export const LEASE_HOLDS = 64

/** What one lease holds: requests, recording slots, bytes (0: no bytes budget), and until when. */
interface Hold { requests: number, slots: number, bytes: number, expiresAt: number }

/** A lease handed out with a charge: what its holder may take without asking (bytes: what ended responses may add before it must ask again; absent: no bytes budget). */
export interface Lease { requests: number, slots: number, bytes?: number }

/** What a lease's holder used: requests, the recordings it took (each once, new or not), the bytes of responses that ended. */
export interface Settlement { subject: string, id: string, requests: number, recordings: string[], bytes: number }

/** What leases hold of a ledger's budgets. */
export interface Held { requests: number, recordings: number, bytes: number }

interface Ledger {
  /** The requests of the last minute, in buckets of a second. */
  requests: Bucket[]
  /**
   * The recordings accessed in the last hour and day (a digest of the
   * path: a fixed size whatever the path), with their last access time,
   * oldest first: a window's count is its map's size. Kept only under a
   * recordings budget.
   */
  hour: Map<string, number>
  day: Map<string, number>
  /** The bytes of the last hour, in buckets of a minute. */
  bytes: Bucket[]
  /** The budgets it was last charged under (a rule may set its own). */
  budgets: Budgets
  /** Leases not yet settled, by id. */
  holds: Map<string, Hold>
  /** Until when no lease is handed out: it was charged under other budgets than the last (ms; 0: none). */
  mixedUntil: number
}

/**
 * ok: charged; fresh: its recording was not taken in the last hour (a
 * distinct recording, counted for the burst alert); lease: one was asked
 * for and could be handed out. Refused: held when leases hold part of
 * what refused it (their holders may settle for less: ask again then).
 */
export type Verdict = { ok: true, fresh?: true, lease?: Lease } | { ok: false, budget: Budget, retryAfterMs: number, held?: true }

export interface Usage { requestsPerMinute: number, recordingsPerHour: number, recordingsPerDay: number, bytesPerHour: number }

/** What a charge counts: every request; a GET's recording; (later) its bytes. */
export interface Charge { subject: string, recording?: string }

export class BudgetBook {
  private readonly ledgers = new Map<string, Ledger>()
  private takes = 0

  /** How many subjects the book holds (each with something in a window). */
  get subjects (): number {
    return this.ledgers.size
  }

  /**
   * Counts the request against the subject's budgets, or refuses it (and
   * counts nothing), naming the first budget it would pass and when it
   * could go through.
   */
  take (c: Charge, budgets: Budgets, now: number, lease?: string): Verdict {
    // Now and then, subjects with nothing left in any window are forgotten (not only when read).
    if (++this.takes % SWEEP_EVERY === 0) this.sweep(now)
    const l = this.ledger(c.subject, now)
    const key = c.recording === undefined || !tracksRecordings(budgets) ? undefined : digestOf(c.recording)
    // Charged under other budgets than the last: no lease for a while (the first charge of a ledger has nothing to differ from).
    if (l.budgets !== budgets && Object.keys(l.budgets).length > 0 && budgetsKey(l.budgets) !== budgetsKey(budgets)) l.mixedUntil = now + HOLD_MS
    const over = this.overBudget(l, key, budgets, now)
    if (over) return over
    bump(l.requests, now, REQUEST_BUCKET, 1)
    l.budgets = budgets
    const fresh = key !== undefined && !l.hour.has(key)
    if (key !== undefined) touch(l, key, now)
    const granted = lease === undefined ? undefined : this.grant(l, lease, budgets, now)
    return { ok: true, ...(fresh ? { fresh: true as const } : {}), ...(granted ? { lease: granted } : {}) }
  }

  /** A lease on what is left, held until settled (none when any budget is half used). */
  private grant (l: Ledger, id: string, b: Budgets, now: number): Lease | undefined {
    if (l.mixedUntil > now || l.holds.has(id) || l.holds.size >= LEASE_HOLDS) return undefined
    const held = heldOf(l)
    const share = (cap: number | undefined, used: number, most: number): number => cap === undefined ? most : Math.min(most, Math.floor((Math.floor(cap / 2) - used) / 2))
    const requests = share(b.requestsPerMinute, sum(l.requests) + held.requests, LEASE_REQUESTS)
    // Slots only where recordings are counted.
    const slots = Math.max(0, !tracksRecordings(b) ? 0 : Math.min(share(b.recordingsPerHour, l.hour.size + held.recordings, LEASE_SLOTS), share(b.recordingsPerDay, l.day.size + held.recordings, LEASE_SLOTS)))
    const bytes = b.bytesPerHour === undefined ? 0 : share(b.bytesPerHour, sum(l.bytes) + held.bytes, Number.MAX_SAFE_INTEGER)
    if (requests <= 0 || (b.bytesPerHour !== undefined && bytes <= 0)) return undefined
    l.holds.set(id, { requests, slots, bytes, expiresAt: now + HOLD_MS })
    return { requests, slots, ...(b.bytesPerHour !== undefined ? { bytes } : {}) }
  }

  /**
   * What a lease's holder used: its requests and bytes are charged now,
   * its new recordings added (no more than its slots), the rest of the
   * hold is freed. A lease already charged in full (late), or reset, is
   * ignored: NO_HOLD, so that its holder spends what went beyond the hold.
   * Returns how many recordings were new to the hour.
   */
  settle (s: Settlement, now: number): number {
    const l = this.ledgers.get(s.subject)
    if (!l) return NO_HOLD
    prune(l, now)
    const hold = l.holds.get(s.id)
    if (!hold) return NO_HOLD
    l.holds.delete(s.id)
    const requests = Math.min(Math.max(0, s.requests), hold.requests)
    if (requests > 0) bump(l.requests, now, REQUEST_BUCKET, requests)
    if (s.bytes > 0) bump(l.bytes, now, BYTES_BUCKET, s.bytes)
    let slots = hold.slots
    let fresh = 0
    for (const r of s.recordings) {
      const key = digestOf(r)
      if (!l.day.has(key) || !l.hour.has(key)) {
        if (slots === 0) continue
        slots--
      }
      if (!l.hour.has(key)) fresh++
      touch(l, key, now)
    }
    return fresh
  }

  /** Forgets every subject with nothing left in any window. */
  private sweep (now: number): void {
    for (const subject of [...this.ledgers.keys()]) this.usage(subject, now)
  }

  /** Adds a response's bytes (once it ended) to the subject's hour. */
  spend (subject: string, bytes: number, now: number): void {
    if (bytes <= 0) return
    bump(this.ledger(subject, now).bytes, now, BYTES_BUCKET, bytes)
  }

  usage (subject: string, now: number): Usage {
    const l = this.ledgers.get(subject)
    if (!l) return { requestsPerMinute: 0, recordingsPerHour: 0, recordingsPerDay: 0, bytesPerHour: 0 }
    prune(l, now)
    if (isEmpty(l)) this.ledgers.delete(subject)
    return { requestsPerMinute: sum(l.requests), recordingsPerHour: l.hour.size, recordingsPerDay: l.day.size, bytesPerHour: sum(l.bytes) }
  }

  /** What the subject's leases hold: not yet used, but counted against its budgets. */
  held (subject: string, now: number): Held {
    const l = this.ledgers.get(subject)
    if (l) prune(l, now)
    return l ? heldOf(l) : { requests: 0, recordings: 0, bytes: 0 }
  }

  /** The budgets the subject was last charged under (none: never charged, or forgotten). */
  budgetsOf (subject: string): Budgets | undefined {
    return this.ledgers.get(subject)?.budgets
  }

  reset (subject: string): boolean {
    return this.ledgers.delete(subject)
  }

  /** Subjects at or above `fraction` of any budget they were last charged under: a count, never who. */
  near (fraction: number, now: number): number {
    let n = 0
    for (const [subject, l] of [...this.ledgers]) {
      const u = this.usage(subject, now)
      const h = heldOf(l)
      const held: Usage = { requestsPerMinute: h.requests, recordingsPerHour: h.recordings, recordingsPerDay: h.recordings, bytesPerHour: h.bytes }
      if (BUDGETS.some((b) => l.budgets[b] !== undefined && u[b] + held[b] >= fraction * (l.budgets[b] as number))) n++
    }
    return n
  }

  private ledger (subject: string, now: number): Ledger {
    let l = this.ledgers.get(subject)
    if (!l) {
      l = { requests: [], hour: new Map(), day: new Map(), bytes: [], budgets: {}, holds: new Map(), mixedUntil: 0 }
      this.ledgers.set(subject, l)
    }
    prune(l, now)
    // A ledger that emptied is a new one: it forgets the budgets too (as when it is swept).
    if (isEmpty(l)) { l.budgets = {}; l.mixedUntil = 0 }
    return l
  }

  private overBudget (l: Ledger, key: string | undefined, b: Budgets, now: number): Verdict | undefined {
    // When it may come back: never more than the window (a clock stepped back does not make it longer).
    const held = heldOf(l)
    // Held: the leases' holds are part of what refuses it.
    const refuse = (budget: Budget, freeAt: number, window: number, heldToo: boolean): Verdict => ({ ok: false, budget, retryAfterMs: Math.min(window, Math.max(1, freeAt - now)), ...(heldToo ? { held: true as const } : {}) })
    const requests = sum(l.requests)
    if (b.requestsPerMinute !== undefined && requests + held.requests >= b.requestsPerMinute) {
      return refuse('requestsPerMinute', freeAt(l.requests, b.requestsPerMinute - held.requests, MINUTE, now), MINUTE, requests < b.requestsPerMinute)
    }
    if (key !== undefined) {
      // A recording already taken within a window costs nothing more there.
      for (const [budget, window, taken] of [['recordingsPerHour', HOUR, l.hour], ['recordingsPerDay', DAY, l.day]] as const) {
        const cap = b[budget]
        if (cap === undefined || taken.has(key) || taken.size + held.recordings < cap) continue
        const i = Math.min(taken.size - 1, taken.size + held.recordings - cap)
        return refuse(budget, i < 0 ? now + window : nthTime(taken, i) + window, window, taken.size < cap)
      }
    }
    const bytes = sum(l.bytes)
    if (b.bytesPerHour !== undefined && bytes + held.bytes >= b.bytesPerHour) {
      return refuse('bytesPerHour', freeAt(l.bytes, b.bytesPerHour - held.bytes, HOUR, now), HOUR, bytes < b.bytesPerHour)
    }
    return undefined
  }
}

/** Adds n to the bucket `now` falls in (the newest, if it is that bucket's), which now ends at `now`. */
function bump (buckets: Bucket[], now: number, unit: number, n: number): void {
  const last = buckets[buckets.length - 1]
  if (last !== undefined && Math.floor(last[0] / unit) === Math.floor(now / unit)) {
    last[0] = Math.max(last[0], now)
    last[1] += n
  } else {
    buckets.push([now, n])
  }
}

function sum (buckets: Bucket[]): number {
  let n = 0
  for (const [, k] of buckets) n += k
  return n
}

/** When enough of the oldest buckets have left the window for the sum to be under cap. */
function freeAt (buckets: Bucket[], cap: number, window: number, now: number): number {
  let total = sum(buckets)
  let at = now
  for (let i = 0; total >= cap && i < buckets.length; i++) {
    total -= buckets[i][1]
    at = buckets[i][0] + window
  }
  return at
}

/** The time of the i-th entry (0: the oldest). */
function nthTime (m: Map<string, number>, i: number): number {
  let n = 0
  for (const t of m.values()) if (n++ === i) return t
  return 0
}

/** Whether the budgets count recordings (else a GET's recording is not kept). */
export function tracksRecordings (b: Budgets): boolean {
  return b.recordingsPerHour !== undefined || b.recordingsPerDay !== undefined
}

/** A recording (its key) taken now: kept in the order of last access (oldest first), for pruning. */
function touch (l: Ledger, key: string, now: number): void {
  for (const m of [l.hour, l.day]) { m.delete(key); m.set(key, now) }
}

/** What the ledger's leases hold. */
function heldOf (l: Ledger): Held {
  const held = { requests: 0, recordings: 0, bytes: 0 }
  for (const h of l.holds.values()) { held.requests += h.requests; held.recordings += h.slots; held.bytes += h.bytes }
  return held
}

/** Budgets as one string, as Redis keeps them ("<requestsPerMinute>,<recordingsPerHour>,<recordingsPerDay>,<bytesPerHour>", each empty for none). */
export function budgetsKey (b: Budgets): string {
  return BUDGETS.map((k) => b[k] ?? '').join(',')
}

/** A fixed-size key for a recording's path. */
function digestOf (recording: string): string {
  return createHash('sha256').update(recording).digest('base64url').slice(0, 22)
}

function isEmpty (l: Ledger): boolean {
  return l.requests.length === 0 && l.day.size === 0 && l.bytes.length === 0 && l.holds.size === 0
}

/**
 * Drops what left every window; a ledger left empty is the caller's to
 * forget. First, holds not settled in time are charged in full: their
 * requests, and each slot as a recording of its own.
 */
function prune (l: Ledger, now: number): void {
  // Charged at the time each ran out (not when it is found so), so that what is charged does not depend on when the ledger is next read.
  if (l.holds.size === 0) return pruneWindows(l, now)
  const expired = [...l.holds].filter(([, h]) => h.expiresAt <= now).sort(([, a], [, b]) => a.expiresAt - b.expiresAt)
  for (const [id, h] of expired) {
    l.holds.delete(id)
    bump(l.requests, h.expiresAt, REQUEST_BUCKET, h.requests)
    if (h.bytes > 0) bump(l.bytes, h.expiresAt, BYTES_BUCKET, h.bytes)
    for (let i = 0; i < h.slots; i++) touch(l, `~${id}:${i}`, h.expiresAt)
  }
  pruneWindows(l, now)
}

/** Drops what left every window. */
function pruneWindows (l: Ledger, now: number): void {
  while (l.requests.length > 0 && l.requests[0][0] <= now - MINUTE) l.requests.shift()
  for (const [m, window] of [[l.hour, HOUR], [l.day, DAY]] as const) {
    for (const [r, t] of m) {
      if (t > now - window) break
      m.delete(r)
    }
  }
  while (l.bytes.length > 0 && l.bytes[0][0] <= now - HOUR) l.bytes.shift()
}
