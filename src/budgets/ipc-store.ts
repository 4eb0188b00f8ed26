// The budgets of `workers: N` without state.redis: one book, in the
// primary, that every worker asks over IPC, so that N workers allow one
// budget and not N. Each check is one message and its answer; the primary
// answers in the order asked, from one thread, so two workers can never
// both take a subject's last recording.
import { BUDGETS, type Budget, type Budgets, type Charge, type Verdict } from './book.js'
import type { BudgetStore, LedgerUsage } from './store.js'

/** How long a worker waits for the primary's answer before the store counts as failed. */
const ANSWER_MS = 2000

export type BudgetOp =
  | { op: 'take', charge: Charge, budgets: Budgets }
  | { op: 'spend', ledger: string, bytes: number }
  | { op: 'usage', ledger: string }
  | { op: 'reset', ledger: string }
  | { op: 'near' }
export type BudgetRequest = { nasguard: 'budget', id: number } & BudgetOp
export interface BudgetReply { nasguard: 'budget-reply', id: number, result?: unknown, error?: string }

/** How a worker talks to the primary (its IPC channel). */
export interface Channel {
  send: (m: BudgetRequest) => boolean
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
  onMessage: (fn) => { process.on('message', fn) }
}

function isReply (m: unknown): m is BudgetReply {
  return typeof m === 'object' && m !== null && (m as { nasguard?: unknown }).nasguard === 'budget-reply'
}

export function isBudgetRequest (m: unknown): m is BudgetRequest {
  return typeof m === 'object' && m !== null && (m as { nasguard?: unknown }).nasguard === 'budget'
}

/** A worker's side: every operation asks the primary. */
export class PrimaryBudgets implements BudgetStore {
  private next = 0
  private readonly pending = new Map<number, { resolve: (r: unknown) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }>()

  constructor (private readonly channel: Channel = PROCESS_CHANNEL) {
    channel.onMessage((m) => {
      if (!isReply(m)) return
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      clearTimeout(p.timer)
      if (m.error !== undefined) p.reject(new Error(m.error))
      else p.resolve(m.result)
    })
  }

  private async ask<T> (op: BudgetOp): Promise<T> {
    const id = ++this.next
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`the primary did not answer within ${ANSWER_MS} ms`))
      }, ANSWER_MS)
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject, timer })
      if (!this.channel.send({ nasguard: 'budget', id, ...op })) {
        clearTimeout(timer)
        this.pending.delete(id)
        reject(new Error('the primary cannot be reached'))
      }
    })
  }

  async take (charge: Charge, budgets: Budgets): Promise<Verdict> {
    return await this.ask<Verdict>({ op: 'take', charge, budgets })
  }

  spend (ledger: string, bytes: number): void {
    if (bytes > 0) this.channel.send({ nasguard: 'budget', id: 0, op: 'spend', ledger, bytes })
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
      p.reject(new Error('closed'))
      this.pending.delete(id)
    }
  }
}

const isCount = (n: unknown, max = Number.MAX_SAFE_INTEGER): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n <= max
const isName = (s: unknown): s is string => typeof s === 'string' && s.length > 0 && s.length <= 1024

/** Whether a worker's request is one the primary may act on: names and counts of the sizes the gateway makes (a buggy worker must not corrupt the book). */
function wellFormed (m: BudgetRequest): boolean {
  if (m.op === 'take') {
    const b = m.budgets as Record<string, unknown> | null
    return typeof m.charge === 'object' && m.charge !== null && isName(m.charge.subject) && (m.charge.recording === undefined || isName(m.charge.recording)) &&
      typeof b === 'object' && b !== null && Object.entries(b).every(([k, v]) => BUDGETS.includes(k as Budget) && isCount(v))
  }
  if (m.op === 'spend') return isName(m.ledger) && isCount(m.bytes)
  if (m.op === 'usage' || m.op === 'reset') return isName(m.ledger)
  return m.op === 'near'
}

/** The primary's side: answers one worker's request from its own store (a spend is not answered). */
export async function answerBudget (store: BudgetStore, m: BudgetRequest, reply: (r: BudgetReply) => void): Promise<void> {
  if (!wellFormed(m)) {
    if (m.op !== 'spend') reply({ nasguard: 'budget-reply', id: m.id, error: 'a malformed budget request' })
    return
  }
  try {
    let result: unknown = null
    if (m.op === 'take') result = await store.take(m.charge, m.budgets)
    else if (m.op === 'spend') { store.spend(m.ledger, m.bytes); return }
    else if (m.op === 'usage') result = await store.usage(m.ledger)
    else if (m.op === 'reset') await store.reset(m.ledger)
    else result = await store.near()
    reply({ nasguard: 'budget-reply', id: m.id, result })
  } catch (err) {
    reply({ nasguard: 'budget-reply', id: m.id, error: (err as Error).message })
  }
}
