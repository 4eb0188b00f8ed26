// Verification keys: configured secrets and PEM keys, and an identity
// provider's JWK Set. Every key is pinned to its algorithms, and a token is
// only ever checked against a key that its header's alg (and kid) select.
// Header fields that would let a token bring its own key (jwk, jku, x5u,
// x5c) are never read.
import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Config } from '../config/schema.js'
import { HMAC_ALGORITHMS } from './algorithms.js'
import { readSecretFile } from '../config/secrets.js'

type JwtConfig = Config['auth']['jwt']

export interface VerificationKey {
  kid?: string
  algorithms: ReadonlySet<string>
  /** An HMAC secret, or a PEM public key. */
  material: string
  source: string
}

export const MIN_HMAC_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 }

export function isHmac (alg: string): boolean {
  return (HMAC_ALGORITHMS as readonly string[]).includes(alg)
}

interface KeySource { secret?: string, secretFile?: string, publicKeyFile?: string }

export function keySourceCount (k: KeySource): number {
  return [k.secret, k.secretFile, k.publicKeyFile].filter((v) => v !== undefined).length
}

function material (k: KeySource): string {
  if (k.secret !== undefined) return k.secret
  if (k.secretFile !== undefined) return readSecretFile(k.secretFile)
  return readFileSync(k.publicKeyFile as string, 'utf8')
}

/** The configured keys: the top-level one (if any) and `keys[]`. */
export function staticKeys (jwt: JwtConfig): VerificationKey[] {
  const out: VerificationKey[] = []
  if (keySourceCount(jwt) === 1) {
    const algs = jwt.algorithms ?? ['HS256']
    out.push({ algorithms: new Set(algs), material: material(jwt), source: 'auth.jwt' })
  }
  jwt.keys?.forEach((k, i) => {
    out.push({ kid: k.kid, algorithms: new Set(k.algorithms), material: material(k), source: `auth.jwt.keys[${i}]` })
  })
  return out
}

export interface JwksOptions {
  url: string
  algorithms: readonly string[]
  cacheTtlSec: number
  minRefreshIntervalSec: number
  timeoutMs: number
}

/** What a JWK may be used for, by its own declarations. */
function jwkAlgorithms (jwk: JsonWebKey & { alg?: string, use?: string }, allowed: readonly string[]): string[] {
  if (jwk.use !== undefined && jwk.use !== 'sig') return []
  const byType: Record<string, RegExp> = { RSA: /^(RS|PS)/, EC: /^ES/, OKP: /^EdDSA$/ }
  const fits = allowed.filter((a) => byType[String(jwk.kty)]?.test(a))
  if (jwk.alg !== undefined) return fits.includes(jwk.alg) ? [jwk.alg] : []
  return fits
}

/**
 * A JWK Set fetched from the identity provider. The set is kept for
 * cacheTtlSec; an unknown kid refetches it, at most once per
 * minRefreshIntervalSec; when the provider is down, the last good set keeps
 * being used.
 */
export class JwksCache {
  private keys = new Map<string, VerificationKey>()
  private fetchedAt = 0
  private lastAttempt = 0
  private inflight: Promise<void> | null = null
  lastError: string | null = null
  fetches = 0

  constructor (private readonly opts: JwksOptions, private readonly fetchImpl: typeof fetch = fetch) {}

  private async refresh (): Promise<void> {
    this.inflight ??= (async () => {
      this.lastAttempt = Date.now()
      this.fetches++
      try {
        const res = await this.fetchImpl(this.opts.url, { signal: AbortSignal.timeout(this.opts.timeoutMs), redirect: 'error', headers: { accept: 'application/json' } })
        if (!res.ok) throw new Error(`JWKS answered ${res.status}`)
        const body = await res.json() as { keys?: Array<JsonWebKey & { kid?: string, alg?: string, use?: string }> }
        if (!Array.isArray(body.keys)) throw new Error('JWKS has no keys array')
        const next = new Map<string, VerificationKey>()
        for (const jwk of body.keys) {
          if (typeof jwk.kid !== 'string' || jwk.kid === '') continue
          const algs = jwkAlgorithms(jwk, this.opts.algorithms)
          if (algs.length === 0) continue
          try {
            // Only the public part is taken, whatever else the JWK holds.
            const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
            next.set(jwk.kid, { kid: jwk.kid, algorithms: new Set(algs), material: pem, source: 'jwks' })
          } catch {
            // An unusable key is skipped, not fatal for the others.
          }
        }
        this.keys = next
        this.fetchedAt = Date.now()
        this.lastError = null
      } catch (err) {
        // Keep serving the last good set.
        this.lastError = (err as Error).message
      } finally {
        this.inflight = null
      }
    })()
    return this.inflight
  }

  /** Refetches the set when it is stale, or when asked for a kid it lacks (rate-limited). */
  private async refreshIf (unknownKid: boolean): Promise<void> {
    const now = Date.now()
    const stale = now - this.fetchedAt > this.opts.cacheTtlSec * 1000
    const mayRefetch = now - this.lastAttempt > this.opts.minRefreshIntervalSec * 1000
    if ((stale || unknownKid) && mayRefetch) await this.refresh()
  }

  /** The key for kid, refetching when the set is stale or the kid unknown (rate-limited). */
  async get (kid: string): Promise<VerificationKey | undefined> {
    await this.refreshIf(!this.keys.has(kid))
    return this.keys.get(kid)
  }

  /** Every key of the set, refetched first when it is stale (rate-limited). */
  async current (): Promise<IterableIterator<VerificationKey>> {
    await this.refreshIf(false)
    return this.keys.values()
  }

  /** Warm the cache at start; failures are kept in lastError. */
  async prime (): Promise<void> {
    await this.refresh()
  }
}
