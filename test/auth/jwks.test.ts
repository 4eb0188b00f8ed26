// Keys from a JWK Set (auth.jwt.jwks), over real sockets: a loopback JWKS
// server we control, the gateway in front of a stub NAS. Covers the fetch
// at start, rotation (an unknown kid refetches), the refetch rate limit,
// stale-while-down, and that each JWK is pinned to its own alg, its `use`,
// and never serves as an HMAC secret.
import { createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import t from 'tap'
import { bearer, get, startStubNas, startTestGateway, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { b64url, jws, nowSec, sendJson, startCountingServer, type CountingServer } from '../helpers/jws.js'
import { PROTOCOLS, fetchAs, postAs, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

type Jwk = JsonWebKey & { kid?: string, alg?: string, use?: string }

/** The public half of the private `key` as a JWK, with kid/alg/use as given (undefined fields left out). */
function publicJwk (key: KeyObject, extra: { kid: string, alg?: string, use?: string }): Jwk {
  const jwk: Jwk = { ...createPublicKey(key).export({ format: 'jwk' }), kid: extra.kid }
  if (extra.alg !== undefined) jwk.alg = extra.alg
  if (extra.use !== undefined) jwk.use = extra.use
  return jwk
}

function claims (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { sub: 'alice', scope: 'recordings:read', jti: 'jwks-' + randomBytes(6).toString('hex'), iat: nowSec(), exp: nowSec() + 600, ...extra }
}

type Mode = 'ok' | '500' | 'reset'

interface JwksServer extends CountingServer {
  /** Replace the published keys. */
  publish: (keys: Jwk[]) => void
  setMode: (m: Mode) => void
  /** Requests answered with something other than the set (500 or a reset). */
  failed: number
}

async function startJwks (t: Parameters<typeof startCountingServer>[0], keys: Jwk[]): Promise<JwksServer> {
  let current = keys
  let mode: Mode = 'ok'
  const state = { failed: 0 }
  const srv = await startCountingServer(t, (req, res) => {
    if (mode === '500') {
      state.failed++
      sendJson(res, 500, { error: 'down' })
      return
    }
    if (mode === 'reset') {
      state.failed++
      req.socket.destroy()
      return
    }
    sendJson(res, 200, { keys: current })
  })
  return {
    ...srv,
    publish: (k: Jwk[]) => { current = k },
    setMode: (m: Mode) => { mode = m },
    get failed () { return state.failed }
  }
}

/** GET PATH with the token; the status, and whether the NAS was asked. */
async function ask (gw: TestGateway, nas: StubNas, token: string): Promise<{ status: number, nas: number, body: string, challenge: string }> {
  const before = nas.requests.length
  const res = await get(gw, PATH, { headers: bearer(token) })
  return { status: res.status, nas: nas.requests.length - before, body: res.body.toString('utf8').slice(0, 200), challenge: String(res.headers['www-authenticate'] ?? '') }
}

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

function refused (t: Test, r: Awaited<ReturnType<typeof ask>>, what: string): void {
  t.equal(r.status, 401, `${what}: 401 (got ${r.status} ${r.body})`)
  t.match(r.challenge, /error="invalid_token"/, `${what}: invalid_token challenge`)
  t.equal(r.nas, 0, `${what}: nothing reached the NAS`)
}

function served (t: Test, r: Awaited<ReturnType<typeof ask>>, what: string): void {
  t.equal(r.status, 200, `${what}: 200 (got ${r.status} ${r.body})`)
  t.equal(r.nas, 1, `${what}: exactly one NAS request`)
}

t.test('JWK Set: fetched at start, rotation by unknown kid, stale-while-down', async (t) => {
  const k1 = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const k2 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const jwk1 = publicJwk(k1.privateKey, { kid: 'k1', alg: 'RS256', use: 'sig' })
  const jwk2 = publicJwk(k2.privateKey, { kid: 'k2', alg: 'ES256', use: 'sig' })

  const idp = await startJwks(t, [jwk1])
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { auth: { jwks: { url: `${idp.url}/jwks.json`, algorithms: ['RS256', 'ES256'], cacheTtlSec: 10, minRefreshIntervalSec: 1 } } })
  const tok1 = (): string => jws({ alg: 'RS256', typ: 'JWT', kid: 'k1' }, claims(), k1.privateKey)
  const tok2 = (): string => jws({ alg: 'ES256', typ: 'JWT', kid: 'k2' }, claims(), k2.privateKey)

  t.ok(idp.requests.length >= 1, 'the JWK Set was fetched')
  t.ok(idp.requests.every((r) => r.method === 'GET' && r.url === '/jwks.json'), 'only the configured URL is fetched')

  served(t, await ask(gw, nas, tok1()), 'kid k1 from the set')
  // Playback grants minted with a k1 token, over each protocol: they die with k1.
  const grants: string[] = []
  for (const proto of PROTOCOLS) {
    const minted = await postAs(proto, gw, '/_nasguard/grants', { path: PATH }, bearer(tok1()))
    t.equal(minted.status, 201, `${proto}: a grant minted with a k1 token`)
    grants.push(JSON.parse(minted.body.toString()).url as string)
  }
  const useGrants = async (): Promise<Array<{ status: number, nas: number }>> => {
    const out: Array<{ status: number, nas: number }> = []
    for (const [i, proto] of PROTOCOLS.entries()) {
      const before = nas.requests.length
      out.push({ status: (await fetchAs(proto, gw, grants[i])).status, nas: nas.requests.length - before })
    }
    return out
  }
  t.same(await useGrants(), [{ status: 200, nas: 1 }, { status: 200, nas: 1 }], 'the k1 grants serve while k1 is in the set (h1, h2)')

  // Before rotation, k2 is not in the set: refused.
  refused(t, await ask(gw, nas, tok2()), 'kid k2 before it is published')

  // Rotation: k2 published, k1 withdrawn. An unknown kid refetches the set
  // (at most once per second here), so k2 is accepted once the gateway may refetch.
  const beforeRotation = idp.requests.length
  idp.publish([jwk2])
  const waits: number[] = []
  const rotated = await waitFor('kid k2 accepted after rotation', async () => {
    const r = await ask(gw, nas, tok2())
    waits.push(r.status)
    return r.status === 200 ? r : undefined
    // Well under the 10 s cache TTL: only the unknown-kid refetch can make this succeed.
  }, { tries: 50, intervalMs: 100 })
  served(t, rotated, 'kid k2 after rotation')
  t.ok(waits.slice(0, -1).every((s) => s === 401), `before the refetch, k2 was refused, never served or errored (saw ${[...new Set(waits)].join(', ')})`)
  t.ok(idp.requests.length > beforeRotation, 'the unknown kid made the gateway refetch the set')
  refused(t, await ask(gw, nas, tok1()), 'kid k1 after it was withdrawn from the set')
  t.same(await useGrants(), [{ status: 401, nas: 0 }, { status: 401, nas: 0 }], 'the k1 grants are refused with k1, before their ttl, and the NAS is not asked (h1, h2)')
  refused(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'k2' }, claims(), stranger.privateKey)), 'kid k2 in an RS256 header signed by a stranger')

  // The provider answers 500: the refetch an unknown kid triggers fails, and
  // the last good set keeps serving k2.
  idp.setMode('500')
  const unknownWhile500: number[] = []
  await waitFor('a refetch answered 500', async () => {
    const r = await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'unknown-' + randomBytes(4).toString('hex') }, claims(), stranger.privateKey))
    unknownWhile500.push(r.status, r.nas)
    return idp.failed >= 1 ? true : undefined
  }, { tries: 100, intervalMs: 100 })
  t.ok(unknownWhile500.every((v, i) => (i % 2 === 0 ? v === 401 : v === 0)), 'unknown kids were refused and reached nothing while the provider failed')
  served(t, await ask(gw, nas, tok2()), 'kid k2 while the provider answers 500 (stale-while-down)')

  // The provider resets connections, and the cached set ages past its TTL
  // (10 s): every k2 request may now try a refetch; each fails, and k2 is
  // still served from the last good set.
  idp.setMode('reset')
  const failedBefore = idp.failed
  const whileDown: Array<{ status: number, nas: number }> = []
  await waitFor('a refetch of the expired set while the provider is down', async () => {
    const r = await ask(gw, nas, tok2())
    whileDown.push({ status: r.status, nas: r.nas })
    return idp.failed > failedBefore ? true : undefined
  }, { tries: 120, intervalMs: 250 })
  t.ok(whileDown.length > 0 && whileDown.every((r) => r.status === 200 && r.nas === 1), `kid k2 was served on every request while the provider was down and the set expired (${whileDown.length} requests, statuses ${[...new Set(whileDown.map((r) => r.status))].join(', ')})`)
  refused(t, await ask(gw, nas, tok1()), 'kid k1 (withdrawn) still refused while the provider is down')

  // The provider is gone altogether (connection refused).
  await idp.close()
  served(t, await ask(gw, nas, tok2()), 'kid k2 with the provider closed')
  refused(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'unknown-after-close' }, claims(), stranger.privateKey)), 'an unknown kid with the provider closed')
})

t.test('JWK Set: a grant dies with its key withdrawn from the set, with only grants asked for (the stale set is refetched for them as for tokens)', async (t) => {
  const k1 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const k2 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk1 = publicJwk(k1.privateKey, { kid: 'k1', alg: 'ES256', use: 'sig' })
  const jwk2 = publicJwk(k2.privateKey, { kid: 'k2', alg: 'ES256', use: 'sig' })
  const idp = await startJwks(t, [jwk1, jwk2])
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { auth: { jwks: { url: `${idp.url}/jwks.json`, algorithms: ['ES256'], cacheTtlSec: 10, minRefreshIntervalSec: 1 } } })
  const mint = async (proto: Protocol, key: KeyObject, kid: string): Promise<string> => {
    const minted = await postAs(proto, gw, '/_nasguard/grants', { path: PATH }, bearer(jws({ alg: 'ES256', typ: 'JWT', kid }, claims(), key)))
    t.equal(minted.status, 201, `${proto}: a grant minted with a ${kid} token`)
    return JSON.parse(minted.body.toString()).url as string
  }
  const grants = await Promise.all(PROTOCOLS.map(async (proto) => ({ proto, k1: await mint(proto, k1.privateKey, 'k1'), k2: await mint(proto, k2.privateKey, 'k2') })))
  // The provider withdraws k1; nothing but grants is asked for from here on.
  idp.publish([jwk2])
  const fetchesBefore = idp.requests.length
  const seen: number[] = []
  await waitFor('the k1 grants refused once the set is stale and refetched', async () => {
    const statuses = await Promise.all(grants.map(async (g) => (await fetchAs(g.proto, gw, g.k1)).status))
    seen.push(...statuses)
    return statuses.every((s) => s === 401) ? true : undefined
  }, { tries: 120, intervalMs: 500 })
  t.ok(seen.every((s) => s === 200 || s === 401), `until then they were served, never errored (saw ${[...new Set(seen)].join(', ')})`)
  t.ok(idp.requests.length > fetchesBefore, 'the set was refetched for the grants')
  for (const g of grants) {
    const before = nas.requests.length
    t.equal((await fetchAs(g.proto, gw, g.k1)).status, 401, `${g.proto}: the k1 grant: 401`)
    t.equal(nas.requests.length, before, `${g.proto}: the NAS was not asked`)
    t.equal((await fetchAs(g.proto, gw, g.k2)).status, 200, `${g.proto}: the k2 grant serves on`)
  }
})

t.test('JWK Set: a burst of unknown kids is rate-limited to the refresh interval', async (t) => {
  const k1 = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const idp = await startJwks(t, [publicJwk(k1.privateKey, { kid: 'k1', alg: 'RS256', use: 'sig' })])
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { auth: { jwks: { url: `${idp.url}/jwks.json`, algorithms: ['RS256', 'ES256'], cacheTtlSec: 600, minRefreshIntervalSec: 60 } } })
  const initial = idp.requests.length
  t.ok(initial >= 1, 'the set was fetched at start')

  const unknown = (): string => jws({ alg: 'RS256', typ: 'JWT', kid: 'rand-' + randomBytes(8).toString('hex') }, claims(), stranger.privateKey)
  // 20 at once, then 20 one after another.
  const burst = await Promise.all(Array.from({ length: 20 }, () => get(gw, PATH, { headers: bearer(unknown()) })))
  t.same(burst.map((r) => r.status), Array(20).fill(401), 'all 20 concurrent unknown-kid tokens get 401')
  for (let i = 0; i < 20; i++) {
    const r = await get(gw, PATH, { headers: bearer(unknown()) })
    t.equal(r.status, 401, `sequential unknown kid ${i}: 401`)
  }
  t.equal(nas.requests.length, 0, 'no unknown-kid token reached the NAS')
  t.ok(idp.requests.length - initial <= 1, `40 unknown kids caused at most 1 extra JWKS fetch (got ${idp.requests.length - initial})`)

  // The limiter does not lock out the keys the gateway already has.
  served(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'k1' }, claims(), k1.privateKey)), 'kid k1 after the burst')
})

t.test('JWK Set: each key is pinned to its alg and use, and never used as an HMAC secret', async (t) => {
  const rs = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const open = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const enc = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const octSecret = randomBytes(48).toString('hex')
  const hmacSecret = randomBytes(48).toString('hex')
  const set: Jwk[] = [
    publicJwk(rs.privateKey, { kid: 'rs', alg: 'RS256', use: 'sig' }),
    publicJwk(open.privateKey, { kid: 'open', use: 'sig' }),
    publicJwk(enc.privateKey, { kid: 'enc', alg: 'RS256', use: 'enc' }),
    // The same key material as `enc`, declared for signatures: the control for `use`.
    publicJwk(enc.privateKey, { kid: 'enc-as-sig', alg: 'RS256', use: 'sig' }),
    publicJwk(ec.privateKey, { kid: 'ec', alg: 'ES256', use: 'sig' }),
    { kty: 'oct', k: b64url(octSecret), kid: 'oct', alg: 'HS256', use: 'sig' }
  ]
  const idp = await startJwks(t, set)
  const nas = await startStubNas(t)

  // The gateway of the brief (RS256 and ES256 from the set)...
  const narrow = await startTestGateway(t, nas, { auth: { jwks: { url: `${idp.url}/jwks.json`, algorithms: ['RS256', 'ES256'], cacheTtlSec: 10, minRefreshIntervalSec: 1 } } })
  // ...and one where PS256 and HS256 are allowed in general (PS256 from the
  // set, HS256 for a static key), so that only the per-key pinning stands
  // between a token and the wrong key.
  const wide = await startTestGateway(t, nas, {
    auth: {
      jwks: { url: `${idp.url}/jwks.json`, algorithms: ['RS256', 'PS256', 'ES256'], cacheTtlSec: 10, minRefreshIntervalSec: 1 },
      keys: [{ kid: 'hmac', algorithms: ['HS256'], secret: hmacSecret }]
    }
  })

  const rsPem = createPublicKey(rs.privateKey).export({ type: 'spki', format: 'pem' }).toString()
  const rsDer = createPublicKey(rs.privateKey).export({ type: 'spki', format: 'der' })
  const rsJwkJson = JSON.stringify(set[0])

  for (const [name, gw] of [['narrow', narrow], ['wide', wide]] as const) {
    // Controls: each key works for what it declares.
    served(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'rs' }, claims(), rs.privateKey)), `${name}: RS256 with kid rs (alg RS256)`)
    served(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'enc-as-sig' }, claims(), enc.privateKey)), `${name}: RS256 with kid enc-as-sig (use sig)`)
    served(t, await ask(gw, nas, jws({ alg: 'ES256', typ: 'JWT', kid: 'ec' }, claims(), ec.privateKey)), `${name}: ES256 with kid ec`)

    // alg pinning: the JWK says RS256, the header says PS256 (a genuine PSS signature by that key).
    refused(t, await ask(gw, nas, jws({ alg: 'PS256', typ: 'JWT', kid: 'rs' }, claims(), rs.privateKey)), `${name}: PS256 header on a JWK with alg RS256`)
    refused(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'ec' }, claims(), rs.privateKey)), `${name}: RS256 header on the EC JWK`)
    refused(t, await ask(gw, nas, jws({ alg: 'ES256', typ: 'JWT', kid: 'rs' }, claims(), ec.privateKey)), `${name}: ES256 header on the RSA JWK`)

    // use: enc is not a signing key, whatever its alg says.
    refused(t, await ask(gw, nas, jws({ alg: 'RS256', typ: 'JWT', kid: 'enc' }, claims(), enc.privateKey)), `${name}: RS256 with the use:enc JWK`)

    // HS256 headers naming a JWKS key: its public material is no HMAC secret; an oct JWK is never taken.
    for (const [what, secret] of [['the PEM', rsPem], ['the PEM trimmed', rsPem.trim()], ['the DER', rsDer], ['the JWK JSON', rsJwkJson], ['the modulus n', String(set[0].n)]] as const) {
      refused(t, await ask(gw, nas, jws({ alg: 'HS256', typ: 'JWT', kid: 'rs' }, claims(), secret)), `${name}: HS256 with kid rs, MACed with ${what}`)
    }
    refused(t, await ask(gw, nas, jws({ alg: 'HS256', typ: 'JWT', kid: 'oct' }, claims(), octSecret)), `${name}: HS256 with the oct JWK's secret`)
  }

  // On the wide gateway PS256 is allowed: a key without alg (kty RSA) takes
  // it, which is what makes the PS256 refusal above a pinning refusal.
  served(t, await ask(wide, nas, jws({ alg: 'PS256', typ: 'JWT', kid: 'open' }, claims(), open.privateKey)), 'wide: PS256 with kid open (no alg in the JWK)')
  served(t, await ask(wide, nas, jws({ alg: 'HS256', typ: 'JWT', kid: 'hmac' }, claims(), hmacSecret)), 'wide: HS256 with the static hmac key')
  // On the narrow gateway PS256 is not allowed at all, even for the alg-less key.
  refused(t, await ask(narrow, nas, jws({ alg: 'PS256', typ: 'JWT', kid: 'open' }, claims(), open.privateKey)), 'narrow: PS256 with kid open (PS256 not configured)')
})
