// Where the budgets are kept, one of three ways, one interface:
//
// - one process: a BudgetBook in its memory (this file, LocalBudgets);
// - workers: the primary's book, asked over IPC (src/budgets/ipc-store.ts),
//   so that N workers allow one budget, not N;
// - state.redis: Redis, shared by every gateway and worker, one Lua script
//   per check (src/budgets/redis-store.ts).
//
// A ledger is one identity's: a token's subject (its grants too) and a
// client certificate's subject are kept apart, so a token whose sub is
// "CN=alice" cannot spend, or be spent by, the certificate CN=alice.
import type { Identity } from '../auth/identity.js'
import { BudgetBook, type Budgets, type Charge, type Held, type Settlement, type Usage, type Verdict } from './book.js'

/**
 * The store is set up wrong, not out of reach (a gateway whose audit key
 * differs from the one the shared budgets were written with): refused
 * whatever limits.onStoreError says, since letting requests pass would
 * switch the budgets off for as long as the mistake lasts.
 */
export class StoreMisconfigured extends Error {
  override name = 'StoreMisconfigured'
}

export type LedgerKind = 'token' | 'certificate'
export const LEDGER_KINDS: readonly LedgerKind[] = ['token', 'certificate']

/** The ledger a request is charged to: a grant's is its minter's (a token's, or a certificate's). */
export function ledgerOf (identity: Identity): string {
  const g = identity.grantee
  const certificate = identity.method === 'mtls' || ('basis' in g && 'cert' in g.basis)
  return ledgerKey(certificate ? 'certificate' : 'token', identity.subject)
}

export function ledgerKey (kind: LedgerKind, subject: string): string {
  return `${kind === 'token' ? 't' : 'c'}:${subject}`
}

/** What one ledger used, the budgets it was last charged under, and what leases hold of them (counted against them, not yet used). */
export interface LedgerUsage { used: Usage, budgets: Budgets, held: Held }

export interface BudgetStore {
  /** Charges the request, or refuses it; rejects when the store cannot be asked (limits.onStoreError decides then). Synchronous in one process. */
  take: (c: Charge, budgets: Budgets) => Verdict | Promise<Verdict>
  /** Adds an ended response's bytes to the ledger's hour (a failure is the store's to count). */
  spend: (ledger: string, bytes: number) => void
  usage: (ledger: string) => Promise<LedgerUsage>
  reset: (ledger: string) => Promise<void>
  /** Ledgers at or above 80% of any budget they were last charged under: a count, never who. */
  near: () => Promise<number>
  close: () => Promise<void>
}

/** A store that hands out leases (src/budgets/lease.ts): the book, and the shared ones (IPC, Redis). */
export interface LeasingStore extends BudgetStore {
  /** With a lease id, a lease may come with the charge. */
  take: (c: Charge, budgets: Budgets, lease?: string) => Verdict | Promise<Verdict>
  /** What a lease's holder used (sent in order with what follows): how many of its recordings were new to the hour; rejects when the store cannot be asked. */
  settle: (s: Settlement) => number | Promise<number>
  /** Whether the store can be asked now, as far as this process knows (a lease is not used while it cannot: limits.onStoreError decides). */
  reachable: () => boolean
}

/** The fraction of a budget at which a ledger counts as near it. */
export const NEAR = 0.8

/** The budgets in this process's memory (one process; the primary of workers). */
export class LocalBudgets implements LeasingStore {
  private readonly book = new BudgetBook()

  constructor (private readonly clock: () => number) {}

  take (c: Charge, budgets: Budgets, lease?: string): Verdict {
    return this.book.take(c, budgets, this.clock(), lease)
  }

  settle (s: Settlement): number {
    return this.book.settle(s, this.clock())
  }

  reachable (): boolean {
    return true
  }

  spend (ledger: string, bytes: number): void {
    this.book.spend(ledger, bytes, this.clock())
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    const now = this.clock()
    return { used: this.book.usage(ledger, now), budgets: this.book.budgetsOf(ledger) ?? {}, held: this.book.held(ledger, now) }
  }

  async reset (ledger: string): Promise<void> {
    this.book.reset(ledger)
  }

  async near (): Promise<number> {
    return this.book.near(NEAR, this.clock())
  }

  async close (): Promise<void> {}
}
