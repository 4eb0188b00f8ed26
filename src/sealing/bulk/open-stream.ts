// Opening a whole sealed file as a stream: an age file in, its plaintext
// out, every chunk authenticated before a byte of it is passed on, holding
// at most one sealed chunk. What `nasguard seal` verifies a written file
// with, and what `keys rotate` re-seals from. The header is opened with
// any of the given identities of the period (Keyring.identities) and must
// be bound to the canonical plaintext path. Anything wrong is a
// SealedIntegrityError, whose reason never holds the path.
import { Transform, type TransformCallback } from 'node:stream'
import { SealedIntegrityError } from '../age.js'
import { openHeaderWithAny, type PeriodKey } from '../keyring.js'
import { CHUNK, NONCE_BYTES, openChunk, payloadKey, SEALED_CHUNK } from '../payload.js'

const TAG = SEALED_CHUNK - CHUNK

export class OpenStream extends Transform {
  private pending: Buffer = Buffer.alloc(0)
  private key: Buffer | undefined
  private index = 0
  /** The identity that opened the header, once it is read. */
  opener: PeriodKey | undefined

  constructor (private readonly keys: readonly PeriodKey[], private readonly path: string) {
    super()
  }

  override _transform (data: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.pending = this.pending.length === 0 ? data : Buffer.concat([this.pending, data])
      if (this.key === undefined && !this.readHeader()) { done(); return }
      // A full chunk is opened as not-last only once more follows it.
      while (this.pending.length > SEALED_CHUNK) {
        this.push(this.open(this.pending.subarray(0, SEALED_CHUNK), false))
        this.pending = this.pending.subarray(SEALED_CHUNK)
      }
      // Keep no reference to a large buffer for the sake of a small tail.
      if (this.pending.byteOffset > 0) this.pending = Buffer.from(this.pending)
      done()
    } catch (err) {
      done(err as Error)
    }
  }

  override _flush (done: TransformCallback): void {
    try {
      if (this.key === undefined) throw new SealedIntegrityError('truncated before its payload')
      if (this.pending.length < TAG || (this.pending.length === TAG && this.index > 0)) throw new SealedIntegrityError('truncated (no last chunk)')
      this.push(this.open(this.pending, true))
      done()
    } catch (err) {
      done(err as Error)
    }
  }

  /** True once the header and the payload's nonce are read and the payload key is known. */
  private readHeader (): boolean {
    const opened = openHeaderWithAny(this.pending, this.keys, this.path)
    if (opened === undefined || this.pending.length < opened.header.length + NONCE_BYTES) return false
    const start = opened.header.length
    this.key = payloadKey(opened.header.fileKey, this.pending.subarray(start, start + NONCE_BYTES))
    this.opener = opened.key
    this.pending = this.pending.subarray(start + NONCE_BYTES)
    return true
  }

  private open (sealed: Buffer, last: boolean): Buffer {
    const plain = openChunk(this.key as Buffer, this.index, last, sealed)
    if (plain === undefined) throw new SealedIntegrityError(`chunk ${this.index} does not authenticate`)
    this.index++
    return plain
  }
}
