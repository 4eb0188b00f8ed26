// What a request for a sealed recording is answered with, in plaintext
// terms (RFC 9110 §13, §14): the gateway, not the NAS, evaluates Range,
// If-Range and If-None-Match, since the NAS only knows the ciphertext.
// One byte range is served; a list of them is answered whole (200), which
// RFC 9110 §14.2 allows. Pure.
import type { IncomingHttpHeaders } from 'node:http'
import { requestedSpans } from '../proxy/content-range.js'

export interface Version {
  /** The plaintext's size. */
  size: number
  /** The gateway's ETag for it (strong). */
  etag: string
  lastModified?: string
}

export type Plan =
  | { kind: 'not-modified' }
  | { kind: 'unsatisfiable' }
  | { kind: 'body', status: 200 | 206, start: number, end: number }

function matchesAny (header: string, etag: string): boolean {
  return header.trim() === '*' || header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)
}

/**
 * If-Range (§13.1.5): a strong ETag that matches. A date never does: the
 * Last-Modified is the NAS's, not authenticated, and a file sealed again
 * within the same second (or under a date put back) keeps it, so a resume
 * by date could splice two sealings. §13.1.5 lets a server treat a date it
 * cannot vouch for as not strong: the whole file is sent.
 */
function rangeStillValid (ifRange: string | undefined, v: Version): boolean {
  if (ifRange === undefined) return true
  return ifRange.trim() === v.etag
}

export function planAnswer (v: Version, headers: IncomingHttpHeaders): Plan {
  const inm = headers['if-none-match']
  if (typeof inm === 'string' && matchesAny(inm, v.etag)) return { kind: 'not-modified' }
  const whole: Plan = { kind: 'body', status: 200, start: 0, end: v.size - 1 }
  const range = headers.range
  if (typeof range !== 'string' || !rangeStillValid(headers['if-range'] as string | undefined, v)) return whole
  const spans = requestedSpans(range, v.size)
  if (spans.length !== 1) return whole
  const { start, end } = spans[0]
  if (start === undefined || end === undefined || start >= v.size || end < start) return { kind: 'unsatisfiable' }
  return { kind: 'body', status: 206, start, end }
}
