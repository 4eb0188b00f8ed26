// Where this gateway keeps the budgets (src/budgets/store.ts): Redis when
// state.redis is set (shared by every gateway and worker), the primary's
// book when a worker is handed one (workers without Redis), else its own
// memory. What the gate charges, what ended responses spend, what the
// near gauge counts and what `nasguard quota` reaches all go to that one
// store. A shared store is asked through leases (src/budgets/lease.ts), so
// that most checks are decided in this process.
import type { FastifyBaseLogger } from 'fastify'
import type { QuotaControl } from '../admin.js'
import type { Budgets, Charge, Verdict } from '../budgets/book.js'
import { chargerOf } from '../budgets/charger.js'
import { quotaControl } from '../budgets/control.js'
import { RedisBudgets, budgetsKeyOf } from '../budgets/redis-store.js'
import { loadAuditKey } from '../audit/key.js'
import { auditKeyFile } from '../config/derived.js'
import { budgetsByRule } from '../budgets/settings.js'
import { LeasedBudgets } from '../budgets/lease.js'
import { LocalBudgets, type BudgetStore, type LeasingStore } from '../budgets/store.js'
import type { Config } from '../config/schema.js'
import type { LiveSettings } from '../gate/state.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import type { Records } from './records.js'

export interface BudgetParts {
  charge: (c: Charge, budgets: Budgets) => Verdict | Promise<Verdict>
  spend: (ledger: string, bytes: number) => void
  quota: QuotaControl
  close: () => Promise<void>
}

export interface BudgetPartsOptions {
  /** A store handed in (a worker's, asking the primary); else Redis or memory as the config says. */
  store?: LeasingStore
  clock: () => number
  /** The clock a test set (GatewayOptions.clock); without one, Redis keeps the budgets by its own. */
  testClock?: () => number
  metrics: GatewayMetrics
  records: Records
  live: () => LiveSettings
  log: () => FastifyBaseLogger
}

export function budgetPartsOf (config: Readonly<Config>, o: BudgetPartsOptions): BudgetParts {
  const kept = o.store ?? storeOf(config, o)
  // In this process's memory a check is as cheap as a lease's: only a shared store is leased.
  const store: BudgetStore = kept instanceof LocalBudgets ? kept : new LeasedBudgets(kept, { onFresh: (n) => o.metrics.recordingsCharged.inc(n) })
  o.metrics.setBudgetState(async () => await store.near())
  return {
    charge: chargerOf(store, o.metrics, () => o.live().budgetStoreError, o.log),
    spend: (ledger, bytes) => store.spend(ledger, bytes),
    quota: quotaControl(store, o.clock, o.records),
    close: async () => await store.close()
  }
}

function storeOf (config: Readonly<Config>, o: BudgetPartsOptions): LeasingStore {
  const redis = config.state.redis
  if (!redis) return new LocalBudgets(o.clock)
  const store = new RedisBudgets(redis, { key: budgetsKeyOf(loadAuditKey(auditKeyFile(config))), ...(o.testClock ? { clock: o.testClock } : {}), onSpendError: () => o.metrics.budgetStoreErrors.inc({ outcome: 'spend_lost' }) })
  // Connected at once when budgets are set (else on first use, after a reload sets them).
  if (budgetsByRule(config).size > 0) store.connect().catch(() => {})
  return store
}
