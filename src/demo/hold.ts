// The demo's retention story: calls are kept 365 days, so the 2019 ones
// are refused (410); the 2016 ones are older still, but a legal hold keeps
// them (placed once, through `hold add`'s own code, so it is audited).
import { loadAuditKey } from '../audit/key.js'
import { auditKeyFile } from '../config/derived.js'
import type { Config } from '../config/schema.js'
import { holdAdd } from '../retention/commands.js'
import { holdsKeyOf, loadHolds } from '../retention/holds.js'
import { holdsStoreOf } from '../retention/holds-redis.js'

export const DEMO_RETENTION = [{ name: 'calls', path: '/medicall/{yyyy}/{mm}/{dd}/**', keepDays: 365 }]
export const DEMO_CASE = 'DEMO-1177'
export const DEMO_HELD = '/medicall/2016/'

export async function ensureDemoHold (config: Readonly<Config>): Promise<void> {
  const doc = await loadHolds(holdsStoreOf(config), holdsKeyOf(loadAuditKey(auditKeyFile(config), config.audit.dir)))
  if (doc?.holds.some((h) => h.case === DEMO_CASE && h.prefix === DEMO_HELD)) return
  await holdAdd(config, { prefix: DEMO_HELD, case: DEMO_CASE, reason: 'demo: an investigation keeps the 2016 calls past their retention' }, () => {})
}
