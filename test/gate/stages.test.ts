// Each stage of the gate on its own, without sockets: what it passes, what
// it refuses (and with which catalogued error), and what it leaves in the
// request state. The same stages are attacked through real sockets in
// test/security/.
import t from 'tap'
import type { SealingSettings } from '../../src/sealing/settings.js'
import { Errors } from '../../src/errors.js'
import { compileRules } from '../../src/policy/rules.js'
import { Admission } from '../../src/proxy/admission.js'
import { methodAndFraming } from '../../src/gate/framing.js'
import { canonicalTarget } from '../../src/gate/canonical-path.js'
import { identify } from '../../src/gate/identity.js'
import { authorize } from '../../src/gate/policy.js'
import { guardFile } from '../../src/gate/file-guard.js'
import { checkRangeHeader } from '../../src/gate/range.js'
import { admit } from '../../src/gate/admission.js'
import { chargeBudget } from '../../src/gate/budget.js'
import type { Charge } from '../../src/budgets/book.js'
import { recordAccess } from '../../src/gate/access-record.js'
import { grantsMethod } from '../../src/gate/grants-method.js'
import { resolveSealing } from '../../src/gate/sealing.js'
import { sealedPathOf } from '../../src/sealing/names.js'
import { makeKeyring, PATTERN } from '../helpers/sealed-nas.js'
import { compilePeriodPattern, recentPeriods } from '../../src/sealing/period.js'
import { RECORDING_GATE, runGate } from '../../src/gate/stages.js'
import type { GateContext, GateRequest, RequestState } from '../../src/gate/state.js'
import type { AuditRecord } from '../../src/audit/writer.js'
import type { Identity } from '../../src/auth/identity.js'

const ALICE: Identity = { method: 'jwt', subject: 'alice', jti: 'j1', grantee: { scopes: new Set(['recordings:read']) } }

function request (o: Partial<GateRequest> = {}): GateRequest {
  return {
    id: 'req-1',
    method: 'GET',
    url: '/medicall/2016/01/01/083012_46701234567.wav',
    headers: { host: 'gw' },
    rawHeaders: ['Host', 'gw'],
    httpVersion: '1.1',
    authenticate: async () => ALICE,
    turn: async () => {},
    ...o
  }
}

function state (o: Partial<RequestState> = {}): RequestState {
  return { started: 0n, client: { clientIp: '192.0.2.1' }, fetch: false, bytes: 0, closed: false, ...o }
}

function context (o: { records?: AuditRecord[], recordOk?: boolean, fileSystem?: 'posix' | 'folding', clientFetches?: number, sealing?: SealingSettings } = {}): GateContext {
  const live = {
    rules: compileRules([
      { name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] },
      { name: 'stockholm', path: '/stockholm/**', methods: ['GET'], scopes: ['recordings:read:stockholm'] }
    ] as never),
    extensions: new Set(['.wav', '.mp3']),
    maxPathLength: 256,
    maxRanges: 1,
    maxUploadBytes: 1 << 20,
    sendTimeoutMs: 60000,
    minSendRate: 1024,
    retention: [],
    budgets: new Map(),
    budgetStoreError: 'closed' as const
  }
  return {
    live: () => live,
    fileSystem: o.fileSystem ?? 'posix',
    admission: new Admission({ connections: 4, queueTimeoutMs: 1000, clientFetches: o.clientFetches ?? 2 }),
    record: async (r) => { o.records?.push(r); return o.recordOk ?? true },
    sealing: () => o.sealing,
    periodKey: (period, upload) => upload ? o.sealing?.keyring.sealingKey(period) : o.sealing?.keyring.key(period),
    holds: async () => ({ ok: true, holds: [] }),
    now: Date.now,
    charge: () => ({ ok: true })
  }
}

/** A stage's refusal: its code, or 'passed'. */
async function outcome (run: () => void | Promise<void>): Promise<string> {
  try {
    await run()
    return 'passed'
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
}

t.test('method and framing', async (t) => {
  const bigHeaders = Array.from({ length: 129 }, (_, i) => [`x-${i}`, 'v']).flat()
  const cases: Array<[string, Partial<GateRequest>, string]> = [
    ['a GET', {}, 'passed'],
    ['a HEAD', { method: 'HEAD' }, 'passed'],
    ['a POST', { method: 'POST' }, Errors.MethodNotAllowed.spec.code],
    ['a DELETE', { method: 'DELETE' }, Errors.MethodNotAllowed.spec.code],
    ['a PUT without a body', { method: 'PUT' }, Errors.UploadType.spec.code],
    ['a PUT with a Content-Length', { method: 'PUT', headers: { host: 'gw', 'content-length': '5' } }, 'passed'],
    ['a chunked PUT', { method: 'PUT', headers: { host: 'gw', 'transfer-encoding': 'chunked' } }, 'passed'],
    ['an HTTP/2 PUT with a body', { method: 'PUT', httpVersion: '2.0', headers: {}, endAfterHeaders: false }, 'passed'],
    ['a PUT over limits.maxUploadBytes', { method: 'PUT', headers: { host: 'gw', 'content-length': String((1 << 20) + 1) } }, Errors.UploadTooLarge.spec.code],
    ['a PUT with a Content-Length that is not a number', { method: 'PUT', headers: { host: 'gw', 'content-length': '5e3' } }, Errors.BadRequest.spec.code],
    ['a partial PUT', { method: 'PUT', headers: { host: 'gw', 'content-length': '5', 'content-range': 'bytes 0-4/10' } }, Errors.BadRequest.spec.code],
    ['a content-encoded PUT', { method: 'PUT', headers: { host: 'gw', 'content-length': '5', 'content-encoding': 'gzip' } }, Errors.UploadType.spec.code],
    ['Transfer-Encoding', { headers: { host: 'gw', 'transfer-encoding': 'chunked' } }, Errors.BadRequest.spec.code],
    ['a Content-Length body', { headers: { host: 'gw', 'content-length': '5' } }, Errors.BadRequest.spec.code],
    ['Content-Length: 0', { headers: { host: 'gw', 'content-length': '0' } }, 'passed'],
    ['an HTTP/2 stream left open for a body', { httpVersion: '2.0', headers: {}, endAfterHeaders: false }, Errors.BadRequest.spec.code],
    ['an HTTP/2 stream ended by its headers, no host', { httpVersion: '2.0', headers: {}, endAfterHeaders: true }, 'passed'],
    ['Upgrade', { headers: { host: 'gw', upgrade: 'websocket' } }, Errors.BadRequest.spec.code],
    ['HTTP/1.1 without Host', { headers: {} }, Errors.BadRequest.spec.code],
    ['HTTP/1.0 without Host', { headers: {}, httpVersion: '1.0' }, 'passed'],
    ['129 header fields', { rawHeaders: bigHeaders }, Errors.HeadersTooLarge.spec.code],
    ['17 KiB of headers', { rawHeaders: ['authorization', 'x'.repeat(17 * 1024)] }, Errors.HeadersTooLarge.spec.code]
  ]
  for (const [name, o, want] of cases) t.equal(await outcome(() => methodAndFraming(request(o), state(), context())), want, name)
})

t.test('canonical path', async (t) => {
  const s = state()
  canonicalTarget(request({ url: '/medicall/2016/a%20b.wav?x=1' }), s, context())
  t.equal(s.path, '/medicall/2016/a%20b.wav', 'the canonical path, without the query')
  t.same(s.segments, ['medicall', '2016', 'a b.wav'])
  const cases: Array<[string, string, 'posix' | 'folding', string]> = [
    ['dot segments', '/medicall/../etc/passwd.wav', 'posix', Errors.BadPath.spec.code],
    ['an encoded slash', '/medicall%2f..%2fx.wav', 'posix', Errors.BadPath.spec.code],
    ['a backslash', '/medicall\\x.wav', 'posix', Errors.BadPath.spec.code],
    ['too long', `/medicall/${'a'.repeat(300)}.wav`, 'posix', Errors.BadPath.spec.code],
    ['a trailing dot on a folding NAS', '/medicall/a.wav.', 'folding', Errors.BadPath.spec.code],
    ['::$DATA on a folding NAS', '/medicall/a.wav::$DATA', 'folding', Errors.BadPath.spec.code],
    ['an 8.3 short name on a folding NAS', '/medicall/RECORD~1.WAV', 'folding', Errors.BadPath.spec.code],
    ['a plain name on a folding NAS', '/medicall/a.wav', 'folding', 'passed']
  ]
  for (const [name, url, fs, want] of cases) t.equal(await outcome(() => canonicalTarget(request({ url }), state(), context({ fileSystem: fs }))), want, name)
})

t.test('identity: the request\'s credential, verified; a refusal passes through', async (t) => {
  const s = state({ path: '/medicall/a.wav' })
  let asked = ''
  await identify(request({ authenticate: async (p) => { asked = p; return ALICE } }), s, context())
  t.equal(asked, '/medicall/a.wav', 'checked for the canonical path')
  t.equal(s.identity, ALICE)
  t.equal(await outcome(() => identify(request({ authenticate: async () => { throw new Errors.TokenMissing() } }), state({ path: '/x' }), context())), Errors.TokenMissing.spec.code)
})

t.test('policy', async (t) => {
  const ok = state({ identity: ALICE, segments: ['medicall', 'a.wav'] })
  authorize(request(), ok, context())
  t.equal(ok.rule, 'recordings')
  const denied = state({ identity: ALICE, segments: ['stockholm', 'a.wav'] })
  let err: unknown
  try { authorize(request(), denied, context()) } catch (e) { err = e }
  t.equal((err as { code: string }).code, Errors.InsufficientScope.spec.code)
  t.same((err as { required: string[] }).required, ['recordings:read:stockholm'], 'names the scopes needed')
  t.equal(denied.deniedBy, 'stockholm', 'the rule whose scopes were missing')
  t.equal(denied.rule, undefined)
  const cases: Array<[string, Partial<GateRequest>, string[], string]> = [
    ['no rule', {}, ['finance', 'a.wav'], Errors.NoRule.spec.code],
    ['a method the rule does not allow', { method: 'HEAD' }, ['stockholm', 'a.wav'], Errors.MethodNotAllowed.spec.code]
  ]
  for (const [name, o, segments, want] of cases) t.equal(await outcome(() => authorize(request(o), state({ identity: ALICE, segments }), context())), want, name)
  t.equal(await outcome(() => authorize(request(), state({ segments: ['medicall', 'a.wav'] }), context())), Errors.Internal.spec.code, 'no identity: never allowed')
})

t.test('listing and file-type guard', async (t) => {
  const s = state({ segments: ['medicall', 'a.WAV'] })
  guardFile(request(), s, context())
  t.equal(s.extension, '.wav')
  const cases: Array<[string, string[], string]> = [
    ['a directory (trailing slash)', ['medicall', '2016', ''], Errors.Directory.spec.code],
    ['no extension', ['medicall', '2016'], Errors.Directory.spec.code],
    ['a hidden name', ['medicall', '.secret.wav'], Errors.HiddenPath.spec.code],
    ['a type outside files.extensions', ['medicall', 'a.exe'], Errors.FileType.spec.code]
  ]
  for (const [name, segments, want] of cases) t.equal(await outcome(() => guardFile(request(), state({ segments }), context())), want, name)
  const refused = state({ segments: ['medicall', 'a.txt'], rule: 'recordings' })
  await outcome(() => guardFile(request(), refused, context()))
  t.equal(refused.rule, undefined, 'refused here: no rule allowed it (records and metrics say none)')
})

t.test('range', async (t) => {
  const cases: Array<[string, string | undefined, string]> = [
    ['none', undefined, 'passed'],
    ['one range', 'bytes=0-99', 'passed'],
    ['two ranges over limits.maxRanges', 'bytes=0-1,5-9', Errors.BadRange.spec.code],
    ['not bytes', 'items=0-1', Errors.BadRange.spec.code],
    ['malformed', 'bytes=x-y', Errors.BadRange.spec.code]
  ]
  for (const [name, range, want] of cases) t.equal(await outcome(() => checkRangeHeader(request({ headers: { host: 'gw', ...(range ? { range } : {}) } }), state(), context())), want, name)
})

t.test('admission: waits its turn, takes a NAS connection within the client\'s share', async (t) => {
  const ctx = context({ clientFetches: 2 })
  let turned = false
  const first = state()
  await admit(request({ turn: async () => { turned = true } }), first, ctx)
  t.ok(turned, 'a pipelined request waits for the responses before it')
  t.ok(first.ticket, 'a NAS connection')
  await admit(request(), state(), ctx)
  t.equal(await outcome(() => admit(request(), state(), ctx)), Errors.ClientBusy.spec.code, 'a third from the same client: 429')
  t.equal(await outcome(() => admit(request(), state({ client: { clientIp: '192.0.2.2' } }), ctx)), 'passed', 'another client is not held back')
  const gone = state()
  await admit(request({ turn: async () => { gone.closed = true } }), gone, ctx)
  t.equal(gone.ticket, undefined, 'a client that left while it waited takes no connection')
  first.ticket?.release()
  t.equal(await outcome(() => admit(request(), state(), ctx)), 'passed', 'released: the client may fetch again')
})

t.test('budget: charged to the identity\'s ledger; on a folding NAS every case spelling of a recording is one recording', async (t) => {
  const charged = async (url: string, fileSystem: 'posix' | 'folding', identity: Identity = ALICE, method = 'GET'): Promise<Charge | undefined> => {
    const base = context({ fileSystem })
    const live = { ...base.live(), budgets: new Map([['recordings', { recordingsPerHour: 5 }]]) }
    let got: Charge | undefined
    const ctx: GateContext = { ...base, live: () => live, charge: (c) => { got = c; return { ok: true } } }
    const s = state({ identity, rule: 'recordings' })
    canonicalTarget(request({ url, method }), s, ctx)
    await chargeBudget(request({ url, method }), s, ctx)
    t.equal(s.charged, got?.subject, 'the state names the ledger charged')
    return got
  }
  t.same(await charged('/medicall/a.wav', 'posix'), { subject: 't:alice', recording: '/medicall/a.wav' })
  t.same(await charged('/medicall/a.wav', 'posix', { method: 'mtls', subject: 'CN=alice', grantee: { cert: 'CN=alice' } }), { subject: 'c:CN=alice', recording: '/medicall/a.wav' }, 'a certificate has a ledger of its own')
  t.same(await charged('/medicall/a.wav', 'posix', { method: 'grant', subject: 'CN=alice', grantee: { grantRule: 'recordings', basis: { cert: 'CN=alice' } } }), { subject: 'c:CN=alice', recording: '/medicall/a.wav' }, "a grant minted with a certificate is charged to the certificate's ledger")
  t.same(await charged('/medicall/a.wav', 'posix', { method: 'grant', subject: 'alice', grantee: { grantRule: 'recordings', basis: { scopes: new Set(['recordings:read']) } } }), { subject: 't:alice', recording: '/medicall/a.wav' }, "a grant minted with a token, to the token's")
  t.same(await charged('/medicall/a.wav', 'posix', ALICE, 'HEAD'), { subject: 't:alice' }, 'a HEAD charges a request, not a recording')
  const key = async (url: string, fs: 'posix' | 'folding'): Promise<string | undefined> => (await charged(url, fs))?.recording
  t.not(await key('/medicall/A.wav', 'posix'), await key('/medicall/a.wav', 'posix'), 'posix: two names, two recordings')
  t.equal(await key('/MEDICALL/A.WAV', 'folding'), await key('/medicall/a.wav', 'folding'), 'folding: case spellings are one recording')
  t.equal(await key('/medicall/%C3%89ric.wav', 'folding'), await key('/medicall/%C3%A9ric.wav', 'folding'), 'folding: also beyond ASCII (É and é)')
  t.not(await key('/medicall/Strau%C3%9F.wav', 'folding'), await key('/medicall/Strauss.wav', 'folding'), 'folding: ß and ss stay two recordings, as they are two files on the NAS')
})

t.test('access record: on disk first, or 503', async (t) => {
  const records: AuditRecord[] = []
  const s = state({ path: '/medicall/a.wav', identity: ALICE, rule: 'recordings' })
  await recordAccess(request({ headers: { host: 'gw', range: 'bytes=0-9', 'user-agent': 'ua' } }), s, context({ records }))
  t.ok(s.accessRecorded)
  t.match(records[0], { event: 'access', requestId: 'req-1', clientIp: '192.0.2.1', method: 'GET', path: '/medicall/a.wav', range: 'bytes=0-9', subject: 'alice', auth: 'jwt', jti: 'j1', rule: 'recordings', userAgent: 'ua' })
  const failed = state({ path: '/medicall/a.wav' })
  t.equal(await outcome(() => recordAccess(request(), failed, context({ recordOk: false }))), Errors.AuditUnavailable.spec.code)
  t.notOk(failed.accessRecorded)
})

t.test('sealing: the period and its key, the NAS\'s name; an upload needs a period with a recent or existing key and no number in a readable directory', async (t) => {
  const [cur] = recentPeriods('month', new Date())
  const keys = makeKeyring(['2016-01'])
  const ring = keys.ring()
  const settings = (segments: number, makeKeys: boolean): SealingSettings => ({ mode: 'require', pattern: compilePeriodPattern(PATTERN, 'month'), keyring: ring, nameSegments: segments, makeKeys, sealedPath: (_, segs) => sealedPathOf(ring.nameKey, segs, segments) })
  const run = (method: string, path: string, segments = 1, makeKeys = true): RequestState => {
    const s = state({ path, segments: path.split('/').slice(1) })
    resolveSealing(request({ method, url: path }), s, context({ sealing: settings(segments, makeKeys) }))
    return s
  }
  const read = run('GET', '/medicall/2016/01/01/083012_46701234567.wav')
  t.match(read.sealed, { period: '2016-01', path: /^\/medicall\/2016\/01\/01\/[a-z2-7]{20,}\.age$/ }, 'a read: its sealed name, the number gone')
  const up = `/medicall/${cur.replace('-', '/')}/01`
  t.match(run('PUT', `${up}/083012_46701234567.wav`).sealed, { period: cur, keyId: `${cur}:new` }, 'an upload into the current period, before its key exists')
  t.equal(await outcome(() => { run('PUT', `${up}/083012_46701234567.wav`, 1, false) }), Errors.PeriodKeyMissing.spec.code, 'a gateway that makes no keys (makeKeysOnUpload: false) refuses an upload into a recent period without one')
  t.equal(await outcome(() => { run('PUT', '/medicall/1999/01/01/a.wav', 1, false) }), Errors.UploadPeriod.spec.code, 'and an old period is still an upload_period refusal')
  t.match(run('PUT', '/medicall/2016/01/01/a.wav', 1, false).sealed, { period: '2016-01' }, 'a period whose key is there is taken')
  const refused: Array<[string, string, number, string]> = [
    ['GET', '/medicall/misc/a.wav', 1, Errors.NoPeriod.spec.code],
    ['PUT', '/medicall/misc/a.wav', 1, Errors.UploadPath.spec.code],
    ['PUT', '/medicall/1999/01/01/a.wav', 1, Errors.UploadPeriod.spec.code],
    ['PUT', `${up}/46701234567/a.wav`, 1, Errors.UploadReadableNumber.spec.code],
    ['PUT', `${up}/46701234567/x/a.wav`, 2, Errors.UploadReadableNumber.spec.code]
  ]
  for (const [method, path, segments, code] of refused) t.equal(await outcome(() => { run(method, path, segments) }), code, `${method} ${path} (names.segments ${segments}): ${code}`)
  t.ok(run('PUT', `${up}/46701234567/a.wav`, 2).sealed, 'a per-caller folder, sealed with names.segments 2, is taken')
  t.ok(run('PUT', `${up}/20261129_101500/a.wav`).sealed, 'a date and time directory is taken')
})

t.test('the grants endpoint\'s first stage: POST only', async (t) => {
  const s = state()
  grantsMethod(request({ method: 'POST' }), s, context())
  t.equal(s.path, '/_nasguard/grants')
  t.equal(await outcome(() => grantsMethod(request({ method: 'GET' }), state(), context())), Errors.MethodNotAllowed.spec.code)
  t.equal(await outcome(() => grantsMethod(request({ method: 'POST', headers: { host: 'gw', upgrade: 'h2c' } }), state(), context())), Errors.BadRequest.spec.code)
  t.equal(await outcome(() => grantsMethod(request({ method: 'POST', headers: {} }), state(), context())), Errors.BadRequest.spec.code, 'HTTP/1.1 without Host')
})

t.test('runGate: every stage in order; the first refusal stops it; a client that left stops it', async (t) => {
  const records: AuditRecord[] = []
  const s = state()
  t.equal(await runGate(RECORDING_GATE, request(), s, context({ records })), 'passed')
  t.equal(s.rule, 'recordings')
  t.equal(s.extension, '.wav')
  t.ok(s.ticket)
  t.equal(records.length, 1, 'the access record, last')

  const none: AuditRecord[] = []
  let authenticated = false
  await t.rejects(runGate(RECORDING_GATE, request({ url: '/medicall/../x.wav', authenticate: async () => { authenticated = true; return ALICE } }), state(), context({ records: none })), { code: Errors.BadPath.spec.code })
  t.notOk(authenticated, 'no stage after the refusal ran')
  t.equal(none.length, 0)

  const left = state()
  t.equal(await runGate(RECORDING_GATE, request({ authenticate: async () => { left.closed = true; return ALICE } }), left, context({ records: none })), 'gone')
  t.equal(left.rule, 'recordings', 'a client that left is still judged')
  t.equal(left.ticket, undefined, 'but takes no NAS connection')
  t.equal(none.length, 0, 'and gets no access record')

  // A denied attempt whose client hung up at once is still refused (and so audited).
  const probe = state()
  await t.rejects(runGate(RECORDING_GATE, request({ url: '/stockholm/a.wav', authenticate: async () => { probe.closed = true; return ALICE } }), probe, context({ records: none })), { code: Errors.InsufficientScope.spec.code })
})
