// The age payload: a 16-byte nonce, then the plaintext in 64 KiB chunks, each
// sealed with ChaCha20-Poly1305 under a key from the file key and that nonce
// (STREAM: the chunk's number, and a flag on the last one, are its nonce).
// So any chunk can be opened alone, and a chunk that is moved, dropped,
// repeated or appended does not open. This module is pure: the geometry of
// a sealed file (which ciphertext bytes a plaintext range needs) and the
// sealing and opening of one chunk.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'

export const CHUNK = 64 * 1024
const TAG = 16
export const SEALED_CHUNK = CHUNK + TAG
export const NONCE_BYTES = 16

export function payloadKey (fileKey: Buffer, nonce: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32))
}

export function newPayloadNonce (): Buffer {
  return randomBytes(NONCE_BYTES)
}

function chunkNonce (index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12)
  n.writeUIntBE(index, 5, 6)
  n[11] = last ? 1 : 0
  return n
}

export function sealChunk (key: Buffer, index: number, last: boolean, plaintext: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, chunkNonce(index, last), { authTagLength: TAG })
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()])
}

/** The chunk's plaintext, or undefined when it does not open (altered, moved, or not where the file ends). */
export function openChunk (key: Buffer, index: number, last: boolean, sealed: Buffer): Buffer | undefined {
  if (sealed.length < TAG || sealed.length > SEALED_CHUNK) return undefined
  const d = createDecipheriv('chacha20-poly1305', key, chunkNonce(index, last), { authTagLength: TAG })
  d.setAuthTag(sealed.subarray(sealed.length - TAG))
  try {
    const body = d.update(sealed.subarray(0, sealed.length - TAG))
    d.final()
    return body
  } catch {
    return undefined
  }
}

/** A sealed file's shape, from its header's length and its size. */
export interface Geometry {
  headerLength: number
  sealedSize: number
  /** The plaintext's size. */
  size: number
  chunks: number
}

/**
 * The shape of a sealed file; undefined when no age payload has that size
 * (a last chunk that is only part of a tag, a missing nonce): a truncated
 * or extended file. An empty plaintext is one empty last chunk.
 */
export function geometry (headerLength: number, sealedSize: number): Geometry | undefined {
  const payload = sealedSize - headerLength - NONCE_BYTES
  if (payload < TAG) return undefined
  const chunks = Math.ceil(payload / SEALED_CHUNK)
  const lastSealed = payload - (chunks - 1) * SEALED_CHUNK
  if (lastSealed < TAG || (lastSealed === TAG && chunks > 1)) return undefined
  return { headerLength, sealedSize, size: payload - chunks * TAG, chunks }
}

/** The sealed size of a plaintext of `size` bytes. */
export function sealedSizeOf (headerLength: number, size: number): number {
  const chunks = Math.max(1, Math.ceil(size / CHUNK))
  return headerLength + NONCE_BYTES + size + chunks * TAG
}

/** The chunks that hold plaintext bytes first..last (inclusive), and the ciphertext bytes they are. */
export interface Span {
  firstChunk: number
  lastChunk: number
  /** Ciphertext offsets, inclusive: what to ask the NAS for. */
  start: number
  end: number
}

export function spanOf (g: Geometry, first: number, last: number): Span {
  const firstChunk = Math.floor(first / CHUNK)
  const lastChunk = g.size === 0 ? 0 : Math.floor(last / CHUNK)
  const base = g.headerLength + NONCE_BYTES
  return {
    firstChunk,
    lastChunk,
    start: base + firstChunk * SEALED_CHUNK,
    end: Math.min(g.sealedSize, base + (lastChunk + 1) * SEALED_CHUNK) - 1
  }
}
