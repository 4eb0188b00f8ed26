// What the budget stage calls: a charge to the store, counted, with the
// store's failures decided by limits.onStoreError: closed refuses (503
// NASGUARD_ERR_BUDGETS_UNAVAILABLE), open lets the request pass uncounted.
// Either way the failure is counted, and logged at most once a second
// (never who or what).
import type { FastifyBaseLogger } from 'fastify'
import { Errors } from '../errors.js'
import { LogThrottle } from '../logging.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import type { Budgets, Charge, Verdict } from './book.js'
import { StoreMisconfigured, type BudgetStore } from './store.js'

export type OnStoreError = 'open' | 'closed'

export function chargerOf (store: BudgetStore, metrics: GatewayMetrics, onStoreError: () => OnStoreError, log: () => FastifyBaseLogger): (c: Charge, budgets: Budgets) => Verdict | Promise<Verdict> {
  const throttle = new LogThrottle()
  const counted = (v: Verdict): Verdict => {
    if (v.ok && v.fresh) metrics.recordingsCharged.inc()
    return v
  }
  const failed = (err: Error): Verdict => {
    const mode = err instanceof StoreMisconfigured ? 'closed' : onStoreError()
    metrics.budgetStoreErrors.inc({ outcome: mode === 'open' ? 'allowed' : 'refused' })
    throttle.line((repeated) => log().warn({ reason: err.message, onStoreError: mode, repeated }, mode === 'open'
      ? 'the budgets cannot be checked: requests pass uncounted (limits.onStoreError: open)'
      : err instanceof StoreMisconfigured
        ? 'the budgets are set up wrong: budgeted requests are refused, whatever limits.onStoreError says'
        : 'the budgets cannot be checked: budgeted requests are refused (limits.onStoreError: closed)'))
    if (mode === 'open') return { ok: true }
    throw new Errors.BudgetsUnavailable()
  }
  return (c, budgets) => {
    let v: Verdict | Promise<Verdict>
    try {
      v = store.take(c, budgets)
    } catch (err) {
      return failed(err as Error)
    }
    return v instanceof Promise ? v.then(counted, failed) : counted(v)
  }
}
