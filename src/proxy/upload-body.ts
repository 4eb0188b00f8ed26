// An upload's body on its way to the sealing transform. UploadBody counts
// it against limits.maxUploadBytes and its Content-Length, hashes it (the
// plaintext's SHA-256 goes into the ingest record) and cuts it when it
// comes slower than limits.minSendRate over a window of
// limits.sendTimeoutMs (or not at all): a trickled body would hold a NAS
// connection. A window in which the NAS side was full (the body waited on
// it, not on the client) does not count. TypeCheck holds its first MAGIC_BYTES until they are
// judged against the file type: the NAS is asked for nothing before that,
// and a body that is not its type never gets past.
import { createHash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'
import { Errors } from '../errors.js'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'

export class UploadBody extends Transform {
  bytes = 0
  private readonly hash = createHash('sha256')
  private digest: string | undefined
  private readonly pace: NodeJS.Timeout
  private windowStart = 0
  /** The NAS side was full at some point of this window. */
  private held = false

  constructor (private readonly limits: { maxBytes: number, declared?: number, windowMs: number, minBytesPerSec: number }) {
    super()
    this.pace = setInterval(() => this.judgePace(), limits.windowMs)
    this.pace.unref()
  }

  private judgePace (): void {
    const came = this.bytes - this.windowStart
    const needed = Math.max(1, this.limits.minBytesPerSec * this.limits.windowMs / 1000)
    const held = this.held || this.readableLength >= this.readableHighWaterMark
    this.windowStart = this.bytes
    this.held = false
    if (!held && came < needed) this.destroy(new Errors.UploadStalled())
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.limits.maxBytes) { done(new Errors.UploadTooLarge()); return }
    if (this.limits.declared !== undefined && this.bytes > this.limits.declared) { done(new Errors.BadRequest('the body is longer than its Content-Length')); return }
    this.hash.update(chunk)
    if (!this.push(chunk)) this.held = true
    done()
  }

  override _flush (done: TransformCallback): void {
    clearInterval(this.pace)
    if (this.limits.declared !== undefined && this.bytes !== this.limits.declared) { done(new Errors.BadRequest('the body is shorter than its Content-Length')); return }
    this.digest = this.hash.digest('hex')
    done()
  }

  override _destroy (err: Error | null, done: (err: Error | null) => void): void {
    clearInterval(this.pace)
    done(err)
  }

  /** The SHA-256 of the whole body, hex; once it has ended. */
  get sha256 (): string {
    if (this.digest === undefined) throw new Error('the upload has not ended')
    return this.digest
  }
}

export class TypeCheck extends Transform {
  private held: Buffer[] = []
  private heldBytes = 0
  private passed = false
  /** Settles once the head was judged: resolves when it is the type, rejects when not (or when the body failed first). */
  readonly judged: Promise<void>
  private settle!: (err?: Error) => void

  constructor (private readonly extension: string) {
    super()
    this.judged = new Promise<void>((resolve, reject) => { this.settle = (err) => { if (err) reject(err); else resolve() } })
    // A body that fails before its head is judged rejects judged (and is awaited there).
    this.judged.catch(() => {})
    this.once('error', (err) => this.settle(err))
  }

  private judge (complete: boolean): Error | undefined {
    this.passed = true
    const head = Buffer.concat(this.held)
    this.held = []
    // An upload shows its format within its head: a chunk list that runs
    // past it (a WAV whose fmt chunk is not in the first 4 KiB) is refused.
    if (!magicMatches(this.extension, head, complete || head.length >= MAGIC_BYTES)) return new Errors.UploadType(`its first bytes are not those of a ${this.extension} file`)
    this.settle()
    this.push(head)
    return undefined
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.passed) { done(null, chunk); return }
    this.held.push(chunk)
    this.heldBytes += chunk.length
    done(this.heldBytes >= MAGIC_BYTES ? this.judge(false) : undefined)
  }

  override _flush (done: TransformCallback): void {
    done(this.passed ? undefined : this.judge(true))
  }
}
