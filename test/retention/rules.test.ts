// Retention rules and legal holds without sockets: which rule dates a
// recording and when it expires (to the millisecond, with an injected
// clock), Last-Modified verdicts, matching on a NAS that folds names, the
// config errors, which holds cover which paths, and which holds documents
// are trusted. The same behaviour through real sockets is in
// gateway.test.ts and redis-holds.test.ts beside this file.
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { Errors } from '../../src/errors.js'
import { enforceRetention, lastModifiedRefusal } from '../../src/gate/retention.js'
import type { GateContext, GateRequest, RequestState } from '../../src/gate/state.js'
import type { HoldsNow } from '../../src/retention/hold-view.js'
import { HoldView } from '../../src/retention/hold-view.js'
import { EMPTY_HOLDS, HoldsProblem, changeHolds, fileHoldsStore, holdsKeyOf, holdsOn, inForce, loadHolds, prefixMeets, prefixProblem, sealHolds, unsealHolds, type Hold, type HoldsDoc } from '../../src/retention/holds.js'
import { DAY_MS, compileRetention, lastModifiedVerdict, retentionOf, type Retention } from '../../src/retention/rules.js'
import { testCerts } from '../helpers/certs.js'

// HTTP dates are UTC in every form; asctime has no zone, and a reading in
// the host's zone (Date.parse) would move a recording's expiry by hours.
process.env.TZ = 'America/Los_Angeles'

const segs = (path: string): string[] => path.slice(1).split('/')

const DAILY = { name: 'daily', path: '/medicall/{yyyy}/{mm}/{dd}/**', keepDays: 30 }
const MONTHLY = { name: 'monthly', path: '/monthly/{yyyy}/{mm}/**', keepDays: 10 }
const YEARLY = { name: 'yearly', path: '/yearly/{yyyy}/**', keepDays: 365 }
const SAME_DAY = { name: 'same-day', path: '/now/{yyyy}/{mm}/{dd}/**', keepDays: 0 }
const BY_NAS = { name: 'by-nas', path: '/lm/**', keepDays: 7 }

function dated (r: Retention): Extract<Retention, { kind: 'dated' }> {
  if (r.kind !== 'dated') throw new Error(`expected a dated verdict, got ${r.kind}`)
  return r
}

// ---- The stage, with an injected clock and holds ------------------------------------

function gateContext (rules: unknown[], now: () => number, holds: () => Promise<HoldsNow>, fileSystem: 'posix' | 'folding' = 'posix'): GateContext {
  const live = { rules: [], extensions: new Set(['.wav']), maxPathLength: 1024, maxRanges: 1, maxUploadBytes: 1, sendTimeoutMs: 1, minSendRate: 1, retention: compileRetention(rules as never) }
  return { live: () => live, fileSystem, holds, now } as unknown as GateContext
}

const gateRequest = { id: 'r', method: 'GET', url: '/', headers: {}, rawHeaders: [], httpVersion: '1.1', authenticate: async () => undefined, turn: async () => {} } as unknown as GateRequest

function gateState (path: string): RequestState {
  return { started: 0n, client: { clientIp: '192.0.2.1' }, fetch: false, bytes: 0, closed: false, path, segments: segs(path) } as RequestState
}

/** Runs the stage: 'passed', or the refusal's code. */
async function stage (ctx: GateContext, path: string, state = gateState(path)): Promise<string> {
  try {
    await enforceRetention(gateRequest, state, ctx)
    return 'passed'
  } catch (err) {
    return (err as { code: string }).code
  }
}

const NO_HOLDS = async (): Promise<HoldsNow> => ({ ok: true, holds: [] })
const EXPIRED = Errors.RetentionExpired.spec.code
const UNAVAILABLE = Errors.HoldsUnavailable.spec.code

t.test('a dated recording is kept until the millisecond before expiresAt and expired from it on (day, month, year, keepDays 0)', async (t) => {
  const rules = [DAILY, MONTHLY, YEARLY, SAME_DAY]
  const cases: Array<{ path: string, rule: string, date: string, end: number, keepDays: number }> = [
    // A day ends at the next midnight UTC; a leap day too.
    { path: '/medicall/2016/02/29/083012_46701234567.wav', rule: 'daily', date: '2016-02-29', end: Date.UTC(2016, 2, 1), keepDays: 30 },
    { path: '/medicall/2016/12/31/083012_46701234567.wav', rule: 'daily', date: '2016-12-31', end: Date.UTC(2017, 0, 1), keepDays: 30 },
    // A month at its last day's end: February of a leap year has 29.
    { path: '/monthly/2016/02/x.wav', rule: 'monthly', date: '2016-02', end: Date.UTC(2016, 2, 1), keepDays: 10 },
    { path: '/monthly/2016/12/x.wav', rule: 'monthly', date: '2016-12', end: Date.UTC(2017, 0, 1), keepDays: 10 },
    { path: '/yearly/2016/a/b/x.wav', rule: 'yearly', date: '2016', end: Date.UTC(2017, 0, 1), keepDays: 365 },
    // A day its month lacks counts as the month's last day: never later than the month's end.
    { path: '/medicall/2016/02/30/083012_46701234567.wav', rule: 'daily', date: '2016-02-30', end: Date.UTC(2016, 2, 1), keepDays: 30 },
    { path: '/medicall/2015/02/29/083012_46701234567.wav', rule: 'daily', date: '2015-02-29', end: Date.UTC(2015, 2, 1), keepDays: 30 },
    { path: '/medicall/2016/04/31/083012_46701234567.wav', rule: 'daily', date: '2016-04-31', end: Date.UTC(2016, 4, 1), keepDays: 30 },
    // keepDays 0: expired the instant its day is over, kept during it.
    { path: '/now/2016/03/14/x.wav', rule: 'same-day', date: '2016-03-14', end: Date.UTC(2016, 2, 15), keepDays: 0 }
  ]
  for (const c of cases) {
    const r = dated(retentionOf(compileRetention(rules), segs(c.path), 'posix'))
    const expiresAt = c.end + c.keepDays * DAY_MS
    t.equal(r.rule.name, c.rule, `${c.path}: rule ${c.rule}`)
    t.equal(r.date, c.date, `${c.path}: dated ${c.date}`)
    t.equal(r.expiresAt, expiresAt, `${c.path}: expires ${new Date(expiresAt).toISOString()}`)
    let now = expiresAt - 1
    const ctx = gateContext(rules, () => now, NO_HOLDS)
    t.equal(await stage(ctx, c.path), 'passed', `${c.path}: kept at expiresAt - 1 ms`)
    now = expiresAt
    t.equal(await stage(ctx, c.path), EXPIRED, `${c.path}: expired at expiresAt`)
    now = expiresAt + 10 * 365 * DAY_MS
    t.equal(await stage(ctx, c.path), EXPIRED, `${c.path}: expired long after`)
  }
})

t.test('the stage reads the holds only past retention, passes a held recording, and answers 503 when the holds cannot be read', async (t) => {
  const path = '/medicall/2016/03/14/083012_46701234567.wav'
  const expiresAt = Date.UTC(2016, 2, 15) + 30 * DAY_MS
  let reads = 0
  let holds: HoldsNow = { ok: true, holds: [] }
  let now = expiresAt - 1
  const ctx = gateContext([DAILY], () => now, async () => { reads++; return holds })
  t.equal(await stage(ctx, path), 'passed')
  t.equal(reads, 0, 'a young recording does not read the holds')
  holds = { ok: false, problem: 'edited' }
  t.equal(await stage(ctx, path), 'passed', 'a young recording is served while the holds cannot be read')
  now = expiresAt
  t.equal(await stage(ctx, path), UNAVAILABLE, 'expired, holds unreadable: 503')
  holds = { ok: true, holds: [hold({ case: 'K-1', prefix: '/medicall/2016/03/' })] }
  const st = gateState(path)
  t.equal(await stage(ctx, path, st), 'passed', 'held: passed')
  t.same(st.held, ['K-1'], 'the state names the case holding it')
  t.equal(st.retentionRule, 'daily', 'and the rule')
  holds = { ok: true, holds: [hold({ case: 'K-1', prefix: '/medicall/2016/03/', until: new Date(now).toISOString() })] }
  t.equal(await stage(ctx, path), EXPIRED, 'a hold whose until is now has lapsed')
  holds = { ok: true, holds: [hold({ case: 'K-2', prefix: '/medicall/2016/04/' })] }
  t.equal(await stage(ctx, path), EXPIRED, 'a hold on another month does not cover it')
  t.equal(await stage(ctx, '/other/2016/03/14/x.wav'), 'passed', 'no rule matches: kept')
})

t.test('the first matching rule decides, whatever the later ones say', async (t) => {
  const short = { name: 'short', path: '/medicall/{yyyy}/{mm}/{dd}/**', keepDays: 1 }
  const long = { name: 'long', path: '/medicall/**', keepDays: 3650 }
  const path = segs('/medicall/2016/03/14/x.wav')
  t.equal(dated(retentionOf(compileRetention([short, long]), path, 'posix')).rule.name, 'short')
  const r = retentionOf(compileRetention([long, short]), path, 'posix')
  t.equal(r.kind, 'last-modified', 'the undated rule first: dated by the NAS')
  t.equal(r.kind === 'last-modified' && r.rule.name, 'long')
  // A path whose date fields are not dates does not match the dated rule: the next one decides.
  for (const p of ['/medicall/2016/13/14/x.wav', '/medicall/2016/03/32/x.wav', '/medicall/16/03/14/x.wav', '/medicall/2016/3/14/x.wav', '/medicall/1816/03/14/x.wav']) {
    const v = retentionOf(compileRetention([short, long]), segs(p), 'posix')
    t.equal(v.kind === 'none' ? 'none' : v.rule.name, 'long', `${p}: not a date, the next rule`)
  }
  t.same(retentionOf(compileRetention([short]), segs('/elsewhere/2016/03/14/x.wav'), 'posix'), { kind: 'none' }, 'no rule: none')
  t.equal(compileRetention([short, { path: '/x/**', keepDays: 1 }])[1].name, 'retention[1]', 'an unnamed rule is named by its index')
})

t.test('a rule without date fields dates by Last-Modified: exact boundary, and none or garbage counts as expired', async (t) => {
  const r = retentionOf(compileRetention([BY_NAS]), segs('/lm/a/b.wav'), 'posix')
  t.same(r.kind === 'last-modified' && { rule: r.rule.name, keepMs: r.keepMs }, { rule: 'by-nas', keepMs: 7 * DAY_MS })
  const lm = 'Mon, 01 Jan 2024 00:00:00 GMT'
  const t0 = Date.parse(lm)
  const keep = 7 * DAY_MS
  const rows: Array<[string | string[] | undefined, number, string]> = [
    [lm, t0 + keep - 1, 'kept'],
    [lm, t0 + keep, 'expired'],
    [lm, t0, 'kept'],
    [lm, t0 - DAY_MS, 'kept'],
    [undefined, t0, 'unknown'],
    ['', t0, 'unknown'],
    ['yesterday', t0, 'unknown'],
    [[lm, lm], t0, 'unknown'],
    // The other two forms of an HTTP date (RFC 9110 §5.6.7), in UTC: asctime has no zone.
    ['Mon Jan  1 00:00:00 2024', t0 + keep - 1, 'kept'],
    ['Mon Jan  1 00:00:00 2024', t0 + keep, 'expired'],
    ['Mon Jan 01 00:00:00 2024', t0 + keep, 'expired'],
    ['Monday, 01-Jan-24 00:00:00 GMT', t0 + keep - 1, 'kept'],
    ['Monday, 01-Jan-24 00:00:00 GMT', t0 + keep, 'expired'],
    // RFC 850's two-digit year in a modification time is the latest not after this year (2024): 70 is 1970 (a NAS's epoch 0), 24 is 2024, 25 is 1925.
    ['Thursday, 01-Jan-70 00:00:00 GMT', t0, 'expired'],
    ['Tuesday, 01-Jan-80 00:00:00 GMT', t0, 'expired'],
    ['Monday, 01-Jan-24 00:00:00 GMT', t0, 'kept'],
    ['Wednesday, 01-Jan-25 00:00:00 GMT', t0, 'expired'],
    // A modification time in the future: up to a day (a NAS clock that is fast) is young, beyond it unknown.
    ['Mon, 01 Jan 2024 23:00:00 GMT', t0, 'kept'],
    ['Tue, 02 Jan 2024 00:00:00 GMT', t0, 'kept'],
    ['Tue, 02 Jan 2024 00:00:01 GMT', t0, 'unknown'],
    ['Sun, 01 Jan 2090 00:00:00 GMT', t0, 'unknown'],
    // Across New Year: a NAS clock minutes fast writes next year, and its two digits are next year's, not a century ago.
    ['Monday, 01-Jan-24 00:05:00 GMT', t0 - 1, 'kept'],
    ['Tuesday, 02-Jan-24 00:05:00 GMT', t0 - 1, 'unknown'],
    // What Date.parse would take but is no HTTP date: its age is not guessed at.
    ['2023-12-31T00:00:00Z', t0, 'unknown'],
    ['Sun, 31 Dec 2023 00:00:00 PST', t0, 'unknown'],
    ['03/04/2019', t0, 'unknown'],
    // RFC 5322's numeric zone (PHP's date('r')) names one instant: taken, with its offset.
    ['Mon, 01 Jan 2024 01:00:00 +0100', t0 + keep - 1, 'kept'],
    ['Mon, 01 Jan 2024 01:00:00 +0100', t0 + keep, 'expired'],
    ['1 Jan 2024 00:00:00 +0000', t0 + keep, 'expired'],
    ['Sun, 31 Dec 2023 16:00:00 -0800', t0 + keep - 1, 'kept'],
    ['Sun, 31 Dec 2023 16:00:00 -0800', t0 + keep, 'expired'],
    ['Sun, 31 Dec 2023 16:00:00 -2400', t0, 'unknown'],
    ['Dec 31 2023', t0, 'unknown'],
    ['1', t0, 'unknown'],
    ['Mon, 01 Jan 2024 00:00:00 GMT and more', t0, 'unknown'],
    ['Wed, 31 Apr 2024 00:00:00 GMT', t0, 'unknown'],
    ['Thu, 29 Feb 2024 00:00:00 GMT', t0 + 66 * DAY_MS - 1, 'kept'],
    ['Thu, 29 Feb 2024 00:00:00 GMT', t0 + 66 * DAY_MS, 'expired'],
    ['Sun, 29 Feb 2023 00:00:00 GMT', t0, 'unknown'],
    ['Mon, 01 Jan 2024 24:00:00 GMT', t0, 'unknown']
  ]
  for (const [value, now, want] of rows) t.equal(lastModifiedVerdict(value, keep, now), want, `${JSON.stringify(value)} at +${now - t0} ms: ${want}`)
  // A time within the slack counts as now: under keepDays 0 it is expired at once, not 23 h later.
  t.equal(lastModifiedVerdict('Mon, 01 Jan 2024 23:00:00 GMT', 0, t0), 'expired', 'keepDays 0, modified 23 h ahead: expired now')

  // Through the stage and the exchange's check: 'unknown' is refused like 'expired'.
  let now = t0 + keep
  const ctx = gateContext([BY_NAS], () => now, NO_HOLDS)
  const st = gateState('/lm/a/b.wav')
  t.equal(await stage(ctx, '/lm/a/b.wav', st), 'passed', 'the stage leaves it to the exchange')
  t.same(st.retention, { keepMs: keep, now }, 'with the rule\'s keepMs and the clock')
  t.equal(lastModifiedRefusal(st, lm)?.code, EXPIRED, 'at the boundary: 410')
  t.equal(lastModifiedRefusal(st, undefined)?.code, EXPIRED, 'no Last-Modified: 410')
  t.equal(lastModifiedRefusal(st, 'garbage')?.code, EXPIRED, 'garbage: 410')
  t.equal(lastModifiedRefusal(st, new Date(t0 + 1000).toUTCString()), undefined, 'a second younger: served')
  t.equal(lastModifiedRefusal(undefined, lm), undefined, 'no retention on the request: nothing to judge')
  now = t0
  const unknown = gateContext([BY_NAS], () => now, async () => ({ ok: false, problem: 'down' }))
  const st2 = gateState('/lm/a/b.wav')
  t.equal(await stage(unknown, '/lm/a/b.wav', st2), 'passed')
  t.equal(lastModifiedRefusal(st2, new Date(t0 - keep).toUTCString())?.code, UNAVAILABLE, 'holds unreadable, old Last-Modified: 503')
  t.equal(lastModifiedRefusal(st2, new Date(t0 - keep + 1000).toUTCString()), undefined, 'holds unreadable, young: served')
  t.equal(lastModifiedRefusal(st2, undefined)?.code, UNAVAILABLE, 'holds unreadable, no Last-Modified: 503')
  const held = gateContext([BY_NAS], () => now, async () => ({ ok: true, holds: [hold({ prefix: '/lm/a/' })] }))
  const st3 = gateState('/lm/a/b.wav')
  t.equal(await stage(held, '/lm/a/b.wav', st3), 'passed')
  t.equal(lastModifiedRefusal(st3, 'Thu, 01 Jan 1970 00:00:00 GMT'), undefined, 'held: served however old')
})

t.test('on a folding NAS a rule matches every spelling the NAS resolves to the recording; under posix only its bytes', async (t) => {
  const rules = compileRetention([DAILY])
  const spellings = [
    '/MEDICALL/2016/03/14/x.wav',
    '/MediCall/2016/03/14/x.wav',
    '/medicall/\uff12\uff10\uff11\uff16/\uff10\uff13/\uff11\uff14/x.wav', // fullwidth digits
    '/\uff4d\uff45\uff44\uff49\uff43\uff41\uff4c\uff4c/2016/03/14/x.wav' // fullwidth letters
  ]
  for (const p of spellings) {
    const f = retentionOf(rules, segs(p), 'folding')
    t.equal(f.kind, 'dated', `${p}: dated under folding`)
    t.equal(f.kind === 'dated' && f.date, '2016-03-14', `${p}: the date read through the fold`)
    t.equal(f.kind === 'dated' && f.expiresAt, Date.UTC(2016, 2, 15) + 30 * DAY_MS, `${p}: the same expiry as the canonical spelling`)
    t.same(retentionOf(rules, segs(p), 'posix'), { kind: 'none' }, `${p}: not matched under posix`)
  }
  t.equal(retentionOf(rules, segs('/medicall/2016/03/14/x.wav'), 'posix').kind, 'dated', 'the canonical spelling under posix')
})

t.test('compileRetention and the config refuse what is not a retention path, naming the key', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['/home/{sub}/**', /\{sub\} is not a date field/],
    ['/medicall/{yyyy}/{dd}/**', /\{dd\} needs \{mm\}/],
    ['/medicall/{mm}/{dd}/**', /\{mm\} needs \{yyyy\}/],
    ['/medicall/{mm}/**', /\{mm\} needs \{yyyy\}/],
    ['/medicall//x', /empty segment/],
    ['/medicall/../x', /dot segments/],
    ['/medicall/x{yyyy}/**', /whole segment/]
  ]
  for (const [path, why] of bad) {
    t.throws(() => compileRetention([{ path: '/ok/**', keepDays: 1 }, { path, keepDays: 1 }]), { message: new RegExp(`^retention\\[1\\]\\.path: .*${why.source}`) }, `${path}: refused`)
  }
  t.doesNotThrow(() => compileRetention([{ path: '/a/{yyyy}/**', keepDays: 1 }, { path: '/b/{yyyy}/{mm}/x/{dd}/*.wav', keepDays: 1 }]))

  const certs = testCerts()
  const base = (retention: unknown): Record<string, unknown> => ({
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: 'x'.repeat(32) } },
    policy: [{ name: 'r', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: join(mkdtempSync(join(tmpdir(), 'nasguard-ret-')), 'audit') },
    retention
  })
  const problems = (retention: unknown): Array<{ key: string, reason: string }> => {
    try {
      loadConfig({ object: base(retention), env: {} })
    } catch (err) {
      if (err instanceof ConfigError) return err.problems
      throw err
    }
    return []
  }
  const first = problems([{ path: '/home/{sub}/**', keepDays: 1 }])
  t.same(first.map((p) => p.key), ['retention[0].path'])
  t.match(first[0].reason, /\{sub\} is not a date field/)
  t.throws(() => loadConfig({ object: base([{ path: '/home/{sub}/**', keepDays: 1 }]), env: {} }), /retention\[0\]\.path/, 'the thrown message names retention[0].path')
  const second = problems([{ path: '/ok/**', keepDays: 1 }, { path: '/m/{dd}/**', keepDays: 1 }])
  t.same(second.map((p) => p.key), ['retention[1].path'], 'the second rule is named by its own index')
  t.notMatch(second[0].reason, /retention\[/, 'the reason does not repeat a key')
  t.same(problems([{ path: '/a/**', keepDays: -1 }]).map((p) => p.key), ['retention[0].keepDays'])
  t.same(problems([{ path: 'a/**', keepDays: 1 }]).map((p) => p.key), ['retention[0].path'])
  t.same(problems([{ name: 'x', path: '/a/**', keepDays: 1 }, { name: 'x', path: '/b/**', keepDays: 1 }]).map((p) => p.key), ['retention[1].name'])
  t.same(problems([{ path: '/a/{yyyy}/**', keepDays: 1 }]), [], 'a good rule loads')
})

// ---- Holds ----------------------------------------------------------------------

function hold (o: Partial<Hold> = {}): Hold {
  return { case: 'K-1', prefix: '/medicall/2016/03/', reason: 'litigation', at: '2024-01-01T00:00:00.000Z', by: 'ops', ...o }
}

t.test('prefixMeets: segment by segment, the last prefix segment may be partial, folding compares fold keys', async (t) => {
  const rows: Array<[string, string, 'posix' | 'folding', boolean, boolean]> = [
    // prefix, path, mode, whole (a recording), meets
    ['/medicall/2016/03/', '/medicall/2016/03/14/x.wav', 'posix', true, true],
    ['/medicall/2016/03', '/medicall/2016/03/14/x.wav', 'posix', true, true],
    ['/medicall/2016/03/14/46701234567', '/medicall/2016/03/14/46701234567-0930.wav', 'posix', true, true],
    ['/medicall/2016/0', '/medicall/2016/03/14/x.wav', 'posix', true, true],
    ['/', '/medicall/2016/03/14/x.wav', 'posix', true, true],
    ['/medicall/2016/03/14/x.wav', '/medicall/2016/03/14/x.wav', 'posix', true, true],
    ['/medicall/2016/04/', '/medicall/2016/03/14/x.wav', 'posix', true, false],
    ['/medicall/2016/03/14/46701234567', '/medicall/2016/03/14/46709999999.wav', 'posix', true, false],
    // A partial segment only in last place: /medi/ is a whole segment.
    ['/medi/2016/', '/medicall/2016/03/14/x.wav', 'posix', true, false],
    ['/medicall/2016/03/14/x.wav/', '/medicall/2016/03/14/x.wav', 'posix', true, false],
    ['/medicall/2016/03/14/x.wav.bak', '/medicall/2016/03/14/x.wav', 'posix', true, false],
    // Not a string prefix: 2016/1 does not hold 2016/10 of another tree.
    ['/medicall/2016/1/', '/medicall/2016/10/01/x.wav', 'posix', true, false],
    // Case: only folding.
    ['/MEDICALL/2016/03/', '/medicall/2016/03/14/x.wav', 'posix', true, false],
    ['/MEDICALL/2016/03/', '/medicall/2016/03/14/x.wav', 'folding', true, true],
    ['/medicall/2016/03/', '/MEDICALL/2016/03/14/x.wav', 'folding', true, true],
    ['/medicall/2016/03/14/ABC', '/medicall/2016/03/14/abcdef.wav', 'folding', true, true],
    ['/medicall/2016/03/14/ABC', '/medicall/2016/03/14/abcdef.wav', 'posix', true, false],
    ['/medicall/\uff12\uff10\uff11\uff16/', '/medicall/2016/03/14/x.wav', 'folding', true, true],
    // A directory (whole: false): either may start the other.
    ['/medicall/2016/03/14/4670', '/medicall/2016/03', 'posix', false, true],
    ['/medicall/2016/03/14/4670', '/medicall/2016/03', 'posix', true, false],
    ['/medicall/2016/04/', '/medicall/2016/03', 'posix', false, false]
  ]
  for (const [prefix, path, mode, whole, want] of rows) {
    t.equal(prefixMeets(prefix, segs(path), mode, whole), want, `${prefix} ${want ? 'meets' : 'does not meet'} ${path} (${mode}${whole ? '' : ', directory'})`)
  }
})

t.test('holdsOn: the holds in force whose prefix starts the path; a lapsed one does not count', async (t) => {
  const now = Date.UTC(2024, 5, 1)
  const path = segs('/medicall/2016/03/14/46701234567-0930.wav')
  const month = hold({ case: 'month' })
  const caller = hold({ case: 'caller', prefix: '/medicall/2016/03/14/46701234567' })
  const other = hold({ case: 'other', prefix: '/medicall/2016/04/' })
  const lapsed = hold({ case: 'lapsed', until: new Date(now).toISOString() })
  const lapsing = hold({ case: 'lapsing', until: new Date(now + 1).toISOString() })
  t.same(holdsOn([month, caller, other, lapsed, lapsing], path, 'posix', now).map((h) => h.case), ['month', 'caller', 'lapsing'])
  t.same(holdsOn([lapsed], path, 'posix', now), [], 'until == now: lapsed')
  t.same(holdsOn([], path, 'posix', now), [])
  t.ok(inForce(hold(), now + 100 * 365 * DAY_MS), 'no until: in force until released')
  t.ok(inForce(lapsing, now), 'in force the millisecond before until')
  t.notOk(inForce(lapsing, now + 1), 'lapsed at until')
})

t.test('prefixProblem: what hold add refuses', async (t) => {
  const rows: Array<[string, 'posix' | 'folding', RegExp | undefined]> = [
    ['/medicall/2016/03/', 'folding', undefined],
    ['/medicall/2016/03/14/46701234567', 'folding', undefined],
    ['/', 'posix', undefined],
    ['medicall/2016/', 'posix', /start with \//],
    ['/medicall//2016/', 'posix', /empty segment/],
    ['/medicall/../secret/', 'posix', /\. or \.\. segment/],
    ['/medicall/./2016/', 'posix', /\. or \.\. segment/],
    ['/medicall/2016\n/', 'posix', /control character/],
    ['/' + 'a'.repeat(1024), 'posix', /longer than 1024/],
    ['/medicall/PRIVAT~1/', 'folding', /resolves differently/],
    ['/medicall/2016./', 'folding', /resolves differently/],
    ['/medicall/2016./', 'posix', undefined],
    ['/medicall/x::$DATA', 'folding', /resolves differently/],
    // Compared with decoded, NFC names: an encoded or decomposed prefix would hold nothing.
    ['/medicall/Anna%20S%C3%B6der/', 'posix', /% is refused/],
    ['/medicall/So\u0308der/', 'posix', /NFC/],
    ['/medicall/S\u00f6der/', 'posix', undefined]
  ]
  for (const [prefix, mode, want] of rows) {
    const p = prefixProblem(prefix, mode)
    if (want === undefined) t.equal(p, undefined, `${JSON.stringify(prefix)} (${mode}): accepted`)
    else t.match(p, want, `${JSON.stringify(prefix)} (${mode}): ${want.source}`)
  }
})

t.test('unsealHolds trusts only a whole document sealed with this key', async (t) => {
  const key = holdsKeyOf(Buffer.from('a'.repeat(64)))
  const otherKey = holdsKeyOf(Buffer.from('b'.repeat(64)))
  t.notSame(key, Buffer.from('a'.repeat(64)), 'the holds key is derived, not the audit key itself')
  const doc: HoldsDoc = { version: 1, generation: 3, holds: [hold(), hold({ case: 'K-2', prefix: '/medicall/2016/04/', until: '2030-01-01T00:00:00.000Z' })] }
  const text = sealHolds(doc, key)
  t.same(unsealHolds(text, key, 'f'), doc, 'round trip')
  const stored = JSON.parse(text) as Record<string, unknown> & { holds: Array<Record<string, unknown>> }
  const edit = (fn: (v: typeof stored) => void): string => { const v = structuredClone(stored); fn(v); return JSON.stringify(v) }
  const bad: Array<[string, string, RegExp]> = [
    ['another key', text, /does not verify/],
    ['a prefix narrowed', edit((v) => { v.holds[0].prefix = '/medicall/2016/03/15/' }), /does not verify/],
    ['a hold removed', edit((v) => { v.holds.pop() }), /does not verify/],
    ['a lapse added', edit((v) => { v.holds[0].until = '2000-01-01T00:00:00.000Z' }), /does not verify/],
    ['the generation rolled back', edit((v) => { v.generation = 2 }), /does not verify/],
    ['the holds reordered', edit((v) => { v.holds.reverse() }), /does not verify/],
    ['the MAC flipped', edit((v) => { v.mac = (v.mac as string).replace(/^./, (c) => c === '0' ? '1' : '0') }), /does not verify/],
    ['the MAC in upper case', edit((v) => { v.mac = (v.mac as string).toUpperCase() }), /does not verify/],
    ['the MAC missing', edit((v) => { delete v.mac }), /fields missing/],
    ['a hold without its prefix', edit((v) => { delete v.holds[0].prefix }), /fields missing/],
    ['until not a string', edit((v) => { v.holds[0].until = 0 }), /fields missing/],
    ['version 2', edit((v) => { v.version = 2 }), /fields missing/],
    ['torn', text.slice(0, text.length >> 1), /not JSON/],
    ['empty', '', /not JSON/],
    ['null', 'null', /fields missing/],
    ['an array', '[]', /fields missing/]
  ]
  for (const [what, body, why] of bad) {
    const k = what === 'another key' ? otherKey : key
    t.throws(() => unsealHolds(body, k, 'the file'), HoldsProblem, `${what}: a HoldsProblem`)
    try { unsealHolds(body, k, 'the file') } catch (err) { t.match((err as Error).message, why, `${what}: ${why.source}`) }
  }
  // The object's own key order is not what the MAC covers: a re-serialisation with fields reordered still verifies (the canonical body does).
  const reordered = JSON.stringify({ mac: stored.mac, holds: stored.holds.map((h) => Object.fromEntries(Object.entries(h).reverse())), generation: stored.generation, version: stored.version })
  t.same(unsealHolds(reordered, key, 'f'), doc, 'fields in another order within the JSON: the same document')
})

t.test('a hold whose until does not parse is not silently lapsed', async (t) => {
  const key = holdsKeyOf(Buffer.from('a'.repeat(64)))
  const doc: HoldsDoc = { version: 1, generation: 1, holds: [hold({ until: '31.12.2030' })] }
  let trusted: HoldsDoc | undefined
  try { trusted = unsealHolds(sealHolds(doc, key), key, 'f') } catch (err) { t.type(err, HoldsProblem, 'refused as a problem: fine') }
  if (trusted) t.ok(inForce(trusted.holds[0], Date.UTC(2024, 0, 1)), 'kept in force: holds err on holding more')
})

t.test('fileHoldsStore: missing file is no holds, changes compare-and-swap, and HoldView sees a change only after its second', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-holds-'))
  const file = join(dir, 'legal-holds.json')
  const key = holdsKeyOf(Buffer.from('c'.repeat(64)))
  const store = fileHoldsStore(file)
  t.equal(await loadHolds(store, key), undefined, 'no file: no document')
  const { before, after } = await changeHolds(store, key, (d) => ({ ...d, holds: [...d.holds, hold()] }))
  t.same(before, EMPTY_HOLDS)
  t.equal(after.generation, 1)
  t.same((await loadHolds(store, key))?.holds, [hold()])
  const stale = await store.read()
  await changeHolds(store, key, (d) => ({ ...d, holds: [] }))
  t.equal(await store.replace(stale, 'x'), false, 'a replace against a stale text is refused')
  t.equal((await loadHolds(store, key))?.generation, 2)

  const cached = new HoldView(store, key, 600_000)
  const fresh = new HoldView(store, key, 0)
  t.same(await cached.current(), { ok: true, holds: [] })
  t.same(await fresh.current(), { ok: true, holds: [] })
  await changeHolds(store, key, (d) => ({ ...d, holds: [hold()] }))
  t.same(await cached.current(), { ok: true, holds: [] }, 'cached within its ttl')
  t.same(await fresh.current(), { ok: true, holds: [hold()] }, 'read again after it')
  writeFileSync(file, 'garbage')
  const broken = await fresh.current()
  t.equal(broken.ok, false, 'a document that does not verify: not ok, never "no holds"')
  t.match(!broken.ok && broken.problem, /not JSON/)
})

t.test('HoldView with a floor: a document older than the floor is refused; a floor that cannot be read keeps every document untrusted, and is asked again only after its retry time', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-holds-'))
  const key = holdsKeyOf(Buffer.from('d'.repeat(64)))
  const store = fileHoldsStore(join(dir, 'legal-holds.json'))
  await changeHolds(store, key, (d) => ({ ...d, holds: [hold()] }))
  await changeHolds(store, key, (d) => ({ ...d, holds: [] }))

  const above = await new HoldView(store, key, 0, async () => 3).current()
  t.equal(above.ok, false, 'generation 2 under a floor of 3: not trusted')
  t.match(!above.ok && above.problem, /went back from generation 3 to 2/)
  t.same(await new HoldView(store, key, 0, async () => 2).current(), { ok: true, holds: [] }, 'at the floor: trusted')
  t.same(await new HoldView(store, key, 0, async () => 0).current(), { ok: true, holds: [] }, 'a floor of 0 (nothing recorded): trusted')

  let asked = 0
  let answer: number | string = 'the ops chain does not verify'
  const slow = new HoldView(store, key, 0, async () => { asked++; return answer }, 600_000)
  for (let i = 0; i < 3; i++) {
    const now = await slow.current()
    t.equal(now.ok, false, `read ${i + 1}: not trusted while the floor is unknown`)
    t.match(!now.ok && now.problem, /does not verify/)
  }
  t.equal(asked, 1, 'a floor that could not be read is not asked again within its retry time')
  answer = 2
  t.equal((await slow.current()).ok, false, 'still the remembered problem within the retry time')
  t.equal(asked, 1)

  const eager = new HoldView(store, key, 0, async () => { asked++; if (asked < 3) throw new Error('EACCES'); return answer }, 0)
  const thrown = await eager.current()
  t.equal(thrown.ok, false, 'a floor that throws: not trusted, no rejection')
  t.match(!thrown.ok && thrown.problem, /cannot be read: EACCES/)
  t.same(await eager.current(), { ok: true, holds: [] }, 'asked again after its retry time (0 here), and known: trusted')
  t.equal(asked, 3, 'the floor, once known, is not asked again')
  await eager.current()
  t.equal(asked, 3)
})
