// One writer per audit directory (two would interleave sequence numbers):
// audit.lock names the writer's pid, host and pid namespace. It is made
// whole and at once (written under a temporary name, then linked: never seen
// empty or half-written). A lock whose process is gone (kill -9) is removed,
// and then taken like a free one; only the process holding audit.lock.break
// (made the same way, and held for a moment) removes it, and only if it is
// still the very lock judged stale, so that of several processes racing for
// a stale lock exactly one takes it. A lock from another host or container
// sharing the directory names a pid this process cannot see, and is never
// taken over. A lock in the old format (a pid alone) is judged as this host's.
import { randomBytes } from 'node:crypto'
import { constants as fsc, promises as fsp, readlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'

const LOCK_FILE = 'audit.lock'

/** The lock of the chain in dir. */
export function lockFile (dir: string): string {
  return join(dir, LOCK_FILE)
}
const LOCK_LINE = /^(\d{1,10})(?: (host=\S+ pidns=\S*))?\n?$/

/** Where a pid means something: `host=<name> pidns=<namespace>` (Linux; the namespace is empty elsewhere). */
function lockOwner (): string {
  let ns = ''
  try { ns = readlinkSync('/proc/self/ns/pid') } catch {}
  return `host=${hostname().replace(/\s/g, '_')} pidns=${ns.replace(/\s/g, '_')}`
}

const locked = (message: string): Error => Object.assign(new Error(message), { code: 'EAUDITLOCKED' })

/** The lock's text, without following a link or blocking on a FIFO; undefined when it is gone. */
async function readLock (file: string): Promise<string | undefined> {
  let h: fsp.FileHandle
  try {
    h = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    throw locked(`${file} cannot be read as a lock (${code ?? 'error'}): if no gateway writes this trail, remove it`)
  }
  try {
    if (!(await h.stat()).isFile()) throw locked(`${file} is not a regular file: if no gateway writes this trail, remove it`)
    const buf = Buffer.alloc(512)
    const { bytesRead } = await h.read(buf, 0, buf.length, 0)
    return buf.subarray(0, bytesRead).toString('latin1')
  } finally {
    await h.close()
  }
}

/** Why a lock's holder may still be writing (an error to throw), or undefined when it is gone. */
function holderAlive (file: string, text: string, self: string): Error | undefined {
  const m = LOCK_LINE.exec(text)
  if (!m) return locked(`${file} does not hold a lock line (pid host=… pidns=…): if no gateway writes this trail, remove it`)
  const pid = Number(m[1])
  if (m[2] !== undefined && m[2] !== self) {
    return locked(`another process (pid ${pid}, ${m[2]}) holds ${file}: a gateway on another host or in another container sharing this directory; one writer per directory. If none runs there, remove ${file}`)
  }
  let alive = pid === process.pid
  if (!alive && pid > 0) {
    try { process.kill(pid, 0); alive = true } catch (err) { alive = (err as NodeJS.ErrnoException).code === 'EPERM' }
  }
  return alive ? locked(`another process (pid ${pid}) writes to the audit trail in ${join(file, '..')}: one writer per directory`) : undefined
}

/** A break lock older than this was left by a process that died while breaking: it is removed. */
const BREAK_STALE_MS = 10000

/**
 * Removes `file` if it still holds `stale`, as the one process holding the
 * break lock (made from `tmp` like the lock itself). While the stale lock is
 * in place nobody can make a new one, so what is read under the break lock
 * is what is removed. False when another process is breaking it.
 */
async function breakStale (file: string, stale: string, tmp: string): Promise<boolean> {
  const breaker = `${file}.break`
  try {
    await fsp.link(tmp, breaker)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const st = await fsp.lstat(breaker).catch(() => undefined)
    if (st !== undefined && Date.now() - st.mtimeMs > BREAK_STALE_MS) await fsp.unlink(breaker).catch(() => {})
    return false
  }
  try {
    if (await readLock(file) === stale) await fsp.unlink(file)
    return true
  } finally {
    await fsp.unlink(breaker).catch(() => {})
  }
}

const pause = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Takes dir's lock; returns what release needs. Throws EAUDITLOCKED while another writer holds it. */
export async function takeLock (dir: string): Promise<{ file: string, text: string }> {
  return await takeLockFile(lockFile(dir))
}

/** Takes the lock `file` (another file than a chain's: the legal holds'), as takeLock does. */
export async function takeLockFile (file: string): Promise<{ file: string, text: string }> {
  const self = lockOwner()
  const text = `${process.pid} ${self}\n`
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}`
  await fsp.writeFile(tmp, text, { flag: 'wx', mode: 0o600 })
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await fsp.link(tmp, file)
        return { file, text }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const held = await readLock(file)
      if (held === undefined) continue
      const busy = holderAlive(file, held, self)
      if (busy) throw busy
      // Stale: removed by one process; the others wait for it and try again.
      if (!await breakStale(file, held, tmp)) await pause(20)
    }
    throw locked(`cannot take ${file}: it stayed stale while others were taking it over`)
  } finally {
    await fsp.unlink(tmp).catch(() => {})
  }
}

/** Releases a lock taken by takeLock, if it is still this one. */
export async function releaseLock (lock: { file: string, text: string }): Promise<void> {
  if (await readLock(lock.file).catch(() => undefined) === lock.text) await fsp.unlink(lock.file).catch(() => {})
}
