// `nasguard quota show|reset` as the gateway answers them (through the
// admin listener, src/admin.ts): what a subject used, as a token's sub and
// as a client certificate's CN (two ledgers), and a reset of both that is
// audited first: a reset that cannot be recorded is not done.
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
      const recorded = await records.write({ event: 'quota-reset', time: new Date(clock()).toISOString(), subject: operator, reason: `the budgets of subject ${JSON.stringify(subject)} were reset` })
      if (!recorded) return false
      for (const kind of LEDGER_KINDS) await store.reset(ledgerKey(kind, subject))
      return true
    }
  }
}
