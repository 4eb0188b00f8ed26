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
}

/** ok: charged; fresh: its recording was not taken in the last hour (a distinct recording, counted for the burst alert). */
export type Verdict = { ok: true, fresh?: true } | { ok: false, budget: Budget, retryAfterMs: number }

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
  take (c: Charge, budgets: Budgets, now: number): Verdict {
    // Now and then, subjects with nothing left in any window are forgotten (not only when read).
    if (++this.takes % SWEEP_EVERY === 0) this.sweep(now)
    const l = this.ledger(c.subject, now)
    const key = c.recording === undefined || (budgets.recordingsPerHour === undefined && budgets.recordingsPerDay === undefined) ? undefined : digestOf(c.recording)
    const over = this.overBudget(l, key, budgets, now)
    if (over) return over
    bump(l.requests, now, REQUEST_BUCKET, 1)
    l.budgets = budgets
    if (key === undefined) return { ok: true }
    const fresh = !l.hour.has(key)
    // Kept in the order of last access (oldest first), for pruning.
    for (const m of [l.hour, l.day]) { m.delete(key); m.set(key, now) }
    return fresh ? { ok: true, fresh: true } : { ok: true }
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
      if (BUDGETS.some((b) => l.budgets[b] !== undefined && u[b] >= fraction * (l.budgets[b] as number))) n++
    }
    return n
  }

  private ledger (subject: string, now: number): Ledger {
    let l = this.ledgers.get(subject)
    if (!l) {
      l = { requests: [], hour: new Map(), day: new Map(), bytes: [], budgets: {} }
      this.ledgers.set(subject, l)
    }
    prune(l, now)
    // A ledger that emptied is a new one: it forgets the budgets too (as when it is swept).
    if (isEmpty(l)) l.budgets = {}
    return l
  }

  private overBudget (l: Ledger, key: string | undefined, b: Budgets, now: number): Verdict | undefined {
    // When it may come back: never more than the window (a clock stepped back does not make it longer).
    const refuse = (budget: Budget, freeAt: number, window: number): Verdict => ({ ok: false, budget, retryAfterMs: Math.min(window, Math.max(1, freeAt - now)) })
    if (b.requestsPerMinute !== undefined && sum(l.requests) >= b.requestsPerMinute) {
      return refuse('requestsPerMinute', freeAt(l.requests, b.requestsPerMinute, MINUTE, now), MINUTE)
    }
    if (key !== undefined) {
      // A recording already taken within a window costs nothing more there.
      for (const [budget, window, taken] of [['recordingsPerHour', HOUR, l.hour], ['recordingsPerDay', DAY, l.day]] as const) {
        const cap = b[budget]
        if (cap === undefined || taken.has(key) || taken.size < cap) continue
        return refuse(budget, nthTime(taken, taken.size - cap) + window, window)
      }
    }
    if (b.bytesPerHour !== undefined && sum(l.bytes) >= b.bytesPerHour) {
      return refuse('bytesPerHour', freeAt(l.bytes, b.bytesPerHour, HOUR, now), HOUR)
    }
    return undefined
  }
}

/** Adds n to the bucket `now` falls in (the newest, if it is that bucket's), which now ends at `now`. */
function bump (buckets: Bucket[], now: number, unit: number, n: number): void {
  const last = buckets[buckets.length - 1]
  if (last !== undefined && Math.floor(last[0] / unit) === Math.floor(now / unit)) {
    last[0] = now
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

/** A fixed-size key for a recording's path. */
function digestOf (recording: string): string {
  return createHash('sha256').update(recording).digest('base64url').slice(0, 22)
}

function isEmpty (l: Ledger): boolean {
  return l.requests.length === 0 && l.day.size === 0 && l.bytes.length === 0
}

/** Drops what left every window; a ledger left empty is the caller's to forget. */
function prune (l: Ledger, now: number): void {
  while (l.requests.length > 0 && l.requests[0][0] <= now - MINUTE) l.requests.shift()
  for (const [m, window] of [[l.hour, HOUR], [l.day, DAY]] as const) {
    for (const [r, t] of m) {
      if (t > now - window) break
      m.delete(r)
    }
  }
  while (l.bytes.length > 0 && l.bytes[0][0] <= now - HOUR) l.bytes.shift()
}
