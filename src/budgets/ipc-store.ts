// The budgets of `workers: N` without state.redis: one book, in the
// primary, that every worker asks over IPC, so that N workers allow one
// budget and not N. The primary answers from one thread in the order
// asked, so two workers can never both take a subject's last recording.
//
// What a worker asks within one turn of its event loop goes as one
// message, answered by one: under load one message carries many checks,
// so the cost of IPC (a write, a wake-up, a parse on each side) is paid
// per batch, not per request. Ended responses' bytes ride with the next
// batch (summed per ledger), or go on their own after SPEND_DELAY_MS.
// Settlements of leases go in order with the rest.
import { BUDGETS, LEASE_REQUESTS, type Budget, type Budgets, type Charge, type Settlement, type Verdict } from './book.js'
import { StoreMisconfigured, type LeasingStore, type LedgerUsage } from './store.js'

/** How long a worker waits for the primary's answer before the store counts as failed. */
const ANSWER_MS = 2000
/** The longest an ended response's bytes wait for a batch to ride with, ms. */
const SPEND_DELAY_MS = 200

export type BudgetOp =
  | { op: 'take', charge: Charge, budgets: Budgets, lease?: string }
  | { op: 'spend', ledger: string, bytes: number }
  | { op: 'settle', settlement: Settlement }
  | { op: 'usage', ledger: string }
  | { op: 'reset', ledger: string }
  | { op: 'near' }
/** A batch of operations; answered (with one result per operation) unless it holds spends only. */
export interface BudgetRequest { nasguard: 'budget', id: number, ops: BudgetOp[] }
export interface BudgetReply { nasguard: 'budget-reply', id: number, results: Array<{ result?: unknown, error?: string, misconfigured?: true }> }

/** How a worker talks to the primary (its IPC channel). */
export interface Channel {
  send: (m: BudgetRequest) => boolean
  /** Whether there is a primary to send to. */
  connected: () => boolean
  onMessage: (fn: (m: unknown) => void) => void
}

/**
 * A worker's channel to its primary: process.send and its 'message'
 * events. send() is false only when there is no primary to send to:
 * process.send's own false means a full pipe, and the message is still
 * delivered (the answer's timeout covers a primary that is slow).
 */
export const PROCESS_CHANNEL: Channel = {
  send: (m) => {
    if (!process.connected || process.send === undefined) return false
    process.send(m, undefined, {}, () => {})
    return true
  },
  connected: () => process.connected,
  onMessage: (fn) => { process.on('message', fn) }
}

function isReply (m: unknown): m is BudgetReply {
  return typeof m === 'object' && m !== null && (m as { nasguard?: unknown }).nasguard === 'budget-reply'
}

export function isBudgetRequest (m: unknown): m is BudgetRequest {
  return typeof m === 'object' && m !== null && (m as { nasguard?: unknown }).nasguard === 'budget' && Array.isArray((m as { ops?: unknown }).ops)
}

interface Waiting { resolve: (r: unknown) => void, reject: (e: Error) => void }

/** A worker's side: every operation asks the primary, batched per turn of the event loop. */
export class PrimaryBudgets implements LeasingStore {
  private next = 0
  private queued: BudgetOp[] = []
  private waiting: Array<Waiting | undefined> = []
  /** Bytes of ended responses not yet sent, by ledger. */
  private spends = new Map<string, number>()
  private spendTimer: NodeJS.Timeout | undefined
  /** Sent batches awaiting their answer: who waits on each operation (undefined: a spend). */
  private readonly pending = new Map<number, { waiting: Array<Waiting | undefined>, timer: NodeJS.Timeout }>()

  constructor (private readonly channel: Channel = PROCESS_CHANNEL) {
    channel.onMessage((m) => {
      if (!isReply(m)) return
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      clearTimeout(p.timer)
      p.waiting.forEach((w, i) => {
        const r = m.results[i]
        if (w === undefined) return
        // A mistake in the setup stays one across the channel: refused whatever limits.onStoreError says.
        if (r === undefined || r.error !== undefined) w.reject(r?.misconfigured === true ? new StoreMisconfigured(r.error as string) : new Error(r?.error ?? 'no answer for it'))
        else w.resolve(r.result)
      })
    })
  }

  private queue (op: BudgetOp, w?: Waiting): void {
    if (this.queued.length === 0) setImmediate(() => { this.flush() })
    this.queued.push(op)
    this.waiting.push(w)
  }

  private flush (): void {
    // The bytes gathered go first: a check after a response ended sees its bytes.
    const spent: BudgetOp[] = [...this.spends].map(([ledger, bytes]) => ({ op: 'spend', ledger, bytes }))
    const ops = [...spent, ...this.queued]
    const waiting = [...spent.map(() => undefined), ...this.waiting]
    this.spends = new Map()
    clearTimeout(this.spendTimer)
    this.spendTimer = undefined
    this.queued = []
    this.waiting = []
    if (ops.length === 0) return
    const id = ++this.next
    const fail = (err: Error): void => { for (const w of waiting) w?.reject(err) }
    if (!this.channel.send({ nasguard: 'budget', id, ops })) {
      fail(new Error('the primary cannot be reached'))
      return
    }
    if (waiting.every((w) => w === undefined)) return
    const timer = setTimeout(() => {
      this.pending.delete(id)
      fail(new Error(`the primary did not answer within ${ANSWER_MS} ms`))
    }, ANSWER_MS)
    timer.unref()
    this.pending.set(id, { waiting, timer })
  }

  private async ask<T> (op: BudgetOp): Promise<T> {
    return await new Promise<T>((resolve, reject) => { this.queue(op, { resolve: resolve as (r: unknown) => void, reject }) })
  }

  async take (charge: Charge, budgets: Budgets, lease?: string): Promise<Verdict> {
    return await this.ask<Verdict>({ op: 'take', charge, budgets, ...(lease !== undefined ? { lease } : {}) })
  }

  async settle (settlement: Settlement): Promise<number> {
    return await this.ask<number>({ op: 'settle', settlement })
  }

  reachable (): boolean {
    return this.channel.connected()
  }

  spend (ledger: string, bytes: number): void {
    if (bytes <= 0) return
    this.spends.set(ledger, (this.spends.get(ledger) ?? 0) + bytes)
    if (this.spendTimer !== undefined) return
    this.spendTimer = setTimeout(() => { this.flush() }, SPEND_DELAY_MS)
    this.spendTimer.unref()
  }

  async usage (ledger: string): Promise<LedgerUsage> {
    return await this.ask<LedgerUsage>({ op: 'usage', ledger })
  }

  async reset (ledger: string): Promise<void> {
    await this.ask<null>({ op: 'reset', ledger })
  }

  async near (): Promise<number> {
    return await this.ask<number>({ op: 'near' })
  }

  async close (): Promise<void> {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer)
      for (const w of p.waiting) w?.reject(new Error('closed'))
      this.pending.delete(id)
    }
  }
}

const isCount = (n: unknown, max = Number.MAX_SAFE_INTEGER): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n <= max
/** A subject or a recording's path: as long as limits.maxPathLength may let a path be (8192), with room. */
const isName = (s: unknown): s is string => typeof s === 'string' && s.length > 0 && s.length <= 16384
const isLeaseId = (s: unknown): s is string => typeof s === 'string' && /^[\w.-]{1,64}$/.test(s)

/** Whether a worker's operation is one the primary may act on: names and counts of the sizes the gateway makes (a buggy worker must not corrupt the book). */
function wellFormed (m: BudgetOp): boolean {
  if (typeof m !== 'object' || m === null) return false
  if (m.op === 'take') {
    const b = m.budgets as Record<string, unknown> | null
    return typeof m.charge === 'object' && m.charge !== null && isName(m.charge.subject) && (m.charge.recording === undefined || isName(m.charge.recording)) &&
      typeof b === 'object' && b !== null && Object.entries(b).every(([k, v]) => BUDGETS.includes(k as Budget) && isCount(v)) &&
      (m.lease === undefined || isLeaseId(m.lease))
  }
  if (m.op === 'settle') {
    const s = m.settlement
    return typeof s === 'object' && s !== null && isName(s.subject) && isLeaseId(s.id) && isCount(s.requests, LEASE_REQUESTS) && isCount(s.bytes) &&
      Array.isArray(s.recordings) && s.recordings.length <= LEASE_REQUESTS + 1 && s.recordings.every(isName)
  }
  if (m.op === 'spend') return isName(m.ledger) && isCount(m.bytes)
  if (m.op === 'usage' || m.op === 'reset') return isName(m.ledger)
  return m.op === 'near'
}

/** One operation against the primary's own store (synchronous for its book). */
async function answerOne (store: LeasingStore, m: BudgetOp): Promise<unknown> {
  if (!wellFormed(m)) throw new Error('a malformed budget request')
  if (m.op === 'take') return await store.take(m.charge, m.budgets, m.lease)
  if (m.op === 'spend') { store.spend(m.ledger, m.bytes); return null }
  if (m.op === 'settle') return await store.settle(m.settlement)
  if (m.op === 'usage') return await store.usage(m.ledger)
  if (m.op === 'reset') { await store.reset(m.ledger); return null }
  return await store.near()
}

/** The primary's side: answers one worker's batch, in order, from its own store (a batch of spends only is not answered). */
export async function answerBudget (store: LeasingStore, m: BudgetRequest, reply: (r: BudgetReply) => void): Promise<void> {
  const results: BudgetReply['results'] = []
  for (const op of m.ops) {
    try {
      results.push({ result: await answerOne(store, op) })
    } catch (err) {
      results.push({ error: (err as Error).message, ...(err instanceof StoreMisconfigured ? { misconfigured: true as const } : {}) })
    }
  }
  if (m.ops.some((op) => op?.op !== 'spend')) reply({ nasguard: 'budget-reply', id: m.id, results })
}
