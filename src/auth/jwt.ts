// Bearer JWTs, verified by @fastify/jwt (fast-jwt underneath) with the
// algorithms pinned by config: a token whose header names any other
// algorithm, `none` included, is refused before its signature is looked at.
// `exp` is required. Tokens are read from the Authorization header only.
import { readFileSync } from 'node:fs'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Config } from '../config/schema.js'
import { readSecretFile } from '../config/load.js'
import { Errors } from '../errors.js'

export interface Identity {
  subject: string
  jti?: string
  claims: Record<string, unknown>
}

/** A secret string, or { public } for a public key (the gateway never signs, so it holds no private key). */
export function verificationKey (jwt: Config['auth']['jwt']): string | { public: string } {
  if (jwt.secret !== undefined) return jwt.secret
  if (jwt.secretFile !== undefined) return readSecretFile(jwt.secretFile)
  if (jwt.publicKeyFile !== undefined) return { public: readFileSync(jwt.publicKeyFile, 'utf8') }
  throw new Error('auth.jwt has no key')
}

export async function registerJwt (app: FastifyInstance, jwt: Config['auth']['jwt']): Promise<void> {
  await app.register(fastifyJwt, {
    secret: verificationKey(jwt),
    verify: {
      algorithms: [...(jwt.algorithms ?? ['HS256'])],
      requiredClaims: ['exp'],
      allowedIss: jwt.issuer,
      allowedAud: jwt.audience,
      clockTolerance: jwt.clockToleranceSec * 1000,
      // Failed verifications are cheap to redo; caching them only helps an
      // attacker fill memory.
      errorCacheTTL: 0
    }
  })
}

/** One short, fixed description per failure: it is sent to the client, so it says no more than needed. */
function describe (err: { code?: string, message?: string }): string {
  const m = err.message ?? ''
  if (/algorithm/i.test(m)) return 'algorithm not allowed'
  if (/signature/i.test(m)) return 'bad signature'
  if (/malformed|invalid token|not a valid|decode/i.test(m)) return 'malformed token'
  if (/required claim|missing/i.test(m)) return 'a required claim is missing'
  if (/iss/.test(m)) return 'wrong issuer'
  if (/aud/.test(m)) return 'wrong audience'
  if (/not active|nbf/i.test(m)) return 'token not yet valid'
  if (/exp/.test(m)) return 'bad exp claim'
  return 'verification failed'
}

export async function authenticate (request: FastifyRequest): Promise<Identity> {
  const h = request.headers.authorization
  if (typeof h !== 'string' || !/^Bearer [A-Za-z0-9\-_.~+/]+=*$/.test(h)) {
    throw new Errors.TokenMissing()
  }
  let claims: Record<string, unknown>
  try {
    claims = await request.jwtVerify<Record<string, unknown>>()
  } catch (err) {
    const e = err as { code?: string, message?: string }
    if (e.code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') throw new Errors.TokenExpired()
    throw new Errors.TokenInvalid(describe(e))
  }
  if (typeof claims.exp !== 'number') throw new Errors.TokenInvalid('bad exp claim')
  const subject = typeof claims.sub === 'string' ? claims.sub : ''
  if (!subject) throw new Errors.TokenInvalid('a required claim is missing')
  return { subject, jti: typeof claims.jti === 'string' ? claims.jti : undefined, claims }
}
