// What the last retention sweep found, for the gateway's metrics: written
// whole by `nasguard retention sweep` (dry run or --apply) to
// <audit.dir>/retention-status.json, read at scrape time. The alert
// NasguardRetentionOverdue fires when something past its retention is
// still present a day on; NasguardRetentionSweepStale when no sweep ran
// for two days (no findings is not the same as nothing found).
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeDir } from '../files/ownership.js'

export interface RetentionStatus {
  /** When the sweep finished, ms since the epoch. */
  time: number
  /** Plaintext recordings past retention, without a hold, still on the NAS. */
  overdueRecordings: number
  /** Sealed periods past retention, without a hold, whose identity still exists. */
  overduePeriods: number
  applied: boolean
}

export const STATUS_FILE = 'retention-status.json'

export function writeRetentionStatus (auditDir: string, status: RetentionStatus): void {
  makeDir(auditDir)
  const file = join(auditDir, STATUS_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(status) + '\n', { mode: 0o600 })
  renameSync(tmp, file)
}

/** The last sweep's status; undefined when none was written or it does not read (the gauges are then absent: the stale alert fires). */
export function readRetentionStatus (auditDir: string): RetentionStatus | undefined {
  try {
    const v = JSON.parse(readFileSync(join(auditDir, STATUS_FILE), 'utf8')) as RetentionStatus
    const counts = [v.time, v.overdueRecordings, v.overduePeriods]
    return counts.every((n) => Number.isSafeInteger(n) && n >= 0) ? v : undefined
  } catch {
    return undefined
  }
}
