// `nasguard retention sweep`: what retention and the legal holds say of
// every sealed period and (with --source, the mounted share) every
// plaintext recording; with --apply, the erasure.
//
// A sealed period is erased by destroying its identity, which reaches
// every copy of its recordings (NAS, backups, a stolen disk), so it is
// erased only when every recording it can hold is past its retention:
//   - every retention rule that can match a path in the period dates it
//     from the period's own directories (a rule dated by Last-Modified, or
//     by segments a ** comes before, leaves the period undetermined), and
//     the latest date it can give, plus its keepDays, has passed;
//   - no recording of it is outside every rule (kept for ever): known
//     when a rule matches every path under the period's directory, or,
//     with --source, when each sealed file on the share was looked at;
//   - no hold in force meets the period's directory.
// A plaintext recording is deleted when its own rule says it is past its
// retention and no hold covers it. Files that are not recordings (other
// extensions) are left alone.
import { realpathSync } from 'node:fs'
import { lstat } from 'node:fs/promises'
import type { Config } from '../config/schema.js'
import type { FileSystemMode } from '../policy/file-system.js'
import { foldName } from '../policy/file-system.js'
import { globUnder } from '../policy/rules.js'
import { holdsPeriodKey, Keyring } from '../sealing/keyring.js'
import { plainPathOf } from '../sealing/names.js'
import { compilePeriodPattern, periodOf, type PeriodPattern } from '../sealing/period.js'
import { walk } from '../sealing/bulk/walk.js'
import { holdsOn, inForce, prefixMeets, type Hold, type HoldsDoc } from './holds.js'
import { acceptDate, DAY_MS, endOf, modifiedAtVerdict, retentionOf, type RetentionRule } from './rules.js'

export type PeriodState = 'kept' | 'expired' | 'held' | 'erased' | 'undetermined'

export interface PeriodFinding {
  period: string
  state: PeriodState
  keyId?: string
  /** When the last recording it can hold is past its retention (ms). */
  expiresAt?: number
  /** The rules that can match its recordings. */
  rules: string[]
  /** Cases of the holds in force that meet it. */
  holds: string[]
  /** Why it is kept for ever, or undetermined. */
  why?: string
  /** Sealed files of it on the share (with --source). */
  files?: number
  /** Erased, but these key backups (sealing.keyBackups) still hold its identity, or could not be read. */
  backups?: string[]
  /** Undetermined: when it would be past retention were its recordings dated by the period itself (its end plus the longest keepDays of the rules that meet it). */
  dueBy?: number
}

export interface PlainFile { file: string, path: string, rule: string }

export interface PlainFindings {
  /** The share's real path when it was walked: a deletion checks its file is still under it, where the walk found it. */
  root: string
  /** Past retention, no hold: deleted by --apply. */
  expired: PlainFile[]
  held: number
  kept: number
  /** Recordings no rule matches: kept for as long as the NAS keeps them. */
  unruled: number
  /** Dated by mtime, modified more than a day in the future: their age cannot be told, so they are not deleted (the gateway refuses them). */
  undatable: number
  /** Directories that could not be read: what they hold was not judged. */
  unreadable: number
}

export interface SweepPlan {
  now: number
  periods: PeriodFinding[]
  plain?: PlainFindings
}

/**
 * A period's directory segments under the pattern (`2016-03` → medicall,
 * 2016, 03): up to the first date field the period does not fix (a {dd}
 * in a monthly pattern), below which its recordings spread.
 */
function periodDir (p: PeriodPattern, period: string): string[] {
  const [yyyy, mm, dd] = period.split('-')
  const date: Record<string, string | undefined> = { yyyy, mm, dd }
  const dir: string[] = []
  for (const part of p.parts) {
    const segment = 'literal' in part ? part.literal : date[part.field]
    if (segment === undefined) break
    dir.push(segment)
  }
  return dir
}

/** The holds in force that meet a sealed period's directory (one hold anywhere in it keeps its key). */
export function holdsOnPeriod (config: Readonly<Config>, period: string, holds: readonly Hold[], now: number): Hold[] {
  const s = config.sealing
  const dir = periodDir(compilePeriodPattern(s.periodPattern as string, s.period), period)
  return holds.filter((h) => inForce(h, now) && prefixMeets(h.prefix, dir, config.upstream.fileSystem, false))
}

/** The erased periods a new hold meets: what it can no longer keep (none when sealing is off or the keyring cannot be read). */
export function erasedUnderHold (config: Readonly<Config>, hold: Hold, now: number): string[] {
  const s = config.sealing
  if (s.mode === 'off' || !s.keyring || !s.periodPattern) return []
  let erased: string[]
  try { erased = Keyring.load(s.keyring).erasedPeriods() } catch { return [] }
  return erased.filter((p) => holdsOnPeriod(config, p, [hold], now).length > 0).sort()
}

/** Why a rule that meets a period cannot date its recordings from the period's own directories, if it cannot. */
function undatable (rule: RetentionRule, u: ReturnType<typeof globUnder>): string | undefined {
  if (u.kind === 'unaligned') return `rule ${rule.name} can read a date from below the period's directory (a ** comes first)`
  if (rule.fields.length === 0) return `rule ${rule.name} dates recordings by Last-Modified`
  if (u.kind === 'meets' && u.bound.yyyy === undefined) return `rule ${rule.name} reads its date from below the period's directory`
  return undefined
}

/**
 * What the rules say of a period statically: the latest expiry, or why it
 * cannot be told; and the longest keepDays of the rules that meet it.
 */
function judgePeriod (rules: readonly RetentionRule[], dir: readonly string[], mode: FileSystemMode): { expiresAt?: number, rules: string[], covered: boolean, why?: string, longestKeepDays: number } {
  const folded = mode === 'folding' ? dir.map(foldName) : undefined
  let expiresAt: number | undefined
  let covered = false
  let why: string | undefined
  let longestKeepDays = 0
  const names: string[] = []
  for (const rule of rules) {
    const u = globUnder(rule.glob, dir, acceptDate, folded)
    if (u.kind === 'none') continue
    names.push(rule.name)
    longestKeepDays = Math.max(longestKeepDays, rule.keepDays)
    why ??= undatable(rule, u)
    if (why === undefined && u.kind === 'meets') {
      const at = endOf(u.bound).end + rule.keepDays * DAY_MS
      expiresAt = Math.max(expiresAt ?? at, at)
    }
    // First match: a rule that matches every path under it is the last any recording of it reaches.
    if (u.kind === 'meets' && u.all) { covered = true; break }
  }
  return { expiresAt: why === undefined ? expiresAt : undefined, rules: names, covered, why, longestKeepDays }
}

/** When a period's last day ends (UTC). */
function periodEnd (period: string): number {
  const [yyyy, mm, dd] = period.split('-')
  return endOf({ yyyy, ...(mm === undefined ? {} : { mm }), ...(dd === undefined ? {} : { dd }) }).end
}

/** The sealed periods: each key in the keyring, and each erased one. */
/** What the walk of the share found of sealed files: per period, and how many directories it could not read. */
export interface SealedOnShare { periods: Map<string, SealedCount>, unreadable: number }
export interface SealedCount { files: number, unruled: number, undecodable: number }

export function planPeriods (config: Readonly<Config>, rules: readonly RetentionRule[], holds: HoldsDoc, now: number, share?: SealedOnShare): PeriodFinding[] {
  const s = config.sealing
  if (s.mode === 'off' || !s.keyring || !s.periodPattern) return []
  const pattern = compilePeriodPattern(s.periodPattern, s.period)
  const ring = Keyring.load(s.keyring)
  const mode = config.upstream.fileSystem
  const periods = new Set([...ring.list().map((k) => k.period), ...ring.erasedPeriods()])
  return [...periods].sort().map((period): PeriodFinding => {
    const key = ring.key(period)
    const dir = periodDir(pattern, period)
    const judged = judgePeriod(rules, dir, mode)
    const onShare = share ? share.periods.get(period) ?? { files: 0, unruled: 0, undecodable: 0 } : undefined
    const found: PeriodFinding = { period, state: 'kept', keyId: key?.keyId, expiresAt: judged.expiresAt, rules: judged.rules, holds: holdsOnPeriod(config, period, holds.holds, now).map((h) => h.case), ...(onShare ? { files: onShare.files } : {}) }
    if (!key) {
      // A key file left beside the tombstone (in the keyring too) still holds the identity.
      const left = [s.keyring as string, ...s.keyBackups].filter((d) => holdsPeriodKey(d, period))
      return { ...found, state: 'erased', ...(left.length > 0 ? { backups: left, why: `its identity is still in ${left.join(', ')} (or it cannot be read there)` } : {}) }
    }
    const undetermined = (why: string): PeriodFinding => ({ ...found, state: 'undetermined', why, dueBy: periodEnd(period) + judged.longestKeepDays * DAY_MS })
    if (judged.why) return undetermined(judged.why)
    if (judged.rules.length === 0) return { ...found, why: 'no retention rule matches its recordings' }
    if (onShare && onShare.unruled > 0) return { ...found, why: `${onShare.unruled} of its recordings on the share match no retention rule` }
    if (!judged.covered && !onShare) return undetermined('no rule matches every path under it: pass --source (the mounted share) to look at each recording')
    // Judged file by file: only if every file was seen, and read.
    if (!judged.covered && share && share.unreadable > 0) return undetermined(`${share.unreadable} director${share.unreadable === 1 ? 'y' : 'ies'} of the share could not be read`)
    if (!judged.covered && onShare && onShare.undecodable > 0) return undetermined(`${onShare.undecodable} sealed file(s) in it have names this keyring does not decode`)
    if (now < (judged.expiresAt as number)) return found
    return { ...found, state: found.holds.length > 0 ? 'held' : 'expired' }
  })
}

/**
 * Walks the mounted share: plaintext recordings judged one by one, and
 * sealed files (names that decode with the keyring's name key) counted per
 * period, with those no rule matches.
 */
export async function walkShare (config: Readonly<Config>, source: string, rules: readonly RetentionRule[], holds: HoldsDoc, now: number): Promise<{ plain: PlainFindings, sealed: SealedOnShare }> {
  const s = config.sealing
  const mode = config.upstream.fileSystem
  const ring = s.mode !== 'off' && s.keyring ? Keyring.load(s.keyring) : undefined
  const pattern = ring && s.periodPattern ? compilePeriodPattern(s.periodPattern, s.period) : undefined
  const extensions = new Set(config.files.extensions)
  const plain: PlainFindings = { root: realpathSync(source), expired: [], held: 0, kept: 0, unruled: 0, undatable: 0, unreadable: 0 }
  const sealed: SealedOnShare = { periods: new Map(), unreadable: 0 }
  const count = (period: string): SealedCount => {
    const c = sealed.periods.get(period) ?? { files: 0, unruled: 0, undecodable: 0 }
    sealed.periods.set(period, c)
    return c
  }
  for await (const f of walk(source)) {
    if (f.kind === 'unreadable') { plain.unreadable++; sealed.unreadable++; continue }
    if (f.kind !== 'file') continue
    const sealedName = ring !== undefined && pattern !== undefined && f.segments[f.segments.length - 1].endsWith('.age')
    const decoded = sealedName ? plainPathOf(ring.nameKey, f.segments, s.names.segments) : undefined
    if (sealedName) {
      // Date directories stay readable: a name that does not decode still says its period.
      const segments = decoded === undefined ? f.segments : decoded.split('/').slice(1)
      const period = periodOf(pattern, segments)
      if (period === undefined) continue
      const c = count(period)
      c.files++
      if (decoded === undefined) c.undecodable++
      else if (retentionOf(rules, segments, mode).kind === 'none') c.unruled++
      continue
    }
    const name = f.segments[f.segments.length - 1]
    const dot = name.lastIndexOf('.')
    if (dot <= 0 || !extensions.has(name.slice(dot).toLowerCase())) continue
    const r = retentionOf(rules, f.segments, mode)
    if (r.kind === 'none') { plain.unruled++; continue }
    let expired = r.kind === 'dated' && now >= r.expiresAt
    if (r.kind === 'last-modified') {
      const mtime = await lstat(f.file).then((st) => st.mtimeMs, () => undefined)
      // Gone since the listing: nothing to judge.
      if (mtime === undefined) continue
      // Only what is known to be past retention is destroyed: a file modified in the future (a NAS
      // clock days fast) has no age that can be told; the gateway refuses it, and it is reported.
      const verdict = modifiedAtVerdict(mtime, r.keepMs, now)
      if (verdict === 'unknown') { plain.undatable++; continue }
      expired = verdict === 'expired'
    }
    if (!expired) { plain.kept++; continue }
    if (holdsOn(holds.holds, f.segments, mode, now).length > 0) { plain.held++; continue }
    plain.expired.push({ file: f.file, path: '/' + f.segments.join('/'), rule: r.rule.name })
  }
  return { plain, sealed }
}

/** Periods --apply erases: expired ones, and erased ones whose identity a backup still holds. */
export function toErase (plan: SweepPlan): PeriodFinding[] {
  return plan.periods.filter((p) => p.state === 'expired' || (p.state === 'erased' && p.backups !== undefined))
}

/** The confirmation --apply asks to be typed: what it will destroy, counted. */
export function confirmationOf (plan: SweepPlan): string {
  const periods = toErase(plan).length
  const files = plan.plain?.expired.length ?? 0
  return `erase ${periods} period${periods === 1 ? '' : 's'} and delete ${files} file${files === 1 ? '' : 's'}`
}

/**
 * Plaintext recordings (undefined: the share was not walked) and periods
 * past retention, without a hold, still present; and undetermined periods
 * without a hold that would be past retention were they dated by the
 * period itself: the sweep cannot erase them, and no overdue count shows them.
 */
export function overdueOf (plan: SweepPlan): { recordings?: number, periods: number, undetermined: number } {
  const stuck = plan.periods.filter((p) => p.state === 'undetermined' && p.holds.length === 0 && p.dueBy !== undefined && plan.now >= p.dueBy)
  return { recordings: plan.plain?.expired.length, periods: toErase(plan).length, undetermined: stuck.length }
}
