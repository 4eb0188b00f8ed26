// Sealing as a stream: plaintext in, an age file out, holding at most one
// 64 KiB chunk (the last chunk is flagged, so a chunk is sealed only once
// the next byte, or the end, says whether it is the last).
import { Transform, type TransformCallback } from 'node:stream'
import { writeHeader } from './age.js'
import { CHUNK, newPayloadNonce, payloadKey, sealChunk } from './payload.js'

export class SealStream extends Transform {
  private readonly key: Buffer
  private readonly pending = Buffer.alloc(CHUNK)
  private filled = 0
  private index = 0
  private started = false
  private readonly start: Buffer
  /** The age header's length: the sealed size of n plaintext bytes is sealedSizeOf(headerLength, n). */
  readonly headerLength: number

  /** Seals to the recipients' raw public keys, bound to the canonical plaintext path. */
  constructor (recipients: Buffer[], path: string) {
    super()
    const header = writeHeader(recipients, path)
    this.headerLength = header.bytes.length
    const nonce = newPayloadNonce()
    this.key = payloadKey(header.fileKey, nonce)
    this.start = Buffer.concat([header.bytes, nonce])
  }

  private begin (): void {
    if (this.started) return
    this.started = true
    this.push(this.start)
  }

  override _transform (data: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.begin()
    let at = 0
    while (at < data.length) {
      // A full chunk is sealed only when more plaintext follows it.
      if (this.filled === CHUNK) {
        this.push(sealChunk(this.key, this.index++, false, this.pending))
        this.filled = 0
      }
      const n = Math.min(CHUNK - this.filled, data.length - at)
      data.copy(this.pending, this.filled, at, at + n)
      this.filled += n
      at += n
    }
    done()
  }

  override _flush (done: TransformCallback): void {
    this.begin()
    this.push(sealChunk(this.key, this.index, true, this.pending.subarray(0, this.filled)))
    done()
  }
}
