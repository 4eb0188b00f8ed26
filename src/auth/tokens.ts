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
  if (!m || Number(m[1]) === 0) throw new Error(`invalid ttl ${JSON.stringify(ttl)}: use a number and s, m, h or d (e.g. 15m)`)
  return Number(m[1]) * UNITS[m[2]]
}

export interface TokenRequest { sub: string, scope: string, ttlSeconds: number, claims?: Record<string, unknown> }

export function issueToken (jwt: Config['auth']['jwt'], req: TokenRequest): { token: string, jti: string, exp: number } {
  const algorithm = (jwt.algorithms ?? ['HS256'])[0]
  let key: string
  if (jwt.secret !== undefined) key = jwt.secret
  else if (jwt.secretFile !== undefined) key = readSecretFile(jwt.secretFile)
  else if (jwt.privateKeyFile !== undefined) key = readFileSync(jwt.privateKeyFile, 'utf8')
  else throw new Error('auth.jwt.privateKeyFile is needed to issue tokens when the gateway verifies with a public key')
  const jti = randomUUID()
  const now = Math.floor(Date.now() / 1000)
  const exp = now + req.ttlSeconds
  const sign = createSigner({ key, algorithm: algorithm as never })
  const token = sign({
    ...req.claims,
    sub: req.sub,
    scope: req.scope,
    jti,
    exp,
    ...(jwt.issuer ? { iss: jwt.issuer } : {}),
    ...(jwt.audience ? { aud: jwt.audience } : {})
  })
  return { token, jti, exp }
}
