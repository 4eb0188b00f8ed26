// A recording's period, read from its path: sealing.periodPattern names the
// date segments ({yyyy}, {mm}, optionally {dd}) and ends in **, e.g.
// /medicall/{yyyy}/{mm}/**. Every period has its own identity, so a month (or
// day, or year) of recordings can be erased by destroying one key.
export type PeriodUnit = 'month' | 'day' | 'year'

type Part = { literal: string } | { field: 'yyyy' | 'mm' | 'dd' }

export interface PeriodPattern {
  parts: Part[]
  unit: PeriodUnit
}

const FIELD = /^\{(yyyy|mm|dd)\}$/

/** Compiles a pattern; throws with what is wrong (the caller names the key). */
export function compilePeriodPattern (pattern: string, unit: PeriodUnit): PeriodPattern {
  if (!pattern.startsWith('/') || !pattern.endsWith('/**')) throw new Error('it must start with / and end with /** (e.g. /medicall/{yyyy}/{mm}/**)')
  const parts: Part[] = pattern.slice(1, -3).split('/').map((s) => {
    const m = FIELD.exec(s)
    if (m) return { field: m[1] as 'yyyy' | 'mm' | 'dd' }
    if (s === '' || /[{}*]/.test(s)) throw new Error(`segment ${JSON.stringify(s)} is neither a name nor one of {yyyy}, {mm}, {dd}`)
    return { literal: s }
  })
  const fields = parts.flatMap((p) => 'field' in p ? [p.field] : [])
  if (new Set(fields).size !== fields.length) throw new Error('a date field appears twice')
  const needed = unit === 'year' ? ['yyyy'] : unit === 'month' ? ['yyyy', 'mm'] : ['yyyy', 'mm', 'dd']
  for (const f of needed) if (!fields.includes(f as 'yyyy')) throw new Error(`sealing.period ${unit} needs {${f}} in the pattern`)
  return { parts, unit }
}

const RANGES = { yyyy: /^(19|20|21)\d\d$/, mm: /^(0[1-9]|1[0-2])$/, dd: /^(0[1-9]|[12]\d|3[01])$/ }

/** The period of a canonical path's segments (2026-11 for a month), or undefined when the path does not match. */
export function periodOf (p: PeriodPattern, segments: readonly string[]): string | undefined {
  // The pattern's segments, then at least one more: the recording itself.
  if (segments.length <= p.parts.length) return undefined
  const date: Record<string, string> = {}
  for (let i = 0; i < p.parts.length; i++) {
    const part = p.parts[i]
    const s = segments[i]
    if ('literal' in part) {
      if (s !== part.literal) return undefined
    } else {
      if (!RANGES[part.field].test(s)) return undefined
      date[part.field] = s
    }
  }
  if (p.unit === 'year') return date.yyyy
  if (p.unit === 'month') return `${date.yyyy}-${date.mm}`
  return `${date.yyyy}-${date.mm}-${date.dd}`
}

/** A period as `keys new --period` takes it, for the unit. */
export function validPeriod (unit: PeriodUnit, text: string): boolean {
  const shapes = { year: /^\d{4}$/, month: /^\d{4}-(0[1-9]|1[0-2])$/, day: /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/ }
  return shapes[unit].test(text)
}

/** The period a moment falls in (UTC): 2026-11 for a month. */
export function periodAt (unit: PeriodUnit, at: Date): string {
  const iso = at.toISOString()
  return unit === 'year' ? iso.slice(0, 4) : unit === 'month' ? iso.slice(0, 7) : iso.slice(0, 10)
}

/**
 * The periods an upload may open (make the key of): the current one and
 * the one before, for a call recorded just before midnight that arrives
 * after it. Any other period needs its key made by an operator, so that a
 * write token cannot fill the keyring with keys for every date.
 */
export function recentPeriods (unit: PeriodUnit, now: Date): string[] {
  const before = new Date(now)
  if (unit === 'year') before.setUTCFullYear(now.getUTCFullYear() - 1)
  else if (unit === 'month') before.setUTCDate(0)
  else before.setUTCDate(now.getUTCDate() - 1)
  return [periodAt(unit, now), periodAt(unit, before)]
}
