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
import { scopesOf, type Grantee } from '../policy/rules.js'
import type { TLSSocket } from 'node:tls'

export interface Identity {
  /** jwt: a bearer token; mtls: a verified client certificate. */
  method: 'jwt' | 'mtls'
  /** The token's sub, or the certificate's `CN=name`. */
  subject: string
  jti?: string
  /** What policy rules are matched against. */
  grantee: Grantee
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

/**
 * The client certificate of this request's connection, when one was sent:
 * `CN=name` if it verified, otherwise the refusal. A certificate that does
 * not verify (unknown CA, expired, revoked) is refused even next to a valid
 * token: whoever holds it is not who they claim to be.
 */
function clientCertificate (request: FastifyRequest): string | undefined {
  const socket = request.raw.socket as TLSSocket | undefined
  const cert = socket?.getPeerCertificate?.()
  if (!cert || Object.keys(cert).length === 0) return undefined
  if (!socket?.authorized) throw new Errors.ClientCertInvalid(String(socket?.authorizationError ?? 'not verified').replace(/^Error: /, ''))
  const cn = cert.subject?.CN
  if (typeof cn !== 'string' || cn === '') throw new Errors.ClientCertInvalid('no single CN in the subject')
  return `CN=${cn}`
}

export async function authenticate (request: FastifyRequest, clientCerts: boolean): Promise<Identity> {
  const cert = clientCerts ? clientCertificate(request) : undefined
  const h = request.headers.authorization
  if (h === undefined && cert) return { method: 'mtls', subject: cert, grantee: { cert } }
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
  return { method: 'jwt', subject, jti: typeof claims.jti === 'string' ? claims.jti : undefined, grantee: { scopes: scopesOf(claims) } }
}
