// The keyring (sealing.keyring): a directory off the NAS, 0700, holding
//   names.key        the name key (64 random bytes, base64), for sealed names;
//   <period>.key     one X25519 identity per period, in age-keygen's format,
//                    so that `age -d -i <period>.key file.age` opens its files;
//   <period>.erased  left where a period's identity was destroyed.
// Every file is 0600. A keyring that others can read is refused, naming the
// file. Loaded at start and on SIGHUP (a new Keyring replaces the old).
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { makeDir } from '../files/ownership.js'
import { encodeIdentity, identityOf, newIdentity, parseIdentity, type Identity } from './age.js'
import { NAME_KEY_BYTES } from './names.js'
import { validPeriod, type PeriodUnit } from './period.js'

export const NAME_KEY_FILE = 'names.key'
const KEY_SUFFIX = '.key'
const ERASED_SUFFIX = '.erased'

export interface PeriodKey {
  period: string
  identity: Identity
  /** Names the key in audit records and listings: the period and a fingerprint of its recipient; never secret. */
  keyId: string
}

/** A fingerprint of a recipient: the first 8 bytes of SHA-256 of its public key, hex. */
export function keyIdOf (period: string, identity: Identity): string {
  return `${period}:${createHash('sha256').update(identity.publicKey).digest('hex').slice(0, 16)}`
}

function checkPrivate (path: string, dir: boolean): void {
  const st = lstatSync(path)
  if (dir ? !st.isDirectory() : !st.isFile()) throw new Error(`${path} is not a ${dir ? 'directory' : 'regular file'}`)
  if ((st.mode & 0o077) !== 0) throw new Error(`${path} is readable or writable by others (mode ${(st.mode & 0o777).toString(8)}): chmod ${dir ? '700' : '600'} it`)
}

/** The AGE-SECRET-KEY line of an age-keygen file. */
function identityInFile (file: string): Identity {
  const lines = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  if (lines.length !== 1) throw new Error(`${file} must hold exactly one AGE-SECRET-KEY-1… line`)
  try {
    return parseIdentity(lines[0])
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`)
  }
}

/** Writes a 0600 file whole (temporary name, fsync, rename): a crash leaves the old one or the new one. */
function writePrivate (file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
}

export class Keyring {
  private constructor (
    readonly dir: string,
    readonly nameKey: Buffer,
    private readonly keys: Map<string, PeriodKey>,
    private readonly erasedPeriods: Set<string>
  ) {}

  /** Reads the keyring; throws naming the file and what is wrong. */
  static load (dir: string): Keyring {
    checkPrivate(dir, true)
    const nameFile = join(dir, NAME_KEY_FILE)
    checkPrivate(nameFile, false)
    const nameKey = Buffer.from(readFileSync(nameFile, 'utf8').trim(), 'base64')
    if (nameKey.length !== NAME_KEY_BYTES) throw new Error(`${nameFile} must hold ${NAME_KEY_BYTES} bytes in base64 (nasguard keys new makes it)`)
    const keys = new Map<string, PeriodKey>()
    const erased = new Set<string>()
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith(ERASED_SUFFIX)) {
        // A tombstone that still holds the identity erased nothing.
        if (readFileSync(join(dir, name), 'utf8').includes('AGE-SECRET-KEY-')) throw new Error(`${join(dir, name)} holds a secret key: an erased period's identity must be destroyed, not renamed`)
        erased.add(name.slice(0, -ERASED_SUFFIX.length))
      }
      if (!name.endsWith(KEY_SUFFIX) || name === NAME_KEY_FILE) continue
      const file = join(dir, name)
      checkPrivate(file, false)
      const period = name.slice(0, -KEY_SUFFIX.length)
      const identity = identityInFile(file)
      keys.set(period, { period, identity, keyId: keyIdOf(period, identity) })
    }
    return new Keyring(dir, nameKey, keys, erased)
  }

  /** The period's key; undefined when it has none (never made, or destroyed). */
  key (period: string): PeriodKey | undefined {
    return this.keys.get(period)
  }

  /** The period's identity was destroyed (its recordings are erased). */
  erased (period: string): boolean {
    return this.erasedPeriods.has(period) && !this.keys.has(period)
  }

  list (): PeriodKey[] {
    return [...this.keys.values()]
  }
}

/** Makes the keyring directory and its name key when missing. */
export function initKeyring (dir: string): void {
  makeDir(dir)
  checkPrivate(dir, true)
  const nameFile = join(dir, NAME_KEY_FILE)
  try {
    lstatSync(nameFile)
  } catch {
    writePrivate(nameFile, randomBytes(NAME_KEY_BYTES).toString('base64') + '\n')
  }
}

/** Makes a period's identity; refuses to replace one (that would erase its recordings) or to revive an erased period. */
export function newPeriodKey (dir: string, unit: PeriodUnit, period: string): PeriodKey {
  if (!validPeriod(unit, period)) throw new Error(`invalid period ${JSON.stringify(period)} for sealing.period ${unit} (e.g. ${unit === 'year' ? '2026' : unit === 'month' ? '2026-11' : '2026-11-29'})`)
  initKeyring(dir)
  const file = join(dir, period + KEY_SUFFIX)
  for (const f of [file, join(dir, period + ERASED_SUFFIX)]) {
    let exists = true
    try { lstatSync(f) } catch { exists = false }
    if (exists) throw new Error(`${f} exists: a period's key is made once (replacing it would make its recordings unreadable)`)
  }
  const identity = newIdentity()
  writePrivate(file, `# nasguard sealing identity for period ${period}\n# created: ${new Date().toISOString()}\n# public key: ${identity.recipient}\n${encodeIdentity(identity)}\n`)
  return { period, identity: identityOf(identity.secret), keyId: keyIdOf(period, identity) }
}

/**
 * Destroys a period's identity: the key file is overwritten with random
 * bytes and synced, then unlinked, and a tombstone (<period>.erased, naming
 * the key id and the time, no secret) is left so that the gateway answers
 * 410 for the period. Every copy of its recordings, anywhere, is then
 * unreadable. (A file system that keeps old blocks, such as a copy-on-write
 * or journaled one, may keep the old bytes: keep the keyring on storage
 * that does not, and out of backups that outlive retention.)
 */
export function eraseKey (dir: string, period: string): string {
  const file = join(dir, period + KEY_SUFFIX)
  checkPrivate(file, false)
  const identity = identityInFile(file)
  const keyId = keyIdOf(period, identity)
  const size = lstatSync(file).size
  const fd = openSync(file, constants.O_WRONLY)
  try {
    writeSync(fd, randomBytes(size), 0, size, 0)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  writePrivate(join(dir, period + ERASED_SUFFIX), `# nasguard: the identity of period ${period} (key id ${keyId}) was destroyed at ${new Date().toISOString()}\n`)
  unlinkSync(file)
  const dirFd = openSync(dir, constants.O_RDONLY)
  try { fsyncSync(dirFd) } finally { closeSync(dirFd) }
  return keyId
}
