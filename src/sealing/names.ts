// Names that reveal nothing: the last `sealing.names.segments` segments of a
// recording's path (by default its file name, which holds the caller's
// phone number) are encrypted deterministically, so that the gateway finds
// a recording's sealed name from its plaintext path without a lookup table.
//
// Construction: AES-SIV (RFC 5297, the deterministic authenticated
// encryption that gocryptfs' reverse mode uses for names; @noble/ciphers'
// aessiv) with a 512-bit name key (AES-256-SIV), and the segment's
// plaintext parent path as associated data. So one name in two directories
// gives two unrelated sealed names (equal calls on two days are not
// linkable), and a sealed name moved to another directory no longer decodes.
// Stored as base32 (RFC 4648, lower case, no padding: one spelling on a NAS
// that folds case) plus ".age". Date directories stay readable.
import { aessiv } from '@noble/ciphers/aes.js'
import { base32nopad } from '@scure/base'
import { encodeSegment as encodeReadable } from '../policy/canonical-path.js'

export const SEALED_SUFFIX = '.age'
export const NAME_KEY_BYTES = 64
/** The longest segment most NAS file systems take (255 bytes). */
const MAX_SEGMENT = 255

const utf8 = new TextEncoder()

function cipherFor (key: Buffer, parent: string): ReturnType<typeof aessiv> {
  return aessiv(key, utf8.encode(parent))
}

/** The parent path of segment i, in plaintext: "/" joined with the segments before it. */
function parentOf (segments: string[], i: number): string {
  return '/' + segments.slice(0, i).join('/')
}

export function encodeSegment (key: Buffer, parent: string, name: string): string {
  const sealed = cipherFor(key, parent).encrypt(utf8.encode(name))
  return base32nopad.encode(sealed).toLowerCase() + SEALED_SUFFIX
}

/** The plaintext of a sealed segment, or undefined when it is not one (another key, another directory, altered). */
export function decodeSegment (key: Buffer, parent: string, sealedName: string): string | undefined {
  if (!sealedName.endsWith(SEALED_SUFFIX)) return undefined
  const text = sealedName.slice(0, -SEALED_SUFFIX.length).toUpperCase()
  if (!/^[A-Z2-7]+$/.test(text)) return undefined
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(cipherFor(key, parent).decrypt(base32nopad.decode(text)))
  } catch {
    return undefined
  }
}

/** A segment whose sealed name would be longer than a NAS takes: no sealed recording can have its path. */
export class SealedNameTooLong extends Error {
  constructor (segment: number, bytes: number) {
    super(`the sealed name of segment ${segment} would be ${bytes} bytes, over the ${MAX_SEGMENT} a NAS takes (a sealed segment holds up to about 140 bytes of name)`)
    this.name = 'SealedNameTooLong'
  }
}

/**
 * The sealed path of a canonical plaintext path, given as its decoded
 * segments; the segments left readable are percent-encoded as the canonical
 * path is (src/policy/canonical-path.ts). Throws SealedNameTooLong when a
 * sealed segment would be longer than a NAS takes.
 */
export function sealedPathOf (key: Buffer, segments: string[], count: number): string {
  const from = readableSegments(segments, count).length
  const out = segments.map((s, i) => {
    if (i < from) return encodeReadable(s)
    const sealed = encodeSegment(key, parentOf(segments, i), s)
    if (sealed.length > MAX_SEGMENT) throw new SealedNameTooLong(i + 1, sealed.length)
    return sealed
  })
  return '/' + out.join('/')
}

/** The segments a sealed path keeps readable (all but the last `count`). */
export function readableSegments (segments: string[], count: number): string[] {
  return segments.slice(0, Math.max(0, segments.length - count))
}

/** The plaintext path of a sealed one; undefined when a sealed segment does not decode. */
export function plainPathOf (key: Buffer, segments: string[], count: number): string | undefined {
  const from = readableSegments(segments, count).length
  const plain: string[] = []
  for (let i = 0; i < segments.length; i++) {
    if (i < from) { plain.push(segments[i]); continue }
    const name = decodeSegment(key, '/' + plain.join('/'), segments[i])
    if (name === undefined) return undefined
    plain.push(name)
  }
  return '/' + plain.join('/')
}
