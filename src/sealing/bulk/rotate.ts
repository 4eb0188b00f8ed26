// Re-sealing a period to a new identity (nasguard keys rotate): every
// sealed file of the period is decrypted with the identity it was sealed
// to and sealed again, streamed, to <period>.next.key with a fresh file key
// and the same path binding; the new file is verified before it replaces
// the old one (temporary name, fsync, rename, fsync of the directory). When
// every file of the period opens with the new identity and nothing failed,
// the old identity is retired (keyring.ts retireKey). The walk, the pool,
// the journal and the reports are seal's (run.ts, journal.ts).
import { lstat, open } from 'node:fs/promises'
import { MAX_HEADER_BYTES, SealedIntegrityError } from '../age.js'
import { openHeaderWithAny, type Keyring, type PeriodKey } from '../keyring.js'
import { plainPathOf, SEALED_SUFFIX } from '../names.js'
import { NONCE_BYTES } from '../payload.js'
import { periodOf, type PeriodPattern } from '../period.js'
import { SealStream } from '../seal-stream.js'
import { commit, Digest, READ_BYTES, removeIfThere, sameVersion, tempFileOf, versionAt, versionOf } from './durable.js'
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

/** Whether a file of the share is a sealed file of the period; else why not. */
function wants (s: RotateSettings, segments: string[]): true | string {
  if (!segments[segments.length - 1].toLowerCase().endsWith(SEALED_SUFFIX)) return 'not-sealed'
  return periodOf(s.pattern, segments) === s.period ? true : 'other-period'
}

/** The sealed file's NAS path and the plaintext path its binding holds; undefined when its name does not decode. */
function pathsOf (s: RotateSettings, ring: Keyring, segments: string[]): { sealed: string, binding: string } | undefined {
  const plain = plainPathOf(ring.nameKey, segments, s.nameSegments)
  if (plain === undefined) return undefined
  return { sealed: bindingOf(segments), binding: bindingOf(plain.split('/').slice(1)) }
}

/** The identity a sealed file's header opens with (of `keys`). */
async function openerOf (file: string, keys: readonly PeriodKey[], binding: string): Promise<PeriodKey> {
  const fh = await open(file, 'r')
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
  const handle = async (file: string, segments: string[], progress: (n: number) => void): Promise<FileResult> => {
    const paths = pathsOf(s, ring, segments)
    if (!paths) return { result: 'skipped', reason: 'not-a-sealed-name' }
    const { sealed, binding } = paths
    const temp = tempFileOf(file)
    active.add(temp)
    let bytes: number | undefined
    try {
      const st0 = await lstat(file, { bigint: true })
      const v0 = versionOf(st0)
      bytes = Number(v0.size)
      const entry = journal.get(sealed)
      if (entryMatches(entry, v0) && entry.keyId === next.keyId) return { result: 'skipped', reason: 'done', sealed, bytes }
      await removeIfThere(temp)
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
      const fh = await open(file, 'r')
      const opened = versionOf(await fh.stat({ bigint: true }))
      const digest = new Digest(progress)
      try {
        await writeTemp(temp, fh.createReadStream({ highWaterMark: READ_BYTES }), [new OpenStream(ring.identities(s.period), binding), digest, new SealStream([next.identity.publicKey], binding)], st0)
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
      const failed = await verifyWritten(temp, next, binding, sha256)
      if (failed !== undefined) {
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: failed, bytes }
      }
      await commit(temp, file)
      await journalIt(sha256)
      return { result: 'sealed', sealed, bytes: digest.bytes }
    } catch (err) {
      await removeIfThere(temp).catch(() => {})
      return { result: 'failed', sealed, reason: reasonOf(err), bytes }
    } finally {
      active.delete(temp)
    }
  }
  return { wants: (segments) => wants(s, segments), handle }
}

/** How many sealed files of the period do not open with `next` (a header check of each): 0 before the old identity may go. */
export async function notYetRotated (s: RotateSettings, ring: Keyring, next: PeriodKey): Promise<number> {
  let left = 0
  for await (const f of walk(s.root)) {
    if (f.kind === 'unreadable') { left++; continue }
    if (f.kind !== 'file' || wants(s, f.segments) !== true) continue
    const paths = pathsOf(s, ring, f.segments)
    if (!paths) continue
    try {
      await openerOf(f.file, [next], paths.binding)
    } catch {
      left++
    }
  }
  return left
}
