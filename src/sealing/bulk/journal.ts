// The journal of a bulk run (nasguard seal, keys rotate): JSON lines, each
// appended and synced once a sealed file is in place and verified, so that
// a rerun skips finished files and a crash loses at most the line being
// written (a torn last line is ignored). It is kept off the NAS, 0600, and
// holds no plaintext path or name (they hold callers' phone numbers): a
// line is keyed by the sealed path, with the version (size, mtime in ns,
// inode) and SHA-256 of what was verified. A lock file beside it (holding
// the pid) keeps two runs off one journal; one left by a killed run is
// taken over.
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, fstatSync, linkSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { open, readFile, rm, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { makeDir } from '../../files/ownership.js'
import type { FileVersion } from './durable.js'

export interface JournalEntry {
  /** The NAS path of the sealed file. */
  sealed: string
  /** The version of what the entry vouches for: the plaintext (seal) or the sealed file (rotate). */
  size: string
  mtimeNs: string
  ino: string
  /** SHA-256 of the plaintext, hex. */
  sha256: string
  /** The key the file is sealed to. */
  keyId: string
  at: string
}

export function entryMatches (e: JournalEntry | undefined, v: FileVersion): e is JournalEntry {
  return e !== undefined && e.size === String(v.size) && e.mtimeNs === String(v.mtimeNs) && e.ino === String(v.ino)
}

/** The last entry per sealed path; a line that does not parse (torn by a crash) is skipped. */
export function replay (text: string): Map<string, JournalEntry> {
  const entries = new Map<string, JournalEntry>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    try {
      const e = JSON.parse(line) as JournalEntry
      if (typeof e.sealed === 'string' && typeof e.sha256 === 'string') entries.set(e.sealed, e)
    } catch {}
  }
  return entries
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Takes the journal's lock file, or throws naming the run that holds it. */
function lock (file: string): () => void {
  return takeLock(`${file}.lock`, (pid) => `the journal ${file} is in use by another run (pid ${pid}); wait for it, or use another --journal`)
}

/**
 * The lock of one mounted share, in the keyring directory (named from a
 * hash of the share's real path): one seal or rotate run at a time on a
 * share, whatever their journals, so that no run removes, commits or
 * replaces a file another is writing.
 */
export function lockShare (keyringDir: string, root: string): () => void {
  const real = realpathSync(root)
  const file = join(keyringDir, `.share-${createHash('sha256').update(real).digest('hex').slice(0, 32)}.lock`)
  return takeLock(file, (pid) => `the share ${real} is being sealed or rotated by another run (pid ${pid}); wait for it`)
}

/**
 * Takes a lock file (O_EXCL, holding the pid), or throws busy(pid) naming
 * the live run that holds it. One left by a dead run is taken over by
 * renaming it aside to a unique name (of two runs taking it over, one
 * rename wins; the other finds nothing to rename, or a lock that is not the
 * stale one, which it puts back), then O_EXCL again. The release removes
 * the lock only while it is still this run's (its inode, its pid).
 */
export function takeLock (lockFile: string, busy: (pid: number) => string): () => void {
  for (let attempt = 0; attempt < 8; attempt++) {
    // Made whole under a unique name, then linked into place: a lock file always holds its pid.
    const made = `${lockFile}.${randomBytes(8).toString('hex')}.new`
    const fd = openSync(made, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
    let ino: number
    try {
      writeSync(fd, `${process.pid}\n`)
      ino = fstatSync(fd).ino
    } finally {
      closeSync(fd)
    }
    try {
      linkSync(made, lockFile)
      return () => {
        try {
          if (statSync(lockFile).ino === ino && readFileSync(lockFile, 'utf8') === `${process.pid}\n`) unlinkSync(lockFile)
        } catch {}
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    } finally {
      unlinkSync(made)
    }
    let seen: { ino: number, text: string }
    try {
      const ino = statSync(lockFile).ino
      seen = { ino, text: readFileSync(lockFile, 'utf8') }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    const pid = Number(seen.text.trim())
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) throw new Error(busy(pid))
    const aside = `${lockFile}.${randomBytes(8).toString('hex')}.stale`
    try {
      renameSync(lockFile, aside)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    // Another run took the stale one over first, and this rename moved its fresh lock: back it goes (a link replaces nothing).
    if (statSync(aside).ino !== seen.ino || readFileSync(aside, 'utf8') !== seen.text) { try { linkSync(aside, lockFile) } catch {} }
    unlinkSync(aside)
  }
  throw new Error(`${lockFile}: could not take the lock (it keeps changing)`)
}

export class Journal {
  private tail: Promise<void> = Promise.resolve()

  private constructor (private readonly entries: Map<string, JournalEntry>, private readonly fh: FileHandle | undefined, private readonly unlock: () => void) {}

  /** Opens (and locks) the journal for appending; read-only (no lock, nothing made) for a dry run. */
  static async open (file: string, readOnly: boolean): Promise<Journal> {
    if (readOnly) {
      let text = ''
      try { text = await readFile(file, 'utf8') } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err }
      return new Journal(replay(text), undefined, () => {})
    }
    makeDir(dirname(file))
    const unlock = lock(file)
    try {
      const fh = await open(file, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND, 0o600)
      const text = await fh.readFile('utf8')
      // A line torn by a crash is ended, so that the next one stands alone.
      if (text.length > 0 && !text.endsWith('\n')) await fh.write('\n')
      return new Journal(replay(text), fh, unlock)
    } catch (err) {
      unlock()
      throw err
    }
  }

  get (sealed: string): JournalEntry | undefined {
    return this.entries.get(sealed)
  }

  /** Appends an entry and syncs it; appends are written one at a time, in order. */
  async append (e: Omit<JournalEntry, 'at'>): Promise<void> {
    const entry: JournalEntry = { ...e, at: new Date().toISOString() }
    this.entries.set(entry.sealed, entry)
    const fh = this.fh
    if (!fh) throw new Error('a read-only journal is not written')
    const write = this.tail.then(async () => {
      await fh.write(JSON.stringify(entry) + '\n')
      await fh.datasync()
    })
    this.tail = write.catch(() => {})
    await write
  }

  async close (): Promise<void> {
    await this.tail
    await this.fh?.close()
    this.unlock()
  }

  /** Closes and removes the journal: its run is over for good (a finished rotation). */
  async discard (file: string): Promise<void> {
    await this.close()
    await rm(file, { force: true })
  }
}
