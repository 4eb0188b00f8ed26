// Which budgets each policy rule's requests are charged under:
// limits.perSubject, with the rule's own perSubject over it, budget by
// budget. A rule with neither is not charged.
import type { Config } from '../config/schema.js'
import { BUDGETS, type Budgets } from './book.js'

export function budgetsByRule (c: Readonly<Config>): Map<string, Budgets> {
  const out = new Map<string, Budgets>()
  for (const rule of c.policy) {
    const merged: Budgets = { ...c.limits.perSubject, ...rule.perSubject }
    if (BUDGETS.some((b) => merged[b] !== undefined)) out.set(rule.name, merged)
  }
  return out
}
