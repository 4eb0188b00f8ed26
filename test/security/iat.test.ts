// iat is required and may not lie in the future: it is what bounds a
// token's exp, and so what lets a revocation lapse safely.
import t from 'tap'
import { createSigner } from 'fast-jwt'
import { SECRET, bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'

t.test('tokens without iat, or issued in the future, are refused', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const now = Math.floor(Date.now() / 1000)
  const noIat = createSigner({ key: SECRET, algorithm: 'HS256', noTimestamp: true })
  // fast-jwt sets iat from clockTimestamp (ms).
  const issuedAt = (sec: number): ((payload: Record<string, unknown>) => string) => createSigner({ key: SECRET, algorithm: 'HS256', clockTimestamp: sec * 1000 })
  const table: Array<[string, string, number]> = [
    ['no iat', noIat({ sub: 'alice', scope: 'recordings:read', exp: now + 600 }), 401],
    ['iat an hour ahead', issuedAt(now + 3600)({ sub: 'alice', scope: 'recordings:read', exp: now + 4000 }), 401],
    ['iat within the clock tolerance', issuedAt(now + 5)({ sub: 'alice', scope: 'recordings:read', exp: now + 600 }), 200]
  ]
  for (const [name, token, status] of table) {
    const before = nas.requests.length
    const res = await get(gw, '/medicall/a.wav', { headers: bearer(token) })
    t.equal(res.status, status, name)
    t.equal(nas.requests.length - before, status === 200 ? 1 : 0, `${name}: NAS requests`)
  }
})
