// The token denylist: a JSON-lines file that `nasguard token revoke` writes
// and every running gateway (and worker) polls. An entry revokes one token
// (by jti) or every token of a subject issued before a time; it lapses once
// no token it could match can still be valid (maxLifetimeSec after it was
// written or after issuedBefore), so the list stays short.
//
// The file checks itself: its first line is a header with the number of
// entry lines and the SHA-256 of their bytes, so a torn, truncated or
// corrupted file is told from a valid one. Anything but a valid file (once
// one has existed) fails closed: loadError is set, and every token request
// is refused with 503 until a valid file is back. A denylist that loaded
// with a line skipped, or an old copy, could hide exactly the revocation
// that mattered.
import { createHash, type Hash } from 'node:crypto'
import { closeSync, fchmodSync, fstatSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, unwatchFile, watchFile, writeSync, type Stats } from 'node:fs'
import { makeDir } from '../files/ownership.js'
import { open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'

export type RevocationEntry =
  | { type: 'jti', jti: string, expiresAt: number, at: number }
  | { type: 'sub', sub: string, issuedBefore: number, expiresAt: number, at: number }

/** The first line of a denylist: how many entry lines follow, and the SHA-256 (hex) of their bytes, newlines included. */
export interface DenylistHeader { type: 'header', version: 1, entries: number, sha256: string }

/** What a token or grant is checked by: its subject, jti and issue time (seconds). */
export interface Revocable { sub: string, jti?: string, iat?: number }

/**
 * How long a reload checks lines before it lets the event loop turn (the
 * clock is read every SLICE_CHECK lines): a time budget rather than a line
 * count, so a slow or busy machine gets shorter slices, not longer blocks.
 */
const SLICE_MS = 4
const SLICE_CHECK = 128
/**
 * No entry line is this long (a jti or a subject is a short string); a
 * longer line is corrupt without being parsed, so one giant line cannot
 * hold the event loop in a single JSON.parse.
 */
const MAX_LINE = 64 * 1024
const NEWLINE = 0x0a

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isTime (v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v)
}

/** The entry a parsed line is, or undefined when it is not a well-formed one. */
export function entryOf (v: unknown): RevocationEntry | undefined {
  if (!isObject(v) || !isTime(v.expiresAt)) return undefined
  if (v.type === 'jti' && typeof v.jti === 'string') return v as RevocationEntry
  if (v.type === 'sub' && typeof v.sub === 'string' && isTime(v.issuedBefore)) return v as RevocationEntry
  return undefined
}

function headerOf (v: Record<string, unknown>): DenylistHeader | undefined {
  if (v.version !== 1 || !Number.isSafeInteger(v.entries) || (v.entries as number) < 0) return undefined
  if (typeof v.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(v.sha256)) return undefined
  return v as unknown as DenylistHeader
}

type Verdict = { ok: true, entries: number } | { ok: false, problem: string }

/**
 * Checks a whole denylist file, handing every entry to onEntry, and yields
 * about every SLICE_MS so that a caller can let the event loop run. The
 * verdict comes last: a caller must not use what it was handed before it
 * knows the file is valid.
 */
function * validate (buf: Buffer, onEntry: (e: RevocationEntry) => void): Generator<void, Verdict> {
  if (buf.length === 0) return { ok: false, problem: 'empty file' }
  // A writer that died mid-write (or a copy cut short) leaves no final newline.
  if (buf[buf.length - 1] !== NEWLINE) return { ok: false, problem: 'torn: the last line is incomplete' }
  let header: DenylistHeader | undefined
  let hash: Hash | undefined
  let hashed = 0
  let entries = 0
  let line = 0
  let pos = 0
  let sliceStart = performance.now()
  while (pos < buf.length) {
    const end = buf.indexOf(NEWLINE, pos)
    line++
    let v: unknown
    if (end - pos <= MAX_LINE) {
      try { v = JSON.parse(buf.toString('utf8', pos, end)) } catch { v = undefined }
    }
    if (line === 1 && isObject(v) && v.type === 'header') {
      header = headerOf(v)
      if (!header) return { ok: false, problem: 'corrupt: line 1 is not a valid header' }
      hash = createHash('sha256')
      hashed = end + 1
    } else {
      const e = entryOf(v)
      if (!e) return { ok: false, problem: `corrupt: line ${line} is not a revocation entry` }
      onEntry(e)
      entries++
    }
    pos = end + 1
    if (line % SLICE_CHECK === 0 && performance.now() - sliceStart >= SLICE_MS) {
      // Hashed a slice at a time too: one digest of a big file is a long block.
      hash?.update(buf.subarray(hashed, pos))
      hashed = pos
      yield
      sliceStart = performance.now()
    }
  }
  if (header && hash) {
    hash.update(buf.subarray(hashed))
    if (entries < header.entries) return { ok: false, problem: `truncated: the header says ${header.entries} entries, ${entries} found` }
    if (entries > header.entries) return { ok: false, problem: `corrupt: the header says ${header.entries} entries, ${entries} found` }
    if (hash.digest('hex') !== header.sha256) return { ok: false, problem: 'digest mismatch' }
  }
  // No header: a file from before headers, accepted because every line of
  // it is a whole, well-formed entry.
  return { ok: true, entries }
}

function runSync<T> (g: Generator<void, T>): T {
  for (;;) {
    const r = g.next()
    if (r.done) return r.value
  }
}

async function runSliced<T> (g: Generator<void, T>): Promise<T> {
  for (;;) {
    const r = g.next()
    if (r.done) return r.value
    await nextTurn()
  }
}

/**
 * Revocations in memory, as every source of them (the file here, Redis in
 * src/auth/shared-revocations.ts) holds them: the latest expiry per jti, and
 * per subject the latest issuedBefore. Entries for one key merge by max, so
 * adding the same one twice, or in any order, gives the same set.
 */
export class RevocationSet {
  private readonly jtis = new Map<string, number>()
  private readonly subs = new Map<string, { issuedBefore: number, expiresAt: number }>()

  add (e: RevocationEntry): void {
    if (e.type === 'jti') {
      this.jtis.set(e.jti, Math.max(e.expiresAt, this.jtis.get(e.jti) ?? 0))
      return
    }
    const prev = this.subs.get(e.sub)
    this.subs.set(e.sub, { issuedBefore: Math.max(e.issuedBefore, prev?.issuedBefore ?? 0), expiresAt: Math.max(e.expiresAt, prev?.expiresAt ?? 0) })
  }

  /** A copy without the entries that lapsed before now. */
  current (now: number): RevocationSet {
    const out = new RevocationSet()
    for (const [jti, expiresAt] of this.jtis) if (expiresAt >= now) out.jtis.set(jti, expiresAt)
    for (const [sub, s] of this.subs) if (s.expiresAt >= now) out.subs.set(sub, s)
    return out
  }

  /** Why a token or grant is revoked, or null. */
  check (t: Revocable, now: number): string | null {
    if (t.jti !== undefined) {
      const until = this.jtis.get(t.jti)
      if (until !== undefined && until >= now) return 'token revoked'
    }
    const s = this.subs.get(t.sub)
    if (s && s.expiresAt >= now && (t.iat === undefined || t.iat < s.issuedBefore)) return 'subject revoked'
    return null
  }
}

/** Where a gateway learns of revocations: the denylist file, or Redis (state.redis). */
export interface RevocationSource {
  /** Why the revocations cannot be trusted now (every token is then refused, 503), or null. */
  readonly loadError: string | null
  /** Why a token or grant is revoked, or null. */
  check: (t: Revocable, now?: number) => string | null
}

/** The entry `nasguard token revoke` adds: it lapses once no token it matches can still be valid. */
export function revocationEntry (jwt: { maxLifetimeSec: number, clockToleranceSec: number }, what: { jti: string } | { sub: string, issuedBefore: number }, now: number): RevocationEntry {
  // No token that could match outlives this: exp <= iat + maxLifetimeSec,
  // and exp is honoured up to clockToleranceSec late.
  const max = jwt.maxLifetimeSec + jwt.clockToleranceSec
  if ('jti' in what) return { type: 'jti', jti: what.jti, expiresAt: now + jwt.clockToleranceSec + max, at: now }
  return { type: 'sub', sub: what.sub, issuedBefore: what.issuedBefore, expiresAt: Math.max(what.issuedBefore, now) + max, at: now }
}

function signature (st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`
}

const DELETED = 'deleted: the denylist existed and is gone'

export class Denylist implements RevocationSource {
  private set = new RevocationSet()
  /** The file as last judged (valid or not), so an unchanged file is not read again. */
  private lastStat = ''
  /** The file has been seen to exist by this process. */
  private existed = false
  private loading: Promise<void> | undefined
  private again = false
  private onState: ((problem: string | null) => void) | undefined
  /**
   * Why the denylist cannot be trusted (unreadable, corrupt, torn,
   * truncated, deleted), or null. While set, every token is refused (503):
   * the entries from before are kept for check(), and are not an answer.
   */
  loadError: string | null = null

  constructor (readonly file: string) {}

  /** Reads the file again if it changed, synchronously (start-up). Missing file, never seen: empty list. */
  load (): void {
    let fd: number
    try {
      fd = openSync(this.file, 'r')
    } catch (err) {
      this.absent(err)
      return
    }
    try {
      const sig = signature(fstatSync(fd))
      this.existed = true
      if (sig === this.lastStat) return
      const buf = readFileSync(fd)
      const set = new RevocationSet()
      this.settle(runSync(validate(buf, (e) => set.add(e))), set, sig)
    } catch (err) {
      this.failed(err)
    } finally {
      closeSync(fd)
    }
  }

  /**
   * Reads the file again if it changed, without holding the event loop: an
   * asynchronous read, then checked in slices. The state from before stays
   * in force until the new one is swapped in whole. A reload asked for
   * while one runs is not started twice: the running one goes round once
   * more, so a change made during a load is not missed.
   */
  reload (): Promise<void> {
    if (this.loading) {
      this.again = true
      return this.loading
    }
    this.loading = (async () => {
      try {
        do {
          this.again = false
          await this.loadOnce()
        } while (this.again)
      } finally {
        this.loading = undefined
      }
    })()
    return this.loading
  }

  private async loadOnce (): Promise<void> {
    let fh: Awaited<ReturnType<typeof open>>
    try {
      fh = await open(this.file, 'r')
    } catch (err) {
      this.absent(err)
      return
    }
    try {
      // The open file's own stat: what is read is what was stat'ed, even if
      // the path is renamed over meanwhile (the poll sees that and comes back).
      const sig = signature(await fh.stat())
      this.existed = true
      if (sig === this.lastStat) return
      const buf = await fh.readFile()
      const set = new RevocationSet()
      this.settle(await runSliced(validate(buf, (e) => set.add(e))), set, sig)
    } catch (err) {
      this.failed(err)
    } finally {
      await fh.close().catch(() => {})
    }
  }

  /**
   * Polls the file every pollMs (stat only; cheap) until the returned
   * function is called. onState is called whenever loadError changes (set,
   * changed or cleared, including at start-up) with the new problem or
   * null, so the caller can log each change once; like an event listener,
   * it must not throw.
   */
  watch (pollMs: number, onState?: (problem: string | null) => void): () => void {
    this.onState = onState
    this.load()
    const listener = (): void => { void this.reload() }
    watchFile(this.file, { interval: pollMs, persistent: false }, listener)
    // A change between the first load and the poller's first stat would
    // otherwise go unseen until the next one.
    void this.reload()
    return () => {
      unwatchFile(this.file, listener)
      this.onState = undefined
    }
  }

  /** Why a token or grant is revoked, or null. */
  check (t: Revocable, now = Math.floor(Date.now() / 1000)): string | null {
    return this.set.check(t, now)
  }

  private settle (v: Verdict, set: RevocationSet, sig: string): void {
    this.lastStat = sig
    if (!v.ok) {
      this.setProblem(v.problem)
      return
    }
    this.set = set
    this.setProblem(null)
  }

  /** The file could not be opened: missing (never seen, or gone), or unreadable. */
  private absent (err: unknown): void {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      this.failed(err)
      return
    }
    this.lastStat = ''
    // Within this process a file that was there and is gone is a fault
    // (deleted by hand, a volume not mounted): its revocations are gone
    // too. Across a restart a missing file cannot be told from one that
    // never existed (no revocation yet), so a gateway that starts without
    // one runs with an empty list.
    if (this.existed) {
      this.setProblem(DELETED)
      return
    }
    this.set = new RevocationSet()
    this.setProblem(null)
  }

  private failed (err: unknown): void {
    // Judged again at the next change (a fixed mode changes ctime).
    this.lastStat = ''
    this.setProblem((err as Error).message)
  }

  private setProblem (problem: string | null): void {
    if (problem === this.loadError) return
    this.loadError = problem
    this.onState?.(problem)
  }
}

/** The bytes of a denylist holding these entries: the header, then one JSON line per entry. */
export function serializeDenylist (entries: readonly RevocationEntry[]): Buffer {
  const body = Buffer.from(entries.map((e) => JSON.stringify(e) + '\n').join(''))
  const header: DenylistHeader = { type: 'header', version: 1, entries: entries.length, sha256: createHash('sha256').update(body).digest('hex') }
  return Buffer.concat([Buffer.from(JSON.stringify(header) + '\n'), body])
}

/**
 * Replaces the denylist with exactly these entries, atomically, under the
 * same lock as addRevocation. The one writer of the file format.
 */
export function writeDenylist (file: string, entries: readonly RevocationEntry[]): void {
  makeDir(dirname(file))
  const unlock = lock(`${file}.lock`, 10000)
  try {
    replace(file, entries)
  } finally {
    unlock()
  }
}

/**
 * Adds an entry. Lapsed entries are dropped, an entry for the same token or
 * subject is merged into it (the later expiry, the later issuedBefore), and
 * the file is replaced atomically (write, fsync, rename, fsync the
 * directory), so a gateway never reads half of it. A file that is not a
 * valid denylist is, for the CLI (salvage, the default), rewritten with the
 * well-formed entries it still holds (what could be lost is lost already;
 * refusing would leave every gateway failing closed), and warn says so; a
 * gateway (salvage: false) never does that: it throws, and the gateways
 * stay closed until an operator has looked. waitMs: how long to wait for
 * another writer's lock (0: throw LOCK_HELD at once, for a caller that must
 * not hold its event loop).
 */
export function addRevocation (file: string, entry: RevocationEntry, now = Math.floor(Date.now() / 1000), opts: { warn?: (message: string) => void, salvage?: boolean, waitMs?: number } = {}): number {
  makeDir(dirname(file))
  const unlock = lock(`${file}.lock`, opts.waitMs ?? 10000)
  try {
    let existing: RevocationEntry[] = []
    try {
      const buf = readFileSync(file)
      const v = runSync(validate(buf, (e) => existing.push(e)))
      if (!v.ok) {
        if (opts.salvage === false) throw new Error(`${file} is not a valid denylist (${v.problem}): not rewritten; every token is refused until an operator has restored it or run \`nasguard token revoke\``)
        existing = salvage(buf)
        opts.warn?.(`${file} was not a valid denylist (${v.problem}); rewriting it with the ${existing.length} well-formed entr${existing.length === 1 ? 'y' : 'ies'} it held, revocations in the damaged part are lost`)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const key = keyOf(entry)
    let merged = entry
    for (const e of existing) if (keyOf(e) === key) merged = mergeEntries(merged, e)
    const kept = [...existing.filter((e) => e.expiresAt >= now && keyOf(e) !== key), merged]
    replace(file, kept)
    return kept.length
  } finally {
    unlock()
  }
}

/** What an entry revokes: one token, or one subject's tokens. */
function keyOf (e: RevocationEntry): string {
  return e.type === 'jti' ? `jti:${e.jti}` : `sub:${e.sub}`
}

/** Two entries for the same token or subject, as one (as Redis merges them). */
function mergeEntries (a: RevocationEntry, b: RevocationEntry): RevocationEntry {
  const expiresAt = Math.max(a.expiresAt, b.expiresAt)
  if (a.type === 'sub' && b.type === 'sub') return { ...a, expiresAt, issuedBefore: Math.max(a.issuedBefore, b.issuedBefore) }
  return { ...a, expiresAt }
}

/** The message of a lock held by another writer (addRevocation with waitMs 0). */
export const LOCK_HELD = 'is held by another revocation; try again'

/** The entries of a valid denylist file (none when it does not exist); throws, saying why, when it is not valid. */
export function denylistEntries (file: string): RevocationEntry[] {
  let buf: Buffer
  try {
    buf = readFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const out: RevocationEntry[] = []
  const v = runSync(validate(buf, (e) => out.push(e)))
  if (!v.ok) throw new Error(`${file} is not a valid denylist (${v.problem})`)
  return out
}

/** Every line of a damaged file that is still a whole, well-formed entry. */
function salvage (buf: Buffer): RevocationEntry[] {
  const out: RevocationEntry[] = []
  for (const line of buf.toString('utf8').split('\n')) {
    if (line.length > MAX_LINE) continue
    try {
      const e = entryOf(JSON.parse(line))
      if (e) out.push(e)
    } catch {
      // Not JSON: part of the damage.
    }
  }
  return out
}

/** Writes a temp file, fsyncs it, renames it over the file and fsyncs the directory. The caller holds the lock. */
function replace (file: string, entries: readonly RevocationEntry[]): void {
  // Keep its mode as it was. (Run as root in a directory another user owns,
  // the CLI refuses first: cli.ts, files/ownership.ts.)
  let mode = 0o600
  try {
    mode = statSync(file).mode & 0o777
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const tmp = `${file}.${process.pid}.tmp`
  const fd = openSync(tmp, 'w', 0o600)
  try {
    try {
      writeSync(fd, serializeDenylist(entries))
      fchmodSync(fd, mode)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, file)
  } catch (err) {
    try { unlinkSync(tmp) } catch { /* renamed or never made */ }
    throw err
  }
  syncDir(dirname(file))
}

/** Makes the rename itself durable: without it a crash can bring back the old file, or none. */
function syncDir (dir: string): void {
  let fd: number
  try {
    fd = openSync(dir, 'r')
  } catch (err) {
    // Some platforms (Windows) cannot open a directory to sync it.
    if (['EISDIR', 'EPERM', 'EACCES'].includes((err as NodeJS.ErrnoException).code ?? '')) return
    throw err
  }
  try {
    fsyncSync(fd)
  } catch (err) {
    // Some file systems do not sync directories; the file itself is synced.
    if (!['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
  } finally {
    closeSync(fd)
  }
}

/**
 * An exclusive lock file, so two revocations at once do not lose one
 * another's entries. A lock older than 30 s is a crashed writer's.
 */
function lock (path: string, waitMs: number): () => void {
  const deadline = Date.now() + waitMs
  for (;;) {
    try {
      closeSync(openSync(path, 'wx', 0o600))
      return () => { try { unlinkSync(path) } catch { /* already gone */ } }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      try {
        if (Date.now() - statSync(path).mtimeMs > 30000) { unlinkSync(path); continue }
      } catch { continue }
      if (Date.now() >= deadline) throw new Error(`${path} ${LOCK_HELD}`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
    }
  }
}
