// What a playback grant stays bound to. With auth.grants.bindIp, a grant that
// carries no client address (signed elsewhere, or minted before bindIp was
// turned on) is refused, not let in from anywhere. And a grant works only
// while its rule still grants the scopes it was minted under: narrowing the
// rule's scopes (under the same rule name and the same grants key) refuses
// the grants minted before, without the NAS being asked. Over HTTP/1.1 and
// HTTP/2.
import t, { type Test } from 'tap'
import { GrantSigner, type GrantClaims } from '../../src/auth/grants.js'
import { RECORDING, bearer, post, startStubNas, startTestGateway, type GatewayOverrides, type Response, type StubNas, type TestGateway, type Teardown } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'

const GRANTS = '/_nasguard/grants'
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const REGIONAL = '/regional/2016/01/01/083012_46701234567.wav'
const GRANT_SECRET = 'grant-binding-secret-'.padEnd(48, 'z')

function now (): number {
  return Math.floor(Date.now() / 1000)
}


function json (res: Response): Record<string, unknown> {
  try {
    return JSON.parse(res.body.toString()) as Record<string, unknown>
  } catch {
    return {}
  }
}

function claimsOf (grant: string): GrantClaims {
  return JSON.parse(Buffer.from(grant.split('.')[0], 'base64url').toString('utf8')) as GrantClaims
}

async function gateway (t: Teardown, nas: StubNas, grants: Record<string, unknown>, o: GatewayOverrides = {}): Promise<TestGateway> {
  return await startTestGateway(t, nas, { ...o, authExtra: { grants: { secret: GRANT_SECRET, ttlSec: 300, ...grants } } })
}

/** Mints a grant on `gw` with a token; fails the test unless it is a 201. */
async function mint (t: Test, gw: TestGateway, token: string, path = PATH): Promise<{ url: string, grant: string }> {
  const res = await post(gw, GRANTS, { path }, bearer(token))
  t.equal(res.status, 201, `grant minted: ${res.body.toString()}`)
  const url = (json(res) as { url: string }).url
  const grant = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('grant') ?? ''
  return { url, grant }
}

/** Expects the grant URL refused with status and error over both protocols, and the NAS never asked. */
async function refusedOverBoth (t: Test, nas: StubNas, gw: TestGateway, url: string, status: number, error: string, message: RegExp | undefined, what: string): Promise<void> {
  for (const proto of PROTOCOLS) {
    const seen = nas.requests.length
    const res = await fetchAs(proto, gw, url)
    t.equal(res.status, status, `${proto} ${what}: ${status}`)
    const body = json(res)
    t.equal(body.error, error, `${proto} ${what}: ${error}`)
    if (message) t.match(body.message, message, `${proto} ${what}: message`)
    t.equal(nas.requests.length, seen, `${proto} ${what}: the NAS was not asked`)
  }
}

/** Expects the grant URL served (200, the recording) over both protocols. */
async function servedOverBoth (t: Test, gw: TestGateway, url: string, what: string): Promise<void> {
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, url)
    t.equal(res.status, 200, `${proto} ${what}: 200`)
    t.ok(res.body.equals(RECORDING), `${proto} ${what}: the recording`)
  }
}

t.test('bindIp: a grant without an address claim is refused (signed here, or minted with bindIp off under the same key)', async (t) => {
  const nas = await startStubNas(t)
  const bound = await gateway(t, nas, { bindIp: true })
  const unbound = await gateway(t, nas, { bindIp: false })

  // Control: a grant the bindIp gateway mints carries the address and works.
  const own = await mint(t, bound, bound.token({ sub: 'alice' }))
  t.equal(claimsOf(own.grant).a, '127.0.0.1', 'minted with bindIp: bound to the asking address')
  await servedOverBoth(t, bound, own.url, 'a grant minted with bindIp')

  const signer = new GrantSigner(GRANT_SECRET)
  const claims: GrantClaims = { p: PATH, s: 'alice', r: 'recordings', i: now() - 5, e: now() + 120, g: ['recordings:read'] }
  const signedHere = signer.sign(claims)
  t.equal(claimsOf(signedHere).a, undefined)
  // The same claims with the address: accepted, so the refusal below is about the missing address only.
  await servedOverBoth(t, bound, `${PATH}?grant=${signer.sign({ ...claims, a: '127.0.0.1' })}`, 'control: the same claims with a:127.0.0.1')
  await refusedOverBoth(t, nas, bound, `${PATH}?grant=${signedHere}`, 401, 'NASGUARD_ERR_GRANT_INVALID', /not bound to a client address/, 'a grant signed without an address')

  const old = await mint(t, unbound, unbound.token({ sub: 'alice' }))
  t.equal(claimsOf(old.grant).a, undefined, 'minted with bindIp off: no address')
  await servedOverBoth(t, unbound, old.url, 'control: it works where bindIp is off')
  await refusedOverBoth(t, nas, bound, old.url, 401, 'NASGUARD_ERR_GRANT_INVALID', /not bound to a client address/, 'a grant minted with bindIp off, used where it is on')
})

t.test('a grant works only while its rule still grants the scopes it was minted under', async (t) => {
  const nas = await startStubNas(t)
  const base = [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }]
  const a = await gateway(t, nas, {}, { policy: base })
  const { url, grant } = await mint(t, a, a.token({ sub: 'alice', scope: 'recordings:read' }))
  t.match(claimsOf(grant), { r: 'recordings', g: ['recordings:read'] }, 'minted under rule recordings on recordings:read')
  await servedOverBoth(t, a, url, 'gateway A (where it was minted)')

  const b = await gateway(t, nas, {}, { policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:admin'] }] })
  await refusedOverBoth(t, nas, b, url, 403, 'NASGUARD_ERR_INSUFFICIENT_SCOPE', undefined, 'gateway B: the rule now needs recordings:admin')

  const c = await gateway(t, nas, {}, { policy: base })
  await servedOverBoth(t, c, url, 'gateway C: the rule unchanged (control)')

  const d = await gateway(t, nas, {}, { policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read', 'recordings:admin'] }] })
  await servedOverBoth(t, d, url, 'gateway D: the rule keeps recordings:read next to another scope')
})

t.test('a grant minted under a wildcard scope is refused once the rule is narrowed to another value', async (t) => {
  const nas = await startStubNas(t)
  const wide = [{ name: 'regional', path: '/regional/**', scopes: ['recordings:read:*'] }]
  const e = await gateway(t, nas, {}, { policy: wide })
  const { url, grant } = await mint(t, e, e.token({ sub: 'alice', scope: 'recordings:read:stockholm' }), REGIONAL)
  t.match(claimsOf(grant), { r: 'regional', g: ['recordings:read:stockholm'] }, 'minted on recordings:read:stockholm')
  await servedOverBoth(t, e, url, 'the wildcard rule (where it was minted)')

  const malmo = await gateway(t, nas, {}, { policy: [{ name: 'regional', path: '/regional/**', scopes: ['recordings:read:malmo'] }] })
  await refusedOverBoth(t, nas, malmo, url, 403, 'NASGUARD_ERR_INSUFFICIENT_SCOPE', undefined, 'the rule narrowed to recordings:read:malmo')

  const stockholm = await gateway(t, nas, {}, { policy: [{ name: 'regional', path: '/regional/**', scopes: ['recordings:read:stockholm'] }] })
  await servedOverBoth(t, stockholm, url, 'control: the rule narrowed to the value it was minted on')
  const same = await gateway(t, nas, {}, { policy: wide })
  await servedOverBoth(t, same, url, 'control: the wildcard rule unchanged on another gateway')
})
