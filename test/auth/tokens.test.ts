// nasguard token issue: the token's lifetime (exp minus iat) is the ttl
// asked for, also when the second turns between the clock readings.
import t from 'tap'
import { createVerifier } from 'fast-jwt'
import { issueToken } from '../../src/auth/tokens.js'
import type { Config } from '../../src/config/schema.js'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const jwt = { secret: SECRET, algorithms: ['HS256'], maxLifetimeSec: 86400 } as unknown as Config['auth']['jwt']

t.test('exp - iat is the ttl when the clock passes a second boundary while the token is made', async (t) => {
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  // Every reading after the first is in the next second.
  let readings = 0
  Date.now = () => readings++ === 0 ? 1_800_000_000_999 : 1_800_000_001_000
  const { token, exp } = issueToken(jwt, { sub: 'agent-7', scope: 'recordings:read', ttlSeconds: 900 })
  Date.now = realNow
  const claims = createVerifier({ key: SECRET, algorithms: ['HS256'], ignoreExpiration: true })(token) as { iat: number, exp: number }
  t.equal(claims.exp, exp, 'the exp said is the exp signed')
  t.equal(claims.exp - claims.iat, 900, 'the lifetime is the ttl, to the second')
  t.equal(claims.iat, 1_800_000_000, 'iat is the first clock reading')
})
