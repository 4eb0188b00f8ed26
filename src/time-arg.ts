// A time given on the command line (--before, --since, --until, --at,
// --issued-before, --until of a hold): ISO 8601 with its time zone, a bare
// date (midnight UTC), epoch seconds, or now. Anything else is refused, not
// guessed at: Date.parse alone reads "12" as 2001-12-01 and moves
// 2026-02-31 to March, and a revocation or a prune at the wrong time is
// silently not the one that was asked for.

const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/

export const TIME_FORMS = 'use ISO 8601 with a time zone (2026-11-21T10:00:00Z) or a date (2026-11-21, midnight UTC), epoch seconds, or now'

/** ISO 8601 naming a real date and time: with a time, then with its zone (2028-02-30 and 24:00 are refused). */
export function isIsoTime (t: string, o: { timeRequired?: boolean } = {}): boolean {
  const m = DATE_TIME.exec(t)
  if (!m || (o.timeRequired === true && m[4] === undefined) || Number.isNaN(Date.parse(t))) return false
  const day = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])))
  const realDay = day.getUTCMonth() === Number(m[2]) - 1 && day.getUTCDate() === Number(m[3])
  return realDay && (m[4] === undefined || (Number(m[4]) < 24 && Number(m[5]) < 60 && Number(m[6] ?? 0) < 60))
}

/** The time in milliseconds since the epoch; throws, naming the forms, for anything else. */
export function parseTimeArg (t: string, now = Date.now()): number {
  if (t === 'now') return now
  if (/^[1-9]\d{8,10}$/.test(t)) return Number(t) * 1000
  if (!isIsoTime(t)) throw new Error(`invalid time ${JSON.stringify(t)}: ${TIME_FORMS}`)
  return Date.parse(t)
}
