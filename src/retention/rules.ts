// Retention rules: how long a recording is kept, and from when. The first
// rule whose path glob matches decides (the policy's globs, with {yyyy},
// {mm} and {dd} as whole segments read from the path). A rule with a date
// dates the recording by the end of that day, month or year (UTC: the
// latest the recording can have been made), and it expires keepDays after
// it. A rule without one dates it by the NAS's Last-Modified. On a NAS that
// folds names, rules match by fold key, as the policy's do: a spelling the
// NAS resolves to an expired recording is expired too. Pure.
import type { Config } from '../config/schema.js'
import { foldName, type FileSystemMode } from '../policy/file-system.js'
import { claimsUsed, compileGlob, globCaptures, type CompiledGlob } from '../policy/rules.js'
import { NAS_CLOCK_SLACK_MS, nasDateMs } from '../proxy/http-date.js'

export const DAY_MS = 86_400_000

const DATE_FIELDS = ['yyyy', 'mm', 'dd'] as const
type DateField = typeof DATE_FIELDS[number]
const FIELD_SHAPE: Record<DateField, RegExp> = { yyyy: /^(19|20|21)\d\d$/, mm: /^(0[1-9]|1[0-2])$/, dd: /^(0[1-9]|[12]\d|3[01])$/ }

export interface RetentionRule {
  name: string
  glob: CompiledGlob
  keepDays: number
  /** The date fields the path gives; none: dated by Last-Modified. */
  fields: readonly DateField[]
}

/** Compiles config.retention; throws naming the rule's key and what is wrong. */
export function compileRetention (rules: Readonly<Config['retention']>): RetentionRule[] {
  return rules.map((r, i) => {
    const key = `retention[${i}].path`
    let glob: CompiledGlob
    try {
      glob = compileGlob(r.path)
    } catch (err) {
      throw new Error(`${key}: ${(err as Error).message}`)
    }
    const used = claimsUsed(glob)
    const other = used.find((n) => !(DATE_FIELDS as readonly string[]).includes(n))
    if (other !== undefined) throw new Error(`${key}: {${other}} is not a date field; a retention path takes {yyyy}, {mm} and {dd} only`)
    const fields = DATE_FIELDS.filter((f) => used.includes(f))
    if ((fields.includes('mm') && !fields.includes('yyyy')) || (fields.includes('dd') && !fields.includes('mm'))) throw new Error(`${key}: {dd} needs {mm}, and {mm} needs {yyyy}`)
    return { name: r.name ?? `retention[${i}]`, glob, keepDays: r.keepDays, fields }
  })
}

/** What retention says of one recording. */
export type Retention =
  | { kind: 'none' }
  /** expiresAt: ms since the epoch; from then on the recording is expired. */
  | { kind: 'dated', rule: RetentionRule, date: string, expiresAt: number }
  /** Dated by the NAS: expired when its Last-Modified is at or before `now - keepMs`. */
  | { kind: 'last-modified', rule: RetentionRule, keepMs: number }

/** The end (exclusive) of the date a rule read, ms: the first instant after the day, month or year. */
export function endOf (bound: Record<string, string>): { date: string, end: number } {
  const y = Number(bound.yyyy)
  if (bound.mm === undefined) return { date: bound.yyyy, end: Date.UTC(y + 1, 0, 1) }
  const m = Number(bound.mm)
  if (bound.dd === undefined) return { date: `${bound.yyyy}-${bound.mm}`, end: Date.UTC(y, m, 1) }
  // A day the month lacks (2016-02-30) is its last day: the recording is the month's, and the sweep judges the month by its end.
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate()
  return { date: `${bound.yyyy}-${bound.mm}-${bound.dd}`, end: Date.UTC(y, m - 1, Math.min(Number(bound.dd), last) + 1) }
}

export const acceptDate = (name: string, segment: string): boolean => FIELD_SHAPE[name as DateField]?.test(segment) === true

/** The rule for a recording's canonical segments (the first that matches), and its expiry. */
export function retentionOf (rules: readonly RetentionRule[], segments: readonly string[], mode: FileSystemMode): Retention {
  const folded = mode === 'folding' ? segments.map(foldName) : undefined
  for (const rule of rules) {
    const bound = globCaptures(rule.glob, segments, acceptDate, folded)
    if (bound === undefined) continue
    if (rule.fields.length === 0) return { kind: 'last-modified', rule, keepMs: rule.keepDays * DAY_MS }
    const { date, end } = endOf(bound)
    return { kind: 'dated', rule, date, expiresAt: end + rule.keepDays * DAY_MS }
  }
  return { kind: 'none' }
}

/**
 * A Last-Modified against a rule: 'expired' at or past keepMs after it (a
 * time up to a day ahead, a NAS clock that is fast, counts as now),
 * 'unknown' when the NAS sent none, one that does not parse, or one
 * further ahead: the recording's age cannot be told, so the gateway does
 * not serve it as if it were young, and the sweep does not delete it.
 */
export function lastModifiedVerdict (lastModified: string | string[] | undefined, keepMs: number, now: number): 'kept' | 'expired' | 'unknown' {
  return modifiedAtVerdict(typeof lastModified === 'string' ? nasDateMs(lastModified, now) : undefined, keepMs, now)
}

/** The same verdict for a modification time in ms (a file's mtime, as the sweep reads it), at the second (as a header states it). */
export function modifiedAtVerdict (modifiedMs: number | undefined, keepMs: number, now: number): 'kept' | 'expired' | 'unknown' {
  if (modifiedMs === undefined) return 'unknown'
  const t = Math.floor(modifiedMs / 1000) * 1000
  // A file modified in the future (beyond a NAS clock a day fast) would be young for as long as that: its age cannot be told.
  if (t > now + NAS_CLOCK_SLACK_MS) return 'unknown'
  return now >= Math.min(t, now) + keepMs ? 'expired' : 'kept'
}
