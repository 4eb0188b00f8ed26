// What the last retention sweep found, for the gateway's metrics: written
// whole by `nasguard retention sweep` (dry run or --apply) to
// <audit.dir>/retention-status.json, read at scrape time. The alert
// NasguardRetentionOverdue fires when something past its retention is
// still present a day on; NasguardRetentionSweepStale when no sweep ran
// for two days (no findings is not the same as nothing found).
import { randomBytes } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, readSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeDir } from '../files/ownership.js'

export interface RetentionStatus {
  /** When the sweep finished, ms since the epoch. */
  time: number
  /** Plaintext recordings past retention, without a hold, still on the NAS, as the last sweep that walked the share (--source) found them. */
  overdueRecordings: number
  /** When the share was last walked (a sweep with --source); absent: never, and overdueRecordings says nothing. */
  recordingsTime?: number
  /** Sealed periods past retention, without a hold, whose identity still exists. */
  overduePeriods: number
  /** Sealed periods the sweep cannot judge (undetermined), without a hold, that would be past retention were they dated by the period itself. */
  undeterminedPeriods?: number
  applied: boolean
}

/** The sweep's findings: plaintext recordings only when it walked the share (else the last walk's count stands). */
export interface SweepFindings { recordings?: number, periods: number, undetermined: number }

/**
 * The status a sweep leaves: its own period counts; the plaintext count of
 * this sweep if it walked the share, else the last one that did (a daily
 * dry run without --source does not reset what a walk found).
 */
export function sweptStatus (auditDir: string, found: SweepFindings, applied: boolean, now = Date.now()): RetentionStatus {
  const last = found.recordings === undefined ? readRetentionStatus(auditDir) : undefined
  const recordings = found.recordings === undefined
    ? (last?.recordingsTime === undefined ? {} : { overdueRecordings: last.overdueRecordings, recordingsTime: last.recordingsTime })
    : { overdueRecordings: found.recordings, recordingsTime: now }
  return { time: now, overdueRecordings: 0, ...recordings, overduePeriods: found.periods, undeterminedPeriods: found.undetermined, applied }
}

export const STATUS_FILE = 'retention-status.json'

export function writeRetentionStatus (auditDir: string, status: RetentionStatus): void {
  makeDir(auditDir)
  const file = join(auditDir, STATUS_FILE)
  // A fresh random name, made exclusively (wx: never through a link or onto a FIFO left there), then renamed over the file.
  const tmp = `${file}.${randomBytes(8).toString('hex')}.tmp`
  writeFileSync(tmp, JSON.stringify(status) + '\n', { mode: 0o600, flag: 'wx' })
  renameSync(tmp, file)
}

/** The last sweep's status; undefined when none was written or it does not read (the gauges are then absent: the stale alert fires). */
export function readRetentionStatus (auditDir: string, now = Date.now()): RetentionStatus | undefined {
  try {
    const v = JSON.parse(readSmallFile(join(auditDir, STATUS_FILE))) as RetentionStatus
    const counts = [v.time, v.overdueRecordings, v.overduePeriods, v.recordingsTime ?? 0, v.undeterminedPeriods ?? 0]
    // A sweep from the future would keep the stale-sweep alert quiet for ever.
    const times = [v.time, v.recordingsTime ?? 0]
    return counts.every((n) => Number.isSafeInteger(n) && n >= 0) && times.every((ms) => ms <= now + FUTURE_SKEW_MS) ? v : undefined
  } catch {
    return undefined
  }
}

const FUTURE_SKEW_MS = 5 * 60_000
const MAX_STATUS_BYTES = 4096

/**
 * The file read at every scrape, as one that anyone with write access to
 * audit.dir could have replaced: not through a link, never blocking (a
 * FIFO), a regular file of a few KiB at most (not /dev/zero). Throws.
 */
function readSmallFile (file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || st.size > MAX_STATUS_BYTES) throw new Error(`${file} is not a small regular file`)
    const buf = Buffer.alloc(MAX_STATUS_BYTES + 1)
    const n = readSync(fd, buf, 0, buf.length, 0)
    if (n > MAX_STATUS_BYTES) throw new Error(`${file} is too large`)
    return buf.subarray(0, n).toString('utf8')
  } finally {
    closeSync(fd)
  }
}
