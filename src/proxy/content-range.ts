// Does the NAS's 206 answer the Range that was sent? A NAS (or something in
// front of it) that answers another span than was asked for would have the
// client splice the wrong bytes into its file, and a 206 to a request
// without Range says the NAS is not answering the request the gateway made.
// RFC 9110 §14.4 (Content-Range) and §15.3.7 (206). Pure.

export interface Span { start: number, end: number, /** the file's size; undefined for `*` */ total: number | undefined }

const CONTENT_RANGE = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)$/i
const SPEC = /^(?:(\d{1,15})-(\d{1,15})?|-(\d{1,15}))$/

export function parseContentRange (value: unknown): Span | undefined {
  if (typeof value !== 'string') return undefined
  const m = CONTENT_RANGE.exec(value.trim())
  if (!m) return undefined
  const span = { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) }
  if (span.end < span.start || (span.total !== undefined && span.end >= span.total)) return undefined
  return span
}

/** The spans a Range header asks for, resolved against the file's size (or partly, when it is unknown). */
export function requestedSpans (range: string, total: number | undefined): Array<{ start: number | undefined, end: number | undefined }> {
  const m = /^bytes=(.*)$/i.exec(range.trim())
  if (!m) return []
  return m[1].split(',').map((s) => SPEC.exec(s.trim())).flatMap((p) => {
    if (!p) return []
    if (p[3] !== undefined) return [{ start: total === undefined ? undefined : Math.max(0, total - Number(p[3])), end: total === undefined ? undefined : total - 1 }]
    const start = Number(p[1])
    const last = total === undefined ? undefined : total - 1
    const end = p[2] === undefined ? last : last === undefined ? Number(p[2]) : Math.min(Number(p[2]), last)
    return [{ start, end }]
  })
}

export type RangeAnswer = { ok: true, span: Span } | { ok: false, reason: string }

/**
 * Judges a 206: it must answer a Range that was sent, with a Content-Range
 * that is one of the requested spans (or, for several, their hull: servers
 * may coalesce), and a Content-Length that matches it.
 */
export function checkPartialAnswer (range: string | string[] | undefined, contentRange: unknown, contentLength: unknown): RangeAnswer {
  if (typeof range !== 'string') return { ok: false, reason: '206 to a request without Range' }
  const span = parseContentRange(contentRange)
  if (!span) return { ok: false, reason: 'missing or malformed Content-Range' }
  if (contentLength !== undefined && Number(contentLength) !== span.end - span.start + 1) return { ok: false, reason: 'Content-Length does not match Content-Range' }
  const asked = requestedSpans(range, span.total)
  // Without the file's size an open-ended span cannot be checked: refused.
  const same = (a: { start: number | undefined, end: number | undefined }): boolean => a.start === span.start && a.end === span.end
  const hull = asked.length > 1 && span.start === Math.min(...asked.map((a) => a.start ?? Infinity)) && span.end === Math.max(...asked.map((a) => a.end ?? -Infinity))
  if (!asked.some(same) && !hull) return { ok: false, reason: 'Content-Range is not the span that was asked for' }
  return { ok: true, span }
}
