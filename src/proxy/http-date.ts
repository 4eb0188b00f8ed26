// The dates a NAS writes in Last-Modified. An HTTP date (RFC 9110 §5.6.7)
// is one of three forms, always UTC: only such a date is passed to a client
// (answer.ts). A recording dated by it for retention (retention/rules.ts)
// also takes RFC 5322's numeric zone. Date.parse is not used: it reads
// asctime in the host's zone and guesses at strings that are no date.

const WEEKDAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)'
const LONG_WEEKDAY = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)'
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const MONTH = `(?<month>${MONTHS.join('|')})`
const TIME = '(?<hour>[01][0-9]|2[0-3]):(?<minute>[0-5][0-9]):(?<second>[0-5][0-9]|60)'
const DAY = '0[1-9]|[12][0-9]|3[01]'

const FORMS: readonly RegExp[] = [
  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  new RegExp(`^${WEEKDAY}, (?<day>${DAY}) ${MONTH} (?<year>[0-9]{4}) ${TIME} GMT$`),
  // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
  new RegExp(`^${LONG_WEEKDAY}, (?<day>${DAY})-${MONTH}-(?<year>[0-9]{2}) ${TIME} GMT$`),
  // asctime: Sun Nov  6 08:49:37 1994 (a two-digit day is accepted too)
  new RegExp(`^${WEEKDAY} ${MONTH} (?<day> [1-9]|${DAY}) ${TIME} (?<year>[0-9]{4})$`)
]

/**
 * RFC 5322's date-time with a numeric zone (Sun, 29 Nov 2026 10:15:00
 * +0100), as PHP's date('r') writes it: no HTTP date, so never passed to
 * a client, but it names one instant, and a recording dated by it is not
 * refused for the form.
 */
const NUMERIC_ZONE = new RegExp(`^(?:${WEEKDAY}, )?(?<day>[1-9]|${DAY}) ${MONTH} (?<year>[0-9]{4}) ${TIME} (?<sign>[+-])(?<zh>[01][0-9]|2[0-3])(?<zm>[0-5][0-9])$`)

/** How far ahead of the gateway's clock a NAS's may be: a modification time within it is taken as now. */
export const NAS_CLOCK_SLACK_MS = 86400000

/**
 * RFC 850's two-digit year, in a Last-Modified: the latest year with those
 * digits that is not after this one (or tomorrow's, across New Year, as a
 * fast NAS clock may be). A modification time is past; RFC 9110's rule for
 * dates in general (up to 50 years ahead) would read a NAS's epoch-0
 * "01-Jan-70" as 2070, a recording young for decades.
 */
function fullYear (yy: number, now: number): number {
  const thisYear = new Date(now + NAS_CLOCK_SLACK_MS).getUTCFullYear()
  let year = Math.floor(thisYear / 100) * 100 + yy
  if (year > thisYear) year -= 100
  return year
}

/**
 * The time an HTTP date names, in ms since the epoch; undefined for anything
 * else, a day the month lacks (31 Apr) included. The weekday is not checked
 * against the date: recipients ignore it.
 */
export function httpDateMs (value: string, now = Date.now()): number | undefined {
  for (const re of FORMS) {
    const g = re.exec(value)?.groups
    if (g !== undefined) return instant(g, now)
  }
  return undefined
}

/**
 * The time a NAS's Last-Modified names, for dating a recording by it: an
 * HTTP date, or RFC 5322's form with a numeric zone; undefined for anything
 * else (Date.parse would guess: 03/04/2019 as March, asctime in the host's zone).
 */
export function nasDateMs (value: string, now = Date.now()): number | undefined {
  const http = httpDateMs(value, now)
  if (http !== undefined) return http
  const g = NUMERIC_ZONE.exec(value)?.groups
  const t = g === undefined ? undefined : instant(g, now)
  if (g === undefined || t === undefined) return undefined
  return t - Number(`${g.sign}1`) * (Number(g.zh) * 60 + Number(g.zm)) * 60000
}

/** The instant a matched date's groups name, read as UTC; undefined for a day its month lacks. */
function instant (g: Record<string, string>, now: number): number | undefined {
  const year = g.year.length === 2 ? fullYear(Number(g.year), now) : Number(g.year)
  const day = Number(g.day)
  const t = new Date(0)
  // setUTCFullYear, not Date.UTC, which reads a year below 100 as 19xx.
  t.setUTCFullYear(year, MONTHS.indexOf(g.month), day)
  if (t.getUTCDate() !== day) return undefined
  return t.setUTCHours(Number(g.hour), Number(g.minute), Number(g.second), 0)
}
