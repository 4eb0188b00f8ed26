// An upload's body on its way to the sealing transform. UploadBody counts
// it against limits.maxUploadBytes and its Content-Length, hashes it (the
// plaintext's SHA-256 goes into the ingest record) and cuts it when it
// stops arriving. TypeCheck holds its first MAGIC_BYTES until they are
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
  private idle: NodeJS.Timeout | undefined

  constructor (private readonly limits: { maxBytes: number, declared?: number, idleMs: number }) {
    super()
    this.touch()
  }

  private touch (): void {
    clearTimeout(this.idle)
    this.idle = setTimeout(() => this.destroy(new Errors.UploadStalled()), this.limits.idleMs)
    this.idle.unref()
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.limits.maxBytes) { done(new Errors.UploadTooLarge()); return }
    if (this.limits.declared !== undefined && this.bytes > this.limits.declared) { done(new Errors.BadRequest('the body is longer than its Content-Length')); return }
    this.hash.update(chunk)
    this.touch()
    done(null, chunk)
  }

  override _flush (done: TransformCallback): void {
    clearTimeout(this.idle)
    if (this.limits.declared !== undefined && this.bytes !== this.limits.declared) { done(new Errors.BadRequest('the body is shorter than its Content-Length')); return }
    this.digest = this.hash.digest('hex')
    done()
  }

  override _destroy (err: Error | null, done: (err: Error | null) => void): void {
    clearTimeout(this.idle)
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
    if (!magicMatches(this.extension, head, complete)) return new Errors.UploadType(`its first bytes are not those of a ${this.extension} file`)
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
