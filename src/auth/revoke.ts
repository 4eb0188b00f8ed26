// Adding a revocation where the deployment keeps them: Redis when
// state.redis is set (one script, published to every gateway at once),
// else the denylist file every gateway and worker polls. One way for
// `nasguard token revoke` and for the gateway itself (a token seen in
// plain HTTP, src/auth/exposed.ts). "now" is the clock of whatever keeps
// the revocations: Redis's, when shared.
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { addRevocation, revocationEntry, type RevocationEntry } from './revocation.js'

export type RevocationTarget = { jti: string } | { sub: string, issuedBefore: number }

export interface Revoked {
  entry: RevocationEntry
  /** Entries now kept. */
  kept: number
  /** Redis: the gateway connections that heard it at once; undefined for the file. */
  heard?: number
  /** The denylist file written, when not Redis. */
  file?: string
}

/** The denylist file of a config without state.redis. */
export function denylistFile (c: Readonly<Config>): string {
  return c.auth.revocation.file ?? join(c.audit.dir, 'revoked.jsonl')
}

/**
 * Revokes `target(now)`; rejects (saying why) when nothing was revoked.
 * warn: a damaged denylist file was rewritten with what it still held.
 * file: addRevocation's salvage and waitMs (a gateway: neither).
 */
export async function revoke (c: Readonly<Config>, target: (now: number) => RevocationTarget, warn?: (message: string) => void, file: { salvage?: boolean, waitMs?: number } = {}): Promise<Revoked> {
  const make = (now: number): RevocationEntry => revocationEntry(c.auth.jwt, target(now), now)
  const redis = c.state.redis
  if (redis) {
    const { addSharedRevocation } = await import('./shared-revocations.js')
    const r = await addSharedRevocation(redis, make, c.auth.jwt.clockToleranceSec)
    return { entry: r.entry, kept: r.kept, heard: r.heard }
  }
  const path = denylistFile(c)
  const now = Math.floor(Date.now() / 1000)
  const entry = make(now)
  const kept = addRevocation(path, entry, now, { ...file, ...(warn === undefined ? {} : { warn }) })
  return { entry, kept, file: path }
}
