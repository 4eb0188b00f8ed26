// The newest legal holds generation this host's audit trail records: what
// a holds document read from the file or Redis must not be older than.
// The sweep checks it before it erases anything; a gateway starts from it,
// so that a document put back while it was stopped is caught too.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chainKey, OPS_CHAIN, readChains } from '../audit/chains.js'
import { loadAuditKey } from '../audit/key.js'
import { trailFiles, walkTrail } from '../audit/verify.js'
import { auditKeyFile } from '../config/derived.js'
import type { Config } from '../config/schema.js'

/**
 * The holds generation a record names (0: none): a hold change's, the one a
 * sweep read, and the highest a prune removed the records of (so that
 * pruning the ops chain does not lower what it records).
 */
export function holdsGeneration (r: Record<string, unknown>): number {
  const g = (r.counts as { generation?: unknown } | undefined)?.generation
  return (r.event === 'hold' || r.event === 'retention-sweep' || r.event === 'prune') && typeof g === 'number' && Number.isSafeInteger(g) ? g : 0
}

/**
 * The highest holds generation this host's ops chain records (0: none):
 * every hold change, and every sweep (which records the generation it
 * read, so that a document changed on another host through Redis and put
 * back here is caught too), read through the verified chain. A chain that
 * does not verify, or that audit.chains lists and is gone, is a reason
 * not to erase (a string saying so): removing it must not turn the check off.
 */
export async function auditedGeneration (c: { readonly audit: Pick<Config['audit'], 'dir' | 'keyFile'> }): Promise<number | string> {
  const auditKey = loadAuditKey(auditKeyFile(c), c.audit.dir)
  const dir = join(c.audit.dir, OPS_CHAIN)
  const listed = readChains(c.audit.dir, auditKey)
  if (listed?.ok === false) return `${listed.reason} in ${c.audit.dir}: the hold changes the ops chain records cannot be checked (nasguard audit verify)`
  if (!existsSync(dir) || trailFiles(dir).length === 0) {
    if (listed?.ok === true && listed.chains.includes(OPS_CHAIN)) return `the ops chain of ${c.audit.dir} is listed in its audit.chains but its files are gone: the hold changes it recorded cannot be checked (nasguard audit verify)`
    // Never recorded here (the holds were changed on another host, through Redis).
    return 0
  }
  let highest = 0
  const report = await walkTrail(dir, chainKey(auditKey, OPS_CHAIN), (r) => { highest = Math.max(highest, holdsGeneration(r)) })
  return report.problems.length > 0 ? `the ops chain of ${c.audit.dir} does not verify (${report.problems[0].message}): the hold changes it records cannot be trusted (nasguard audit verify)` : highest
}
