// The verified-token cache (auth.jwt.cacheSize) must only ever save work:
// it is keyed by the exact token string, never outlives the token's exp,
// and never skips the revocation check.
import t from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { addRevocation } from '../../src/auth/revocation.js'
import { SECRET, bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const nowSec = (): number => Math.floor(Date.now() / 1000)

t.test('a cached token is still refused once revoked, on the very next request', async (t) => {
  const nas = await startStubNas(t)
  const file = join(mkdtempSync(join(tmpdir(), 'nasguard-cache-')), 'revoked.jsonl')
  const gw = await startTestGateway(t, nas, { authExtra: { revocation: { file, pollMs: 50 } } })
  const token = sign({ sub: 'carol', scope: 'recordings:read', jti: 'jti-cached', exp: nowSec() + 600 })
  for (let i = 0; i < 3; i++) t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200, `request ${i + 1} (verified, then cached)`)
  const before = nas.requests.length
  addRevocation(file, { type: 'jti', jti: 'jti-cached', expiresAt: nowSec() + 600, at: nowSec() })
  await waitFor('the revocation', async () => ((await get(gw, PATH, { headers: bearer(token) })).status === 401 ? true : undefined), { tries: 200, intervalMs: 25 })
  const n = nas.requests.length
  for (let i = 0; i < 3; i++) t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 401, 'revoked, cache or not')
  t.equal(nas.requests.length, n, 'no NAS request for the revoked token')
  t.ok(n >= before, 'requests before the revocation applied may have been served')
})

t.test('the cache is keyed by the whole token: a changed signature or payload is verified (and refused)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = sign({ sub: 'dave', scope: 'recordings:read', exp: nowSec() + 600 })
  t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200, 'the genuine token, now cached')
  const [h, p, s] = token.split('.')
  const flipped = s.slice(0, -2) + (s.at(-2) === 'A' ? 'B' : 'A') + s.at(-1)
  const morePayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), scope: 'recordings:read admin' })).toString('base64url')
  const n = nas.requests.length
  const cases: Array<[string, string]> = [
    ['another signature', `${h}.${p}.${flipped}`],
    ['another payload, same signature', `${h}.${morePayload}.${s}`],
    ['the token with a trailing character', `${token}A`],
    ['the token cut short', token.slice(0, -1)]
  ]
  for (const [what, forged] of cases) t.equal((await get(gw, PATH, { headers: bearer(forged) })).status, 401, what)
  t.equal(nas.requests.length, n, 'zero NAS requests for the forged variants')
  t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200, 'the genuine token still works')
})

t.test('a cached token stops working at its exp', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { auth: { secret: SECRET, clockToleranceSec: 0 } })
  // Long enough for a first request on a busy machine, short enough to wait out.
  const token = sign({ sub: 'erin', scope: 'recordings:read', exp: nowSec() + 5 })
  t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200, 'valid, and cached')
  const status = await waitFor('the token to expire', async () => {
    const s = (await get(gw, PATH, { headers: bearer(token) })).status
    return s === 200 ? undefined : s
  }, { tries: 400, intervalMs: 50 })
  t.equal(status, 401, 'expired: 401 although it was cached')
  t.ok(nowSec() >= JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp, 'and not before its exp')
})

t.test('cacheSize: 0 turns the cache off (every request verifies)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { auth: { secret: SECRET, cacheSize: 0 } })
  const token = sign({ sub: 'frank', scope: 'recordings:read', exp: nowSec() + 600 })
  for (let i = 0; i < 2; i++) t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200)
})
