// `nasguard quota show|reset` as the gateway answers them (through the
// admin listener, src/admin.ts): a subject's usage and budgets, and a
// reset that is audited first: a reset that cannot be recorded is not done.
import type { QuotaControl } from '../admin.js'
import type { Records } from '../gateway/records.js'
import type { BudgetBook } from './book.js'

export function quotaControl (book: BudgetBook, clock: () => number, records: Records): QuotaControl {
  return {
    usage: (subject) => ({ used: book.usage(subject, clock()), budgets: book.budgetsOf(subject) ?? {} }),
    reset: async (subject, operator) => {
      const recorded = await records.write({ event: 'quota-reset', time: new Date(clock()).toISOString(), subject: operator, reason: `the budgets of subject ${JSON.stringify(subject)} were reset` })
      if (recorded) book.reset(subject)
      return recorded
    }
  }
}
