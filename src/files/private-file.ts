// Small files written whole and private (0600): under a random temporary
// name beside the target, synced, then renamed (or linked) into place, so
// a crash leaves the old file or the new one, never half of one. The
// keyring's key files and the legal holds document are written this way.
import { randomBytes } from 'node:crypto'
import { closeSync, constants, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs'

/** Writes a 0600 file whole (temporary name, fsync, rename): a crash leaves the old one or the new one. */
export function writePrivate (file: string, text: string): void {
  const tmp = writtenTemp(file, text)
  try {
    renameSync(tmp, file)
  } catch (err) {
    try { unlinkSync(tmp) } catch {}
    throw err
  }
}

/** A new 0600 file beside `file`, under a temporary name, holding text, synced: its name. */
export function writtenTemp (file: string, text: string): string {
  const tmp = tempNameOf(file)
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return tmp
}

/** fsync a directory, so that the names made or removed in it last. */
export function syncDir (dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY)
  try { fsyncSync(fd) } finally { closeSync(fd) }
}

/** A temporary name beside a file: random, so two processes (two containers may share a pid) never meet on one. */
function tempNameOf (file: string): string {
  return `${file}.${randomBytes(8).toString('hex')}.tmp`
}
