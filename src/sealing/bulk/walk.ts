// The walk over a mounted NAS share: every regular file under the root, as
// its decoded path segments (the share's root is the NAS URL's "/"), one
// directory read at a time, so that memory does not grow with the tree.
// Dot-led entries are never descended into nor yielded as files (the
// gateway serves none); bulk sealing's own leftover temporary files are
// reported so that they can be removed. Symbolic links are not followed.
import { readdir, lstat } from 'node:fs/promises'
import type { Dirent, Stats } from 'node:fs'
import { join } from 'node:path'
import { TEMP_NAME } from './durable.js'

export type Found =
  | { kind: 'file', file: string, segments: string[] }
  /** A temporary file of an earlier, interrupted run. */
  | { kind: 'temp', file: string }
  /** Not a file to look at: a dot-led file, a link, a device. */
  | { kind: 'other', reason: 'hidden' | 'not-a-file' }
  /** A directory that could not be read: what it holds is not looked at. */
  | { kind: 'unreadable', code: string }

async function typeOf (dir: string, e: Dirent): Promise<'file' | 'dir' | 'other'> {
  // Some NFS and SMB clients give no type in a listing.
  const known = e.isFile() || e.isDirectory() || e.isSymbolicLink()
  let st: Dirent | Stats = e
  try {
    if (!known) st = await lstat(join(dir, e.name))
  } catch {
    // Gone since the listing, or unreadable: not a file to look at (and its error would name it).
    return 'other'
  }
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other'
}

export async function * walk (root: string): AsyncGenerator<Found> {
  const pending: string[][] = [[]]
  while (pending.length > 0) {
    const segments = pending.pop() as string[]
    const dir = join(root, ...segments)
    let entries: Dirent[]
    try {
      // Listed as a directory, and still one (not swapped for a symbolic link since): never followed out of the root.
      if (segments.length > 0 && !(await lstat(dir)).isDirectory()) { yield { kind: 'other', reason: 'not-a-file' }; continue }
      entries = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      yield { kind: 'unreadable', code: (err as NodeJS.ErrnoException).code ?? 'error' }
      continue
    }
    entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    const dirs: string[][] = []
    for (const e of entries) {
      const type = await typeOf(dir, e)
      if (e.name.startsWith('.')) {
        if (type === 'file' && TEMP_NAME.test(e.name)) yield { kind: 'temp', file: join(dir, e.name) }
        else if (type === 'file') yield { kind: 'other', reason: 'hidden' }
        continue
      }
      if (type === 'dir') dirs.push([...segments, e.name])
      else if (type === 'file') yield { kind: 'file', file: join(dir, e.name), segments: [...segments, e.name] }
      else yield { kind: 'other', reason: 'not-a-file' }
    }
    // Depth first, in name order.
    pending.push(...dirs.reverse())
  }
}
