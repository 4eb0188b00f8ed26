// Operator tools (`nasguard seal`, `nasguard keys rotate`, later retention
// and erasure) leave one audit record per run, while gateways run and hold
// the locks of their own chains. Tools write a chain of their own,
// <audit.dir>/ops, sealed with chainKey(auditKey, 'ops') so that a record
// moved to or from another chain does not verify, through the one
// AuditWriter (strict: fsync'd before this returns). Two tools at once:
// the second waits for the chain's lock (polling, bounded) and then fails
// naming the lock file; a lock left by a dead process is taken over by
// src/audit/lock.ts. A record that cannot be written is an error the tool
// must report (exit 1), never dropped.
//
// ops is listed in audit.chains before its first record, so that verify
// reports it if it is removed whole (with `.`, when audit.dir holds a
// single-process trail: a list without it would call that trail inserted).
import { hostname, userInfo } from 'node:os'
import { join } from 'node:path'
import { auditKeyFile } from '../config/derived.js'
import { chainKey, OPS_CHAIN, recordChains } from './chains.js'
import { loadAuditKey } from './key.js'
import { lockFile } from './lock.js'
import { hasSingleProcessTrail } from './verify.js'
import { AuditWriter, type AuditEvent, type AuditRecord, type AuditWriterOptions } from './writer.js'

/** The events operator tools record, one per run. */
export type OperatorEvent = Extract<AuditEvent, 'seal' | 'rotate' | 'hold' | 'erasure' | 'retention-sweep'>

/** A tool run's record. time: default now; subject: who ran it, default the OS user. */
export type OperatorRecord = Pick<AuditRecord, 'subject' | 'reason' | 'counts' | 'period' | 'keyId' | 'path' | 'durationMs' | 'case' | 'until'> & { event: OperatorEvent, time?: string }

/** Where the trail is: config.audit will do. keyFile, instance and rotateBytes default as for the gateway. */
export interface OperatorTrail { dir: string, keyFile?: string, instance?: string, rotateBytes?: number }

/** How long a tool waits for another to finish recording before it gives up. */
export const LOCK_WAIT_MS = 30_000
const LOCK_POLL_MS = 100

/**
 * Appends `record` to the ops chain of the trail in `audit.dir`, durably.
 * Throws, naming the file and the cause, when it was not recorded. A
 * command running as root should call refuseForeignOwner([audit.dir,
 * dirname(keyFile)]) before its run, as the audit commands do.
 */
export async function recordOperatorEvent (audit: OperatorTrail, record: OperatorRecord, opts: { lockWaitMs?: number } = {}): Promise<void> {
  const dir = join(audit.dir, OPS_CHAIN)
  const notRecorded = (where: string, cause: unknown): Error =>
    new Error(`the ${record.event} event was not recorded in ${where}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  let key: Buffer
  try {
    // Made like the gateway makes it (first use, no trail yet): a tool may run before any gateway.
    key = loadAuditKey(auditKeyFile({ audit }), audit.dir)
  } catch (err) {
    throw notRecorded(dir, err)
  }
  const writer = await openWaiting({
    dir,
    durability: 'strict',
    batchMs: 100,
    key: chainKey(key, OPS_CHAIN),
    instance: audit.instance ?? hostname(),
    rotateBytes: audit.rotateBytes ?? 64 * 1024 * 1024
  }, opts.lockWaitMs ?? LOCK_WAIT_MS).catch((err: unknown) => { throw notRecorded(dir, err) })
  try {
    if (writer.startupError) throw notRecorded(writer.file, writer.startupError)
    try {
      recordChains(audit.dir, key, [...(hasSingleProcessTrail(audit.dir) ? ['.'] : []), OPS_CHAIN])
    } catch (err) {
      throw notRecorded(dir, err)
    }
    const { time, subject, ...rest } = record
    await writer.append({ ...rest, time: time ?? new Date().toISOString(), subject: subject ?? operatorName() })
      .catch((err: unknown) => { throw notRecorded(writer.file, err) })
  } finally {
    await writer.close()
  }
}

/** Opens the chain's writer, waiting up to waitMs while another process holds its lock. */
async function openWaiting (opts: AuditWriterOptions, waitMs: number): Promise<AuditWriter> {
  const deadline = Date.now() + waitMs
  for (;;) {
    try {
      return await AuditWriter.open(opts)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAUDITLOCKED') throw err
      if (Date.now() >= deadline) {
        throw new Error(`${lockFile(opts.dir)} was still held after ${waitMs / 1000} s (${(err as Error).message}): another tool is recording, or stuck`, { cause: err })
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS))
    }
  }
}

/** The OS user running the tool (a uid when it has no name). */
function operatorName (): string {
  try {
    return userInfo().username
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`
  }
}
