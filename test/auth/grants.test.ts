// Playback grants: POST /_nasguard/grants with a token that may read a path
// returns a URL whose `grant` parameter opens that one path, for a short
// time, without an Authorization header (browser <audio> players). The
// grant is HMAC-bound to path, subject, rule, expiry (and IP when bindIp),
// never outlives its token, dies with a revocation, and is never logged or
// audited.
import t, { type Test } from 'tap'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GrantSigner, type GrantClaims } from '../../src/auth/grants.js'
import { addRevocation } from '../../src/auth/revocation.js'
import { RECORDING, bearer, get, post, startStubNas, startTestGateway, type GatewayOverrides, type Response, type StubNas, type TestGateway, type Teardown } from '../helpers/gateway.js'
import { PROTOCOLS, postAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const GRANTS = '/_nasguard/grants'

/** Node's warnings in this process: an HTTP/2 answer given a Connection header warns (UnsupportedWarning) on stderr, outside the JSON log. */
const warnings: string[] = []
process.on('warning', (w) => { warnings.push(`${w.name}: ${w.message}`) })
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const OTHER = '/medicall/2016/01/01/090000_46709999999.wav'
const GRANT_SECRET = 'grant-secret-'.padEnd(48, 'x')
const TTL = 120

function now (): number {
  return Math.floor(Date.now() / 1000)
}


function json (res: Response): Record<string, unknown> {
  return JSON.parse(res.body.toString()) as Record<string, unknown>
}

function grantOf (url: string): string {
  const v = new URLSearchParams(url.slice(url.indexOf('?') + 1)).getAll('grant')
  if (v.length !== 1) throw new Error(`no single grant in ${url}`)
  return v[0]
}

function claimsOf (grant: string): GrantClaims {
  return JSON.parse(Buffer.from(grant.split('.')[0], 'base64url').toString('utf8')) as GrantClaims
}

interface Setup { nas: StubNas, gw: TestGateway, revoked: string }

async function setup (t: Teardown, grants: Record<string, unknown> = {}, o: GatewayOverrides = {}): Promise<Setup> {
  const revoked = join(mkdtempSync(join(tmpdir(), 'nasguard-deny-')), 'revoked.jsonl')
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, {
    ...o,
    authExtra: { grants: { secret: GRANT_SECRET, ttlSec: TTL, ...grants }, revocation: { file: revoked, pollMs: 50 } }
  })
  return { nas, gw, revoked }
}

/** Mints a grant with a token; fails the test unless it is a 201. */
async function mint (t: Test, gw: TestGateway, token: string, body: object = { path: PATH }): Promise<{ url: string, expiresAt: string, grant: string }> {
  const res = await post(gw, GRANTS, body, bearer(token))
  t.equal(res.status, 201, `grant minted: ${res.body.toString()}`)
  const b = json(res) as { url: string, expiresAt: string }
  return { ...b, grant: grantOf(b.url) }
}

/** Refusals refused() saw, per stub NAS (one per gateway): each leaves one refusal record. */
const refusalsSeen = new WeakMap<StubNas, number>()

/** Expects a refusal and that it never reached the NAS. */
async function refused (t: Test, nas: StubNas, send: () => Promise<Response>, status: number, error: string, message?: RegExp, what = error): Promise<Response> {
  const n = nas.requests.length
  const res = await send()
  if (res.status >= 400) refusalsSeen.set(nas, (refusalsSeen.get(nas) ?? 0) + 1)
  t.equal(res.status, status, `${what}: ${status}`)
  const body = /^application\/json/.test(String(res.headers['content-type'])) ? json(res) : {}
  t.equal(body.error, error, `${what}: ${error}`)
  if (message) t.match(body.message, message, `${what}: message`)
  t.equal(nas.requests.length, n, `${what}: the NAS was not asked`)
  return res
}

function flip (s: string, i: number): string {
  return s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
}

t.test('a token mints a grant; the grant URL serves the recording without Authorization (GET, Range, HEAD)', async (t) => {
  const { nas, gw } = await setup(t)
  const token = gw.token({ sub: 'alice', jti: 'jti-mint' })
  const before = now()
  const res = await post(gw, GRANTS, { path: PATH }, bearer(token))
  const after = now()
  t.equal(res.status, 201)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(res.headers['cache-control'], 'no-store', 'a grant URL is not cached')
  const body = json(res)
  t.same(Object.keys(body).sort(), ['expiresAt', 'url'], 'the body is exactly {url, expiresAt}')
  const url = body.url as string
  t.ok(url.startsWith(PATH + '?grant='), 'the URL is the canonical path with a grant parameter')
  const grant = grantOf(url)
  t.match(grant, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/)
  const exp = Date.parse(body.expiresAt as string) / 1000
  t.equal(new Date(exp * 1000).toISOString(), body.expiresAt, 'expiresAt is ISO 8601')
  t.ok(exp >= before + TTL && exp <= after + TTL, 'expires ttlSec after minting')
  t.equal(nas.requests.length, 0, 'minting does not ask the NAS')

  const full = await get(gw, url)
  t.equal(full.status, 200, 'the grant alone (no Authorization) opens the recording')
  t.match(full.headers['content-type'], /^audio\//)
  t.same(full.body, RECORDING, 'the body is the recording')

  const range = await get(gw, url, { headers: { range: 'bytes=0-99' } })
  t.equal(range.status, 206)
  t.equal(range.headers['content-range'], `bytes 0-99/${RECORDING.length}`)
  t.same(range.body, RECORDING.subarray(0, 100))

  const head = await get(gw, url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], String(RECORDING.length))
  t.equal(head.body.length, 0)

  t.equal(nas.requests.length, 3)
  t.same(nas.requests.map((r) => r.url), [PATH, PATH, PATH], 'the NAS gets the path and never the grant parameter')
  t.same(nas.requests.map((r) => r.method), ['GET', 'GET', 'HEAD'])
  t.equal(nas.requests[1].headers.range, 'bytes=0-99')
})

t.test('audit: a grant record, fetches with auth grant; the grant value is in no audit line and no log line', async (t) => {
  const { gw, nas } = await setup(t)
  const token = gw.token({ sub: 'alice', jti: 'jti-audit-grant' })
  const { url, grant, expiresAt } = await mint(t, gw, token)
  const fetched = await get(gw, url, { headers: { 'user-agent': 'grant-audit/1' } })
  t.equal(fetched.status, 200)
  const requestId = fetched.headers['x-request-id']
  // A refused grant use leaves a refusal record: it must not hold the grant either.
  const bad = await get(gw, OTHER + '?grant=' + grant)
  t.equal(bad.status, 401)
  const badId = bad.headers['x-request-id']

  const fetch = await waitFor('the fetch record of the grant request', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  const records = gw.auditRecords()
  const grantRecords = records.filter((r) => r.event === 'grant')
  t.equal(grantRecords.length, 1, 'one grant record')
  t.match(grantRecords[0], { event: 'grant', subject: 'alice', path: PATH, rule: 'recordings', grantExpiresAt: expiresAt, auth: 'jwt', jti: 'jti-audit-grant', clientIp: '127.0.0.1' })
  const access = records.find((r) => r.event === 'access' && r.requestId === requestId)
  t.match(access, { auth: 'grant', subject: 'alice', path: PATH, rule: 'recordings', userAgent: 'grant-audit/1' })
  t.match(fetch, { auth: 'grant', subject: 'alice', path: PATH, status: 200, bytes: RECORDING.length, outcome: 'complete' })
  const refusal = await waitFor('the refusal record', () => gw.auditRecords().find((r) => r.event === 'refusal' && r.requestId === badId))
  t.match(refusal, { status: 401, reason: 'NASGUARD_ERR_GRANT_INVALID', path: OTHER })
  t.equal(nas.requests.length, 1)

  const mac = grant.split('.')[1]
  const payload = grant.split('.')[0]
  const auditText = readdirSync(gw.auditDir).map((f) => readFileSync(join(gw.auditDir, f), 'utf8')).join('\n')
  t.ok(auditText.length > 0)
  for (const [name, text] of [['audit', auditText], ['log', gw.logs.join('\n')]] as const) {
    t.notOk(text.includes(mac), `the grant's MAC is in no ${name} line`)
    t.notOk(text.includes(payload), `the grant's payload is in no ${name} line`)
    t.notOk(text.includes('grant='), `no grant= parameter in any ${name} line`)
  }
  t.ok(gw.logs.length > 0, 'the gateway did log the requests')
})

t.test('minting is refused without a token, for a path the token may not read, for a directory, and for a bad body', async (t) => {
  const { nas, gw } = await setup(t)
  const token = gw.token({ sub: 'alice' })
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH }), 401, 'NASGUARD_ERR_TOKEN_MISSING', undefined, 'no token')
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH }, bearer(gw.token({ scope: 'other' }))), 403, 'NASGUARD_ERR_INSUFFICIENT_SCOPE', undefined, 'a token without the scope')
  await refused(t, nas, () => post(gw, GRANTS, { path: '/stockholm/2016/a.wav' }, bearer(token)), 403, 'NASGUARD_ERR_INSUFFICIENT_SCOPE', undefined, 'a path another scope opens')
  await refused(t, nas, () => post(gw, GRANTS, { path: '/secret/a.wav' }, bearer(token)), 403, 'NASGUARD_ERR_NO_RULE', undefined, 'a path no rule opens')
  await refused(t, nas, () => post(gw, GRANTS, { path: '/medicall/2016/01/01/' }, bearer(token)), 403, 'NASGUARD_ERR_DIRECTORY', undefined, 'a directory')
  await refused(t, nas, () => post(gw, GRANTS, { path: '/medicall/2016/01/01' }, bearer(token)), 403, 'NASGUARD_ERR_DIRECTORY', undefined, 'a directory without a slash')
  await refused(t, nas, () => post(gw, GRANTS, { path: '/medicall/../secret/a.wav' }, bearer(token)), 400, 'NASGUARD_ERR_BAD_PATH', undefined, 'a non-canonical path')
  await refused(t, nas, () => post(gw, GRANTS, `path=${PATH}`, { ...bearer(token), 'content-type': 'text/plain' }), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'a text/plain body')
  await refused(t, nas, () => post(gw, GRANTS, '{"path": ', { ...bearer(token), 'content-type': 'application/json' }), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'invalid JSON')
  await refused(t, nas, () => post(gw, GRANTS, undefined, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'no body')
  await refused(t, nas, () => post(gw, GRANTS, {}, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'no path')
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH, ttlSec: 0 }, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'ttlSec 0')
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH, extra: 1 }, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'an extra key')
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH, ttlSec: 60, subject: 'bob' }, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'an extra key (subject)')
  await refused(t, nas, () => post(gw, GRANTS, { path: PATH, ttlSec: '60' }, bearer(token)), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, 'ttlSec as a string')

  const wrongMethod = await refused(t, nas, () => get(gw, GRANTS, { headers: bearer(token) }), 405, 'NASGUARD_ERR_METHOD_NOT_ALLOWED', undefined, 'GET on the grants path')
  t.equal(wrongMethod.headers.allow, 'POST', 'Allow: POST')

  const seen = refusalsSeen.get(nas) ?? 0
  await waitFor('the refusal records', () => gw.auditRecords().filter((r) => r.event === 'refusal').length >= seen ? true : undefined)
  t.equal(gw.auditRecords().filter((r) => r.event === 'grant').length, 0, 'no grant was minted (no grant record)')
  t.equal(nas.requests.length, 0)
})

t.test('a body that names a member twice, however spelt, or carries a prototype key is refused: nothing minted, over HTTP/1.1 and HTTP/2', async (t) => {
  const { nas, gw } = await setup(t)
  const token = gw.token({ sub: 'alice' })
  const p = JSON.stringify(PATH)
  const cases: Array<[string, string]> = [
    // JSON.parse keeps the last member; a WAF or log in front may read the first.
    [`{"path": "/secret/a.wav", "path": ${p}}`, 'path twice, the last one allowed'],
    [`{"path": ${p}, "path": ${p}}`, 'path twice, the same value'],
    [`{"path": ${p}, "p\\u0061th": "/secret/a.wav"}`, 'path twice, once escaped'],
    [`{"p\\u0061th": "/secret/a.wav", "path": ${p}}`, 'path twice, the first escaped'],
    [`{"path": ${p}, "ttlSec": 3600, "ttlSec": 1}`, 'ttlSec twice'],
    [`{"ttlSec": 1, "path": ${p}, "ttlSec": 60}`, 'ttlSec twice, apart'],
    [`{"path": ${p}, "__proto__": {"ttlSec": 1}}`, 'a __proto__ member'],
    [`{"path": ${p}, "constructor": {"prototype": {"ttlSec": 1}}}`, 'a constructor.prototype member']
  ]
  for (const proto of PROTOCOLS) {
    for (const [body, what] of cases) {
      await refused(t, nas, () => postAs(proto, gw, GRANTS, body, { ...bearer(token), 'content-type': 'application/json' }), 400, 'NASGUARD_ERR_BAD_REQUEST', undefined, `${proto}: ${what}`)
    }
    // Control: a member spelt with an escape, named once, is that member.
    const escaped = await postAs(proto, gw, GRANTS, `{"p\\u0061th": ${p}, "ttlSec": 60}`, { ...bearer(token), 'content-type': 'application/json' })
    t.equal(escaped.status, 201, `${proto}: control: path spelt with an escape, once: minted`)
    t.equal((json(escaped) as { url: string }).url.split('?')[0], PATH, `${proto}: control: for that path`)
  }
  t.equal(gw.auditRecords().filter((r) => r.event === 'grant').length, PROTOCOLS.length, 'only the controls minted a grant')
  t.equal(nas.requests.length, 0)
})

t.test('using a grant is refused: other path, tampered, foreign key, expired, other address, two grant parameters', async (t) => {
  const { nas, gw } = await setup(t)
  const { url, grant } = await mint(t, gw, gw.token({ sub: 'alice', jti: 'jti-use' }))
  const [payload, mac] = grant.split('.')
  const signer = new GrantSigner(GRANT_SECRET)
  const base: GrantClaims = { p: PATH, s: 'alice', r: 'recordings', i: now() - 10, e: now() + 60, g: ['recordings:read'] }

  // Controls: the grant works, and so does one this test signs, so the refusals below are about what was changed.
  t.equal((await get(gw, url)).status, 200, 'control: the minted grant works')
  t.equal((await get(gw, PATH + '?grant=' + signer.sign(base))).status, 200, 'control: a grant signed here with the configured key works')
  const served = nas.requests.length

  await refused(t, nas, () => get(gw, OTHER + '?grant=' + grant), 401, 'NASGUARD_ERR_GRANT_INVALID', /another path/, 'used on another path')
  await refused(t, nas, () => get(gw, '/medicall/2016/01/01/083012_46701234567.mp3?grant=' + grant), 401, 'NASGUARD_ERR_GRANT_INVALID', /another path/, 'used on a sibling file')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + flip(payload, 3) + '.' + mac), 401, 'NASGUARD_ERR_GRANT_INVALID', /signature/, 'payload tampered')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + payload + '.' + flip(mac, 0)), 401, 'NASGUARD_ERR_GRANT_INVALID', /signature/, 'MAC tampered')
  const widened = Buffer.from(JSON.stringify({ ...claimsOf(grant), p: OTHER })).toString('base64url')
  await refused(t, nas, () => get(gw, OTHER + '?grant=' + widened + '.' + mac), 401, 'NASGUARD_ERR_GRANT_INVALID', /signature/, 'claims rewritten, old MAC')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + new GrantSigner('another-key-'.padEnd(40, 'y')).sign(base)), 401, 'NASGUARD_ERR_GRANT_INVALID', /signature/, 'signed with another key')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + payload), 401, 'NASGUARD_ERR_GRANT_INVALID', /malformed/, 'no MAC')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + signer.sign({ ...base, i: now() - 600, e: now() - 60 })), 401, 'NASGUARD_ERR_GRANT_INVALID', /expired/, 'expired')
  await refused(t, nas, () => get(gw, PATH + '?grant=' + signer.sign({ ...base, a: '10.9.9.9' })), 401, 'NASGUARD_ERR_GRANT_INVALID', /address/, 'bound to another address')
  await refused(t, nas, () => get(gw, url + '&grant=' + grant), 401, 'NASGUARD_ERR_TOKEN_MISSING', undefined, 'the same grant twice')
  await refused(t, nas, () => get(gw, `${PATH}?grant=${signer.sign(base)}&grant=${grant}`), 401, 'NASGUARD_ERR_TOKEN_MISSING', undefined, 'two grants')
  await refused(t, nas, () => get(gw, PATH + '?grant='), 401, 'NASGUARD_ERR_GRANT_INVALID', /malformed/, 'an empty grant')

  const r = await get(gw, PATH + '?grant=' + flip(payload, 3) + '.' + mac)
  t.match(String(r.headers['www-authenticate']), /error="invalid_token", error_description="[^"]*signature/)
  t.equal(nas.requests.length, served)
})

t.test('bindIp: minted grants carry the client address; a grant bound to another address is refused', async (t) => {
  const { nas, gw } = await setup(t, { bindIp: true })
  const { url, grant } = await mint(t, gw, gw.token())
  t.equal(claimsOf(grant).a, '127.0.0.1', 'the grant is bound to the address that asked for it')
  t.equal((await get(gw, url)).status, 200, 'it works from that address')
  const signer = new GrantSigner(GRANT_SECRET)
  const elsewhere = signer.sign({ ...claimsOf(grant), a: '10.9.9.9' })
  await refused(t, nas, () => get(gw, PATH + '?grant=' + elsewhere), 401, 'NASGUARD_ERR_GRANT_INVALID', /another client address/, 'used from another address')

  const { nas: nas2, gw: unbound } = await setup(t, { bindIp: false })
  const g2 = await mint(t, unbound, unbound.token())
  t.equal(claimsOf(g2.grant).a, undefined, 'without bindIp no address is bound')
  t.equal((await get(unbound, g2.url)).status, 200)
  t.equal(nas2.requests.length, 1)
})

t.test('lifetime: ttlSec is capped by the configured ttl, honoured below it, and a grant never outlives its token', async (t) => {
  const { nas, gw } = await setup(t)
  const token = gw.token({ sub: 'alice' })

  const before = now()
  const capped = await mint(t, gw, token, { path: PATH, ttlSec: 100000 })
  const after = now()
  const c = claimsOf(capped.grant)
  t.equal(c.e - c.i, TTL, 'a longer ttlSec is cut to auth.grants.ttlSec')
  t.ok(Date.parse(capped.expiresAt) / 1000 <= after + TTL, 'expiresAt <= now + ttl')
  t.ok(Date.parse(capped.expiresAt) / 1000 >= before + TTL)
  t.equal(Date.parse(capped.expiresAt) / 1000, c.e, 'expiresAt is the grant\'s own expiry')

  const short = await mint(t, gw, token, { path: PATH, ttlSec: 30 })
  const s = claimsOf(short.grant)
  t.equal(s.e - s.i, 30, 'a shorter ttlSec is honoured')

  const tokenExp = now() + 60
  const shortLived = gw.token({ sub: 'alice', exp: tokenExp })
  const bounded = await mint(t, gw, shortLived, { path: PATH, ttlSec: TTL })
  t.equal(claimsOf(bounded.grant).e, tokenExp, 'the grant expires with its token')
  t.ok(Date.parse(bounded.expiresAt) / 1000 <= tokenExp, 'expiresAt <= token exp')
  t.equal((await get(gw, bounded.url)).status, 200)
  t.equal(nas.requests.length, 1)
})

t.test('revocation reaches grants: revoking the subject or the token refuses its grants, other grants still work', async (t) => {
  const { nas, gw, revoked } = await setup(t)
  const aliceA = await mint(t, gw, gw.token({ sub: 'alice', jti: 'jti-alice-a' }))
  const carolA = await mint(t, gw, gw.token({ sub: 'carol', jti: 'jti-carol-a' }))
  const carolB = await mint(t, gw, gw.token({ sub: 'carol', jti: 'jti-carol-b' }))
  const bob = await mint(t, gw, gw.token({ sub: 'bob', jti: 'jti-bob' }))
  for (const g of [aliceA, carolA, carolB, bob]) t.equal((await get(gw, g.url)).status, 200, 'every grant works first')

  const t0 = now()
  addRevocation(revoked, { type: 'sub', sub: 'alice', issuedBefore: t0 + 1, expiresAt: t0 + 3600, at: t0 })
  const res = await waitFor('alice\'s grant to be refused', async () => {
    const r = await get(gw, aliceA.url)
    return r.status === 401 ? r : undefined
  }, { tries: 300, intervalMs: 25 })
  t.match(json(res), { error: 'NASGUARD_ERR_GRANT_INVALID', message: /revoked/ })
  await refused(t, nas, () => get(gw, aliceA.url), 401, 'NASGUARD_ERR_GRANT_INVALID', /subject revoked/, 'grant of a revoked subject')
  t.equal((await get(gw, bob.url)).status, 200, "bob's grant is unaffected")

  addRevocation(revoked, { type: 'jti', jti: 'jti-carol-a', expiresAt: t0 + 3600, at: t0 })
  await waitFor('the grant of the revoked token to be refused', async () => (await get(gw, carolA.url)).status === 401 ? true : undefined, { tries: 300, intervalMs: 25 })
  await refused(t, nas, () => get(gw, carolA.url), 401, 'NASGUARD_ERR_GRANT_INVALID', /token revoked/, 'grant of a revoked token')
  t.equal((await get(gw, carolB.url)).status, 200, 'a grant minted from another token of carol still works')
})

t.test('revoking a subject before a past time T also refuses grants minted (after T) from its revoked tokens', async (t) => {
  const { nas, gw, revoked } = await setup(t)
  const t0 = now()
  const T = t0 - 100
  const leaked = gw.token({ sub: 'alice', jti: 'jti-leaked', iat: T - 100 })
  const fresh = gw.token({ sub: 'alice', jti: 'jti-fresh', iat: T + 50 })
  // Both grants are minted now, i.e. after T, before the revocation is written.
  const fromLeaked = await mint(t, gw, leaked)
  const fromFresh = await mint(t, gw, fresh)
  t.equal((await get(gw, fromLeaked.url)).status, 200)

  addRevocation(revoked, { type: 'sub', sub: 'alice', issuedBefore: T, expiresAt: T + 86400, at: t0 })
  await waitFor('the leaked token to be refused', async () => (await get(gw, PATH, { headers: bearer(leaked) })).status === 401 ? true : undefined, { tries: 300, intervalMs: 25 })
  await refused(t, nas, () => get(gw, fromLeaked.url), 401, 'NASGUARD_ERR_GRANT_INVALID', /revoked/, 'a grant minted from a token the entry revokes')
  t.equal((await get(gw, fromFresh.url)).status, 200, 'a grant minted from a token issued after T still works')
  t.equal((await get(gw, PATH, { headers: bearer(fresh) })).status, 200, 'and so does that token')
})

t.test('a grant cannot mint grants', async (t) => {
  const { nas, gw } = await setup(t)
  const { grant } = await mint(t, gw, gw.token({ sub: 'alice' }))
  await refused(t, nas, () => post(gw, GRANTS + '?grant=' + grant, { path: PATH }), 401, 'NASGUARD_ERR_GRANT_INVALID', undefined, 'a playback grant on the grants path')
  await refused(t, nas, () => post(gw, GRANTS + '?grant=' + grant, { path: OTHER }), 401, 'NASGUARD_ERR_GRANT_INVALID', undefined, 'a playback grant asking for another path')
  // Even a correctly signed grant made out for the grants path itself is no credential for minting.
  const forGrantsPath = new GrantSigner(GRANT_SECRET).sign({ p: GRANTS, s: 'alice', r: 'recordings', i: now(), e: now() + 60 })
  const res = await post(gw, GRANTS + '?grant=' + forGrantsPath, { path: OTHER })
  t.equal(res.status, 401, `a grant for the grants path cannot mint: got ${res.status} ${res.body.toString()}`)
  await waitFor('the refusal records', () => gw.auditRecords().filter((r) => r.event === 'refusal').length >= 2 ? true : undefined)
  t.equal(gw.auditRecords().filter((r) => r.event === 'grant').length, 1, 'only the token-minted grant was recorded')
  t.equal(nas.requests.length, 0)
})

t.test('claims in rule paths: a grant minted under /home/{sub}/** opens alice\'s file only', async (t) => {
  const policy = [{ name: 'home', path: '/home/{sub}/**', scopes: ['files:read'] }]
  const { nas, gw } = await setup(t, {}, { policy })
  const alice = gw.token({ sub: 'alice', scope: 'files:read' })
  const { url, grant } = await mint(t, gw, alice, { path: '/home/alice/a.wav' })
  t.same(claimsOf(grant).c, { sub: 'alice' }, 'the grant carries the claim the rule path uses')
  t.equal(claimsOf(grant).r, 'home')
  const ok = await get(gw, url)
  t.equal(ok.status, 200)
  t.same(ok.body, RECORDING)

  await refused(t, nas, () => get(gw, '/home/bob/a.wav?grant=' + grant), 401, 'NASGUARD_ERR_GRANT_INVALID', /another path/, "alice's grant on bob's file")
  await refused(t, nas, () => post(gw, GRANTS, { path: '/home/bob/a.wav' }, bearer(alice)), 403, 'NASGUARD_ERR_NO_RULE', undefined, "alice minting for bob's file")
  t.same(nas.requests.map((r) => r.url), ['/home/alice/a.wav'])
})

t.test('a body the parser refuses (not JSON, too large) is a 400 that closes an HTTP/1.1 connection and adds no Connection header to an HTTP/2 answer', async (t) => {
  const { nas, gw } = await setup(t)
  const token = gw.token({ sub: 'alice' })
  const cases: Array<[string, string]> = [
    ['{"path": ', 'truncated JSON'],
    [JSON.stringify({ path: PATH, pad: 'x'.repeat(5000) }), 'over the 4096-byte body limit']
  ]
  for (const proto of PROTOCOLS) {
    for (const [body, what] of cases) {
      const r = await postAs(proto, gw, GRANTS, body, { ...bearer(token), 'content-type': 'application/json' })
      t.equal(r.status, 400, `${proto}: ${what}: 400`)
      if (proto === 'h1') t.equal(r.headers.connection, 'close', `h1: ${what}: the connection closes (the client may send more)`)
      else t.equal(r.headers.connection, undefined, `h2: ${what}: no Connection header`)
    }
  }
  t.equal(nas.requests.length, 0)
  // Every test above ran in this process: none may have made Node warn.
  t.same(warnings.filter((w) => w.startsWith('UnsupportedWarning')), [], 'no UnsupportedWarning on stderr')
})

t.test('a grant carries the tag of the JWT key its token was verified with: a MAC under the grant key, never the key or a bare hash of it', async (t) => {
  const jwtSecret = 'j'.repeat(40)
  const gw = await startTestGateway(t, await startStubNas(t), { authExtra: { grants: { secret: 'g'.repeat(48), ttlSec: 600 } } })
  const token = gw.token({ sub: 'alice' })
  for (const proto of PROTOCOLS) {
    // Twice: the second is minted from the token the gateway remembers as verified, and carries the tag too.
    for (const round of ['verified now', 'remembered']) {
      const minted = await postAs(proto, gw, '/_nasguard/grants', { path: '/medicall/a.wav' }, bearer(token))
      t.equal(minted.status, 201, `${proto}, ${round}: minted`)
      const value = new URL(JSON.parse(minted.body.toString()).url as string, 'https://x').searchParams.get('grant') ?? ''
      const claims = JSON.parse(Buffer.from(value.split('.')[0], 'base64url').toString()) as GrantClaims
      t.match(claims.k, /^[A-Za-z0-9_-]{22}$/, `${proto}, ${round}: a key tag (16 bytes)`)
    }
  }
  const a = new GrantSigner('a'.repeat(48))
  const b = new GrantSigner('b'.repeat(48))
  t.equal(a.keyTag(jwtSecret), a.keyTag(jwtSecret), 'the same key, the same tag')
  t.not(a.keyTag(jwtSecret), b.keyTag(jwtSecret), 'another grant key, another tag: it is keyed')
  t.not(a.keyTag(jwtSecret), a.keyTag('k'.repeat(40)), 'another JWT key, another tag')
  const { createHash } = await import('node:crypto')
  t.notMatch(createHash('sha256').update(jwtSecret).digest('base64url'), a.keyTag(jwtSecret), 'not a bare hash of the key')
  t.notMatch(a.keyTag(jwtSecret), jwtSecret.slice(0, 8), 'nor the key itself')
})
