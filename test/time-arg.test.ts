// Command line times (src/time-arg.ts): the forms the README names, and
// nothing Date.parse would guess at. No sockets.
import t from 'tap'
import { isIsoTime, parseTimeArg } from '../src/time-arg.js'

t.test('accepted: ISO 8601 with a zone, a date, epoch seconds, now', async (t) => {
  const table: Array<[string, number]> = [
    ['2026-11-21T10:00:00Z', Date.UTC(2026, 10, 21, 10)],
    ['2026-11-21T10:00:00.123Z', Date.UTC(2026, 10, 21, 10, 0, 0, 123)],
    ['2026-11-21T10:00Z', Date.UTC(2026, 10, 21, 10)],
    ['2026-11-21T12:00:00+02:00', Date.UTC(2026, 10, 21, 10)],
    ['2026-11-21', Date.UTC(2026, 10, 21)],
    ['2028-02-29', Date.UTC(2028, 1, 29)],
    ['1764000000', 1764000000 * 1000],
    ['now', 42]
  ]
  for (const [text, ms] of table) t.equal(parseTimeArg(text, 42), ms, text)
})

t.test('refused, naming the forms: what Date.parse would have guessed at', async (t) => {
  for (const text of ['12', '0', '-1', 'now-1', 'Dec 5', '1/2/3', '2026-02-31T00:00:00Z', '2026-02-31', '2027-02-29', '2026-11-21T24:00:00Z', '2026-11-21T10:60:00Z', '2026-11-21T10:00:60Z', '2026-11-21T10:00:00', '2026-11-21 10:00:00Z', '20261121', '', ' 2026-11-21', 'yesterday', '1e10', '123456789012', '000000000', '0123456789']) {
    t.throws(() => parseTimeArg(text), { message: /^invalid time .*: use ISO 8601 with a time zone/ }, JSON.stringify(text))
  }
})

t.test('a time required: a bare date is not a hold\'s --until', async (t) => {
  t.equal(isIsoTime('2028-12-31', { timeRequired: true }), false)
  t.equal(isIsoTime('2028-12-31T23:59:59Z', { timeRequired: true }), true)
  t.equal(isIsoTime('2028-02-30T00:00:00Z', { timeRequired: true }), false)
})
