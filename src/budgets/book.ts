// Per-subject budgets in one process: sliding windows over what each
// subject took. Requests in the last minute; distinct recordings in the
// last hour and day (a recording is counted once while it was accessed
// within the window, however many Range requests a player sends for it);
// bytes in the last hour (added when each response ends). Pure: the clock
// is the caller's. Subjects with nothing left in any window are forgotten.
export const BUDGETS = ['requestsPerMinute', 'recordingsPerHour', 'recordingsPerDay', 'bytesPerHour'] as const
export type Budget = typeof BUDGETS[number]
export type Budgets = Partial<Record<Budget, number>>

const MINUTE = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000

interface Ledger {
  /** Times of the requests of the last minute, oldest first. */
  requests: number[]
  /** Each recording accessed in the last day, with its last access time. */
  recordings: Map<string, number>
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
    const l = this.ledger(c.subject, now)
    const over = this.overBudget(l, c, budgets, now)
    if (over) return over
    l.requests.push(now)
    l.budgets = budgets
    if (c.recording === undefined) return { ok: true }
    const last = l.recordings.get(c.recording)
    // Kept in the order of last access (oldest first), for pruning.
    l.recordings.delete(c.recording)
    l.recordings.set(c.recording, now)
    return last === undefined || last <= now - HOUR ? { ok: true, fresh: true } : { ok: true }
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
    if (l.requests.length === 0 && l.recordings.size === 0 && l.bytes.length === 0) this.ledgers.delete(subject)
    return { requestsPerMinute: l.requests.length, recordingsPerHour: since(l.recordings, now - HOUR), recordingsPerDay: l.recordings.size, bytesPerHour: l.bytes.reduce((a, [, b]) => a + b, 0) }
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
      l = { requests: [], recordings: new Map(), bytes: [], budgets: {} }
      this.ledgers.set(subject, l)
    }
    prune(l, now)
    return l
  }

  private overBudget (l: Ledger, c: Charge, b: Budgets, now: number): Verdict | undefined {
    if (b.requestsPerMinute !== undefined && l.requests.length >= b.requestsPerMinute) {
      return { ok: false, budget: 'requestsPerMinute', retryAfterMs: l.requests[l.requests.length - b.requestsPerMinute] + MINUTE - now }
    }
    // A recording already taken within a window costs nothing more there.
    const seen = c.recording === undefined ? undefined : l.recordings.get(c.recording)
    if (c.recording !== undefined) {
      for (const [budget, window] of [['recordingsPerHour', HOUR], ['recordingsPerDay', DAY]] as const) {
        const cap = b[budget]
        if (cap === undefined || (seen !== undefined && seen > now - window)) continue
        const times = [...l.recordings.values()].filter((t) => t > now - window)
        if (times.length >= cap) return { ok: false, budget, retryAfterMs: times[times.length - cap] + window - now }
      }
    }
    if (b.bytesPerHour !== undefined) {
      let total = l.bytes.reduce((a, [, n]) => a + n, 0)
      if (total >= b.bytesPerHour) {
        // Until enough of the hour's bytes have aged out.
        let i = 0
        while (total >= b.bytesPerHour && i < l.bytes.length) total -= l.bytes[i++][1]
        return { ok: false, budget: 'bytesPerHour', retryAfterMs: l.bytes[i - 1][0] + HOUR - now }
      }
    }
    return undefined
  }
}

function since (recordings: Map<string, number>, from: number): number {
  let n = 0
  for (const t of recordings.values()) if (t > from) n++
  return n
}

/** Drops what left every window; a ledger left empty is the caller's to forget. */
function prune (l: Ledger, now: number): void {
  while (l.requests.length > 0 && l.requests[0] <= now - MINUTE) l.requests.shift()
  for (const [r, t] of l.recordings) {
    if (t > now - DAY) break
    l.recordings.delete(r)
  }
  while (l.bytes.length > 0 && l.bytes[0][0] <= now - HOUR) l.bytes.shift()
}
