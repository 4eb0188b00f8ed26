// The audit trail: one JSON line per event in <dir>/audit.jsonl, the one
// place recording paths are kept (0600, in a 0700 directory).
//
// Appends that arrive while a write is in flight are grouped into the next
// write, and in strict mode one fdatasync covers the whole group before any of
// its callers is told the records are durable (group commit). A failed write
// rejects every record of its group: callers decide whether that is fatal
// (an access record: the request is refused) or only counted and logged (a
// completion record). The writer keeps going, so it recovers on its own when
// the disk does.
import { promises as fsp, constants as fsc } from 'node:fs'
import { join } from 'node:path'

export type AuditEvent = 'access' | 'fetch' | 'refusal' | 'grant'

export interface AuditRecord {
  event: AuditEvent
  time: string
  requestId: string
  clientIp: string
  method?: string
  path?: string
  range?: string
  subject?: string
  /** How the subject was authenticated: a bearer token or a client certificate. */
  auth?: 'jwt' | 'mtls' | 'grant'
  /** event grant: when the grant lapses (the grant value itself is kept nowhere). */
  grantExpiresAt?: string
  jti?: string
  rule?: string
  status?: number
  bytes?: number
  durationMs?: number
  outcome?: 'complete' | 'aborted' | 'upstream-error'
  reason?: string
  userAgent?: string
}

export interface AuditWriterOptions {
  dir: string
  durability: 'strict' | 'batched'
  batchMs: number
  /** Called once per written group; used for metrics. */
  onBatch?: (records: number, ms: number) => void
  /** batched mode: a deferred fsync failed (records already acknowledged may be lost). */
  onSyncError?: (err: Error) => void
}

interface Pending { line: string, resolve: () => void, reject: (err: Error) => void }

export const AUDIT_FILE = 'audit.jsonl'

export class AuditWriter {
  private readonly opts: AuditWriterOptions
  private handle: fsp.FileHandle | null = null
  private queue: Pending[] = []
  private writing = false
  private closed = false
  private tornTail = false
  private syncTimer: NodeJS.Timeout | null = null
  readonly file: string

  private constructor (opts: AuditWriterOptions) {
    this.opts = opts
    this.file = join(opts.dir, AUDIT_FILE)
  }

  /**
   * Creates the directory (a failure there is a config error and throws) and
   * tries to open the file. A file that cannot be opened now does not stop
   * the start: every access is refused with 503 until it can (fail-closed,
   * and recovering by itself), and the error is in `startupError`.
   */
  static async open (opts: AuditWriterOptions): Promise<AuditWriter> {
    const w = new AuditWriter(opts)
    await fsp.mkdir(opts.dir, { recursive: true, mode: 0o700 })
    try {
      await w.openFile()
    } catch (err) {
      w.startupError = err as NodeJS.ErrnoException
    }
    return w
  }

  startupError: NodeJS.ErrnoException | null = null

  private async openFile (): Promise<fsp.FileHandle> {
    if (this.handle) return this.handle
    // O_NOFOLLOW: a symlink planted at audit.jsonl must not redirect the
    // trail (or have its target's mode changed by the chmod below).
    const h = await fsp.open(this.file, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600)
    try {
      if (!(await h.stat()).isFile()) throw Object.assign(new Error(`${this.file} is not a regular file`), { code: 'EFTYPE' })
      await h.chmod(0o600)
      // Make the new directory entry itself durable.
      const d = await fsp.open(this.opts.dir, 'r')
      try { await d.sync() } finally { await d.close() }
    } catch (err) {
      await h.close()
      throw err
    }
    this.handle = h
    return h
  }

  /** Resolves when the record is durable (strict) or written to the OS (batched). */
  append (record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(new Error('audit writer is closed'))
    return new Promise((resolve, reject) => {
      this.queue.push({ line: JSON.stringify(record) + '\n', resolve, reject })
      if (!this.writing) setImmediate(() => { void this.drain() })
    })
  }

  private async drain (): Promise<void> {
    if (this.writing || this.queue.length === 0) return
    this.writing = true
    const group = this.queue
    this.queue = []
    const started = process.hrtime.bigint()
    try {
      const h = await this.openFile()
      const text = (this.tornTail ? '\n' : '') + group.map((p) => p.line).join('')
      const buf = Buffer.from(text, 'utf8')
      let off = 0
      try {
        while (off < buf.length) {
          const { bytesWritten } = await h.write(buf, off, buf.length - off)
          off += bytesWritten
        }
      } catch (err) {
        // A partial line may be on disk: start the next group on a new line.
        if (off > 0) this.tornTail = true
        throw err
      }
      this.tornTail = false
      if (this.opts.durability === 'strict') {
        await h.datasync()
        for (const p of group) p.resolve()
      } else {
        for (const p of group) p.resolve()
        this.scheduleSync()
      }
      this.opts.onBatch?.(group.length, Number(process.hrtime.bigint() - started) / 1e6)
    } catch (err) {
      // Drop the handle so the next group reopens the file (it may have been
      // removed, or the disk remounted).
      const h = this.handle
      this.handle = null
      if (h) await h.close().catch(() => {})
      const e = err instanceof Error ? err : new Error(String(err))
      for (const p of group) p.reject(e)
    } finally {
      this.writing = false
      if (this.queue.length > 0) setImmediate(() => { void this.drain() })
    }
  }

  private scheduleSync (): void {
    if (this.syncTimer) return
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null
      const h = this.handle
      h?.datasync().catch((err: Error) => {
        // After a failed fsync the kernel may report later ones as clean:
        // reopen, and say so.
        if (this.handle === h) this.handle = null
        void h.close().catch(() => {})
        this.opts.onSyncError?.(err)
      })
    }, this.opts.batchMs)
    this.syncTimer.unref()
  }

  /** Waits for queued records, syncs, and closes the file. */
  async close (): Promise<void> {
    while (this.writing || this.queue.length > 0) {
      await new Promise((resolve) => setImmediate(resolve))
      if (!this.writing) await this.drain()
    }
    this.closed = true
    if (this.syncTimer) clearTimeout(this.syncTimer)
    const h = this.handle
    this.handle = null
    if (h) {
      await h.datasync().catch(() => {})
      await h.close()
    }
  }
}
