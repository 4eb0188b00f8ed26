// One canonical form for a request path. The gateway decodes once, refuses
// anything ambiguous, and re-encodes the decoded segments one fixed way. Policy
// matches the decoded segments; the NAS receives the re-encoded path; the
// audit record holds the same string. A NAS or URL parser that would resolve
// the path differently (dot segments, encoded separators, overlong UTF-8,
// backslashes) never gets the chance: such paths are refused, not repaired.
// Pure: no I/O, no Fastify.

export type CanonicalPath =
  | { ok: true, path: string, segments: string[] }
  | { ok: false, reason: string }

// RFC 3986 pchar minus ';' (path parameters are refused) and '%' (handled apart).
const RAW_ALLOWED = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/
// Characters that stay literal when re-encoding a segment.
const KEEP = /[A-Za-z0-9\-._~!$&'()*+,=:@]/
const ALL_KEPT = /^[A-Za-z0-9\-._~!$&'()*+,=:@]*$/
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

function refuse (reason: string): CanonicalPath {
  return { ok: false, reason }
}

function decodeSegment (raw: string): string | null {
  if (!raw.includes('%')) return raw
  const bytes: number[] = []
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i)
    if (c === 0x25) {
      const hex = raw.slice(i + 1, i + 3)
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null
      bytes.push(parseInt(hex, 16))
      i += 2
    } else {
      bytes.push(c)
    }
  }
  try {
    return utf8.decode(Uint8Array.from(bytes))
  } catch {
    return null
  }
}

export function encodeSegment (decoded: string): string {
  if (ALL_KEPT.test(decoded)) return decoded
  let out = ''
  for (const ch of decoded) {
    if (KEEP.test(ch)) {
      out += ch
    } else {
      for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0')
    }
  }
  return out
}

function isDotSegment (s: string): boolean {
  return s === '.' || s === '..'
}

/**
 * @param rawUrl the request target as received (path and optional query)
 * @param maxLength longest path accepted, in bytes
 */
export function canonicalPath (rawUrl: string, maxLength: number): CanonicalPath {
  const q = rawUrl.indexOf('?')
  const raw = q === -1 ? rawUrl : rawUrl.slice(0, q)
  if (raw.length > maxLength) return refuse(`path longer than ${maxLength} bytes`)
  if (raw[0] !== '/') return refuse('the path must start with /')
  if (!RAW_ALLOWED.test(raw)) {
    if (raw.includes('\\')) return refuse('backslash in path')
    if (raw.includes(';')) return refuse('path parameters (;) are not accepted')
    return refuse('character not allowed in a path')
  }
  const rawSegments = raw.slice(1).split('/')
  const segments: string[] = []
  for (let i = 0; i < rawSegments.length; i++) {
    const rs = rawSegments[i]
    const last = i === rawSegments.length - 1
    if (rs === '' && !last) return refuse('empty path segment (//)')
    if (isDotSegment(rs)) return refuse('dot segment in path')
    // Encoded dots, slashes, backslashes and percent signs only exist to be
    // resolved differently by someone else: refused, never decoded.
    if (/%(2[EeFf5]|5[Cc])/.test(rs)) return refuse('encoded separator, dot or percent sign')
    const d = decodeSegment(rs)
    if (d === null) return refuse('invalid percent-encoding or invalid UTF-8')
    if (/[\x00-\x1f\x7f-\x9f]/.test(d)) return refuse('control character in path')
    if (d !== d.normalize('NFC')) return refuse('path is not in Unicode normal form C')
    if (d !== d.normalize('NFKC')) return refuse('Unicode compatibility character (a look-alike of another character)')
    segments.push(d)
  }
  return { ok: true, path: '/' + segments.map(encodeSegment).join('/'), segments }
}
