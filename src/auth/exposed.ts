// A token seen in plain HTTP is compromised: it crossed the network in the
// clear, to the TLS port (a client misconfigured with http://, or someone
// probing). When the request head carries a bearer token that verifies as
// one of ours, the token is revoked at once (its jti; a token without one,
// by its subject and issue time), so it is refused over TLS right after,
// by every gateway and worker. The token itself is never logged or
// audited: its subject and jti are.
import type { Revoked, RevocationTarget } from './revoke.js'

/** The bearer token of a plain HTTP request head, if it carries one. */
export function bearerIn (head: Buffer): string | undefined {
  const m = /\r\nauthorization[ \t]*:[ \t]*bearer[ \t]+([A-Za-z0-9\-_.~+/]+=*)[ \t]*\r\n/i.exec(head.toString('latin1'))
  return m?.[1]
}

export interface ExposedParts {
  /** The token's claims when it verifies (signature and claims, as for a request); throws otherwise. */
  verify: (token: string) => Promise<Record<string, unknown>>
  /** Whether the token is revoked already (then nothing is written again). */
  revoked: (claims: { sub: string, jti?: string, iat: number }) => boolean
  revoke: (target: (now: number) => RevocationTarget) => Promise<Revoked>
  /** Told what happened: revoked (with the entry), or failed (why); never the token. */
  report: (outcome: { revoked: true, subject: string, jti?: string } | { revoked: false, subject: string, jti?: string, problem: string }) => void
}

/**
 * Revokes a token seen in plain HTTP if it is one of ours; resolves whether
 * it is revoked now. Never rejects. A token revoked already writes nothing
 * (replaying one token costs a verification, not a write).
 */
export async function revokeExposed (token: string, p: ExposedParts): Promise<boolean> {
  let claims: Record<string, unknown>
  try {
    claims = await p.verify(token)
  } catch {
    // Not a token this gateway accepts: there is nothing to revoke.
    return false
  }
  const subject = claims.sub as string
  const jti = typeof claims.jti === 'string' && claims.jti !== '' ? claims.jti : undefined
  const iat = claims.iat as number
  if (p.revoked({ sub: subject, iat, ...(jti !== undefined ? { jti } : {}) })) return true
  try {
    // Without a jti the token is told apart by its subject and issue time: it and the subject's tokens issued before it (or in the same second) go.
    await p.revoke(() => jti !== undefined ? { jti } : { sub: subject, issuedBefore: iat + 1 })
  } catch (err) {
    p.report({ revoked: false, subject, ...(jti !== undefined ? { jti } : {}), problem: (err as Error).message })
    return false
  }
  p.report({ revoked: true, subject, ...(jti !== undefined ? { jti } : {}) })
  return true
}
