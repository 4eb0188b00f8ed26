// What an audit record may hold. Field values come from clients (a token's
// sub and jti, the User-Agent, a refused request line): each is cut to a
// bound and the cut is named in `truncated`, so a 12 KB claim cannot make a
// 24 KB line and a reader knows the value is a prefix. Token-shaped runs
// (JWTs and playback grants are base64url JSON: `eyJ...`) are removed from
// the free-text fields a client fills, so a grant put into a path or a
// header is never stored. The fields nasguard fills itself with numbers
// and digests (a tool run's counts, an ingest's sha256) are checked instead:
// a value of the wrong shape is a bug, and the record is refused naming
// the field. Pure.
import type { AuditRecord, RunCounts } from './writer.js'

/** Longest value kept per string field, in UTF-16 code units. */
export const FIELD_BOUNDS: Readonly<Record<string, number>> = {
  time: 32,
  requestId: 64,
  clientIp: 64,
  peerIp: 64,
  method: 16,
  path: 4096,
  range: 256,
  subject: 256,
  auth: 8,
  jti: 128,
  rule: 64,
  keyId: 64,
  outcome: 16,
  reason: 256,
  userAgent: 256,
  grantExpiresAt: 32,
  instance: 128,
  period: 32,
  sha256: 64,
  case: 128,
  until: 32,
  budget: 32
}
const DEFAULT_BOUND = 256

// `eyJ` is base64 of `{"`: the start of every JWT segment and grant payload,
// also when percent-encoded.
const TOKEN = /(?:e|%65)(?:y|%79)(?:J|%4a)(?:[A-Za-z0-9_\-.~+/=]|%[0-9A-Fa-f]{2})*/gi

export function redactTokens (s: string): string {
  return s.replace(TOKEN, '[token removed]')
}

/**
 * A request target as a refusal record keeps it: no query (a grant rides
 * there), no path parameters (`;grant=...`), no token-shaped runs.
 */
export function refusedTarget (url: string): string {
  const path = url.split('?', 1)[0]
  const semi = path.indexOf(';')
  return redactTokens(semi === -1 ? path : path.slice(0, semi) + ';[parameters removed]')
}

function cut (s: string, max: number): string {
  // Never leave half of a surrogate pair at the end.
  const end = /[\uD800-\uDBFF]/.test(s.charAt(max - 1)) ? max - 1 : max
  return s.slice(0, end)
}

const COUNTS: ReadonlyArray<keyof RunCounts> = ['sealed', 'skipped', 'failed', 'bytes', 'files', 'erased', 'deleted', 'held', 'overdue', 'generation']
const SHA256 = /^[0-9a-f]{64}$/

/** Why the record's checked fields (counts, sha256) are malformed; undefined when they are not. */
export function malformedField (record: AuditRecord): string | undefined {
  const { counts, sha256 } = record
  if (sha256 !== undefined && (typeof sha256 !== 'string' || !SHA256.test(sha256))) return 'sha256 must be 64 lowercase hex digits'
  if (counts === undefined) return undefined
  if (typeof counts !== 'object' || counts === null || Array.isArray(counts)) return 'counts must be an object'
  for (const [k, v] of Object.entries(counts)) {
    if (!(COUNTS as readonly string[]).includes(k)) return `counts.${k} is not a count a record holds (${COUNTS.join(', ')})`
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 0)) return `counts.${k} must be a whole number from 0, not ${String(v)}`
  }
  return undefined
}

/**
 * The record with every string field within its bound, and `truncated`
 * naming the fields that were cut. Throws on a malformed counts or sha256
 * (see malformedField).
 */
export function boundRecord<T extends AuditRecord> (record: T): T {
  const malformed = malformedField(record)
  if (malformed) throw new TypeError(`audit record (event ${String(record.event)}): ${malformed}; the record was not written`)
  let out: T | undefined
  const truncated: string[] = []
  for (const [k, v] of Object.entries(record)) {
    if (typeof v !== 'string') continue
    const clean = k === 'userAgent' ? redactTokens(v) : v
    const max = FIELD_BOUNDS[k] ?? DEFAULT_BOUND
    if (clean === v && v.length <= max) continue
    out ??= { ...record }
    const fields = out as unknown as Record<string, unknown>
    fields[k] = clean.length > max ? cut(clean, max) : clean
    if (clean.length > max) truncated.push(k)
  }
  if (!out) return record
  return truncated.length > 0 ? { ...out, truncated } : out
}
