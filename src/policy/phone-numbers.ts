// Recording names, and sometimes the folders above them, hold callers'
// phone numbers. What is taken for one: 9 or more decimal digits (of any
// script: a full-width ４６７… counts too), written together or, as numbers
// are written, with up to two spaces, underscores, dashes, dots or
// parentheses between them (+46 70-123 45 67, +46_70_123_45_67,
// (070) 123 45 67, 070.123.45.67). Invisible characters and combining marks
// do not split a number (a zero-width space, a keycap). A date, or a date
// and time, written as whole groups of such a run (20261129, 2026-11-29
// 10.15.00, 20261129101500) does not count, wherever it stands in it: what
// is left on either side is judged on its own, so dates stay readable and
// a date does not hide the number beside it (20261129 0701234567).
const HIDDEN = /[\p{Cf}\p{Mn}\p{Me}]/gu
const NUMBER = /\p{Nd}(?:[ \u00a0_.()\p{Pd}]{0,2}\p{Nd})*/gu
const NOT_DIGIT = /[^\p{Nd}]+/u
const MIN_DIGITS = 9
const TIMESTAMP = /^(?:19|20|21)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d)?)?$/
/** yyyymmddHHMMSS: no timestamp is longer. */
const STAMP_DIGITS = 14

function digitsOf (run: string): string[] {
  return [...run.replace(/[^\p{Nd}]/gu, '')]
}

/** The lengths, in groups, of each date or date and time that the groups from the i-th on can be read as (none: []). */
function stampsAt (groups: readonly string[], i: number): number[] {
  const lengths: number[] = []
  let digits = ''
  for (let j = i; j < groups.length; j++) {
    digits += groups[j]
    if (digits.length > STAMP_DIGITS) break
    if (TIMESTAMP.test(digits)) lengths.push(j - i + 1)
  }
  return lengths
}

/**
 * Whether the run's digit groups hold 9 or more digits that no date stands
 * among. Where a date can be read several ways (20261129 0701 23 45 67: a
 * date, or a date and 07:01), every way is tried, and a number in any of
 * them counts: a name is kept readable only if no reading hides a number.
 */
function phoneLike (run: string): boolean {
  const groups = run.split(NOT_DIGIT).filter((g) => g !== '')
  const tried = new Set<number>()
  const from = (i: number, digits: number): boolean => {
    if (digits >= MIN_DIGITS) return true
    if (i === groups.length || tried.has(i * MIN_DIGITS + digits)) return false
    tried.add(i * MIN_DIGITS + digits)
    const stamps = stampsAt(groups, i)
    if (stamps.length === 0) return from(i + 1, digits + [...groups[i]].length)
    return stamps.some((n) => from(i + n, 0))
  }
  return from(0, 0)
}

export function holdsPhoneNumber (text: string): boolean {
  for (const m of text.replace(HIDDEN, '').matchAll(NUMBER)) if (phoneLike(m[0])) return true
  return false
}

/** The text with each number that may be a phone number cut to its first two digits and an ellipsis. */
export function maskPhoneNumbers (text: string): string {
  return text.replace(HIDDEN, '').replace(NUMBER, (run) => phoneLike(run) ? `${digitsOf(run).slice(0, 2).join('')}…` : run)
}
