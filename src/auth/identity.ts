// Who is asking. In this order: a client certificate that was sent must
// verify; then a Bearer token from the Authorization header (never from a
// cookie or query); else a playback grant in the `grant` query parameter;
// else a verified client certificate alone. Anything else is a 401.
//
// Tokens are verified by @fastify/jwt (fast-jwt underneath). The key comes
// from the token's alg and kid, and only from configured keys or the
// configured JWK Set: every key is pinned to its algorithms, `none` is never
// one of them, and keys a token brings itself (jwk, jku, x5u, x5c) are never
// looked at. exp and sub are required; iss, aud, nbf and the longest lifetime
// are checked; the denylist is checked after every verification.
import fastifyJwt from '@fastify/jwt'
import { createVerifier } from 'fast-jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { X509Certificate } from 'node:crypto'
import type { PeerCertificate, TLSSocket } from 'node:tls'
import type { ClientCrls } from '../tls/client-crl.js'
import type { Config } from '../config/schema.js'
import { Errors, isNasguardError } from '../errors.js'
import { scopesOf, type Grantee } from '../policy/rules.js'
import { JwksCache, keySourceCount, staticKeys, type VerificationKey } from './keys.js'
import type { RevocationSource } from './revocation.js'
import { grantFromUrl, type GrantSigner } from './grants.js'

export interface Identity {
  /** jwt: a bearer token; mtls: a verified client certificate; grant: a playback grant. */
  method: 'jwt' | 'mtls' | 'grant'
  /** The token's sub, or the certificate's `CN=name`. */
  subject: string
  jti?: string
  /** Token expiry and issue time (seconds), when there is a token. */
  exp?: number
  iat?: number
  /** The client certificate's serial number (hex), for mtls. */
  certSerial?: string
  /** The token's claims (for grants minted from it). */
  claims?: Record<string, unknown>
  /** The tag of the key the token was verified with (GrantSigner.keyTag), for grants minted from it. */
  keyTag?: string
  /** What policy rules are matched against. */
  grantee: Grantee
}

/** One short, fixed description per failure: it is sent to the client. */
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

/** The verified chain a client sent, leaf first, up to its trust anchor. */
function peerChain (socket: TLSSocket): X509Certificate[] {
  const out: X509Certificate[] = []
  const seen = new Set<string>()
  for (let c: PeerCertificate | undefined = socket.getPeerCertificate(true); c?.raw && !seen.has(c.fingerprint256); c = (c as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate) {
    seen.add(c.fingerprint256)
    out.push(new X509Certificate(c.raw))
  }
  return out
}

/** Revocation verdicts per connection and CRL set (a reload brings a new set). */
const revocationVerdicts = new WeakMap<TLSSocket, { crls: ClientCrls, why: string | undefined }>()

function revocation (socket: TLSSocket, crls: ClientCrls): string | undefined {
  const known = revocationVerdicts.get(socket)
  if (known?.crls === crls) return known.why
  const why = crls.check(peerChain(socket))
  revocationVerdicts.set(socket, { crls, why })
  return why
}

/**
 * The client certificate of this request's connection, when one was sent:
 * `CN=name` if it verified, otherwise the refusal. A certificate that does
 * not verify (unknown CA, expired, revoked) is refused even next to a valid
 * token: whoever holds it is not who they claim to be.
 */
function clientCertificate (request: FastifyRequest, crls: ClientCrls | undefined): { subject: string, serial: string } | undefined {
  const socket = request.raw.socket as TLSSocket | undefined
  const cert = socket?.getPeerCertificate?.()
  if (!socket || !cert || Object.keys(cert).length === 0) return undefined
  if (!socket.authorized) throw new Errors.ClientCertInvalid(String(socket.authorizationError ?? 'not verified').replace(/^Error: /, ''))
  const revoked = crls ? revocation(socket, crls) : undefined
  if (revoked !== undefined) throw new Errors.ClientCertInvalid(revoked)
  const cn = cert.subject?.CN
  if (typeof cn !== 'string' || cn === '') throw new Errors.ClientCertInvalid('no single CN in the subject')
  return { subject: `CN=${cn}`, serial: cert.serialNumber }
}

/** Every algorithm a token may be signed with, as the config declares them (no key file is read): the configured keys' and the JWK Set's. */
function declaredAlgorithms (jwt: Readonly<Config>['auth']['jwt']): string[] {
  const algs = new Set<string>()
  if (keySourceCount(jwt) === 1) for (const a of jwt.algorithms ?? ['HS256']) algs.add(a)
  for (const k of jwt.keys ?? []) for (const a of k.algorithms) algs.add(a)
  for (const a of jwt.jwks?.algorithms ?? []) algs.add(a)
  return [...algs]
}

/**
 * The keys as the verifier can use them: each with only the algorithms it
 * was built for (`algorithms`); a key left with none is not used. Every
 * algorithm left out is named in `skipped` with its key's source
 * (`auth.jwt.keys[1] (HS512)`): it needs a restart.
 */
function usableKeys (keys: readonly VerificationKey[], algorithms: readonly string[]): { keys: VerificationKey[], skipped: string[] } {
  const usable: VerificationKey[] = []
  const skipped: string[] = []
  for (const k of keys) {
    const algs = [...k.algorithms].filter((a) => algorithms.includes(a))
    const left = [...k.algorithms].filter((a) => !algorithms.includes(a))
    if (left.length > 0) skipped.push(`${k.source} (${left.join(', ')})`)
    if (algs.length > 0) usable.push({ ...k, algorithms: new Set(algs) })
  }
  return { keys: usable, skipped }
}

export interface AuthenticatorDeps {
  revocations: RevocationSource
  grants: GrantSigner
  jwks?: JwksCache
  /** The CRLs the gate applies to client certificates (clientAuth optional), as loaded now. */
  clientCrls?: () => ClientCrls | undefined
}

/** A token that verified: its claims, and the tag of the key it was verified with. */
interface Verified { claims: Record<string, unknown>, keyTag: string | undefined }

export class Authenticator {
  private statics: VerificationKey[]
  private readonly algorithms: string[]
  /** Verified tokens: exact token string -> claims and key tag, until when they may be reused. */
  private readonly verified = new Map<string, Verified & { until: number }>()
  /** The key material each request's token was checked against (set by the verifier's key callback). */
  private readonly keyUsed = new WeakMap<FastifyRequest, string>()
  private bareVerifier: ((token: string) => Promise<Record<string, unknown>>) | undefined
  readonly jwks?: JwksCache

  /**
   * @param keysFrom where the keys are read from, when not the config the
   * verifier is built for: a worker restarted after a reload takes the keys
   * the other workers use now, not the start's (which may be gone)
   */
  constructor (private readonly config: Readonly<Config>, private readonly deps: AuthenticatorDeps, keysFrom: Readonly<Config>['auth']['jwt'] = config.auth.jwt) {
    this.jwks = deps.jwks
    this.algorithms = declaredAlgorithms(config.auth.jwt)
    this.statics = usableKeys(staticKeys(keysFrom), this.algorithms).keys
  }

  /**
   * The configured keys, read afresh (a config reload: a secret rotated in
   * its file, a kid added or removed). The verifier was built for the
   * algorithms the start's config allows, so a key is used with those of
   * its algorithms only; every algorithm left out is returned with its
   * key's source (it needs a restart). Undefined when a key file cannot be
   * read: the keys in use stay. Tokens remembered as verified are verified
   * again.
   */
  replaceKeys (jwt: Readonly<Config>['auth']['jwt']): string[] | undefined {
    let next: VerificationKey[]
    try {
      next = staticKeys(jwt)
    } catch {
      return undefined
    }
    const { keys, skipped } = usableKeys(next, this.algorithms)
    this.statics = keys
    this.verified.clear()
    return skipped
  }

  /** The key a token's header selects, or the refusal. */
  private async keyFor (header: Record<string, unknown>): Promise<string> {
    // RFC 7515 §4.1.11: an extension the recipient does not understand must
    // be refused. nasguard understands none.
    if (header.crit !== undefined) throw new Errors.TokenInvalid('unsupported critical header')
    const alg = header.alg
    const kid = header.kid
    if (typeof alg !== 'string' || !this.algorithms.includes(alg)) throw new Errors.TokenInvalid('algorithm not allowed')
    if (kid !== undefined && typeof kid !== 'string') throw new Errors.TokenInvalid('malformed token')
    if (kid !== undefined) {
      const exact = this.statics.find((k) => k.kid === kid && k.algorithms.has(alg))
      if (exact) return exact.material
      if (this.jwks) {
        const k = await this.jwks.get(kid)
        if (k?.algorithms.has(alg)) return k.material
      }
    }
    const unnamed = this.statics.find((k) => k.kid === undefined && k.algorithms.has(alg))
    if (unnamed) return unnamed.material
    throw new Errors.TokenInvalid('no key for this token')
  }

  /** What a token must be, beyond its signature: one set of rules for requests and for tokens seen in plain HTTP. */
  private claimRules (): Record<string, unknown> {
    const jwt = this.config.auth.jwt
    return {
      algorithms: this.algorithms,
      // A configured issuer or audience is required, not just checked when
      // present: fast-jwt skips the comparison for an absent claim.
      requiredClaims: ['exp', ...(jwt.issuer !== undefined ? ['iss'] : []), ...(jwt.audience !== undefined ? ['aud'] : [])],
      allowedIss: jwt.issuer,
      allowedAud: jwt.audience,
      clockTolerance: jwt.clockToleranceSec * 1000,
      // Failed verifications are cheap to redo; caching them only helps an
      // attacker fill memory.
      errorCacheTTL: 0
    }
  }

  async register (app: FastifyInstance): Promise<void> {
    await app.register(fastifyJwt, {
      // The key is chosen from the token's header (alg, kid), so the secret
      // callback needs the complete decoded token.
      decode: { complete: true },
      secret: async (request: FastifyRequest, token: { header?: Record<string, unknown> }) => {
        const material = await this.keyFor(token?.header ?? {})
        this.keyUsed.set(request, material)
        return material
      },
      verify: this.claimRules()
    } as never)
    if (this.jwks) await this.jwks.prime()
  }

  private async bearer (request: FastifyRequest): Promise<Identity> {
    const h = request.headers.authorization
    if (typeof h !== 'string' || !/^Bearer [A-Za-z0-9\-_.~+/]+=*$/.test(h)) throw new Errors.TokenMissing()
    const now = Math.floor(Date.now() / 1000)
    const token = h.slice(7)
    const cached = this.verified.get(token)
    const v = cached !== undefined && cached.until > Date.now() ? cached : await this.verify(request, token, now)
    // Whether verified now or remembered, revocation is checked below, every time.
    return this.identity(v.claims, now, v.keyTag)
  }

  /** Signature and claims; a token that passes is remembered (until its exp, at most cacheTtlSec). */
  private async verify (request: FastifyRequest, token: string, now: number): Promise<Verified> {
    this.verified.delete(token)
    let claims: Record<string, unknown>
    try {
      claims = await request.jwtVerify<Record<string, unknown>>()
    } catch (err) {
      if (isNasguardError(err)) throw err
      const e = err as { code?: string, message?: string }
      if (e.code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') throw new Errors.TokenExpired()
      throw new Errors.TokenInvalid(describe(e))
    }
    this.checkClaims(claims, now)
    const material = this.keyUsed.get(request)
    const v = { claims: Object.freeze(claims), keyTag: material === undefined ? undefined : this.deps.grants.keyTag(material) }
    const jwt = this.config.auth.jwt
    if (jwt.cacheSize > 0) {
      // Bounded: the oldest entry goes first.
      if (this.verified.size >= jwt.cacheSize) this.verified.delete(this.verified.keys().next().value as string)
      const until = Math.min(Date.now() + jwt.cacheTtlSec * 1000, ((claims.exp as number) + jwt.clockToleranceSec) * 1000)
      this.verified.set(token, { ...v, until })
    }
    return v
  }

  /**
   * A bare token (one seen in plain HTTP, src/auth/exposed.ts) checked as a
   * request's would be, signature and claims, but not against the
   * revocations: its claims, or throws.
   */
  async verifyToken (token: string): Promise<Record<string, unknown>> {
    this.bareVerifier ??= createVerifier({ ...this.claimRules(), key: async (decoded: { header?: Record<string, unknown> }) => await this.keyFor(decoded.header ?? {}) } as never) as unknown as (token: string) => Promise<Record<string, unknown>>
    const claims = await this.bareVerifier(token)
    this.checkClaims(claims, Math.floor(Date.now() / 1000))
    return claims
  }

  /** The checks on a verified token's claims that fast-jwt does not make. */
  private checkClaims (claims: Record<string, unknown>, now: number): void {
    if (typeof claims.exp !== 'number') throw new Errors.TokenInvalid('bad exp claim')
    // iat is required: it bounds exp (exp - iat <= maxLifetimeSec), which is
    // what lets a revocation lapse safely after maxLifetimeSec.
    if (typeof claims.iat !== 'number') throw new Errors.TokenInvalid('a required claim is missing')
    const iat = claims.iat
    const tolerance = this.config.auth.jwt.clockToleranceSec
    if (iat > now + tolerance) throw new Errors.TokenInvalid('token issued in the future')
    const max = this.config.auth.jwt.maxLifetimeSec
    if (claims.exp - iat > max) throw new Errors.TokenInvalid('token lifetime longer than allowed')
    if (typeof claims.sub !== 'string' || claims.sub === '') throw new Errors.TokenInvalid('a required claim is missing')
  }

  private identity (claims: Record<string, unknown>, now: number, keyTag: string | undefined): Identity {
    const iat = claims.iat as number
    const subject = claims.sub as string
    const jti = typeof claims.jti === 'string' ? claims.jti : undefined
    // A denylist that exists but cannot be read could hide any revocation.
    if (this.deps.revocations.loadError) throw new Errors.RevocationUnavailable()
    const revoked = this.deps.revocations.check({ sub: subject, jti, iat }, now)
    if (revoked) throw new Errors.TokenInvalid(revoked)
    return { method: 'jwt', subject, jti, exp: claims.exp as number, iat, claims, keyTag, grantee: { scopes: scopesOf(claims), claims } }
  }

  private async grant (value: string, path: string, ip: string): Promise<Identity> {
    // As for tokens: a denylist that is not valid could hide the revocation of the grant's token.
    if (this.deps.revocations.loadError) throw new Errors.RevocationUnavailable()
    const v = this.deps.grants.verify(value, path, ip)
    if (!v.ok) throw new Errors.GrantInvalid(v.reason)
    const c = v.claims
    // A grant is as revoked as the token it came from: judge it by the
    // earlier of its own and its token's issue time.
    const revoked = this.deps.revocations.check({ sub: c.s, jti: c.j, iat: Math.min(c.i, c.t ?? c.i) })
    if (revoked) throw new Errors.GrantInvalid(revoked)
    // A grant minted with a token dies with the key that token was verified with (removed or replaced by a reload, gone from the JWKS).
    if (c.k !== undefined && !await this.keyLive(c.k)) throw new Errors.GrantInvalid('the key its token was verified with is gone (removed or replaced by a reload, or withdrawn from the JWK Set)')
    // A grant minted with a client certificate dies with that certificate.
    if (c.n !== undefined && this.deps.clientCrls?.()?.lists(c.n) === true) throw new Errors.GrantInvalid('the client certificate it was minted with is revoked')
    const basis = c.m !== undefined ? { cert: c.m } : { scopes: new Set(Array.isArray(c.g) ? c.g : []) }
    return { method: 'grant', subject: c.s, jti: c.j, exp: c.e, grantee: { grantRule: c.r, basis, claims: c.c } }
  }

  /** Whether a key with this tag is one tokens are verified with now (a JWK Set as fresh as for a token). */
  private async keyLive (tag: string): Promise<boolean> {
    const tagged = (k: VerificationKey): boolean => this.deps.grants.keyTag(k.material) === tag
    return this.statics.some(tagged) || (this.jwks !== undefined && [...await this.jwks.current()].some(tagged))
  }

  /** @param path the canonical path (a grant is checked against it) */
  async authenticate (request: FastifyRequest, path: string): Promise<Identity> {
    // Under require OpenSSL applied the CRL at the handshake; under optional the gate does (src/tls/client-crl.ts).
    const mode = this.config.tls.clientAuth
    const cert = mode !== 'off' ? clientCertificate(request, mode === 'optional' ? this.deps.clientCrls?.() : undefined) : undefined
    if (request.headers.authorization !== undefined) return this.bearer(request)
    const grant = grantFromUrl(request.url)
    if (grant !== undefined) return await this.grant(grant, path, request.ip)
    if (cert) return { method: 'mtls', subject: cert.subject, certSerial: cert.serial, grantee: { cert: cert.subject } }
    throw new Errors.TokenMissing()
  }
}
