// Retention through real sockets: TLS, signed tokens, a stub NAS that
// counts what reaches it, HTTP/1.1 and HTTP/2, and the gateway's retention
// clock moved by the test (GatewayOptions.clock).
// - A recording dated by its path is served until the millisecond before
//   it expires and refused with 410 from then on (GET, HEAD, Range), the
//   NAS never asked, audited and counted by rule.
// - A legal hold (the sealed file beside the audit trail) lets it be
//   served; released or lapsed, 410 again; the document rolled back to an
//   older sealed one, or removed, after a newer one was seen: 503; so is
//   one put back before the gateway started, older than the generation
//   this host's ops chain records, and any while that chain does not verify.
// - A holds file that does not verify (edited, torn): 503 for expired
//   recordings, young ones still served.
// - Dated by the NAS's Last-Modified: an old, missing or garbage
//   Last-Modified is a 410 and no byte of the recording reaches the client.
// - Grants: none is minted for an expired recording, and one minted before
//   does not open it after.
// - A NAS that folds names: no spelling of an expired recording is served.
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { OPS_CHAIN } from '../../src/audit/chains.js'
import { loadAuditKey } from '../../src/audit/key.js'
import { auditKeyFile } from '../../src/config/derived.js'
import { loadConfig } from '../../src/config/load.js'
import { holdAdd, holdRelease } from '../../src/retention/commands.js'
import { changeHolds, fileHoldsStore, holdsKeyOf, type Hold, type HoldsDoc } from '../../src/retention/holds.js'
import { DAY_MS } from '../../src/retention/rules.js'
import { DEFAULT_POLICY, RECORDING, bearer, scrape, serveRecording, startStubNas, startTestGateway, testCerts, type GatewayOverrides, type Response, type StubNas, type Teardown, type TestGateway } from '../helpers/gateway.js'
import { startFoldingNas } from '../helpers/folding-nas.js'
import { PROTOCOLS, fetchAs, postAs, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

// A Last-Modified in asctime has no zone and is UTC: read in this zone, it would be hours young.
process.env.TZ = 'America/Los_Angeles'

const EXPIRED = 'NASGUARD_ERR_RETENTION_EXPIRED'
const UNAVAILABLE = 'NASGUARD_ERR_HOLDS_UNAVAILABLE'

const RULES = [
  { name: 'calls', path: '/medicall/{yyyy}/{mm}/{dd}/**', keepDays: 30 },
  { name: 'by-nas', path: '/lm/**', keepDays: 7 }
]
const POLICY = [...DEFAULT_POLICY, { name: 'lm', path: '/lm/**', scopes: ['recordings:read'] }]

/** Made 2016-01-01: its day ends 2016-01-02T00:00Z, kept 30 days after. */
const OLD = '/medicall/2016/01/01/083012_46701234567.wav'
const OLD_EXPIRES = Date.UTC(2016, 0, 2) + 30 * DAY_MS
/** Made two months later: young while OLD expires. */
const YOUNG = '/medicall/2016/03/01/090000_46709999999.wav'

const WAIT = { tries: 1500, intervalMs: 20 }
const METRIC = (rule: string): string => `nasguard_retention_expired_total{rule="${rule}"}`

interface Setup { nas: StubNas, gw: TestGateway, clock: { now: number } }

async function setup (t: Teardown, o: GatewayOverrides = {}, handler = serveRecording, now = OLD_EXPIRES): Promise<Setup> {
  const clock = { now }
  const nas = await startStubNas(t, handler)
  const gw = await startTestGateway(t, nas, { retention: RULES, policy: POLICY, clock: () => clock.now, ...o })
  return { nas, gw, clock }
}

function json (res: Response): Record<string, unknown> {
  return /^application\/json/.test(String(res.headers['content-type'])) ? JSON.parse(res.body.toString()) as Record<string, unknown> : {}
}

/** The holds file and its key, as `nasguard hold` would write it for this gateway's config. */
function holdsOf (gw: TestGateway): { change: (fn: (d: HoldsDoc) => HoldsDoc) => Promise<unknown>, file: string } {
  const file = join(gw.auditDir, 'legal-holds.json')
  const key = holdsKeyOf(loadAuditKey(auditKeyFile({ audit: { dir: gw.auditDir } })))
  return { file, change: async (fn) => await changeHolds(fileHoldsStore(file), key, fn) }
}

function hold (o: Partial<Hold>): Hold {
  return { case: 'CASE-1', prefix: '/medicall/2016/01/', reason: 'litigation', at: new Date().toISOString(), by: 'test', ...o }
}

/** Polls until `path` answers `status` (over HTTP/1.1): a change of holds is seen within the gateway's second of caching. */
async function until (gw: TestGateway, path: string, status: number, what: string): Promise<void> {
  await waitFor(what, async () => (await fetchAs('h1', gw, path, bearer(gw.token()))).status === status ? true : undefined, WAIT)
}

/** A refusal over `proto`: its status and code, and the NAS not asked (unless `nasAsked`). */
async function refused (t: Test, nas: { requests: unknown[] }, send: () => Promise<Response>, status: number, code: string, what: string, nasAsked = 0): Promise<Response> {
  const n = nas.requests.length
  const res = await send()
  t.equal(res.status, status, `${what}: ${status}`)
  if (res.body.length > 0 || !/HEAD/.test(what)) t.equal(json(res).error, code, `${what}: ${code}`)
  t.notOk(res.body.includes(RECORDING.subarray(0, 12)), `${what}: no byte of the recording`)
  t.equal(nas.requests.length, n + nasAsked, `${what}: the NAS asked ${nasAsked} time(s)`)
  return res
}

async function served (t: Test, gw: TestGateway, proto: Protocol, path: string, what: string): Promise<void> {
  const res = await fetchAs(proto, gw, path, bearer(gw.token()))
  t.equal(res.status, 200, `${what}: 200`)
  t.same(res.body, RECORDING, `${what}: the recording`)
}

/** Waits for the refusal records of these request ids. */
async function refusalRecords (gw: TestGateway, ids: unknown[]): Promise<Array<Record<string, unknown>>> {
  return await waitFor(`${ids.length} refusal records`, () => {
    const found = gw.auditRecords().filter((r) => r.event === 'refusal' && ids.includes(r.requestId))
    return found.length === ids.length ? found : undefined
  }, WAIT)
}

const REQUESTS: Array<{ name: string, method: string, headers: Record<string, string> }> = [
  { name: 'GET', method: 'GET', headers: {} },
  { name: 'HEAD', method: 'HEAD', headers: {} },
  { name: 'GET Range', method: 'GET', headers: { range: 'bytes=0-99' } }
]

t.test('dated by its path: served until expiresAt - 1 ms, then 410 without asking the NAS, audited and counted by rule', async (t) => {
  const { nas, gw, clock } = await setup(t, {}, serveRecording, OLD_EXPIRES - 1)
  for (const proto of PROTOCOLS) await served(t, gw, proto, OLD, `${proto}, 1 ms before expiry`)
  const before = (await scrape(gw.adminUrl)).get(METRIC('calls')) ?? 0
  clock.now = OLD_EXPIRES
  const ids: unknown[] = []
  for (const proto of PROTOCOLS) {
    for (const r of REQUESTS) {
      const res = await refused(t, nas, async () => await fetchAs(proto, gw, OLD, { ...bearer(gw.token()), ...r.headers }, r.method), 410, EXPIRED, `${proto} ${r.name} at expiry`)
      t.notOk(res.headers['retry-after'], `${proto} ${r.name}: no Retry-After, it will not come back`)
      ids.push(res.headers['x-request-id'])
    }
    await served(t, gw, proto, YOUNG, `${proto}, a younger recording at the same time`)
  }
  const records = await refusalRecords(gw, ids)
  for (const r of records) t.match(r, { event: 'refusal', status: 410, reason: EXPIRED, path: OLD, subject: 'alice' }, 'the refusal record says why')
  t.equal((await scrape(gw.adminUrl)).get(METRIC('calls')), before + ids.length, `nasguard_retention_expired_total{rule="calls"} counted ${ids.length}`)
  t.notOk(gw.logs.some((l) => l.includes('46701234567')), 'no log line names the recording')
})

t.test('a legal hold lets an expired recording be served; released or lapsed, it is refused again', async (t) => {
  const { nas, gw, clock } = await setup(t)
  const holds = holdsOf(gw)
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, no holds file`)
  // A hold on another month, and one on a caller's other number, do not cover it.
  await holds.change((d) => ({ ...d, holds: [hold({ case: 'OTHER', prefix: '/medicall/2016/02/' }), hold({ case: 'CALLER', prefix: '/medicall/2016/01/01/083012_4670999' })] }))
  await holds.change((d) => ({ ...d, holds: [...d.holds, hold({ case: 'MARKER', prefix: '/medicall/2015/' })] }))
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, holds on other recordings`)

  const withoutHold = readFileSync(holds.file, 'utf8')
  await holds.change((d) => ({ ...d, holds: [...d.holds, hold({ case: 'CASE-1', prefix: '/medicall/2016/01/01/083012_46701234567' })] }))
  await until(gw, OLD, 200, 'the hold to be seen')
  for (const proto of PROTOCOLS) await served(t, gw, proto, OLD, `${proto}, held`)

  // Whoever may write the file but not read the key puts back the document before the hold (sealed, older),
  // or removes the file: not "no holds" once a newer document was seen.
  const withHold = readFileSync(holds.file, 'utf8')
  const rollbacks: Array<[string, () => void]> = [['rolled back', () => writeFileSync(holds.file, withoutHold)], ['removed', () => unlinkSync(holds.file)]]
  for (const [what, act] of rollbacks) {
    act()
    await until(gw, OLD, 503, `${what}: the gateway to see it`)
    for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 503, UNAVAILABLE, `${proto}, holds document ${what}`)
    writeFileSync(holds.file, withHold)
    await until(gw, OLD, 200, `${what}: the newest document restored`)
  }

  await holds.change((d) => ({ ...d, holds: d.holds.filter((h) => h.case !== 'CASE-1') }))
  await until(gw, OLD, 410, 'the release to be seen')
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, released`)

  // A hold until a time: in force before it by the gateway's clock, lapsed at it (no re-read needed).
  await holds.change((d) => ({ ...d, holds: [...d.holds, hold({ case: 'UNTIL', prefix: '/medicall/2016/', until: new Date(OLD_EXPIRES + DAY_MS).toISOString() })] }))
  await until(gw, OLD, 200, 'the hold with until to be seen')
  for (const proto of PROTOCOLS) await served(t, gw, proto, OLD, `${proto}, held until tomorrow`)
  clock.now = OLD_EXPIRES + DAY_MS
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, the hold lapsed`)
})

t.test('a gateway started after the holds document was put back refuses it: this host\'s ops chain records the newer generation', async (t) => {
  // What `nasguard hold add` and `hold release` do (the document, and an ops chain record of its generation), with no gateway running.
  const auditDir = join(mkdtempSync(join(tmpdir(), 'nasguard-ret-')), 'audit')
  const certs = testCerts()
  const config = loadConfig({ object: { tls: { cert: certs.cert, key: certs.key }, upstream: { url: 'http://127.0.0.1:9' }, auth: { jwt: { secret: 'x'.repeat(32) } }, policy: POLICY, audit: { dir: auditDir }, retention: RULES }, env: {} })
  const quiet = (): void => {}
  const file = join(auditDir, 'legal-holds.json')
  await holdAdd(config, { prefix: '/medicall/2016/01/01/083012_46701234567', case: 'CASE-1', reason: 'litigation' }, quiet)
  const withHold = readFileSync(file, 'utf8')
  await holdRelease(config, 'CASE-1', quiet)
  const released = readFileSync(file, 'utf8')
  // Whoever may write the file but not read the key puts the older document, with the released hold, back.
  writeFileSync(file, withHold)

  const { nas, gw } = await setup(t, { audit: { dir: auditDir } })
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 503, UNAVAILABLE, `${proto}, a document older than the ops chain's newest, at start`)
  t.ok(gw.logs.some((l) => /went back from generation 2 to 1/.test(l)), 'the log says the document went back, and from which generation')
  for (const proto of PROTOCOLS) await served(t, gw, proto, YOUNG, `${proto}, a young recording`)

  writeFileSync(file, released)
  await until(gw, OLD, 410, 'the newest document restored')
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, released`)
  await holdAdd(config, { prefix: '/medicall/2016/01/', case: 'CASE-2', reason: 'a new case' }, quiet)
  await until(gw, OLD, 200, 'a newer hold to be seen')
  for (const proto of PROTOCOLS) await served(t, gw, proto, OLD, `${proto}, held again`)
})

t.test('an ops chain that does not verify: the holds cannot be checked against it, so expired recordings get 503', async (t) => {
  const auditDir = join(mkdtempSync(join(tmpdir(), 'nasguard-ret-')), 'audit')
  const certs = testCerts()
  const config = loadConfig({ object: { tls: { cert: certs.cert, key: certs.key }, upstream: { url: 'http://127.0.0.1:9' }, auth: { jwt: { secret: 'x'.repeat(32) } }, policy: POLICY, audit: { dir: auditDir }, retention: RULES }, env: {} })
  await holdAdd(config, { prefix: '/medicall/2016/01/', case: 'CASE-1', reason: 'litigation' }, () => {})
  // The generation in the ops chain's record edited down (its MAC no longer holds).
  const ops = join(auditDir, OPS_CHAIN, 'audit.jsonl')
  writeFileSync(ops, readFileSync(ops, 'utf8').replace('"generation":1', '"generation":0'))
  const { nas, gw } = await setup(t, { audit: { dir: auditDir } })
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 503, UNAVAILABLE, `${proto}, the ops chain edited`)
  for (const proto of PROTOCOLS) await served(t, gw, proto, YOUNG, `${proto}, a young recording`)
  t.ok(gw.logs.some((l) => /ops chain/.test(l) && /does not verify/.test(l)), 'the log says the ops chain does not verify')
})

t.test('a holds file that does not verify: 503 for expired recordings, never "no holds" and never trusted; young ones served', async (t) => {
  const { nas, gw } = await setup(t)
  const holds = holdsOf(gw)
  // The sealed document holds 2015 only: OLD is refused.
  await holds.change((d) => ({ ...d, holds: [hold({ case: 'K', prefix: '/medicall/2015/' })] }))
  const sealed = readFileSync(holds.file, 'utf8')
  for (const proto of PROTOCOLS) await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 410, EXPIRED, `${proto}, sealed document`)
  const edits: Array<[string, string]> = [
    // Someone who may write the file but not read the key widens the hold to cover OLD.
    ['the prefix widened', sealed.replace('/medicall/2015/', '/medicall/2016/')],
    ['torn', sealed.slice(0, sealed.length >> 1)],
    ['empty', '']
  ]
  for (const [what, text] of edits) {
    writeFileSync(holds.file, text)
    await until(gw, OLD, 503, `${what}: the gateway to see the file`)
    const ids: unknown[] = []
    for (const proto of PROTOCOLS) {
      const res = await refused(t, nas, async () => await fetchAs(proto, gw, OLD, bearer(gw.token())), 503, UNAVAILABLE, `${what}, ${proto}: expired`)
      t.equal(res.headers['retry-after'], '5', `${what}, ${proto}: Retry-After`)
      ids.push(res.headers['x-request-id'])
      await served(t, gw, proto, YOUNG, `${what}, ${proto}: young`)
    }
    for (const r of await refusalRecords(gw, ids)) t.match(r, { status: 503, reason: UNAVAILABLE, path: OLD })
  }
  writeFileSync(holds.file, sealed)
  await until(gw, OLD, 410, 'the sealed document back')
  t.ok(gw.logs.every((l) => !l.includes('46701234567')), 'no log line names the recording')
})

/** An HTTP date in asctime form: Sun Nov  6 08:49:37 1994, UTC. */
function asctime (ms: number): string {
  const [wd, day, mon, year, time] = new Date(ms).toUTCString().replace(',', '').split(' ')
  return `${wd} ${mon} ${day.replace(/^0/, ' ')} ${time} ${year}`
}

/** A NAS serving RECORDING with the Last-Modified its file name asks for, relative to the test clock. */
function lastModifiedNas (clock: { now: number }): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const name = (req.url ?? '').split('/').pop() ?? ''
    const keep = 7 * DAY_MS
    const lm: Record<string, string | undefined> = {
      'at-expiry.wav': new Date(clock.now - keep).toUTCString(),
      'ancient.wav': 'Thu, 01 Jan 1970 00:00:00 GMT',
      'young.wav': new Date(clock.now - keep + 1000).toUTCString(),
      'none.wav': undefined,
      'garbage.wav': 'last tuesday',
      // What Date.parse takes, but no date a NAS may send: 05/30/2024 (or is it 30/05?) is not guessed at.
      'ambiguous.wav': '05/30/2024',
      'asctime-old.wav': asctime(clock.now - keep - 3600000),
      // A NAS's epoch 0 in RFC 850's form is 1970, not 2070; a file modified in 2090 has no age that can be told.
      'epoch-rfc850.wav': 'Thursday, 01-Jan-70 00:00:00 GMT',
      'future.wav': 'Sun, 01 Jan 2090 00:00:00 GMT',
      'asctime-young.wav': asctime(clock.now - keep + 3600000),
      'numeric-zone.wav': new Date(clock.now - keep + 3600000 + 7200000).toUTCString().replace('GMT', '+0200'),
      'not-modified.wav': new Date(clock.now - keep).toUTCString()
    }
    const headers: Record<string, string | number> = { 'content-type': 'audio/wav', etag: '"rec-1"', ...(lm[name] !== undefined ? { 'last-modified': lm[name] as string } : {}) }
    if (name.endsWith('-416.wav')) {
      // A range past the end: the NAS says how long the file is.
      res.writeHead(416, { 'content-range': `bytes */${RECORDING.length}`, ...(name === 'old-416.wav' ? { 'last-modified': new Date(clock.now - keep).toUTCString() } : {}) })
      res.end()
      return
    }
    if (name === 'not-modified.wav') {
      res.writeHead(304, headers)
      res.end()
      return
    }
    res.writeHead(200, { ...headers, 'content-length': RECORDING.length })
    res.end(req.method === 'HEAD' ? undefined : RECORDING)
  }
}

t.test('dated by Last-Modified (in any HTTP date form, UTC): old, missing, garbage or ambiguous is a 410 and no byte of the recording reaches the client', async (t) => {
  const clock = { now: Date.UTC(2024, 5, 1) }
  const { nas, gw } = await setup(t, { clock: () => clock.now }, lastModifiedNas(clock))
  const before = (await scrape(gw.adminUrl)).get(METRIC('by-nas')) ?? 0
  let refusals = 0
  const ids: unknown[] = []
  const rows: Array<{ file: string, status: number, method?: string, headers?: Record<string, string> }> = [
    { file: 'at-expiry.wav', status: 410 },
    { file: 'at-expiry.wav', status: 410, method: 'HEAD' },
    { file: 'at-expiry.wav', status: 410, headers: { range: 'bytes=0-99' } },
    { file: 'ancient.wav', status: 410 },
    { file: 'none.wav', status: 410 },
    { file: 'garbage.wav', status: 410 },
    { file: 'ambiguous.wav', status: 410 },
    { file: 'asctime-old.wav', status: 410 },
    { file: 'epoch-rfc850.wav', status: 410 },
    { file: 'future.wav', status: 410 },
    { file: 'asctime-young.wav', status: 200 },
    { file: 'numeric-zone.wav', status: 200 },
    { file: 'not-modified.wav', status: 410, headers: { 'if-none-match': '"rec-1"' } },
    { file: 'old-416.wav', status: 410, headers: { range: 'bytes=999999-' } },
    { file: 'young.wav', status: 200 }
  ]
  for (const proto of PROTOCOLS) {
    for (const row of rows) {
      const what = `${proto} ${row.method ?? 'GET'}${row.headers ? ' ' + Object.keys(row.headers).join() : ''} /lm/${row.file}`
      const send = async (): Promise<Response> => await fetchAs(proto, gw, `/lm/${row.file}`, { ...bearer(gw.token()), ...row.headers }, row.method)
      if (row.status === 410) {
        ids.push((await refused(t, nas, send, 410, EXPIRED, what, 1)).headers['x-request-id'])
        refusals++
      } else {
        const res = await send()
        t.equal(res.status, 200, `${what}: 200`)
        t.same(res.body, RECORDING, `${what}: the recording`)
      }
    }
  }
  // A 416 without Last-Modified cannot be dated: it is answered, but the recording's size is not told.
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, '/lm/nolm-416.wav', { ...bearer(gw.token()), range: 'bytes=999999-' })
    t.equal(res.status, 416, `${proto} 416 without Last-Modified: 416`)
    t.equal(res.headers['content-range'], undefined, `${proto} and no Content-Range (the size of a recording of unknown age)`)
  }
  t.equal((await scrape(gw.adminUrl)).get(METRIC('by-nas')), before + refusals, `nasguard_retention_expired_total{rule="by-nas"} counted ${refusals}`)
  // Judged on the NAS's answer, after the access record: the fetch's own record says 410, nothing sent.
  const fetches = await waitFor('the fetch records of the refusals', () => {
    const f = gw.auditRecords().filter((r) => r.event === 'fetch' && ids.includes(r.requestId))
    return f.length === ids.length ? f : undefined
  }, WAIT)
  for (const f of fetches) t.match(f, { status: 410, bytes: 0, rule: 'lm', reason: EXPIRED }, `fetch record of ${String(f.path)}: 410, 0 bytes, and why`)
})

const GRANTS = '/_nasguard/grants'
const mintAs = async (proto: Protocol, gw: TestGateway, path: string): Promise<Response> =>
  await postAs(proto, gw, GRANTS, { path }, bearer(gw.token()))

t.test('grants: none for an expired recording, and one minted before expiry does not open it after', async (t) => {
  const { nas, gw, clock } = await setup(t, { authExtra: { grants: { secret: 'grant-secret-'.padEnd(48, 'x'), ttlSec: 600 } } }, serveRecording, OLD_EXPIRES - 1)
  const urls: string[] = []
  for (const proto of PROTOCOLS) {
    const minted = await mintAs(proto, gw, OLD)
    t.equal(minted.status, 201, `${proto}: minted 1 ms before expiry`)
    urls.push(json(minted).url as string)
  }
  clock.now = OLD_EXPIRES
  for (const proto of PROTOCOLS) {
    await refused(t, nas, async () => await mintAs(proto, gw, OLD), 410, EXPIRED, `${proto}: minting at expiry`)
    t.equal((await mintAs(proto, gw, YOUNG)).status, 201, `${proto}: a young recording's grant is minted`)
    for (const url of urls) await refused(t, nas, async () => await fetchAs(proto, gw, url), 410, EXPIRED, `${proto}: a grant minted before expiry, used at it`)
  }
  const records = await waitFor('the refusal records', () => {
    const r = gw.auditRecords().filter((r) => r.event === 'refusal')
    return r.length === 2 * (1 + urls.length) ? r : undefined
  }, WAIT)
  t.same(records.map((r) => [r.path === GRANTS ? 'mint' : r.path, r.status, r.reason]), PROTOCOLS.flatMap(() => [['mint', 410, EXPIRED], ...urls.map(() => [OLD, 410, EXPIRED])]), 'each refusal audited: the mints and the grant uses')
  t.equal(gw.auditRecords().filter((r) => r.event === 'grant' && r.path === OLD).length, urls.length, 'grant records only for the grants minted before expiry')
})

t.test('a NAS that folds names: no spelling of an expired recording is served, the NAS never asked', async (t) => {
  const clock = { now: OLD_EXPIRES }
  const nas = await startFoldingNas(t, { [OLD]: RECORDING, [YOUNG]: RECORDING })
  // A policy that matches every spelling (no case variant refusal): retention alone must judge by fold keys.
  const gw = await startTestGateway(t, nas, { retention: RULES, policy: [{ name: 'all', path: '/**', scopes: ['recordings:read'] }], clock: () => clock.now })
  const fullwidth2016 = encodeURIComponent('\uff12\uff10\uff11\uff16')
  // [spelling, the answers accepted]: case variants pass the canonical path stage and the policy, so retention must refuse them (410).
  const variants: Array<[string, number[]]> = [
    [OLD, [410]],
    [OLD.replace('/medicall/', '/MEDICALL/'), [410]],
    [OLD.replace('/medicall/', '/MediCall/'), [410]],
    [OLD.replace('/medicall/', '/medicalL/'), [410]],
    // Fullwidth characters: not canonical (NFKC), refused earlier; either way not served.
    [OLD.replace('/2016/', `/${fullwidth2016}/`), [400, 410]],
    [OLD.replace('/medicall/', `/${encodeURIComponent('\uff4d')}edicall/`), [400, 410]]
  ]
  for (const proto of PROTOCOLS) {
    for (const [path, statuses] of variants) {
      const n = nas.requests.length
      const res = await fetchAs(proto, gw, path, bearer(gw.token()))
      t.not(res.status, 200, `${proto} ${path}: not served (${res.status} ${String(json(res).error)})`)
      t.ok(statuses.includes(res.status), `${proto} ${path}: ${statuses.join(' or ')}`)
      t.notOk(res.body.includes(RECORDING.subarray(0, 12)), `${proto} ${path}: no byte of the recording`)
      t.equal(nas.requests.length, n, `${proto} ${path}: the NAS was not asked`)
    }
    // The control: the same spelling of a young recording is served, so it is retention that refuses the old one.
    const young = await fetchAs(proto, gw, YOUNG.replace('/medicall/', '/MEDICALL/'), bearer(gw.token()))
    t.equal(young.status, 200, `${proto}: /MEDICALL/ of a young recording is served through the fold`)
    t.same(young.body, RECORDING)
  }
})
