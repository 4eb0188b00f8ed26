// Files the CLI writes for the gateway (the denylist, the audit key, audit
// records, the chains list) must stay usable by the gateway's user when an
// admin runs the CLI as root: `token revoke` as root once made a root-owned
// 0600 denylist, and a gateway running as its service user then refused
// every request. As root, a file keeps its owner when it exists; a new file
// or directory goes to the owner of the directory it is made in (the
// gateway's user owns its state directories). Not as root there is nothing
// to do: what we write is ours.
import { chownSync, fchownSync, mkdirSync, statSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'

export interface Owner { uid: number, gid: number }

function isRoot (): boolean {
  return process.getuid?.() === 0
}

/**
 * Who must own `path` once written: its owner if it exists, else the owner
 * of its nearest existing directory. Undefined when that is root, or when
 * we are not root (nothing to hand over).
 */
export function ownerFor (path: string): Owner | undefined {
  if (!isRoot()) return undefined
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = statSync(p)
      return s.uid === 0 ? undefined : { uid: s.uid, gid: s.gid }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) return undefined
    }
  }
}

/** Gives an open file to its owner (see ownerFor), before it is renamed into place. */
export function handOver (fd: number, owner: Owner | undefined): void {
  if (owner) fchownSync(fd, owner.uid, owner.gid)
}

/** mkdir -p, every directory it makes owned like its parent (see ownerFor). */
export function makeDir (dir: string, mode = 0o700): void {
  const owner = ownerFor(dir)
  const first = mkdirSync(dir, { recursive: true, mode })
  if (!owner || first === undefined) return
  let p = first
  chownSync(p, owner.uid, owner.gid)
  for (const part of relative(first, dir).split(sep).filter(Boolean)) {
    p = join(p, part)
    chownSync(p, owner.uid, owner.gid)
  }
}
