// A worker's or a gateway's side of a shared budget store (the primary's
// book over IPC, or Redis): leases, so that most checks are decided here
// without a round trip, and the budgets stay exact across every holder.
//
// A check that goes to the store asks for a lease with it. The store may
// hand one out (src/budgets/book.ts, grant): some requests and some slots
// for new recordings, held there as if taken, so no other holder can take
// them. Until the lease is used up, or LEASE_MS has passed, this
// process's checks for that ledger are decided here:
//
// - a request uses one of the lease's requests;
// - a recording this lease already took (or the one it came with) costs
//   nothing more: a player's Range requests stay here;
// - a new recording uses a slot;
// - the ledger's own ended responses are counted against the bytes the
//   lease holds, and sent with its settlement (one write, not one per
//   response).
//
// A lease never refuses: whatever it cannot cover goes to the store, and
// the lease is settled first (in order, on the same channel), so the store
// always judges with this process's use in. Settled: the requests and
// bytes used are charged then (late by LEASE_MS at most, so a window is
// never loosened), the recordings taken are added, the rest is freed. A
// lease whose holder dies is charged in full by the store after HOLD_MS.
// A settlement the store could not take is sent again while it can still
// count (settling twice is harmless: the hold is gone after the first); a
// check that failed, or was answered too late to use its lease, frees the
// lease it may have been given.
//
// A refusal that other holders' leases are part of (held) is asked again
// after they settle, so a budget is neither passed nor cut short by what
// another worker holds but did not use.
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { HOLD_MS, NO_HOLD, tracksRecordings, type Budgets, type Charge, type Lease, type Settlement, type Verdict } from './book.js'
import type { BudgetStore, LeasingStore, LedgerUsage } from './store.js'

/** How long a lease is used before it is settled, ms (well within HOLD_MS). */
export const LEASE_MS = 250
/** How often a refusal held by other leases is asked again, each after LEASE_MS. */
const HELD_RETRIES = 4

/** One lease in use: what is left of it, and what it took. */
interface LeaseInUse {
  id: string
  ledger: string
  /** The budgets it was granted under (a reload ends it: new budgets, a new lease). */
  budgets: Budgets
  tracks: boolean
  requests: number
  slots: number
  /** Bytes ended responses may still add; undefined: no bytes budget. */
  bytes: number | undefined
  /** Bytes of ended responses, sent when it is settled. */
  spent: number
  used: number
  /** Recordings it may take again for nothing: the one it came with, and those it took. */
  known: Set<string>
  /** Recordings taken under it, to be settled (each once). */
  taken: Set<string>
  /** When the check that brought it was sent (performance.now()): past HOLD_MS the store no longer holds it. */
  sentAt: number
  timer: NodeJS.Timeout
}

export interface LeaseOptions {
  /** Recordings that a settlement found new (the store's count): what a lease decided is never counted as new by itself. */
  onFresh?: (n: number) => void
}

export class LeasedBudgets implements BudgetStore {
  private readonly leases = new Map<string, LeaseInUse>()
  /** A check of a ledger on its way to the store: the ledger's other checks wait for its lease. */
  private readonly asking = new Map<string, Promise<unknown>>()
  private readonly prefix = randomBytes(6).toString('base64url')
  private next = 0

  constructor (private readonly store: LeasingStore, private readonly opts: LeaseOptions = {}) {}

  take (c: Charge, budgets: Budgets): Verdict | Promise<Verdict> {
    const local = this.fromLease(c, budgets)
    if (local) return local
    const waiting = this.asking.get(c.subject)
    if (waiting === undefined) return this.ask(c, budgets)
    // Another check of this ledger is asking already: its lease may cover this one too.
    return waiting.then(() => this.fromLease(c, budgets) ?? this.store.take(c, budgets), () => this.store.take(c, budgets)).then((v) => this.retried(c, budgets, v, 0))
  }

  /** The verdict of the ledger's lease, or undefined when it cannot cover the request (it is settled then). */
  private fromLease (c: Charge, budgets: Budgets): Verdict | undefined {
    const l = this.leases.get(c.subject)
    if (l === undefined) return undefined
    const recording = l.tracks ? c.recording : undefined
    const fresh = recording !== undefined && !l.known.has(recording)
    if (l.budgets !== budgets || l.requests === 0 || !this.store.reachable() || (fresh && l.slots === 0) || (l.bytes !== undefined && l.bytes <= 0)) {
      void this.settleLease(l)
      return undefined
    }
    l.requests--
    l.used++
    if (recording !== undefined) {
      if (fresh) { l.slots--; l.known.add(recording) }
      l.taken.add(recording)
    }
    // Whether it is new to the subject is the store's to say, when settled.
    return { ok: true }
  }

  private ask (c: Charge, budgets: Budgets): Promise<Verdict> {
    const id = `${this.prefix}.${++this.next}`
    const sentAt = performance.now()
    // Only a check that could have reached the store can have left a lease there.
    const written = this.store.reachable()
    const free = (): void => { if (written) void this.send({ subject: c.subject, id, requests: 0, recordings: [], bytes: 0 }, sentAt) }
    const asked = Promise.resolve(this.store.take(c, budgets, id)).then((v) => {
      if (v.ok && v.lease) {
        // Answered so late that the store may let it run out soon: freed, not used.
        if (performance.now() - sentAt > HOLD_MS / 2) free()
        else this.hold(id, c, budgets, v.lease, sentAt)
      }
      return v
    }, (err: Error) => {
      // It may have been charged, and a lease held, with the answer lost.
      free()
      throw err
    })
    const done = asked.finally(() => { if (this.asking.get(c.subject) === done) this.asking.delete(c.subject) })
    this.asking.set(c.subject, done)
    return done.then((v) => this.retried(c, budgets, v, 0))
  }

  /** A refusal held by other leases is asked again once they settled; what is returned never carries a lease. */
  private async retried (c: Charge, budgets: Budgets, v: Verdict, tries: number): Promise<Verdict> {
    if (v.ok) return v.fresh ? { ok: true, fresh: true } : { ok: true }
    if (v.held === true && tries < HELD_RETRIES) {
      await sleep(LEASE_MS)
      return await this.retried(c, budgets, await this.store.take(c, budgets), tries + 1)
    }
    return { ok: false, budget: v.budget, retryAfterMs: v.retryAfterMs }
  }

  private hold (id: string, c: Charge, budgets: Budgets, lease: Lease, sentAt: number): void {
    const before = this.leases.get(c.subject)
    if (before) void this.settleLease(before)
    const tracks = tracksRecordings(budgets)
    const l: LeaseInUse = {
      id,
      ledger: c.subject,
      budgets,
      tracks,
      requests: lease.requests,
      slots: lease.slots,
      bytes: lease.bytes,
      spent: 0,
      used: 0,
      known: new Set(tracks && c.recording !== undefined ? [c.recording] : []),
      taken: new Set(),
      sentAt,
      timer: setTimeout(() => { void this.settleLease(l) }, LEASE_MS)
    }
    l.timer.unref()
    this.leases.set(c.subject, l)
  }

  private async settleLease (l: LeaseInUse): Promise<void> {
    clearTimeout(l.timer)
    if (this.leases.get(l.ledger) === l) this.leases.delete(l.ledger)
    // What the store holds of bytes for it: the grant (what is left of it plus what was spent).
    const held = l.bytes === undefined ? 0 : Math.max(0, l.spent + l.bytes)
    return this.send({ subject: l.ledger, id: l.id, requests: l.used, recordings: [...l.taken], bytes: l.spent }, l.sentAt, held)
  }

  /**
   * Sends a settlement; while the store cannot take it, sends it again
   * every LEASE_MS as long as the hold can still be there. After that the
   * store has charged the hold in full, and only bytes beyond what it held
   * could still count: they are spent on their own (a spend that fails is
   * counted as lost). Resolves once the first try is answered.
   */
  private async send (s: Settlement, sentAt: number, held = 0): Promise<void> {
    const again = (): void => {
      if (performance.now() - sentAt > HOLD_MS) {
        // The hold was charged in full: only what went beyond it is still to count.
        this.store.spend(s.subject, Math.max(0, s.bytes - held))
        return
      }
      setTimeout(() => { void this.send(s, sentAt, held) }, LEASE_MS).unref()
    }
    if (!this.store.reachable()) return again()
    try {
      const n = await this.store.settle(s)
      if (n > 0) this.opts.onFresh?.(n)
      // Answered after the hold ran out (a slow store): it was charged in full, what went beyond it is still to count.
      if (n === NO_HOLD) this.store.spend(s.subject, Math.max(0, s.bytes - held))
    } catch {
      again()
    }
  }

  private async settleAll (ledger?: string): Promise<void> {
    await Promise.all([...this.leases.values()].filter((l) => ledger === undefined || l.ledger === ledger).map(async (l) => await this.settleLease(l)))
  }

  spend (ledger: string, bytes: number): void {
    const l = this.leases.get(ledger)
    if (l === undefined) {
      this.store.spend(ledger, bytes)
      return
    }
    l.spent += bytes
    if (l.bytes !== undefined) l.bytes -= bytes
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    await this.settleAll(ledger)
    return await this.store.usage(ledger)
  }

  async reset (ledger: string): Promise<void> {
    await this.settleAll(ledger)
    await this.store.reset(ledger)
  }

  async near (): Promise<number> {
    return await this.store.near()
  }

  /** Settles every lease, those of checks still on their way too, before the store closes. */
  async close (): Promise<void> {
    await Promise.allSettled([...this.asking.values()])
    await this.settleAll()
    await this.store.close()
  }
}
