// Playback grants: for browser <audio> players, which cannot send an
// Authorization header. A holder of a token that may read a path asks for a
// grant; the grant rides in the URL's `grant` parameter. It is an HMAC over
// the path, the subject, the rule that allowed it, its expiry and
// (optionally) the client IP, under a key kept apart from the JWT keys. The
// grant value is never logged or audited.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

export interface GrantClaims {
  /** canonical path */
  p: string
  /** subject */
  s: string
  /** rule that allowed it */
  r: string
  /** issued at, expires at (seconds) */
  i: number
  e: number
  /** the token's jti, so revoking the token revokes its grants */
  j?: string
  /** the token's iat: revoking the subject's tokens issued before T revokes their grants too */
  t?: number
  /** bound client IP */
  a?: string
  /** the token scopes the rule granted to when the grant was minted */
  g?: string[]
  /** or the client certificate (`CN=name`) it granted to */
  m?: string
  /** and that certificate's serial number (hex): revoking it revokes the grant */
  n?: string
  /** claim values the rule's path uses ({sub}, {region}) */
  c?: Record<string, string>
  /** the tag (keyTag) of the JWT key its token was verified with: the grant dies with that key */
  k?: string
}

const b64 = (b: Buffer): string => b.toString('base64url')
/** The MAC domain of grants (keyTag has its own). */
const GRANT = 'nasguard-grant-v1.'

export class GrantSigner {
  private readonly key: Buffer
  private readonly tags = new Map<string, string>()

  /** @param bindIp every grant must carry a client address (auth.grants.bindIp) */
  constructor (key?: string, private readonly bindIp = false) {
    this.key = key ? Buffer.from(key) : randomBytes(32)
  }

  /** The MAC of data under the grant key, for one purpose (its domain). */
  private mac (domain: string, data: string): Buffer {
    return createHmac('sha256', this.key).update(domain).update(data).digest()
  }

  /**
   * A JWT verification key's tag, carried in the grants its tokens mint: a
   * MAC under the grant key, so that a grant's holder learns nothing of the
   * key (not even a hash to guess a weak secret against).
   */
  keyTag (material: string): string {
    let tag = this.tags.get(material)
    if (tag === undefined) {
      tag = b64(this.mac('nasguard-jwt-key-v1.', material).subarray(0, 16))
      // A handful of keys, each tagged once; bounded anyway (JWKS rotates).
      if (this.tags.size >= 256) this.tags.clear()
      this.tags.set(material, tag)
    }
    return tag
  }

  sign (claims: GrantClaims): string {
    const payload = b64(Buffer.from(JSON.stringify(claims)))
    return `${payload}.${b64(this.mac(GRANT, payload))}`
  }

  /**
   * The grant's claims when the signature holds, it has not expired, and it
   * was made for this path (and this IP, when bound); otherwise the reason.
   */
  verify (grant: string, path: string, ip: string, now = Math.floor(Date.now() / 1000)): { ok: true, claims: GrantClaims } | { ok: false, reason: string } {
    const m = /^([A-Za-z0-9_-]{1,4096})\.([A-Za-z0-9_-]{43})$/.exec(grant)
    if (!m) return { ok: false, reason: 'malformed grant' }
    const expected = this.mac(GRANT, m[1])
    const given = Buffer.from(m[2], 'base64url')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'bad grant signature' }
    let c: GrantClaims
    try {
      c = JSON.parse(Buffer.from(m[1], 'base64url').toString('utf8')) as GrantClaims
    } catch {
      return { ok: false, reason: 'malformed grant' }
    }
    if (typeof c.e !== 'number' || c.e < now) return { ok: false, reason: 'grant expired' }
    if (c.p !== path) return { ok: false, reason: 'grant is for another path' }
    // A grant minted before bindIp was turned on carries no address: it would
    // work from anywhere, which is what bindIp forbids.
    if (this.bindIp && c.a === undefined) return { ok: false, reason: 'grant is not bound to a client address' }
    if (c.a !== undefined && c.a !== ip) return { ok: false, reason: 'grant is bound to another client address' }
    return { ok: true, claims: c }
  }
}

/** The `grant` query parameter, if the URL carries exactly one. */
export function grantFromUrl (url: string): string | undefined {
  const q = url.indexOf('?')
  if (q === -1) return undefined
  const values = new URLSearchParams(url.slice(q + 1)).getAll('grant')
  return values.length === 1 ? values[0] : undefined
}
