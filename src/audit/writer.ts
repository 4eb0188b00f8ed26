// The audit trail: the one place recording paths are kept (files 0600 in a
// 0700 directory). Records go to <dir>/audit.jsonl, sealed into a chain
// (src/audit/chain.ts), and rotate by size and by UTC day into
// audit-<first seq>.jsonl; the chain runs on across files and restarts.
//
// Appends that arrive while a write is in flight are grouped into the next
// write, and in strict mode one fdatasync covers the whole group before any
// of its callers is told the records are durable (group commit). A failed
// write rejects every record of its group and is rolled back (sequence and
// file length), so the chain never holds a record nobody was told about.
// The writer keeps going, so it recovers by itself when the disk does.
import { createSecretKey, type KeyObject } from 'node:crypto'
import { lstatSync, promises as fsp, constants as fsc } from 'node:fs'
import { releaseLock, takeLock } from './lock.js'
import { makeDir } from '../files/ownership.js'
import { join } from 'node:path'
import { GENESIS, lineHash, open as openLine, seal } from './chain.js'
import { boundRecord } from './record-bounds.js'

/** seal and rotate: one per run of an operator tool, in the ops chain (src/audit/operator-events.ts); ingest: a recording uploaded through the gateway. */
export type AuditEvent = 'access' | 'fetch' | 'refusal' | 'grant' | 'recovery' | 'check' | 'new-key' | 'prune' | 'seal' | 'rotate' | 'ingest' | 'hold' | 'erasure' | 'retention-sweep' | 'quota-reset' | 'token-exposed'

/** What an operator tool's run did (src/audit/record-bounds.ts checks each is a count). */
export interface RunCounts {
  sealed?: number
  skipped?: number
  failed?: number
  bytes?: number
  files?: number
  /** retention-sweep: periods whose identity was destroyed, plaintext recordings deleted, and what was held back by holds or left past retention. */
  erased?: number
  deleted?: number
  held?: number
  overdue?: number
  /** hold: the legal holds document's generation after the change (a rollback past it is refused). */
  generation?: number
}

/** How a fetch ended: in full; the client left; the NAS failed; a sealed recording failed its authentication; the gateway shut down (the drain deadline passed). */
export type Outcome = 'complete' | 'client-aborted' | 'client-too-slow' | 'upstream-error' | 'integrity-error' | 'shutdown'

export interface AuditRecord {
  event: AuditEvent
  time: string
  requestId?: string
  clientIp?: string
  /** The socket peer, when clientIp came from X-Forwarded-For of a trusted proxy. */
  peerIp?: string
  method?: string
  path?: string
  range?: string
  subject?: string
  /** How the subject was authenticated: a bearer token, a client certificate, a playback grant. */
  auth?: 'jwt' | 'mtls' | 'grant'
  jti?: string
  rule?: string
  /** A sealed recording: the key it is sealed to (period and fingerprint; never the key). */
  keyId?: string
  status?: number
  bytes?: number
  /** event fetch: bytes written for the client past `bytes` that the transport had not confirmed sent when the response closed (the client had between bytes and bytes + unconfirmedBytes). */
  unconfirmedBytes?: number
  durationMs?: number
  outcome?: Outcome
  reason?: string
  userAgent?: string
  /** event grant: when the grant lapses (the grant value itself is kept nowhere). */
  grantExpiresAt?: string
  /** event recovery: bytes of a torn last line dropped at start (never acknowledged to anyone). */
  droppedBytes?: number
  /** event refusal: how many requests the record stands for, when nothing tells them apart (HTTP/2 streams reset by the protocol layer on one connection). */
  count?: number
  /** events seal, rotate: what the run did. */
  counts?: RunCounts
  /** event refusal: the per-subject budget that was spent (requestsPerMinute, recordingsPerHour, recordingsPerDay, bytesPerHour). */
  budget?: string
  /** event hold: the case a legal hold belongs to; its prefix is `path`, the change and reason `reason`. */
  case?: string
  /** event hold: when the hold lapses (none: until released). */
  until?: string
  /** The key period a record is about (`2016-01`): sealed into, rotated, erased. */
  period?: string
  /** event ingest: the SHA-256 of the recording's plaintext, 64 lowercase hex digits. */
  sha256?: string
  /** Fields whose value was cut to its bound (src/audit/record-bounds.ts): the value kept is a prefix. */
  truncated?: string[]
}

export interface AuditWriterOptions {
  dir: string
  durability: 'strict' | 'batched'
  batchMs: number
  /** HMAC key of the chain. */
  key: Buffer
  /**
   * A worker chain written before chains had keys of their own was sealed
   * with the audit key itself: its records up to now may be sealed with
   * this; every new record uses key (src/audit/chains.ts).
   */
  legacyKey?: Buffer
  /** Names this writer in every record (one chain per directory). */
  instance: string
  /** Rotate when the active file would pass this size. */
  rotateBytes: number
  /** Called once per written group; used for metrics. */
  onBatch?: (records: number, ms: number) => void
  /** batched mode: a deferred fsync failed (records already acknowledged may be lost). */
  onSyncError?: (err: Error) => void
  /** Tests: runs before each fsync (to stall it). */
  beforeSync?: () => Promise<void>
  /** The directory's lock, taken by the caller before it changed the directory (audit new-key): adopted, not taken again. */
  lock?: { file: string, text: string }
}

interface Pending { record: AuditRecord, resolve: () => void, reject: (err: Error) => void }

export const AUDIT_FILE = 'audit.jsonl'
export const HEAD_FILE = 'audit.head'
export const ARCHIVE = /^audit-(\d{12})\.jsonl$/

export function archiveName (firstSeq: number): string {
  return `audit-${String(firstSeq).padStart(12, '0')}.jsonl`
}

const TAIL_READ = 256 * 1024

/** The last complete line of a file and what follows it (a torn line), read from its end. */
async function tailOf (h: fsp.FileHandle): Promise<{ size: number, last: string | null, tornBytes: number }> {
  const { size } = await h.stat()
  if (size === 0) return { size, last: null, tornBytes: 0 }
  const len = Math.min(size, TAIL_READ)
  const buf = Buffer.alloc(len)
  await h.read(buf, 0, len, size - len)
  const text = buf.toString('utf8')
  const lastNl = text.lastIndexOf('\n')
  const tornBytes = lastNl === -1 ? Buffer.byteLength(text) : Buffer.byteLength(text.slice(lastNl + 1))
  if (lastNl === -1) return { size, last: null, tornBytes }
  const before = text.lastIndexOf('\n', lastNl - 1)
  return { size, last: text.slice(before + 1, lastNl), tornBytes }
}

async function firstLineOf (h: fsp.FileHandle): Promise<string | null> {
  const buf = Buffer.alloc(64 * 1024)
  const { bytesRead } = await h.read(buf, 0, buf.length, 0)
  const text = buf.subarray(0, bytesRead).toString('utf8')
  const nl = text.indexOf('\n')
  return nl === -1 ? null : text.slice(0, nl)
}

/** The codes link() fails with on a file system without hard links (vfat, some FUSE and SMB mounts): the archive is made by a rename then. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'])

/** audit.jsonl is not (or no longer) the file the writer has open: nothing is written until it is put back. */
function replacedError (file: string, how: string): Error {
  return Object.assign(new Error(`${file} was ${how} while the gateway had it open: no record is written until it is put back`), { code: 'EAUDITREPLACED' })
}

/** An archive name already taken: the trail is never archived over it. */
function archiveTakenError (to: string): Error {
  return Object.assign(new Error(`${to} exists already: the trail is not archived over it (move it aside for whoever investigates, and run nasguard audit verify)`), { code: 'EAUDITCHAIN' })
}

/** Two stats name one file (device and inode). */
function sameFile (a: { dev: number, ino: number }, b: { dev: number, ino: number }): boolean {
  return a.dev === b.dev && a.ino === b.ino
}

export class AuditWriter {
  private readonly opts: AuditWriterOptions
  private handle: fsp.FileHandle | null = null
  /** The file's size after the last group written through this handle (saves an fstat per group). */
  private sizeAfter: { handle: fsp.FileHandle, size: number } | null = null
  private queue: Pending[] = []
  private writing = false
  private closed = false
  private syncTimer: NodeJS.Timeout | null = null
  private headTimer: NodeJS.Timeout | null = null
  // Chain state: the last record on disk.
  private seq = 0
  private prev = GENESIS
  // The last record known durable (audit.head never names a later one).
  private durableSeq = 0
  private durablePrev = GENESIS
  // The last record written to the file (seq and prev run ahead of it while a group is being written).
  private writtenSeq = 0
  private writtenPrev = GENESIS
  private activeBytes = 0
  private activeFirstSeq = 0
  private activeDay = ''
  readonly file: string
  startupError: NodeJS.ErrnoException | null = null
  /** The last write (or the start) succeeded; false from a failure until the next success. */
  healthy = true
  /** Records dropped from a torn tail at start (see the recovery record). */
  recoveredBytes = 0

  /** The audit key, imported once for the records' MACs. */
  private readonly macKey: KeyObject
  /** What every record of this writer ends with, before its chain fields. */
  private readonly tail: { instance: string }

  private constructor (opts: AuditWriterOptions) {
    this.opts = opts
    this.file = join(opts.dir, AUDIT_FILE)
    this.macKey = createSecretKey(opts.key)
    this.tail = Object.freeze({ instance: opts.instance })
  }

  /**
   * Creates the directory (a failure there is a config error and throws) and
   * tries to open the file. A file that cannot be opened now does not stop
   * the start: every access is refused with 503 until it can (fail-closed,
   * and recovering by itself), and the error is in `startupError`.
   */
  static async open (opts: AuditWriterOptions): Promise<AuditWriter> {
    const w = new AuditWriter(opts)
    makeDir(opts.dir)
    w.dirIsLink = lstatSync(opts.dir).isSymbolicLink()
    w.lock = opts.lock ?? await takeLock(w.opts.dir)
    try {
      await w.openFile()
    } catch (err) {
      w.startupError = err as NodeJS.ErrnoException
      w.healthy = false
    }
    return w
  }

  private lock: { file: string, text: string } | undefined

  get lastSeq (): number {
    return this.seq
  }

  /** The newest seq on disk (fsync'd): it never goes back, unlike lastSeq when a write fails. */
  get durableLastSeq (): number {
    return this.durableSeq
  }

  /**
   * Opens audit.jsonl. With resume (a start, or a reopen after a failure)
   * the chain state is read back from disk; after a rotation it is already
   * known and the new file is empty.
   */
  private async openFile (resume = true): Promise<fsp.FileHandle> {
    if (this.handle) return this.handle
    // A directory that was one at the start and is now a symbolic link was replaced: nothing is made where it points.
    if (!this.dirIsLink && (await fsp.lstat(this.opts.dir).catch(() => undefined))?.isSymbolicLink() === true) throw replacedError(this.opts.dir, 'replaced by a symbolic link')
    // O_NOFOLLOW: a symlink planted at audit.jsonl must not redirect the
    // trail (or have its target's mode changed by the chmod below).
    // After a rotation the file must be new (O_EXCL): one put at audit.jsonl
    // meanwhile is not adopted as the trail's next file.
    const h = await fsp.open(this.file, fsc.O_RDWR | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW | (this.mustCreate ? fsc.O_EXCL : 0), 0o600).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EEXIST' ? replacedError(this.file, 'put there by something else after a rotation (move it aside)') : err
    })
    this.mustCreate = false
    let dropped = 0
    try {
      const st = await h.stat()
      if (!st.isFile()) throw Object.assign(new Error(`${this.file} is not a regular file`), { code: 'EFTYPE' })
      if (resume && st.nlink > 1 && await this.finishRotation(st)) {
        await h.close()
        return await this.openFile(true)
      }
      this.identity = { dev: st.dev, ino: st.ino }
      await h.chmod(0o600)
      dropped = resume ? await this.resume(h) : 0
      await this.syncDir()
    } catch (err) {
      await h.close()
      throw err
    }
    this.handle = h
    if (resume && this.durableSeq > 0) { this.headWritten = true; void this.writeHead().catch(() => { this.headWritten = false }) }
    if (dropped > 0) {
      // Said in the trail itself, as the next record.
      this.queue.unshift({ record: { event: 'recovery', time: new Date().toISOString(), droppedBytes: dropped }, resolve: () => {}, reject: () => {} })
      if (!this.writing) setImmediate(() => { void this.drain() })
    }
    return h
  }

  /** A rotation archived the last file and this writer has not made the next one yet: it is opened exclusively. */
  private mustCreate = false

  /** audit.dir was a symbolic link at the start (a configured one, followed as it was then). */
  private dirIsLink = false

  /** The file the handle is open on (device and inode): audit.jsonl must still be it when a group is written. */
  private identity = { dev: 0, ino: 0 }

  /**
   * Refuses to write into a file that is no longer audit.jsonl: deleted
   * (the records would go to an unlinked inode and vanish at exit), moved
   * away (logrotate, an operator's mv), or cut or written to in place
   * (logrotate's copytruncate, `truncate -s0`) when its size is known. The
   * group is refused, so the gateway fails closed, and the next group
   * reopens the trail, which resume() refuses while audit.head, or this
   * writer, names records it does not hold.
   */
  private async stillTheFile (size?: number): Promise<void> {
    // lstat: a symlink put in its place (to the file moved elsewhere) is not the file.
    const now = await fsp.lstat(this.file).catch(() => undefined)
    if (now === undefined || !this.isOwn(now)) throw replacedError(this.file, now ? 'replaced' : 'removed')
    if (size !== undefined && now.size !== size) throw replacedError(this.file, `cut or written to (${now.size} bytes where this gateway wrote ${size})`)
  }

  /**
   * A rotation stopped (a crash, a kill) between its archive's hard link
   * and the removal of audit.jsonl leaves one file under both names: going
   * on in audit.jsonl would grow the archive too, and the trail would hold
   * its records twice. When an archive is that very file, the rotation is
   * finished (audit.jsonl removed; the chain resumes from the archive).
   * True when it was.
   */
  private async finishRotation (st: { dev: number, ino: number }): Promise<boolean> {
    for (const name of (await fsp.readdir(this.opts.dir)).filter((f) => ARCHIVE.test(f))) {
      const a = await fsp.lstat(join(this.opts.dir, name)).catch(() => undefined)
      if (a === undefined || !sameFile(a, st)) continue
      await fsp.unlink(this.file)
      return true
    }
    return false
  }

  /** The file the writer has open, by device and inode. */
  private isOwn (st: { dev: number, ino: number }): boolean {
    return sameFile(st, this.identity)
  }

  /** The size this writer left the file at with its last group through this handle, if known. */
  private knownSize (h: fsp.FileHandle): number | undefined {
    return this.sizeAfter?.handle === h ? this.sizeAfter.size : undefined
  }

  /**
   * Moves audit.jsonl to its archive name `to`, only if it is this chain's
   * own file and never over a file of that name: a hard link is made first
   * (which fails if the name is taken), checked to be the file the writer
   * had open (an impostor renamed over audit.jsonl is not archived: its
   * link is removed and the group refused), and only then is audit.jsonl
   * unlinked, if it is still that file (anything put there since stays, and
   * the new file's exclusive open refuses it). Where the file system has no
   * hard links, a rename, checked the same way and undone if it moved
   * another file.
   */
  private async archive (to: string): Promise<void> {
    try {
      await fsp.link(this.file, to)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? ''
      if (code === 'EEXIST') throw archiveTakenError(to)
      if (code === 'ENOENT') throw replacedError(this.file, 'removed')
      if (!NO_HARD_LINKS.has(code)) throw err
      await this.renameChecked(to)
      return
    }
    if (!this.isOwn(await fsp.lstat(to))) {
      await fsp.unlink(to)
      throw replacedError(this.file, 'replaced')
    }
    const now = await fsp.lstat(this.file).catch(() => undefined)
    if (now !== undefined && this.isOwn(now)) await fsp.unlink(this.file)
  }

  /** archive() without hard links: a rename, refused over an existing name and undone if it moved another file. */
  private async renameChecked (to: string): Promise<void> {
    if (await fsp.lstat(to).then(() => true, () => false)) throw archiveTakenError(to)
    await fsp.rename(this.file, to)
    if (this.isOwn(await fsp.lstat(to))) return
    await fsp.rename(to, this.file).catch(() => {})
    throw replacedError(this.file, 'replaced')
  }

  private async syncDir (): Promise<void> {
    const d = await fsp.open(this.opts.dir, 'r')
    try { await d.sync() } finally { await d.close() }
  }

  /** A line of this chain: sealed with its key, or with the legacy key (written before the upgrade). */
  private openOwn (line: string): ReturnType<typeof openLine> {
    const opened = openLine(line, this.opts.key)
    if (opened.ok || opened.reason !== 'bad-mac' || !this.opts.legacyKey) return opened
    return openLine(line, this.opts.legacyKey)
  }

  /** Picks the chain up where it stopped: in this file, or in the newest archive. Returns the bytes of a torn line dropped. */
  private async resume (h: fsp.FileHandle): Promise<number> {
    let dropped = 0
    const tail = await tailOf(h)
    let last = tail.last
    if (tail.tornBytes > 0) {
      // A line cut by a crash was never acknowledged to anyone: drop it,
      // and say so in the trail.
      await h.truncate(tail.size - tail.tornBytes)
      await h.sync()
      dropped = tail.tornBytes
      this.recoveredBytes += dropped
    }
    this.activeBytes = tail.size - tail.tornBytes
    if (last === null && this.activeBytes === 0) {
      const archives = (await fsp.readdir(this.opts.dir)).filter((f) => ARCHIVE.test(f)).sort()
      const newest = archives[archives.length - 1]
      if (newest) {
        const a = await fsp.open(join(this.opts.dir, newest), 'r')
        try { last = (await tailOf(a)).last } finally { await a.close() }
      }
    }
    // The chain is what the disk holds: a reopen after a failure must not
    // go on from memory past a trail that is gone.
    const known = this.durableSeq
    this.seq = 0
    this.prev = GENESIS
    if (last !== null) {
      const opened = this.openOwn(last)
      if (!opened.ok) throw Object.assign(new Error(`the last audit record cannot be read (${opened.reason}): run nasguard audit verify`), { code: 'EAUDITCHAIN' })
      this.seq = opened.value.record.seq
      this.prev = opened.value.hash
    }
    if (this.activeBytes > 0) {
      const first = await firstLineOf(h)
      const opened = first ? this.openOwn(first) : null
      if (opened?.ok) {
        this.activeFirstSeq = opened.value.record.seq
        this.activeDay = String(opened.value.record.time ?? '').slice(0, 10)
      }
    }
    await this.checkHead(known)
    this.durableSeq = this.writtenSeq = this.seq
    this.durablePrev = this.writtenPrev = this.prev
    return dropped
  }

  /**
   * audit.head names the last record known durable: a trail that ends
   * before it lost records from its end (a deleted or moved audit.jsonl, a
   * restored older copy). Writing on would start the chain again from
   * there, and overwrite the head that says so: refused, naming the gap.
   * A trail is never without its head (a new one gets it before its first
   * record, durably), so a trail with records whose head is missing, or
   * does not open as a head, had it removed or spoilt, which is how records
   * cut from its end would be hidden: refused too.
   */
  private async checkHead (known: number): Promise<void> {
    const text = await fsp.readFile(join(this.opts.dir, HEAD_FILE), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    const head = text === undefined ? undefined : this.openOwn(text.trim())
    const headSeq = head?.ok === true && head.value.record.event === 'head' ? head.value.record.seq : undefined
    if (headSeq === undefined && this.seq > 0) {
      const what = text === undefined ? 'is missing' : 'does not open as a head (edited or replaced)'
      throw Object.assign(new Error(`${join(this.opts.dir, HEAD_FILE)} ${what}, though the trail holds records up to seq ${this.seq}: records may have been cut from its end, and writing on would hide it. Run nasguard audit verify; keep the directory as it is for whoever investigates, move it aside (its key stays), and start again`), { code: 'EAUDITCHAIN' })
    }
    if (headSeq === undefined) {
      // A new trail: its head (seq 0) is made durable before its first record.
      await this.writeHead()
      return
    }
    // The head is written up to a second late: what this process knows durable counts too.
    const [last, by] = known > headSeq ? [known, 'this gateway wrote'] : [headSeq, `${HEAD_FILE} names`]
    if (last <= this.seq) return
    throw Object.assign(new Error(`the audit trail ends at seq ${this.seq}, but ${by} seq ${last}: records ${this.seq + 1}..${last} were removed from the end. Put the removed files back; if they are lost for good, move what is left of the audit directory aside for whoever investigates (its key stays), and start again; run nasguard audit verify`), { code: 'EAUDITCHAIN' })
  }

  /** Resolves when the record is durable (strict) or written to the OS (batched). */
  append (record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(new Error('audit writer is closed'))
    return new Promise((resolve, reject) => {
      this.queue.push({ record: boundRecord(record), resolve, reject })
      if (!this.writing) setImmediate(() => { void this.drain() })
    })
  }

  private async rotateIfDue (incoming: number): Promise<void> {
    const today = new Date().toISOString().slice(0, 10)
    const bySize = this.activeBytes > 0 && this.activeBytes + incoming > this.opts.rotateBytes
    const byDay = this.activeBytes > 0 && this.activeDay !== '' && this.activeDay !== today
    if (!bySize && !byDay) return
    const h = this.handle
    // Cut or written to since this writer's last group (copytruncate before
    // the day's first group): refused, not archived as the chain's.
    if (h) await this.stillTheFile(this.knownSize(h))
    this.handle = null
    if (h) { try { await h.sync() } finally { await h.close() } }
    await this.archive(join(this.opts.dir, archiveName(this.activeFirstSeq)))
    // Until this writer has made the next file itself, none put there is adopted.
    this.mustCreate = true
    this.activeBytes = 0
    this.activeFirstSeq = 0
    this.activeDay = ''
    // The chain state is in memory (and already covers the group being
    // written): the new, empty file must not reset it from the archive.
    const fresh = await this.openFile(false)
    // Made empty just now: anything in it at the first write was put there by something else.
    this.sizeAfter = { handle: fresh, size: 0 }
    await this.writeHead()
  }

  private async drain (): Promise<void> {
    if (this.writing || this.queue.length === 0) return
    this.writing = true
    const group = this.queue
    this.queue = []
    const started = process.hrtime.bigint()
    let before: { seq: number, prev: string, bytes: number, first: number, day: string } | undefined
    try {
      // Opening may resume the chain from disk: take the "before" state after it.
      let h = await this.openFile()
      before = { seq: this.seq, prev: this.prev, bytes: this.activeBytes, first: this.activeFirstSeq, day: this.activeDay }
      const lines: string[] = []
      for (const p of group) {
        const line = seal(p.record, this.seq + 1, this.prev, this.macKey, this.tail)
        lines.push(line)
        this.seq++
        this.prev = lineHash(line)
      }
      const buf = Buffer.from(lines.join('\n') + '\n', 'utf8')
      await this.rotateIfDue(buf.length)
      h = await this.openFile()
      // Before the write too, not only after the fsync: a group made durable
      // in a file moved away, even if taken back then, can be copied first
      // (a backup, logrotate's compress) and carry records nobody was told of.
      await this.stillTheFile(this.knownSize(h))
      // The length to roll back to is that of the file actually written
      // (after a reopen or a rotation it is not what memory said before).
      // Known from our own last write on this very handle; otherwise asked.
      const startSize = this.knownSize(h) ?? (await h.stat()).size
      this.sizeAfter = null
      if (startSize === 0) {
        this.activeFirstSeq = before.seq + 1
        this.activeDay = group[0].record.time.slice(0, 10)
      }
      // Takes the group's bytes back off the file: where O_APPEND put them (at
      // the end, also of a file cut meanwhile), or else everything past where
      // the group began.
      const takeBack = async (written: number): Promise<void> => {
        const size = (await h.stat()).size
        if (written > 0 && size >= written) {
          const tail = Buffer.alloc(written)
          await h.read(tail, 0, written, size - written)
          if (tail.equals(buf.subarray(0, written))) { await h.truncate(size - written); return }
        }
        if (size > startSize) await h.truncate(startSize)
      }
      let off = 0
      try {
        while (off < buf.length) {
          const { bytesWritten } = await h.write(buf, off, buf.length - off)
          off += bytesWritten
        }
      } catch (err) {
        // Take back a partial line so the next group starts clean.
        await takeBack(off).catch(() => {})
        throw err
      }
      this.activeBytes = startSize + buf.length
      if (this.opts.durability === 'strict') {
        try {
          await this.opts.beforeSync?.()
          await h.datasync()
          // Removed while it was written: the records are on an unlinked inode.
          await this.stillTheFile(startSize + buf.length)
        } catch (err) {
          // Nobody will be told these records exist: take them back off the
          // file, so a reopen does not pick them up into the chain.
          await takeBack(buf.length).catch(() => {})
          throw err
        }
        this.durableSeq = this.seq
        this.durablePrev = this.prev
        for (const p of group) p.resolve()
      } else {
        this.writtenSeq = this.seq
        this.writtenPrev = this.prev
        for (const p of group) p.resolve()
        this.scheduleSync()
      }
      this.sizeAfter = { handle: h, size: startSize + buf.length }
      this.healthy = true
      this.scheduleHead()
      this.opts.onBatch?.(group.length, Number(process.hrtime.bigint() - started) / 1e6)
    } catch (err) {
      this.healthy = false
      if (before) {
        this.seq = before.seq
        this.prev = before.prev
        if (this.durableSeq > before.seq) { this.durableSeq = before.seq; this.durablePrev = before.prev }
        this.activeBytes = before.bytes
        this.activeFirstSeq = before.first
        this.activeDay = before.day
      }
      // Drop the handle so the next group reopens the file and resumes the
      // chain from what is really on disk.
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
      // What is in the file now: a group being written (seq already counts it) may yet fail and be taken back.
      const seq = this.writtenSeq
      const prev = this.writtenPrev
      h?.datasync().then(() => {
        // Only now are these records durable (audit.head may name them).
        if (seq > this.durableSeq) { this.durableSeq = seq; this.durablePrev = prev }
      }, (err: Error) => {
        // After a failed fsync the kernel may report later ones as clean:
        // reopen, and say so.
        if (this.handle === h) this.handle = null
        void h.close().catch(() => {})
        this.opts.onSyncError?.(err)
      })
    }, this.opts.batchMs)
    this.syncTimer.unref()
  }

  private headWritten = false

  private scheduleHead (): void {
    // The first head goes out at once, so a trail is never without one for
    // longer than its first write: verify treats a missing head as removal.
    if (!this.headWritten && this.durableSeq > 0) {
      this.headWritten = true
      void this.writeHead().catch(() => { this.headWritten = false })
      return
    }
    if (this.headTimer) return
    this.headTimer = setTimeout(() => {
      this.headTimer = null
      void this.writeHead().catch(() => {})
    }, 1000)
    this.headTimer.unref()
  }

  /**
   * audit.head: the newest sequence number and hash, sealed with the key, so
   * that `audit verify` notices records deleted from the end of the trail.
   */
  private headChain: Promise<void> = Promise.resolve()

  /** Head writes run one after another (timer, rotation and close may ask at once). */
  private writeHead (): Promise<void> {
    const next = this.headChain.then(() => this.writeHeadNow())
    this.headChain = next.catch(() => {})
    return next
  }

  /**
   * Durable, so that after a power loss the head is the last one written or
   * the one before, never missing or empty: a start refuses a trail with
   * records and no head.
   */
  private async writeHeadNow (): Promise<void> {
    const line = seal({ event: 'head', time: new Date().toISOString(), instance: this.opts.instance, hash: this.durablePrev }, this.durableSeq, this.durablePrev, this.opts.key)
    const tmp = join(this.opts.dir, `${HEAD_FILE}.${process.pid}.tmp`)
    const h = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o600)
    try {
      await h.writeFile(line + '\n')
      await h.sync()
    } finally {
      await h.close()
    }
    await fsp.rename(tmp, join(this.opts.dir, HEAD_FILE))
    await this.syncDir()
  }

  /** Waits for queued records, syncs, records the head, and closes the file. */
  async close (): Promise<void> {
    while (this.writing || this.queue.length > 0) {
      await new Promise((resolve) => setImmediate(resolve))
      if (!this.writing) await this.drain()
    }
    this.closed = true
    if (this.syncTimer) clearTimeout(this.syncTimer)
    if (this.headTimer) clearTimeout(this.headTimer)
    const h = this.handle
    this.handle = null
    if (h) {
      // Batched mode: what the last sync made durable is the whole trail,
      // and the head must say so (else the last records could be removed
      // unnoticed).
      const synced = await h.datasync().then(() => true, () => false)
      if (synced) {
        this.durableSeq = this.seq
        this.durablePrev = this.prev
      }
      await h.close()
      await this.writeHead().catch(() => {})
    }
    if (this.lock) await releaseLock(this.lock)
  }
}
