// Issuing tokens (`nasguard token issue`, the demo). In production an
// identity provider issues them; this is for operators and tests.
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createSigner } from 'fast-jwt'
import type { Config } from '../config/schema.js'
import { readSecretFile } from '../config/secrets.js'

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }

/** '90s', '15m', '1h', '7d' -> seconds. */
export function parseTtl (ttl: string): number {
  const m = /^(\d+)([smhd])$/.exec(ttl.trim())
  if (!m || Number(m[1]) === 0) throw new Error(`invalid --ttl ${JSON.stringify(ttl)}: use a number and s, m, h or d (e.g. 15m)`)
  return Number(m[1]) * UNITS[m[2]]
}

export interface TokenRequest { sub: string, scope: string, ttlSeconds: number, kid?: string, claims?: Record<string, unknown> }

/** The key and algorithm tokens are signed with: the top-level key, or the keys[] entry named by kid. */
function signingKey (jwt: Config['auth']['jwt'], kid?: string): { key: string, algorithm: string, kid?: string } {
  if (kid !== undefined) {
    const k = jwt.keys?.find((x) => x.kid === kid)
    if (!k) throw new Error(`no key with kid ${JSON.stringify(kid)} in auth.jwt.keys`)
    const secret = k.secret ?? (k.secretFile !== undefined ? readSecretFile(k.secretFile) : undefined)
    if (secret === undefined) throw new Error(`key ${kid} is a public key: tokens for it are issued by whoever holds its private key`)
    return { key: secret, algorithm: k.algorithms[0], kid }
  }
  const algorithm = (jwt.algorithms ?? ['HS256'])[0]
  if (jwt.secret !== undefined) return { key: jwt.secret, algorithm }
  if (jwt.secretFile !== undefined) return { key: readSecretFile(jwt.secretFile), algorithm }
  if (jwt.privateKeyFile !== undefined) return { key: readFileSync(jwt.privateKeyFile, 'utf8'), algorithm }
  const first = jwt.keys?.find((x) => x.secret !== undefined || x.secretFile !== undefined)
  if (first) return { key: first.secret ?? readSecretFile(first.secretFile as string), algorithm: first.algorithms[0], kid: first.kid }
  throw new Error('nothing to sign with: set auth.jwt.secret/secretFile, auth.jwt.privateKeyFile, or an HMAC entry in auth.jwt.keys')
}

export function issueToken (jwt: Config['auth']['jwt'], req: TokenRequest): { token: string, jti: string, exp: number } {
  const { key, algorithm, kid } = signingKey(jwt, req.kid)
  if (req.ttlSeconds > jwt.maxLifetimeSec) throw new Error(`ttl ${req.ttlSeconds}s is longer than auth.jwt.maxLifetimeSec (${jwt.maxLifetimeSec}s): the gateway would refuse the token`)
  const jti = randomUUID()
  const now = Math.floor(Date.now() / 1000)
  const exp = now + req.ttlSeconds
  const sign = createSigner({ key, algorithm: algorithm as never, ...(kid ? { kid } : {}) })
  const token = sign({
    ...req.claims,
    sub: req.sub,
    scope: req.scope,
    jti,
    // iat from the same clock reading as exp: left to the signer, it could
    // fall in the next second, and the lifetime be a second short.
    iat: now,
    exp,
    ...(jwt.issuer ? { iss: jwt.issuer } : {}),
    ...(jwt.audience ? { aud: jwt.audience } : {})
  })
  return { token, jti, exp }
}

