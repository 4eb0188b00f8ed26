// `nasguard quota show|reset` as the gateway answers them (through the
// admin listener, src/admin.ts): what a subject used, as a token's sub and
// as a client certificate's CN (two ledgers), and a reset of both that is
// audited first: a reset that cannot be recorded is not done.
import { createHash } from 'node:crypto'
import type { QuotaControl } from '../admin.js'
import type { Records } from '../gateway/records.js'
import { LEDGER_KINDS, ledgerKey, type BudgetStore } from './store.js'

export function quotaControl (store: BudgetStore, clock: () => number, records: Records): QuotaControl {
  return {
    usage: async (subject) => {
      const out: Record<string, unknown> = {}
      for (const kind of LEDGER_KINDS) out[kind] = await store.usage(ledgerKey(kind, subject))
      return out
    },
    reset: async (subject, operator) => {
      const recorded = await records.write({ event: 'quota-reset', time: new Date(clock()).toISOString(), subject: operator, reason: `the budgets of subject ${named(subject)} were reset` })
      if (!recorded) return false
      for (const kind of LEDGER_KINDS) await store.reset(ledgerKey(kind, subject))
      return true
    }
  }
}

/**
 * A subject as a reset's record names it: whole (as a JSON string) when
 * short; else its first 16 characters, its length and the SHA-256 of its JSON string, so
 * that two long subjects alike in their first 256 characters (where the
 * record's reason is cut) are told apart.
 */
export function named (subject: string): string {
  const whole = JSON.stringify(subject)
  if (whole.length <= 160) return whole
  return `${JSON.stringify(subject.slice(0, 16))}... (${subject.length} characters; sha256 of its JSON string ${createHash('sha256').update(whole).digest('hex')})`
}
