// Files the CLI writes for the gateway (the denylist, the audit key and
// trail, prune checkpoints, certificates and keys) must stay usable by the
// gateway's user. `token revoke` run as root once made a root-owned 0600
// denylist, and a gateway running as its service user then refused every
// request while the CLI had printed success. Handing new files over to the
// directory's owner (chown) was tried and red-teamed: a root process
// writing where another user controls the names follows the links that
// user plants, and chowns what they point at. So run as root, the CLI
// refuses to write in a directory another user owns, and says to run it as
// that user; the kernel then checks everything it writes.
import { mkdirSync, readFileSync, statSync } from 'node:fs'
import { dirname } from 'node:path'

/** mkdir -p with the gateway's directory mode. */
export function makeDir (dir: string, mode = 0o700): void {
  mkdirSync(dir, { recursive: true, mode })
}

/** The nearest existing path at or above `path`, and its owner. */
function existingOwner (path: string): { at: string, uid: number } | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      return { at: p, uid: statSync(p).uid }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) return undefined
    }
  }
}

function userName (uid: number): string {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[2] === String(uid))
    return line?.split(':')[0] ?? String(uid)
  } catch {
    return String(uid)
  }
}

/**
 * Run as root: throws when a directory the command writes in (or the
 * nearest one that exists above it) belongs to another user, naming that
 * user and the command to run instead. Not root: nothing to check (the
 * kernel does).
 */
export function refuseForeignOwner (dirs: readonly string[], command: string): void {
  if (process.getuid?.() !== 0) return
  for (const dir of dirs) {
    const owner = existingOwner(dir)
    if (!owner || owner.uid === 0) continue
    const name = userName(owner.uid)
    throw new Error(`${owner.at} belongs to ${name} (uid ${owner.uid}), not root: run this as that user, e.g. sudo -u ${name} nasguard ${command} …; as root it would leave files ${name} cannot use, and write where ${name} controls the names`)
  }
}
