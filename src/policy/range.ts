// Range header sanity (RFC 9110 §14.2). A gateway that passes any Range list
// on lets one request make the NAS read and send the same bytes many times
// over (the CVE-2011-3192 class: hundreds of overlapping ranges). nasguard
// accepts a short list of well-formed, non-overlapping byte ranges and
// refuses the rest before the NAS is asked. Pure.

export type RangeCheck = { ok: true, count: number } | { ok: false, reason: string }

const SPEC = /^(?:(\d{1,15})-(\d{1,15})?|-(\d{1,15}))$/

export function checkRange (header: string | string[] | undefined, maxRanges: number): RangeCheck {
  if (header === undefined) return { ok: true, count: 0 }
  if (Array.isArray(header)) return { ok: false, reason: 'more than one Range header' }
  const m = /^bytes=(.*)$/i.exec(header.trim())
  if (!m) return { ok: false, reason: 'only byte ranges are served' }
  const specs = m[1].split(',').map((s) => s.trim())
  if (specs.length > maxRanges) return { ok: false, reason: `more than ${maxRanges} range(s)` }
  const spans: Array<[number, number]> = []
  let suffix = false
  for (const spec of specs) {
    const p = SPEC.exec(spec)
    if (!p) return { ok: false, reason: 'malformed range' }
    if (p[3] !== undefined) {
      if (Number(p[3]) === 0) return { ok: false, reason: 'empty suffix range' }
      suffix = true
      continue
    }
    const start = Number(p[1])
    const end = p[2] === undefined ? Number.MAX_SAFE_INTEGER : Number(p[2])
    if (end < start) return { ok: false, reason: 'range ends before it starts' }
    spans.push([start, end])
  }
  // Without the file's size a suffix range may overlap anything else.
  if (suffix && specs.length > 1) return { ok: false, reason: 'a suffix range with other ranges' }
  spans.sort((a, b) => a[0] - b[0])
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] <= spans[i - 1][1]) return { ok: false, reason: 'overlapping ranges' }
  }
  return { ok: true, count: specs.length }
}
