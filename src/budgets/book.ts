// Per-subject budgets in one process: sliding windows over what each
// subject took. Requests in the last minute; distinct recordings in the
// last hour and day (a recording is counted once while it was accessed
// within the window, however many Range requests a player sends for it);
// bytes in the last hour (added when each response ends). Pure: the clock
// is the caller's. Subjects with nothing left in any window are forgotten.
import { createHash } from 'node:crypto'

export const BUDGETS = ['requestsPerMinute', 'recordingsPerHour', 'recordingsPerDay', 'bytesPerHour'] as const
export type Budget = typeof BUDGETS[number]
export type Budgets = Partial<Record<Budget, number>>

/** Every this many charges, subjects with nothing left in any window are forgotten. */
const SWEEP_EVERY = 4096
const MINUTE = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000

interface Ledger {
  /** Times of the requests of the last minute, oldest first. */
  requests: number[]
  /**
   * The recordings accessed in the last hour and day (a digest of the
   * path: a fixed size whatever the path), with their last access time,
   * oldest first: a window's count is its map's size. Kept only under a
   * recordings budget.
   */
  hour: Map<string, number>
  day: Map<string, number>
  /** [time, bytes] of the last hour, oldest first. */
  bytes: Array<[number, number]>
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
    l.requests.push(now)
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
    this.ledger(subject, now).bytes.push([now, bytes])
  }

  usage (subject: string, now: number): Usage {
    const l = this.ledgers.get(subject)
    if (!l) return { requestsPerMinute: 0, recordingsPerHour: 0, recordingsPerDay: 0, bytesPerHour: 0 }
    prune(l, now)
    if (isEmpty(l)) this.ledgers.delete(subject)
    return { requestsPerMinute: l.requests.length, recordingsPerHour: l.hour.size, recordingsPerDay: l.day.size, bytesPerHour: l.bytes.reduce((a, [, b]) => a + b, 0) }
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
    if (b.requestsPerMinute !== undefined && l.requests.length >= b.requestsPerMinute) {
      return refuse('requestsPerMinute', l.requests[l.requests.length - b.requestsPerMinute] + MINUTE, MINUTE)
    }
    if (key !== undefined) {
      // A recording already taken within a window costs nothing more there.
      for (const [budget, window, taken] of [['recordingsPerHour', HOUR, l.hour], ['recordingsPerDay', DAY, l.day]] as const) {
        const cap = b[budget]
        if (cap === undefined || taken.has(key) || taken.size < cap) continue
        return refuse(budget, nthTime(taken, taken.size - cap) + window, window)
      }
    }
    if (b.bytesPerHour !== undefined) {
      let total = l.bytes.reduce((a, [, n]) => a + n, 0)
      if (total >= b.bytesPerHour) {
        // Until enough of the hour's bytes have aged out.
        let i = 0
        while (total >= b.bytesPerHour && i < l.bytes.length) total -= l.bytes[i++][1]
        return refuse('bytesPerHour', l.bytes[i - 1][0] + HOUR, HOUR)
      }
    }
    return undefined
  }
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
  while (l.requests.length > 0 && l.requests[0] <= now - MINUTE) l.requests.shift()
  for (const [m, window] of [[l.hour, HOUR], [l.day, DAY]] as const) {
    for (const [r, t] of m) {
      if (t > now - window) break
      m.delete(r)
    }
  }
  while (l.bytes.length > 0 && l.bytes[0][0] <= now - HOUR) l.bytes.shift()
}
