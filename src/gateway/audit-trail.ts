// Opening this process's audit chain: audit.dir itself (one process), or a
// worker's chain under it, sealed with the chain's own key. A trail that
// cannot be opened does not stop the start: recording requests get 503
// until it can be written (src/audit/writer.ts).
import { existsSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { chainKey, CHAINS_FILE, recordChains } from '../audit/chains.js'
import { loadAuditKey } from '../audit/key.js'
import { AuditWriter } from '../audit/writer.js'
import type { Config } from '../config/schema.js'
import { auditKeyFile } from '../config/derived.js'
import type { GatewayMetrics } from '../metrics/registry.js'

/** chain: a worker's (worker-<i>), or undefined for audit.dir itself. */
export async function openTrail (config: Readonly<Config>, chain: string | undefined, metrics: GatewayMetrics, log: () => FastifyBaseLogger): Promise<AuditWriter> {
  const auditKey = loadAuditKey(auditKeyFile(config), config.audit.dir)
  const audit = await AuditWriter.open({
    dir: chain === undefined ? config.audit.dir : join(config.audit.dir, chain),
    durability: config.audit.durability,
    batchMs: config.audit.batchMs,
    key: chainKey(auditKey, chain ?? '.'),
    legacyKey: chain === undefined ? undefined : auditKey,
    instance: config.audit.instance ?? hostname(),
    rotateBytes: config.audit.rotateBytes,
    onBatch: (n, ms) => {
      metrics.auditBatchSize.observe(n)
      metrics.auditWriteSeconds.observe(ms / 1000)
    },
    onSyncError: (err) => {
      metrics.auditFailures.inc({ event: 'sync' })
      log().error({ code: (err as NodeJS.ErrnoException).code }, 'audit fsync failed (batched mode): records acknowledged since the last sync may be lost')
    }
  })
  metrics.setAuditState({ healthy: () => audit.healthy, chain: chain ?? '.', sequence: () => audit.durableLastSeq })
  return audit
}

/** Once the logger exists: a single process's trail joins the sealed list of chains (when workers wrote here before); a trail that failed to open is logged. */
export function announceTrail (config: Readonly<Config>, chain: string | undefined, audit: AuditWriter, log: FastifyBaseLogger): void {
  if (chain === undefined && !audit.startupError && existsSync(join(config.audit.dir, CHAINS_FILE))) {
    try {
      recordChains(config.audit.dir, loadAuditKey(auditKeyFile(config), config.audit.dir), ['.'])
    } catch (err) {
      log.error({ reason: (err as Error).message }, 'the list of audit chains could not be updated')
    }
  }
  if (audit.startupError) {
    log.error({ code: audit.startupError.code, file: audit.file, reason: audit.startupError.message }, 'the audit file cannot be opened: recording requests get 503 until it can')
  }
}
