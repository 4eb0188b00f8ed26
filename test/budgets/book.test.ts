// The budget book without sockets: sliding windows to the millisecond with
// an injected clock, distinct recordings, when a refused request may come
// back, bytes, reset, the near-limit count, and subjects forgotten once
// nothing of theirs is left in any window.
import t from 'tap'
import { BudgetBook } from '../../src/budgets/book.js'
import { budgetsByRule } from '../../src/budgets/settings.js'
import { loadConfig } from '../../src/config/load.js'
import { testCerts } from '../helpers/certs.js'

const T0 = Date.UTC(2026, 10, 30, 12)
const MIN = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000

t.test('requests per minute: N pass in any 60 s, the next waits for the oldest to leave the window', async (t) => {
  const book = new BudgetBook()
  const b = { requestsPerMinute: 3 }
  for (let i = 0; i < 3; i++) t.same(book.take({ subject: 'a' }, b, T0 + i * 1000), { ok: true }, `request ${i + 1}`)
  t.same(book.take({ subject: 'a' }, b, T0 + 5000), { ok: false, budget: 'requestsPerMinute', retryAfterMs: MIN - 5000 }, 'the fourth within the minute is refused until the first leaves')
  t.same(book.take({ subject: 'b' }, b, T0 + 5000), { ok: true }, 'another subject has its own')
  t.same(book.take({ subject: 'a' }, b, T0 + MIN - 1), { ok: false, budget: 'requestsPerMinute', retryAfterMs: 1 }, 'one ms before the first leaves: still refused')
  t.same(book.take({ subject: 'a' }, b, T0 + MIN), { ok: true }, 'at the first request plus 60 s it passes')
  t.equal(book.usage('a', T0 + MIN).requestsPerMinute, 3, 'a refusal counted nothing')
})

t.test('distinct recordings: one recording costs once per window, however many requests it gets', async (t) => {
  const book = new BudgetBook()
  const b = { recordingsPerHour: 2, recordingsPerDay: 3 }
  t.ok(book.take({ subject: 's', recording: '/r/1.wav' }, b, T0).ok)
  let refused = 0
  for (let i = 1; i <= 500; i++) if (!book.take({ subject: 's', recording: '/r/1.wav' }, b, T0 + i).ok) refused++
  t.equal(refused, 0, '500 more requests for it (a player seeking) are all let through')
  t.ok(book.take({ subject: 's', recording: '/r/2.wav' }, b, T0 + 1000).ok, 'a second recording')
  t.same(book.take({ subject: 's', recording: '/r/3.wav' }, b, T0 + 2000), { ok: false, budget: 'recordingsPerHour', retryAfterMs: 500 + HOUR - 2000 }, 'a third in the hour is refused until the first (last played at T0+500) leaves it')
  t.ok(book.take({ subject: 's', recording: '/r/1.wav' }, b, T0 + 3000).ok, 'the recordings already taken play on')
  t.ok(book.take({ subject: 's' }, b, T0 + 3000).ok, 'a HEAD (no recording) is not a recording')
  // The hour has passed for 1 (last played at T0+3000) and 2.
  t.ok(book.take({ subject: 's', recording: '/r/3.wav' }, b, T0 + HOUR + 3001).ok, 'after the hour, a third')
  const day = book.take({ subject: 's', recording: '/r/4.wav' }, b, T0 + HOUR + 4000)
  t.match(day, { ok: false, budget: 'recordingsPerDay' }, 'the day still holds 1, 2 and 3: a fourth is refused by the day budget')
  t.equal((day as { retryAfterMs: number }).retryAfterMs, 1000 + DAY - (HOUR + 4000), 'until the oldest of the day (2, at T0+1000) leaves it')
  t.same(book.usage('s', T0 + HOUR + 4000), { requestsPerMinute: 1, recordingsPerHour: 1, recordingsPerDay: 3, bytesPerHour: 0 }, 'the one request of the last minute, one recording in the hour, three in the day')
})

t.test('bytes per hour: counted as responses end; refused once the hour holds the budget, until enough ages out', async (t) => {
  const book = new BudgetBook()
  const b = { bytesPerHour: 1000 }
  t.ok(book.take({ subject: 'x', recording: '/a' }, b, T0).ok)
  book.spend('x', 600, T0 + 10)
  t.ok(book.take({ subject: 'x', recording: '/b' }, b, T0 + 20).ok, 'under the budget: a response in flight may pass it')
  book.spend('x', 700, T0 + 2 * MIN)
  t.same(book.take({ subject: 'x', recording: '/c' }, b, T0 + 2 * MIN + 40), { ok: false, budget: 'bytesPerHour', retryAfterMs: 10 + HOUR - 2 * MIN - 40 }, 'over it: until the first 600 bytes leave the hour')
  t.ok(book.take({ subject: 'x', recording: '/c' }, b, T0 + HOUR + 10).ok, 'then 700 are left: it passes')
  book.spend('x', 0, T0 + HOUR + 20)
  t.equal(book.usage('x', T0 + HOUR + 20).bytesPerHour, 700)
})

t.test('buckets: what falls in one second (requests) or one minute (bytes) leaves the window with the latest of it, never earlier', async (t) => {
  const book = new BudgetBook()
  const b = { requestsPerMinute: 2, bytesPerHour: 1000 }
  t.ok(book.take({ subject: 'q' }, b, T0 + 100).ok)
  t.ok(book.take({ subject: 'q' }, b, T0 + 900).ok, 'a second request in the same second')
  t.same(book.take({ subject: 'q' }, b, T0 + MIN + 100), { ok: false, budget: 'requestsPerMinute', retryAfterMs: 800 }, 'the first does not leave alone: both go at the second one\'s time plus 60 s')
  t.ok(book.take({ subject: 'q' }, b, T0 + MIN + 900).ok, 'then they have')
  book.spend('q', 600, T0 + 1000)
  book.spend('q', 600, T0 + 50_000)
  t.same(book.take({ subject: 'q' }, { bytesPerHour: 1000 }, T0 + HOUR + 1000), { ok: false, budget: 'bytesPerHour', retryAfterMs: 49_000 }, 'bytes of one minute leave the hour together, with the latest')
  t.ok(book.take({ subject: 'q' }, { bytesPerHour: 1000 }, T0 + HOUR + 50_000).ok)
  // However fast a subject sends, it holds at most 60 buckets of each.
  const fast = new BudgetBook()
  for (let i = 0; i < 100_000; i++) fast.take({ subject: 'f' }, { requestsPerMinute: 1_000_000 }, T0 + i)
  t.equal(fast.usage('f', T0 + 99_999).requestsPerMinute, 60_000, 'the last minute\'s requests are all counted')
  const ledger = (fast as unknown as { ledgers: Map<string, { requests: unknown[] }> }).ledgers.get('f')
  t.ok((ledger?.requests.length ?? 0) <= 61, `in ${ledger?.requests.length} buckets`)
})

t.test('reset, the near-limit count, and forgetting', async (t) => {
  const book = new BudgetBook()
  const b = { recordingsPerHour: 10 }
  for (let i = 0; i < 8; i++) book.take({ subject: 'hot', recording: `/r/${i}` }, b, T0)
  book.take({ subject: 'cool', recording: '/r/0' }, b, T0)
  t.equal(book.near(0.8, T0), 1, 'one subject at 80% or more (a count, never who)')
  t.ok(book.reset('hot'), 'reset')
  t.equal(book.usage('hot', T0).recordingsPerHour, 0, 'nothing left after a reset')
  t.notOk(book.reset('nobody'), 'resetting an unknown subject says so')
  t.equal(book.subjects, 1)
  book.usage('cool', T0 + DAY)
  t.equal(book.subjects, 0, 'a subject with nothing in any window is forgotten')
})

t.test('budgets by rule: limits.perSubject, with a rule\'s own over it, budget by budget', async (t) => {
  const certs = testCerts()
  const c = loadConfig({
    object: {
      tls: { cert: certs.cert, key: certs.key },
      upstream: { url: 'http://127.0.0.1:1' },
      auth: { jwt: { secret: '0123456789abcdef0123456789abcdef' } },
      audit: { dir: '/tmp/nasguard-budget-unit' },
      limits: { perSubject: { recordingsPerHour: 100, bytesPerHour: 1e9 } },
      policy: [
        { name: 'agents', path: '/medicall/**', scopes: ['recordings:read'] },
        { name: 'qa', path: '/qa/**', scopes: ['qa'], perSubject: { recordingsPerHour: 5, requestsPerMinute: 30 } }
      ]
    }
  })
  const by = budgetsByRule(c)
  t.same(by.get('agents'), { recordingsPerHour: 100, bytesPerHour: 1e9 })
  t.same(by.get('qa'), { recordingsPerHour: 5, bytesPerHour: 1e9, requestsPerMinute: 30 })
})

t.test('what the book keeps is bounded: no recordings without a recordings budget, a fixed-size key per recording, idle subjects swept', async (t) => {
  const book = new BudgetBook()
  for (let i = 0; i < 5000; i++) book.take({ subject: 'r', recording: `/medicall/${'x'.repeat(1000)}/${i}.wav` }, { requestsPerMinute: 1_000_000 }, T0)
  t.equal(book.usage('r', T0).recordingsPerDay, 0, 'under a requests budget alone no recording is kept')
  // Many recordings under a large day budget: each charge looks at its own key, not at every recording held.
  for (let i = 0; i < 20000; i++) book.take({ subject: 'big', recording: `/r/${i}` }, { recordingsPerDay: 10_000_000 }, T0 + i)
  t.equal(book.usage('big', T0 + 20000).recordingsPerDay, 20000)
  // Subjects that are never read again are still forgotten as charges go on.
  for (let i = 0; i < 300; i++) book.take({ subject: `idle-${i}` }, { requestsPerMinute: 10 }, T0)
  for (let i = 0; i < 5000; i++) book.take({ subject: 'busy' }, { requestsPerMinute: 1_000_000 }, T0 + DAY + i)
  t.ok(book.subjects <= 2, `idle subjects swept without being read (${book.subjects} left: busy, and at most big)`)
  t.same(book.take({ subject: 'busy' }, { requestsPerMinute: 5000 }, T0 + DAY - 10 * MIN), { ok: false, budget: 'requestsPerMinute', retryAfterMs: MIN }, 'a clock stepped back: Retry-After is never more than the window')
})
