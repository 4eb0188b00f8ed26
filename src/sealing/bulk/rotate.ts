// Re-sealing a period to a new identity (nasguard keys rotate): every
// sealed file of the period is decrypted with the identity it was sealed
// to and sealed again, streamed, to <period>.next.key with a fresh file key
// and the same path binding; the new file is verified before it replaces
// the old one (temporary name, fsync, rename, fsync of the directory). When
// every file of the period opens with the new identity and nothing failed,
// the old identity is retired (keyring.ts retireKey). The walk, the pool,
// the journal and the reports are seal's (run.ts, journal.ts).
import { realpathSync } from 'node:fs'
import { lstat } from 'node:fs/promises'
import { MAX_HEADER_BYTES, SealedIntegrityError } from '../age.js'
import { openHeaderWithAny, type Keyring, type PeriodKey } from '../keyring.js'
import { plainPathOf, SEALED_SUFFIX } from '../names.js'
import { NONCE_BYTES } from '../payload.js'
import { periodOf, type PeriodPattern } from '../period.js'
import { SealStream } from '../seal-stream.js'
import { inPlace, openRegular, replace, Digest, READ_BYTES, removeIfThere, sameVersion, tempFileOf, versionAt, versionOf } from './durable.js'
import { entryMatches, type Journal } from './journal.js'
import { OpenStream } from './open-stream.js'
import { FileFailure, reasonOf, type ActiveTemps, type FileResult, type Job } from './run.js'
import { bindingOf, openedDigest, verifyWritten, writeTemp } from './seal.js'
import { walk } from './walk.js'

export interface RotateSettings {
  root: string
  pattern: PeriodPattern
  nameSegments: number
  period: string
}

/** The decoded plaintext segments of a sealed file's path; undefined when its name does not decode (moved, renamed, another keyring). */
function plainSegmentsOf (s: RotateSettings, ring: Keyring, segments: string[]): string[] | undefined {
  return plainPathOf(ring.nameKey, segments, s.nameSegments)?.split('/').slice(1)
}

/**
 * Whether a file of the share is a sealed file of the period; else why not.
 * The period is the plaintext path's (with names.segments 2 or more the
 * date folders may be sealed themselves). A name that does not decode is
 * looked at: its header says whether it still needs the period's identity.
 */
function wants (s: RotateSettings, ring: Keyring, segments: string[]): true | string {
  if (!segments[segments.length - 1].toLowerCase().endsWith(SEALED_SUFFIX)) return 'not-sealed'
  const plain = plainSegmentsOf(s, ring, segments)
  if (plain === undefined) return true
  return periodOf(s.pattern, plain) === s.period ? true : 'other-period'
}

/** The sealed file's NAS path and the plaintext path its binding holds; undefined when its name does not decode. */
function pathsOf (s: RotateSettings, ring: Keyring, segments: string[]): { sealed: string, binding: string } | undefined {
  const plain = plainSegmentsOf(s, ring, segments)
  if (plain === undefined) return undefined
  return { sealed: bindingOf(segments), binding: bindingOf(plain) }
}

/** Refusals that come after the key unwrapped the file key. */
const UNWRAPPED = new Set(['the header was altered (MAC)', 'no path binding', 'sealed for another path'])

/** Whether one of `keys` unwraps the file key of a sealed file's header, whatever path it is bound to. */
async function unwrapsWith (file: string, keys: readonly PeriodKey[]): Promise<boolean> {
  const { fh } = await openRegular(file)
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(MAX_HEADER_BYTES + NONCE_BYTES), 0, MAX_HEADER_BYTES + NONCE_BYTES, 0)
    for (const key of keys) {
      try {
        // No path: a header this key opens is refused for its binding (or MAC), not for its key.
        if (openHeaderWithAny(buffer.subarray(0, bytesRead), [key], '') !== undefined) return true
      } catch (err) {
        if (!(err instanceof SealedIntegrityError)) throw err
        if (UNWRAPPED.has(err.reason)) return true
      }
    }
    return false
  } finally {
    await fh.close()
  }
}

/** The identity a sealed file's header opens with (of `keys`). */
async function openerOf (file: string, keys: readonly PeriodKey[], binding: string): Promise<PeriodKey> {
  const { fh } = await openRegular(file)
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(MAX_HEADER_BYTES + NONCE_BYTES), 0, MAX_HEADER_BYTES + NONCE_BYTES, 0)
    const opened = openHeaderWithAny(buffer.subarray(0, bytesRead), keys, binding)
    if (!opened) throw new SealedIntegrityError('no complete age header')
    return opened.key
  } finally {
    await fh.close()
  }
}

export function rotateJob (s: RotateSettings, ring: Keyring, next: PeriodKey, journal: Journal, active: ActiveTemps): Job {
  const realRoot = realpathSync(s.root)
  const handle = async (file: string, segments: string[], progress: (n: number) => void): Promise<FileResult> => {
    // Its directory is still where the walk found it: no directory on its path was swapped for a symbolic link.
    if (!inPlace(realRoot, file, segments)) return { result: 'failed', reason: 'a directory on its path was replaced (a symbolic link?): not followed' }
    const paths = pathsOf(s, ring, segments)
    if (!paths) {
      // Moved or renamed: it cannot be re-sealed (its binding is unknown), and while it needs the old identity that one stays.
      const sealed = bindingOf(segments)
      try {
        if (await unwrapsWith(file, ring.identities(s.period).filter((k) => k.keyId !== next.keyId))) return { result: 'failed', sealed, reason: 'its name does not decode (moved or renamed?) and it is sealed to the old identity: move it back' }
      } catch (err) {
        return { result: 'failed', sealed, reason: reasonOf(err) }
      }
      return { result: 'skipped', reason: 'not-a-sealed-name' }
    }
    const { sealed, binding } = paths
    const temp = tempFileOf(file)
    active.add(temp)
    let bytes: number | undefined
    try {
      const st0 = await lstat(file, { bigint: true })
      if (!st0.isFile()) return { result: 'failed', sealed, reason: 'not a regular file' }
      const v0 = versionOf(st0)
      bytes = Number(v0.size)
      const entry = journal.get(sealed)
      if (entryMatches(entry, v0) && entry.keyId === next.keyId) return { result: 'skipped', reason: 'done', sealed, bytes }
      const journalIt = async (sha256: string): Promise<void> => {
        const v = await versionAt(file)
        if (!v) throw new FileFailure('changed')
        await journal.append({ sealed, size: String(v.size), mtimeNs: String(v.mtimeNs), ino: String(v.ino), sha256, keyId: next.keyId })
      }
      // Sealed to the new identity already (a rerun, or the gateway's upload during the rotation): verified whole.
      if ((await openerOf(file, ring.identities(s.period), binding)).keyId === next.keyId) {
        await journalIt((await openedDigest(file, [next], binding)).sha256)
        return { result: 'skipped', reason: 'already-sealed-to-the-new-identity', sealed, bytes }
      }
      const { fh, st } = await openRegular(file)
      const opened = versionOf(st)
      const digest = new Digest(progress)
      let ino: bigint
      try {
        ino = await writeTemp(temp, fh.createReadStream({ highWaterMark: READ_BYTES }), [new OpenStream(ring.identities(s.period), binding), digest, new SealStream([next.identity.publicKey], binding)], st0)
      } catch (err) {
        await removeIfThere(temp)
        throw err
      }
      const after = await versionAt(file)
      if (!sameVersion(opened, v0) || after === undefined || !sameVersion(after, v0)) {
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: 'changed', bytes }
      }
      const sha256 = digest.hex()
      // Verified before it replaces the old file, which is the only other copy.
      const failed = await verifyWritten(temp, next, binding, sha256, ino)
      if (failed !== undefined) {
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: failed, bytes }
      }
      await replace(temp, file, ino)
      await journalIt(sha256)
      return { result: 'sealed', sealed, bytes: digest.bytes }
    } catch (err) {
      await removeIfThere(temp).catch(() => {})
      return { result: 'failed', sealed, reason: reasonOf(err), bytes }
    } finally {
      active.delete(temp)
    }
  }
  return { wants: (segments) => wants(s, ring, segments), handle }
}

/**
 * How many sealed files of the period still need the old identity (a
 * header check of every *.age file of the share): 0 before it may go. A
 * file counts when its plaintext path is of the period and its header does
 * not open with `next`; a name that does not decode counts when its sealed
 * path is of the period or an old identity of the period opens its header.
 */
export async function notYetRotated (s: RotateSettings, ring: Keyring, next: PeriodKey): Promise<number> {
  const old = ring.identities(s.period).filter((k) => k.keyId !== next.keyId)
  let left = 0
  for await (const f of walk(s.root)) {
    if (f.kind === 'unreadable') { left++; continue }
    if (f.kind !== 'file' || !f.segments[f.segments.length - 1].toLowerCase().endsWith(SEALED_SUFFIX)) continue
    const plain = plainSegmentsOf(s, ring, f.segments)
    try {
      if (plain === undefined) {
        if (periodOf(s.pattern, f.segments) === s.period || await unwrapsWith(f.file, old)) left++
        continue
      }
      if (periodOf(s.pattern, plain) !== s.period) continue
      await openerOf(f.file, [next], bindingOf(plain))
    } catch {
      left++
    }
  }
  return left
}
