// What the gateway makes of the NAS's status line and headers, before a
// byte of the body is looked at: stream it on, answer 304 or 416, or refuse
// it. Pure: the exchange (nas-exchange.ts) acts on the verdict.
import type { IncomingHttpHeaders } from 'node:http'
import { Errors, type NasguardError } from '../errors.js'
import { checkPartialAnswer } from './content-range.js'
import { httpDateMs } from './http-date.js'

export type Answer =
  /** A recording: its headers for the client, and where in the file the body starts. */
  | { kind: 'recording', headers: Record<string, string>, declared: number, start: number, whole: boolean }
  | { kind: 'not-modified', headers: Record<string, string> }
  | { kind: 'unsatisfiable', contentRange?: string }
  /** Not passed on; upstreamKind is the bounded label of the NAS failure (null: not one, e.g. 404). */
  | { kind: 'refused', err: NasguardError, upstreamKind: string | null, reason?: string }

/**
 * Audio, or a generic binary type, is what a recording looks like. Listings
 * are HTML, JSON or XML; an answer that does not say what it is gets no
 * benefit of the doubt.
 */
function looksLikeRecording (contentType: string | string[] | undefined): boolean {
  if (typeof contentType !== 'string') return false
  const ct = contentType.split(';')[0].trim().toLowerCase()
  return ct.startsWith('audio/') || ct === 'application/octet-stream'
}

/** An entity tag (RFC 9110 §8.8.3) of visible ASCII, bounded: the NAS's validator, passed back to it in conditional requests. */
const ENTITY_TAG = /^(W\/)?"[\x21\x23-\x7e]{0,256}"$/
const LENGTH = /^[0-9]{1,16}$/

/** A header's one value, without the optional whitespace around it (a string the client's parser would have to trim). */
export function headerValue (headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name]
  return typeof v === 'string' ? v.replace(/^[ \t]+|[ \t]+$/g, '') : undefined
}

/**
 * The NAS headers that may reach the client (Content-Length, Accept-Ranges,
 * ETag, Last-Modified; Content-Type is set from the extension), one value
 * each (a repeated header is not passed on), each only in its own grammar: the names are allow-listed, and
 * so are the values, or a NAS could put a path (another caller's number) in
 * an Accept-Ranges. A Last-Modified must be an HTTP date; a Content-Range
 * is checked and written anew by recording().
 */
export function passedHeaders (headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  const length = headerValue(headers, 'content-length')
  if (length !== undefined && LENGTH.test(length)) out['content-length'] = length
  const ranges = headerValue(headers, 'accept-ranges')?.toLowerCase()
  if (ranges === 'bytes' || ranges === 'none') out['accept-ranges'] = ranges
  const etag = headerValue(headers, 'etag')
  if (etag !== undefined && ENTITY_TAG.test(etag)) out.etag = etag
  const modified = headerValue(headers, 'last-modified')
  // Passed verbatim: the NAS compares the string it issued (If-Range,
  // If-Unmodified-Since), and a date written anew could differ from it.
  if (modified !== undefined && httpDateMs(modified) !== undefined) out['last-modified'] = modified
  return out
}

/**
 * A sealed file's type is whatever the NAS calls an unknown extension
 * (application/octet-stream, text/plain, none): its header is the real
 * check. What a listing or an error page is labelled is still refused.
 */
function looksLikeListing (contentType: string | string[] | undefined): boolean {
  const ct = String(contentType ?? '').split(';')[0].trim().toLowerCase()
  return ct === 'text/html' || ct.endsWith('/json') || ct.endsWith('/xml') || ct.endsWith('+xml') || ct.endsWith('+json')
}

/**
 * What is wrong with how a body is framed or coded (undefined: nothing). It
 * must be the file's bytes, with an end that is checked: chunked is the only
 * transfer coding (undici decodes it, and reads any other until the NAS
 * closes, a failure included), a whole file without chunks needs a length
 * (else a NAS that fails mid-body, a FIN, could not be told from one that
 * finished), and there is no content coding (gzip would reach the client as
 * the recording). Compared exactly, not after JavaScript's trim, which
 * strips a TAB or a no-break space that the NAS client's parser keeps.
 */
function framingProblem (status: number, headers: IncomingHttpHeaders, head: boolean): string | undefined {
  const te = headers['transfer-encoding']
  const ce = headers['content-encoding']
  // A HEAD's coded Content-Length would state the compressed size as the file's.
  if (ce !== undefined && !(typeof ce === 'string' && /^identity$/i.test(ce))) return 'a content coding'
  if (head) return undefined
  if (te !== undefined && !(typeof te === 'string' && /^chunked$/i.test(te))) return 'a transfer coding other than chunked'
  const length = headers['content-length']
  if (length !== undefined && !LENGTH.test(headerValue(headers, 'content-length') ?? '')) return 'a malformed length'
  if (status === 200 && length === undefined && te === undefined) return 'no length'
  return undefined
}

function recording (status: number, headers: IncomingHttpHeaders, range: string | string[] | undefined, o: { sealed: boolean, head: boolean }): Answer {
  if (o.sealed ? looksLikeListing(headers['content-type']) : !looksLikeRecording(headers['content-type'])) return { kind: 'refused', err: new Errors.UpstreamListing(), upstreamKind: 'listing' }
  const out = passedHeaders(headers)
  const framing = framingProblem(status, headers, o.head)
  if (framing) return { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'body', reason: framing }
  // A whole file is no part of one: the NAS's Content-Range is not passed on.
  if (status === 200) return { kind: 'recording', headers: out, declared: Number(out['content-length']), start: 0, whole: true }
  const answer = checkPartialAnswer(range, headers['content-range'], headers['content-length'])
  if (!answer.ok) return { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'range', reason: answer.reason }
  const { start, end, total } = answer.span
  // Both written from the span that was checked (a chunked 206 is given its span's length: never more is passed on).
  out['content-range'] = `bytes ${start}-${end}/${total ?? '*'}`
  out['content-length'] = String(end - start + 1)
  return { kind: 'recording', headers: out, declared: end - start + 1, start, whole: end + 1 === total }
}

/** The size a 416 may state (RFC 9110 §14.4: "bytes", a star, a slash and the complete length); anything else is not passed on. */
const UNSATISFIED_RANGE = /^bytes \*\/(0|[1-9][0-9]{0,15})$/

/** The verdict on a NAS answer to a request that carried `range` (if any); `sealed` for an age file, `head` for a HEAD (no body to end). */
export function judgeAnswer (status: number, headers: IncomingHttpHeaders, range: string | string[] | undefined, sealed = false, head = false): Answer {
  if (status === 200 || status === 206) return recording(status, headers, range, { sealed, head })
  if (status === 304) {
    const { 'content-length': _, ...rest } = passedHeaders(headers)
    return { kind: 'not-modified', headers: rest }
  }
  if (status === 404 || status === 410) return { kind: 'refused', err: new Errors.NotFound(), upstreamKind: null }
  if (status === 416) {
    const cr = headers['content-range']
    return { kind: 'unsatisfiable', ...(typeof cr === 'string' && UNSATISFIED_RANGE.test(cr) ? { contentRange: cr } : {}) }
  }
  if (status >= 300 && status < 400) return { kind: 'refused', err: new Errors.UpstreamListing(), upstreamKind: 'redirect' }
  return { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: status === 401 || status === 403 ? 'auth' : `status_${Math.floor(status / 100)}xx` }
}
