// Recording names, and sometimes the folders above them, hold callers'
// phone numbers. What is taken for one: 9 or more decimal digits (of any
// script: a full-width ４６７… counts too), written together or, as numbers
// are written, with up to two spaces, hyphens, dots or parentheses between
// them (+46 70-123 45 67, (070) 123 45 67, 070.123.45.67). Invisible
// characters and combining marks do not split a number (a zero-width
// space, a keycap). A timestamp at its start (yyyymmdd, then HHMM and SS)
// does not count: dates and times (20261129, 2026-11-29 10.15.00) stay
// readable.
const HIDDEN = /[\p{Cf}\p{Mn}\p{Me}]/gu
const NUMBER = /\p{Nd}(?:[ \-.()]{0,2}\p{Nd})*/gu
const NOT_DIGIT = /[^\p{Nd}]/gu
const MIN_DIGITS = 9
const TIMESTAMP_PREFIX = /^(?:19|20|21)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d)?)?/

function digitsOf (run: string): string[] {
  return [...run.replace(NOT_DIGIT, '')]
}

function phoneLike (run: string): boolean {
  const digits = digitsOf(run)
  if (digits.length < MIN_DIGITS) return false
  const stamp = TIMESTAMP_PREFIX.exec(digits.join(''))?.[0].length ?? 0
  return digits.length - stamp >= MIN_DIGITS
}

export function holdsPhoneNumber (text: string): boolean {
  for (const m of text.replace(HIDDEN, '').matchAll(NUMBER)) if (phoneLike(m[0])) return true
  return false
}

/** The text with each number that may be a phone number cut to its first two digits and an ellipsis. */
export function maskPhoneNumbers (text: string): string {
  return text.replace(HIDDEN, '').replace(NUMBER, (run) => phoneLike(run) ? `${digitsOf(run).slice(0, 2).join('')}…` : run)
}
