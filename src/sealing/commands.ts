// `nasguard keys new|list|show|rotate`, `nasguard names encode|decode` and
// `nasguard seal`: the operator's view of the keyring, and the bulk runs
// over the mounted share (src/sealing/bulk/). Nothing here prints a secret:
// `keys show` prints the recipient (public), which is all a recorder needs,
// and where the identity file is, for `age -d -i`.
import { existsSync, lstatSync, statSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join, resolve as resolvePath, sep } from 'node:path'
import type { Config } from '../config/schema.js'
import { Journal, lockShare } from './bulk/journal.js'
import { jsonLines, progressBar } from './bulk/progress.js'
import { rotateJob, notYetRotated } from './bulk/rotate.js'
import { runBulk, sealRunRecord, survey, type ActiveTemps, type Reporter, type SealRunRecord, type Summary } from './bulk/run.js'
import { SealingKeys, sealJob } from './bulk/seal.js'
import { copyNextKey, initKeyring, keyFileOf, Keyring, KeyringBusyError, lockCopy, lockKeyring, newPeriodKey, nextPeriodKey, retireBackupKey, retireKey, type PeriodKey } from './keyring.js'
import { plainPathOf, sealedPathOf } from './names.js'
import { compilePeriodPattern, periodAt, periodOf, validPeriod } from './period.js'

export { sealRunRecord, type SealRunRecord } from './bulk/run.js'

function keyringDir (c: Readonly<Config>): string {
  if (!c.sealing.keyring) throw new Error('sealing.keyring: not set in the config; set it to a directory off the NAS (e.g. /var/lib/nasguard/keyring)')
  return c.sealing.keyring
}

export function keysNew (c: Readonly<Config>, period: string | undefined): string {
  const p = period ?? periodAt(c.sealing.period, new Date())
  const key = newPeriodKey(keyringDir(c), c.sealing.period, p)
  return `period ${key.period}\nkey id ${key.keyId}\nrecipient ${key.identity.recipient}\nidentity ${join(keyringDir(c), `${p}.key`)}\n`
}

export function keysList (c: Readonly<Config>): string {
  const ring = Keyring.load(keyringDir(c))
  const rows = ring.list().map((k) => `${k.period.padEnd(10)}  ${k.keyId.padEnd(28)}  ${k.identity.recipient}`)
  return ['period      key id                        recipient', ...rows].join('\n') + '\n'
}

export function keysShow (c: Readonly<Config>, period: string): string {
  const ring = Keyring.load(keyringDir(c))
  const key = ring.key(period)
  if (!key) throw new Error(ring.erased(period) ? `period ${period} was erased: its key was destroyed` : `no key for period ${period} (nasguard keys new --period ${period})`)
  const next = ring.role(period, 'next')
  const rotating = next ? `rotating to key id ${next.keyId} (recipient ${next.identity.recipient}, identity ${keyFileOf(ring.dir, period, 'next')}): new recordings are sealed to it\n` : ''
  return `period ${key.period}\nkey id ${key.keyId}\nrecipient ${key.identity.recipient}\nidentity ${join(ring.dir, `${period}.key`)}\n${rotating}`
}

/** The decoded segments of a path as a URL or the NAS spells it. */
function segmentsOf (path: string): string[] {
  const bad = (): Error => new Error(`not a canonical path: ${JSON.stringify(path)} (absolute, no empty, . or .. segments)`)
  if (!path.startsWith('/')) throw bad()
  const segments = path.split('/').slice(1).map((s) => { try { return decodeURIComponent(s) } catch { throw bad() } })
  if (segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('/'))) throw bad()
  return segments
}

/** The NAS's name for a recording, and its period (when it has one). */
export function namesEncode (c: Readonly<Config>, path: string): string {
  const ring = Keyring.load(keyringDir(c))
  const segments = segmentsOf(path)
  const sealed = sealedPathOf(ring.nameKey, segments, c.sealing.names.segments)
  const period = c.sealing.periodPattern ? periodOf(compilePeriodPattern(c.sealing.periodPattern, c.sealing.period), segments) : undefined
  return sealed + '\n' + (period ? `period ${period}${ring.key(period) ? '' : ' (no key yet)'}\n` : '')
}

/** The plaintext path of a sealed one; undefined when it does not decode with this keyring. */
export function namesDecode (c: Readonly<Config>, path: string): string | undefined {
  const ring = Keyring.load(keyringDir(c))
  return plainPathOf(ring.nameKey, segmentsOf(path), c.sealing.names.segments)
}

// ---- nasguard seal and keys rotate: bulk runs over the mounted share ----------

export interface BulkOptions {
  /** The NAS share, mounted: its root is the NAS URL's "/". */
  source: string
  jobs: number
  period?: string
  /** Default: <audit.dir>/seal.journal, or rotate-<period>.journal. */
  journal?: string
  dryRun?: boolean
  removePlaintext?: boolean
  /** keys rotate: how long its end waits for the uploads being sealed to the keyring (and each copy) to finish; default a minute. */
  drainMs?: number
}

export interface BulkIO {
  out: (s: string) => void
  /** A terminal: a progress bar; else JSON lines. */
  tty: boolean
  /** Hands the run's audit record over (the audit trail's operator events). */
  record?: (r: SealRunRecord) => Promise<void>
}

export function journalOf (c: Readonly<Config>, o: BulkOptions, command: 'seal' | 'rotate'): string {
  return o.journal ?? join(c.audit.dir, command === 'seal' ? 'seal.journal' : `rotate-${o.period ?? ''}.journal`)
}

/** What is wrong with a bulk command's options, naming the option; undefined when nothing is. */
export function bulkOptionProblem (c: Readonly<Config>, o: BulkOptions, command: 'seal' | 'rotate'): string | undefined {
  if (!Number.isInteger(o.jobs) || o.jobs < 1 || o.jobs > 64) return '--jobs: a whole number from 1 to 64'
  if (o.period !== undefined && !validPeriod(c.sealing.period, o.period)) return `--period: ${JSON.stringify(o.period)} is not a ${c.sealing.period} as sealing.period says (e.g. ${c.sealing.period === 'year' ? '2026' : c.sealing.period === 'month' ? '2026-11' : '2026-11-29'})`
  if (command === 'rotate' && o.period === undefined) return '--period: needed (the period whose identity is rotated)'
  if (!c.sealing.periodPattern) return 'sealing.periodPattern is not set in the config (e.g. /medicall/{yyyy}/{mm}/**)'
  let dir = false
  try { dir = statSync(o.source).isDirectory() } catch {}
  if (!dir) return `--source: ${o.source} is not a directory (the NAS share, mounted on this host)`
  const journal = resolvePath(journalOf(c, o, command))
  const source = resolvePath(o.source)
  if (journal === source || journal.startsWith(source + sep)) return `--journal: ${journal} is on the NAS share; keep it off the NAS (default: in audit.dir)`
  return undefined
}

function reporterOf (io: BulkIO): Reporter {
  return io.tty ? progressBar(io.out) : jsonLines(io.out)
}

async function ended (summary: Summary, reporter: Reporter, io: BulkIO): Promise<number> {
  reporter.end(summary)
  // AUDIT: the one place a bulk run is handed to the audit trail (cli.ts wires `record`).
  await io.record?.(sealRunRecord(summary))
  return summary.failed > 0 || summary.kept !== undefined || summary.backups !== undefined ? 1 : 0
}

/** nasguard seal: every recording of the share sealed under its sealed name; exit 1 when any failed. */
export async function seal (c: Readonly<Config>, o: BulkOptions, io: BulkIO): Promise<number> {
  const dir = keyringDir(c)
  const dryRun = o.dryRun === true
  // A dry run makes nothing, not even the keyring.
  if (!dryRun) initKeyring(dir)
  else if (!existsSync(dir)) throw new Error(`sealing.keyring: ${dir} does not exist yet, and a dry run makes nothing (nasguard keys new makes it)`)
  const settings = {
    root: resolvePath(o.source),
    keyringDir: dir,
    unit: c.sealing.period,
    pattern: compilePeriodPattern(c.sealing.periodPattern as string, c.sealing.period),
    nameSegments: c.sealing.names.segments,
    extensions: new Set(c.files.extensions),
    period: o.period,
    dryRun,
    removePlaintext: o.removePlaintext === true
  }
  // One run at a time on a share (a dry run writes and removes nothing).
  const unlockShare = dryRun ? () => {} : lockShare(dir, settings.root)
  let summary: Summary
  const reporter = reporterOf(io)
  let unlockRing = (): void => {}
  try {
    // No identity is retired or erased while recordings are sealed to it; read once the lock is held.
    if (!dryRun) unlockRing = lockKeyring(dir, 'shared')
    const keys = new SealingKeys(dir, c.sealing.period)
    const journal = await Journal.open(journalOf(c, o, 'seal'), dryRun)
    const active: ActiveTemps = new Set()
    const job = sealJob(settings, keys, journal, active)
    try {
      reporter.begin(io.tty ? await survey(settings.root, job) : undefined)
      summary = await runBulk({ root: settings.root, jobs: o.jobs, job, reporter, active, command: 'seal', dryRun, period: o.period })
    } finally {
      await journal.close()
    }
  } finally {
    unlockRing()
    unlockShare()
  }
  return await ended(summary, reporter, io)
}

/**
 * nasguard keys rotate: every sealed file of the period re-sealed to
 * <period>.next.key, then the old identity retired. A rerun goes on where
 * a run stopped, and one that finds a retirement begun finishes it.
 */
export async function keysRotate (c: Readonly<Config>, o: BulkOptions, io: BulkIO): Promise<number> {
  const dir = keyringDir(c)
  const period = o.period as string
  const ring = Keyring.load(dir)
  if (ring.erased(period)) throw new Error(`period ${period} was erased: its key was destroyed`)
  const reporter = reporterOf(io)
  const unlockShare = lockShare(dir, resolvePath(o.source))
  try {
    return await rotateLocked(c, o, io, dir, period, ring, reporter)
  } finally {
    unlockShare()
  }
}

/** Whether a copy of the keyring holds a rotation's identities still to be retired (or cannot be read: it may). */
function pendingIn (backup: string, period: string): boolean {
  // A key file a crash left half destroyed (renamed to .shred) counts too.
  const files = (['next', 'old'] as const).flatMap((r) => [keyFileOf(backup, period, r), keyFileOf(backup, period, r) + '.shred'])
  return files.some((f) => { try { return lstatSync(f) !== undefined } catch (err) { return (err as NodeJS.ErrnoException).code !== 'ENOENT' } })
}

/**
 * The new identity put in every copy of the keyring (sealing.keyBackups)
 * before the old one is retired: a copy without it could not open the
 * re-sealed files. Why the old identity is kept, if a copy was not reached.
 */
function copyToBackups (copies: readonly string[], dir: string, period: string): string | undefined {
  const missed: string[] = []
  for (const b of copies) {
    try { copyNextKey(dir, b, period) } catch (err) { missed.push(`${b} (${(err as Error).message})`) }
  }
  return missed.length === 0 ? undefined : `the new identity could not be put in the key backup(s) ${missed.join(', ')}, which could then not open the re-sealed files; mount them and rerun`
}

/** The retirement in every copy of the keyring; what is left to do, if a copy was not reached. */
function retireInBackups (copies: readonly string[], dir: string, period: string): string | undefined {
  const missed: string[] = []
  for (const b of copies) {
    try { retireBackupKey(dir, b, period) } catch (err) { missed.push(`${b} (${(err as Error).message})`) }
  }
  return missed.length === 0 ? undefined : `the old identity is still in the key backup(s) ${missed.join(', ')}; mount them and rerun nasguard keys rotate --period ${period} to retire it there`
}

/**
 * The end of a rotation, the keyring locked: the copies locked too (their
 * uploads finished first), the new identity put in each, the final check
 * that every file opens with it, then the old identity retired in the
 * keyring and in each copy, recorded before it is destroyed.
 */
async function finishRotation (c: Readonly<Config>, dir: string, period: string, io: BulkIO, drainMs: number, notYet: () => Promise<number>): Promise<Pick<Summary, 'kept' | 'retired' | 'backups'>> {
  const copies = lockCopies(c, dir, drainMs)
  try {
    if (copies.missed.length > 0) return { kept: `the key backup(s) ${copies.missed.join(', ')} could not be locked, so the new identity is not there and they could not open the re-sealed files; mount them (or wait for their runs) and rerun` }
    const uncopied = copyToBackups(copies.locked, dir, period)
    if (uncopied) return { kept: uncopied }
    const left = await notYet()
    if (left > 0) return { kept: `${left} sealed file(s) of the period do not open with the new identity (written meanwhile with the old one?); rerun to finish` }
    await recordRetiring(io, period, Keyring.load(dir).role(period, 'primary')?.keyId ?? 'the old identity')
    const retired = retireKey(dir, period)
    const backups = retireInBackups(copies.locked, dir, period)
    return { retired, ...(backups ? { backups } : {}) }
  } finally {
    copies.unlock()
  }
}

/** Recorded before an old identity is destroyed: it is the only key to the copies of the period's files sealed before the rotation (NAS snapshots, backups). */
async function recordRetiring (io: BulkIO, period: string, what: string): Promise<void> {
  await io.record?.({ event: 'rotate', reason: `keys rotate period ${period}: retiring ${what} (a record of the outcome follows; none: the run stopped midway, rerun it)`, counts: { sealed: 0, skipped: 0, failed: 0, bytes: 0 }, period })
}

/** Every copy of the keyring locked exclusive (the uploads sealing to it there finish first): the ones that could not be. */
function lockCopies (c: Readonly<Config>, dir: string, drainMs: number): { unlock: () => void, locked: string[], missed: string[] } {
  const unlocks: Array<() => void> = []
  const locked: string[] = []
  const missed: string[] = []
  for (const b of c.sealing.keyBackups) {
    try {
      unlocks.push(lockCopy(dir, b, drainMs))
      locked.push(b)
    } catch (err) { missed.push(`${b} (${(err as Error).message})`) }
  }
  return { unlock: () => { for (const u of unlocks) u() }, locked, missed }
}

const RETIRE_DRAIN_MS = 60_000

async function rotateLocked (c: Readonly<Config>, o: BulkOptions, io: BulkIO, dir: string, period: string, ring: Keyring, reporter: Reporter): Promise<number> {
  const blank: Summary = { command: 'rotate', dryRun: false, sealed: 0, skipped: 0, failed: 0, bytes: 0, seconds: 0, tempsRemoved: 0, period }
  // A retirement a crash or an unreachable backup left half done: finished, in the keyring and then its copies.
  if (ring.role(period, 'old') || (!ring.role(period, 'next') && c.sealing.keyBackups.some((b) => pendingIn(b, period)))) {
    reporter.begin()
    const unlockRing = lockKeyring(dir, 'exclusive', { drainMs: o.drainMs ?? RETIRE_DRAIN_MS })
    const copies = lockCopies(c, dir, o.drainMs ?? RETIRE_DRAIN_MS)
    let retired: string | undefined
    let backups: string | undefined
    try {
      await recordRetiring(io, period, ring.role(period, 'old')?.keyId ?? 'the old identity left in the key backups')
      retired = retireKey(dir, period)
      backups = retireInBackups(copies.locked, dir, period)
      if (copies.missed.length > 0) backups = `${backups ? backups + '; ' : ''}the key backup(s) ${copies.missed.join(', ')} could not be locked: rerun to finish there`
    } finally {
      copies.unlock()
      unlockRing()
    }
    return await ended({ ...blank, retired, ...(backups ? { backups } : {}) }, reporter, io)
  }
  // Shared first, then the identities read: an erasure that ran before the lock is seen, and none runs after it.
  let unlockRing = lockKeyring(dir, 'shared')
  let next: PeriodKey
  let rotating: Keyring
  try {
    next = nextPeriodKey(dir, period)
    rotating = Keyring.load(dir)
  } catch (err) {
    unlockRing()
    throw err
  }
  const settings = { root: resolvePath(o.source), pattern: compilePeriodPattern(c.sealing.periodPattern as string, c.sealing.period), nameSegments: c.sealing.names.segments, period }
  const file = journalOf(c, o, 'rotate')
  const active: ActiveTemps = new Set()
  let summary: Summary
  let journal: Journal | undefined
  try {
    journal = await Journal.open(file, false)
    const job = rotateJob(settings, rotating, next, journal, active)
    reporter.begin(io.tty ? await survey(settings.root, job) : undefined)
    summary = await runBulk({ root: settings.root, jobs: o.jobs, job, reporter, active, command: 'rotate', dryRun: false, period })
    unlockRing()
    unlockRing = () => {}
    if (summary.failed > 0) {
      summary.kept = `${summary.failed} file(s) failed; rerun to finish`
    } else {
      // The final check and the retirement with the keyring to itself: a seal run that began before the rotation may still seal to the old identity.
      try {
        // Uploads being sealed finish first (new ones get 503 meanwhile): a steady stream of them cannot keep the retirement out.
        unlockRing = lockKeyring(dir, 'exclusive', { drainMs: o.drainMs ?? RETIRE_DRAIN_MS })
      } catch (err) {
        if (!(err instanceof KeyringBusyError)) throw err
        summary.kept = `${err.message}; the old identity is kept`
      }
      if (summary.kept === undefined) Object.assign(summary, await finishRotation(c, dir, period, io, o.drainMs ?? RETIRE_DRAIN_MS, async () => await notYetRotated(settings, rotating, next)))
    }
  } finally {
    unlockRing()
    await journal?.close()
  }
  if (summary.retired !== undefined) await rm(file, { force: true })
  return await ended(summary, reporter, io)
}
