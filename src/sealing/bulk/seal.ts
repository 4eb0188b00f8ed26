// Sealing one recording of a mounted share (nasguard seal): it is written
// as an age file under its sealed name beside the original (temporary
// name, fsync, link, unlink, fsync of the directory), then read back whole,
// decrypted and compared with the SHA-256 taken while sealing; only then,
// with --remove-plaintext, is the original removed. A recording that
// changes while it is sealed is left as it is and reported. A rerun finds
// its work in the journal, verifies a sealed file it finds without a
// journal line, never replaces a sealed name that holds anything else
// (reported as a conflict), and never seals an erased period.
import { constants } from 'node:fs'
import { realpathSync } from 'node:fs'
import { chown, lstat, open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { encodeSegment as encodeReadable } from '../../policy/canonical-path.js'
import { checkFileRequest } from '../../policy/listing-guard.js'
import { KeyExistsError, Keyring, newPeriodKey, type PeriodKey } from '../keyring.js'
import { SEALED_SUFFIX, sealedPathOf } from '../names.js'
import { periodOf, type PeriodPattern, type PeriodUnit } from '../period.js'
import { SealStream } from '../seal-stream.js'
import { commit, Digest, READ_BYTES, diskPathOf, inPlace, makeDirs, openRegular, removeDurably, removeIfThere, sameVersion, tempFileOf, versionAt, versionOf, type FileVersion } from './durable.js'
import { entryMatches, type Journal } from './journal.js'
import { OpenStream } from './open-stream.js'
import { FileFailure, reasonOf, type ActiveTemps, type FileResult, type Job } from './run.js'

export interface SealSettings {
  root: string
  keyringDir: string
  unit: PeriodUnit
  pattern: PeriodPattern
  /** sealing.names.segments */
  nameSegments: number
  /** files.extensions */
  extensions: ReadonlySet<string>
  /** --period: only this one. */
  period?: string
  dryRun: boolean
  removePlaintext: boolean
}

/** The canonical plaintext path, as the path binding holds it (percent-encoded the gateway's one way). */
export function bindingOf (segments: readonly string[]): string {
  return '/' + segments.map(encodeReadable).join('/')
}

/**
 * The period's sealing key (Keyring.sealingKey); the first file of a new
 * period makes it. newPeriodKey links its file into place, so a key made
 * by another process first is taken, never replaced; within the process,
 * making it is synchronous, so two jobs cannot both make one.
 */
export class SealingKeys {
  private ring: Keyring

  constructor (private readonly dir: string, private readonly unit: PeriodUnit) {
    this.ring = Keyring.load(dir)
  }

  keyring (): Keyring {
    return this.ring
  }

  sealingKey (period: string): PeriodKey {
    const key = this.ring.sealingKey(period)
    if (key) return key
    try {
      newPeriodKey(this.dir, this.unit, period)
    } catch (err) {
      if (!(err instanceof KeyExistsError)) {
        if (Keyring.load(this.dir).erased(period)) throw new FileFailure('period erased')
        throw err
      }
    }
    this.ring = Keyring.load(this.dir)
    const made = this.ring.sealingKey(period)
    if (!made) throw new FileFailure('period erased')
    return made
  }
}

/** SHA-256 of a sealed file's plaintext, opened with one of `keys` and bound to `binding`, and the key that opened it; with `ino`, only when the file is that inode. */
export async function openedDigest (file: string, keys: readonly PeriodKey[], binding: string, ino?: bigint): Promise<{ sha256: string, bytes: number, key: PeriodKey }> {
  const { fh, st } = await openRegular(file)
  if (ino !== undefined && st.ino !== ino) {
    await fh.close()
    throw new FileFailure('the temporary file was replaced')
  }
  const opener = new OpenStream(keys, binding)
  const digest = new Digest()
  await pipeline(fh.createReadStream({ highWaterMark: READ_BYTES }), opener, digest, async function * (source) { for await (const _ of source); })
  return { sha256: digest.hex(), bytes: digest.bytes, key: opener.opener as PeriodKey }
}

async function plainDigest (file: string, v0: FileVersion): Promise<string> {
  const { fh, st } = await openRegular(file)
  const digest = new Digest()
  const before = versionOf(st)
  await pipeline(fh.createReadStream({ highWaterMark: READ_BYTES }), digest, async function * (source) { for await (const _ of source); })
  if (!sameVersion(before, v0) || !sameVersion(await versionAt(file) ?? before, v0)) throw new FileFailure('changed')
  return digest.hex()
}

/** Why a written file (with `ino`: that very inode) does not give back the plaintext whose SHA-256 is `sha256` with `key`; undefined when it does. */
export async function verifyWritten (file: string, key: PeriodKey, binding: string, sha256: string, ino?: bigint): Promise<string | undefined> {
  try {
    const check = await openedDigest(file, [key], binding, ino)
    return check.sha256 === sha256 ? undefined : 'verification failed (SHA-256 differs)'
  } catch (err) {
    return `verification failed (${reasonOf(err)})`
  }
}

/** Writes all of `data`: a write cut short (a disk filling up) is carried on, so that its error (ENOSPC) is what is reported. */
async function writeAll (out: FileHandle, data: Buffer): Promise<void> {
  for (let at = 0; at < data.length;) {
    const { bytesWritten } = await out.write(data, at, data.length - at)
    if (bytesWritten === 0) throw new Error('a write to the temporary file made no progress')
    at += bytesWritten
  }
}

/**
 * Writes `temp` from the source stream through the transforms (the last
 * one seals), synced, with the mode, the times (and, run as root, the
 * owner) of `like`: a sealed or re-sealed recording keeps its
 * Last-Modified, which a retention rule without a date in its path dates
 * it by. The caller checks that the source did not change, verifies it,
 * then commits it. Returns the inode written: what is verified and committed.
 */
export async function writeTemp (temp: string, source: NodeJS.ReadableStream, transforms: NodeJS.ReadWriteStream[], like: { mode: bigint, uid: bigint, gid: bigint, atimeMs: bigint, mtimeMs: bigint }): Promise<bigint> {
  const out = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  let ino: bigint
  try {
    ino = (await out.stat({ bigint: true })).ino
    await pipeline(source, ...transforms as [NodeJS.ReadWriteStream], async (sealed: AsyncIterable<string | Buffer>) => { for await (const b of sealed) await writeAll(out, b as Buffer) })
    await out.utimes(Number(like.atimeMs) / 1000, Number(like.mtimeMs) / 1000)
    await out.sync()
    await out.chmod(Number(like.mode & 0o777n))
  } finally {
    await out.close()
  }
  if (process.getuid?.() === 0) await chown(temp, Number(like.uid), Number(like.gid)).catch(() => {})
  return ino
}

export function sealJob (s: SealSettings, keys: SealingKeys, journal: Journal, active: ActiveTemps): Job {
  const plan = (segments: string[]): { period: string } | string => {
    const name = segments[segments.length - 1]
    if (name.toLowerCase().endsWith(SEALED_SUFFIX)) return 'sealed'
    const check = checkFileRequest(segments, s.extensions)
    if (!check.ok) return check.reason === 'hidden' ? 'hidden' : 'not-a-recording'
    const period = periodOf(s.pattern, segments)
    if (period === undefined) return 'no-period'
    if (s.period !== undefined && period !== s.period) return 'other-period'
    return { period }
  }

  /** The plaintext's work is done: remove it when asked. */
  const finish = async (file: string, v0: FileVersion, r: FileResult, segments: string[]): Promise<FileResult> => {
    if (!s.removePlaintext) return r
    if (!inPlace(realRoot, file, segments)) return { ...r, result: 'failed', reason: 'a directory on its path was replaced (a symbolic link?): not removed' }
    if (!sameVersion(await versionAt(file) ?? v0, v0)) return { ...r, result: 'failed', reason: 'changed' }
    await removeDurably(file)
    return { ...r, removed: true }
  }

  const realRoot = realpathSync(s.root)

  const handle = async (file: string, segments: string[], progress: (n: number) => void): Promise<FileResult> => {
    if (!inPlace(realRoot, file, segments)) return { result: 'failed', reason: 'a directory on its path was replaced (a symbolic link?): not followed' }
    const planned = plan(segments)
    if (typeof planned === 'string') return { result: 'skipped', reason: planned }
    const { period } = planned
    let sealed: string
    try {
      sealed = sealedPathOf(keys.keyring().nameKey, segments, s.nameSegments)
    } catch {
      return { result: 'failed', reason: 'its sealed name would be too long for a NAS' }
    }
    const target = diskPathOf(s.root, sealed)
    const temp = tempFileOf(target)
    active.add(temp)
    let bytes: number | undefined
    try {
      if (keys.keyring().erased(period)) return { result: 'failed', sealed, reason: `period ${period} is erased: its key was destroyed, so its recordings are not sealed again` }
      const st0 = await lstat(file, { bigint: true })
      if (!st0.isFile()) return { result: 'failed', sealed, reason: 'not a regular file' }
      const v0 = versionOf(st0)
      bytes = Number(v0.size)
      const there = await versionAt(target)
      const entry = journal.get(sealed)
      if (there !== undefined && entryMatches(entry, v0)) {
        const r: FileResult = { result: 'skipped', reason: 'done', sealed, bytes }
        if (s.dryRun || !s.removePlaintext) return r
        // Not on the journal's word alone: the sealed file is opened whole and must give back what the journal says it holds.
        const check = await openedDigest(target, keys.keyring().identities(period), bindingOf(segments)).then((d) => d.sha256 === entry.sha256 ? undefined : 'SHA-256 differs', (err) => reasonOf(err))
        if (check !== undefined) return { result: 'failed', sealed, reason: `the sealed file does not give back the recording the journal vouches for (${check}): the plaintext is kept`, bytes }
        return await finish(file, v0, r, segments)
      }
      if (s.dryRun) return { result: 'would-seal', sealed, bytes }
      const key = keys.sealingKey(period)
      const binding = bindingOf(segments)
      // A sealed file without a journal line: the run that wrote it was
      // interrupted. Kept if it opens to this very plaintext; else the
      // sealed name holds another recording (an upload through the
      // gateway, say) or a damaged one: both are kept, and reported.
      if (there !== undefined) {
        const found = await openedDigest(target, keys.keyring().identities(period), binding).catch(() => undefined)
        if (found !== undefined && found.sha256 === await plainDigest(file, v0)) {
          await journal.append({ sealed, size: String(v0.size), mtimeNs: String(v0.mtimeNs), ino: String(v0.ino), sha256: found.sha256, keyId: found.key.keyId })
          return await finish(file, v0, { result: 'sealed', sealed, bytes, reason: 'verified a sealed file left by an interrupted run' }, segments)
        }
        return { result: 'failed', sealed, reason: 'conflict', bytes }
      }
      await makeDirs(s.root, dirname(target))
      const { fh, st } = await openRegular(file)
      const opened = versionOf(st)
      const digest = new Digest(progress)
      let ino: bigint
      try {
        ino = await writeTemp(temp, fh.createReadStream({ highWaterMark: READ_BYTES }), [digest, new SealStream([key.identity.publicKey], binding)], st0)
      } catch (err) {
        await removeIfThere(temp)
        throw err
      }
      const after = await versionAt(file)
      if (!sameVersion(opened, v0) || after === undefined || !sameVersion(after, v0) || BigInt(digest.bytes) !== v0.size) {
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: 'changed', bytes }
      }
      const sha256 = digest.hex()
      // Verified before it takes the sealed name: the gateway never meets a
      // sealed file that does not give the recording back.
      const failed = await verifyWritten(temp, key, binding, sha256, ino)
      if (failed !== undefined) {
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: failed, bytes }
      }
      try {
        await commit(temp, target, ino)
      } catch (err) {
        // A file took the sealed name meanwhile: it is not replaced.
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        await removeIfThere(temp)
        return { result: 'failed', sealed, reason: 'conflict', bytes }
      }
      await journal.append({ sealed, size: String(v0.size), mtimeNs: String(v0.mtimeNs), ino: String(v0.ino), sha256, keyId: key.keyId })
      return await finish(file, v0, { result: 'sealed', sealed, bytes }, segments)
    } catch (err) {
      if (!s.dryRun) await removeIfThere(temp).catch(() => {})
      return { result: 'failed', sealed, reason: reasonOf(err), bytes }
    } finally {
      active.delete(temp)
    }
  }

  return { wants: (segments) => { const p = plan(segments); return typeof p === 'string' ? p : true }, handle }
}
