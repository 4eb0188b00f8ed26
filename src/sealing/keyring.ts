// The keyring (sealing.keyring): a directory off the NAS, 0700, holding
//   names.key        the name key (64 random bytes, base64), for sealed names;
//   <period>.key     one X25519 identity per period, in age-keygen's format,
//                    so that `age -d -i <period>.key file.age` opens its files;
//   <period>.erased  left where a period's identity was destroyed;
//   <period>.next.key  during a rotation (nasguard keys rotate): the identity
//                    the period's files are being re-sealed to, and the one
//                    new recordings are sealed to;
//   <period>.old.key  for a moment while a rotation retires the old identity;
//   *.shred          a key file being destroyed (renamed first, so a crash
//                    leaves a keyring that loads; the next load destroys it).
// Every file is 0600. A keyring that others can read is refused, naming the
// file. Loaded at start and on SIGHUP (a new Keyring replaces the old).
// Key files are made and renamed with link + unlink, never rename: a link
// does not replace an existing name, so two processes making one period's
// key, or a crash in a retirement, can never overwrite an identity. (The
// one rename: a key file being destroyed becomes <file>.shred first.)
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, fsyncSync, linkSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, unlinkSync, utimesSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { dirname, join } from 'node:path'
import { makeDir } from '../files/ownership.js'
import { syncDir, writePrivate, writtenTemp } from '../files/private-file.js'
import { encodeIdentity, identityOf, newIdentity, openHeader, parseIdentity, SealedIntegrityError, type Identity, type OpenedHeader } from './age.js'
import { NAME_KEY_BYTES } from './names.js'
import { validPeriod, type PeriodUnit } from './period.js'

export const NAME_KEY_FILE = 'names.key'
const NOT_THIS_KEY = 'not sealed to this period\'s key'
const KEY_SUFFIX = '.key'
const ERASED_SUFFIX = '.erased'

/** The roles of a period's key files: <period>.key, <period>.next.key, <period>.old.key. */
export type KeyRole = 'primary' | 'next' | 'old'
const ROLE_SUFFIX: Record<KeyRole, string> = { primary: KEY_SUFFIX, next: '.next' + KEY_SUFFIX, old: '.old' + KEY_SUFFIX }

/** The file of a period's identity in one role. */
export function keyFileOf (dir: string, period: string, role: KeyRole): string {
  return join(dir, period + ROLE_SUFFIX[role])
}

/** The period and role of a key file's name; undefined for any other name. */
function keyNameOf (name: string): { period: string, role: KeyRole } | undefined {
  if (!name.endsWith(KEY_SUFFIX) || name === NAME_KEY_FILE) return undefined
  for (const role of ['next', 'old'] as const) {
    if (name.endsWith(ROLE_SUFFIX[role])) return { period: name.slice(0, -ROLE_SUFFIX[role].length), role }
  }
  return { period: name.slice(0, -KEY_SUFFIX.length), role: 'primary' }
}

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


/**
 * Makes a 0600 file whole under a name that must not exist yet (temporary
 * name, fsync, link, unlink): false when another process made it first,
 * which a rename would have silently replaced. Any other failure throws.
 */
function createPrivate (file: string, text: string): boolean {
  const tmp = writtenTemp(file, text)
  try {
    linkSync(tmp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  } finally {
    unlinkSync(tmp)
  }
  syncDir(dirname(file))
  return true
}

function exists (file: string): boolean {
  try { lstatSync(file); return true } catch { return false }
}

// ---- The keyring's lock: shared while a seal or a rotation's re-sealing runs, exclusive for a retirement or an erasure ----

/** This process, told apart from an earlier one with the same pid (a container's pid 1, say). */
const PROCESS_TOKEN = randomBytes(8).toString('hex')
const EXCLUSIVE_LOCK = '.keyring.lock'
const SHARED_LOCK = /^\.keyring-shared-[0-9a-f]{16}\.lock$/

/** The keyring is locked by another run: what needs it whole waits for it (and is rerun). */
export class KeyringBusyError extends Error {
  override name = 'KeyringBusyError'
}

function processAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Where a pid means something: this host and pid namespace. A keyring on a
 * shared mount (another host's, listed in sealing.keyBackups) holds locks
 * of processes this one cannot see, and must not judge them dead.
 */
const PID_PLACE = (() => {
  let ns = ''
  try { ns = readlinkSync('/proc/self/ns/pid') } catch {}
  return `${hostname()}/${ns}`.replace(/\s/g, '_')
})()

/** A lock file's text: this process, and where its pid means something. */
const LOCK_TEXT = `${process.pid} ${PROCESS_TOKEN} ${PID_PLACE}\n`

/** How often a holder touches its lock file, and how long after the last touch a lock held on another host (or in a container since restarted) is judged dead. */
const LOCK_BEAT_MS = 60_000
const LOCK_STALE_MS = 5 * 60_000

/** Whether a lock file was touched recently (its holder still beats). */
function beating (file: string): boolean {
  try { return Date.now() - lstatSync(file).mtimeMs < LOCK_STALE_MS } catch { return false }
}

/** A lock file, held: touched every LOCK_BEAT_MS until released. */
function heldLock (file: string, release: () => void): () => void {
  const beat = setInterval(() => { try { const now = new Date(); utimesSync(file, now, now) } catch {} }, LOCK_BEAT_MS)
  beat.unref()
  return () => { clearInterval(beat); release() }
}

/** The pid of the live holder of a lock file; undefined when it is gone or its holder is dead. A holder elsewhere is taken as live. */
function holderOf (file: string): number | undefined {
  let text: string
  try { text = readFileSync(file, 'utf8') } catch (err) { if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; throw err }
  const [pidText, token, place] = text.trim().split(' ')
  const pid = Number(pidText)
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  // Held elsewhere: its pid cannot be checked from here, but its holder touches the file every LOCK_BEAT_MS.
  if (place !== undefined && place !== PID_PLACE) return beating(file) ? pid : undefined
  if (pid === process.pid) return token === PROCESS_TOKEN ? pid : undefined
  return processAlive(pid) ? pid : undefined
}

/**
 * Locks the keyring: `shared` while recordings are sealed to its keys (seal,
 * a rotation's re-sealing), `exclusive` while identities are retired or
 * destroyed (keys rotate's final check and retirement, eraseKey), so that
 * no run seals to an identity being retired, or revives one being erased.
 * Each side makes its lock file (whole: a temporary name, then a link),
 * then looks for the other's: of two that race, at least one sees the
 * other. A lock of a dead process is ignored (a stale exclusive one is
 * taken over). Exclusive, with drainMs: once its own file is made (no new
 * shared holder comes in), it waits up to drainMs for the shared holders
 * already in to finish, blocking this thread. Throws KeyringBusyError
 * naming the pid that holds it.
 */
export function lockKeyring (dir: string, mode: 'shared' | 'exclusive', o: { drainMs?: number } = {}): () => void {
  const me = LOCK_TEXT
  const exclusive = join(dir, EXCLUSIVE_LOCK)
  const busy = (pid: number): KeyringBusyError => new KeyringBusyError(`the keyring ${dir} is locked by another run (pid ${pid}${holderPlace(dir)}): ${mode === 'shared' ? 'a retirement or an erasure is under way' : 'recordings are being sealed to it'}; wait for it, then rerun`)
  const release = (file: string) => (): void => {
    try { if (readFileSync(file, 'utf8') === me) { unlinkSync(file); syncDir(dir) } } catch {}
  }
  if (mode === 'shared') {
    const file = join(dir, `.keyring-shared-${randomBytes(8).toString('hex')}.lock`)
    createPrivate(file, me)
    const holder = holderOf(exclusive)
    if (holder !== undefined) { release(file)(); throw busy(holder) }
    return heldLock(file, release(file))
  }
  for (let attempt = 0; ; attempt++) {
    if (attempt === 8) throw new Error(`${exclusive}: could not take the lock (it keeps changing)`)
    if (createPrivate(exclusive, me)) break
    const holder = holderOf(exclusive)
    if (holder !== undefined) throw busy(holder)
    // A dead run's: renamed aside (of two taking it over, one rename wins); a fresh one moved by the loser is put back.
    let seen: string
    try { seen = readFileSync(exclusive, 'utf8') } catch { continue }
    const aside = `${exclusive}.${randomBytes(8).toString('hex')}.stale`
    try { renameSync(exclusive, aside) } catch { continue }
    if (readFileSync(aside, 'utf8') !== seen) { try { linkSync(aside, exclusive) } catch {} }
    unlinkSync(aside)
  }
  // Ours now: no new shared holder comes in; those already in (an upload being sealed) may finish first.
  const deadline = Date.now() + (o.drainMs ?? 0)
  for (;;) {
    const holder = sharedHolder(dir)
    if (holder === undefined) return heldLock(exclusive, release(exclusive))
    if (Date.now() >= deadline) { release(exclusive)(); throw busy(holder) }
    sleepSync(DRAIN_POLL_MS)
  }
}

const DRAIN_POLL_MS = 50

/** ", on <host> ..." when a lock in dir is held on another host or in a container (whose process cannot be checked from here: judged by its heartbeat). */
function holderPlace (dir: string): string {
  let names: string[]
  try { names = readdirSync(dir).filter((n) => n === EXCLUSIVE_LOCK || SHARED_LOCK.test(n)) } catch { return '' }
  for (const n of names) {
    let place: string | undefined
    try { place = readFileSync(join(dir, n), 'utf8').trim().split(' ')[2] } catch { continue }
    if (place !== undefined && place !== PID_PLACE) return `, on ${place.split('/')[0]}, or in a container: judged gone 5 minutes after its holder last touched ${join(dir, n)}`
  }
  return ''
}

/** A live holder of a shared lock of the keyring (the locks of dead runs are removed). */
function sharedHolder (dir: string): number | undefined {
  for (const name of readdirSync(dir)) {
    if (!SHARED_LOCK.test(name)) continue
    const holder = holderOf(join(dir, name))
    if (holder !== undefined) return holder
    // A dead run's.
    try { unlinkSync(join(dir, name)) } catch {}
  }
  return undefined
}

/** Blocks this thread: a command line tool waiting for a lock, never the gateway. */
function sleepSync (ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** A key file's identity as last read, told apart by the file's inode, size and mtime (ns). */
interface ParsedKey { version: string, identity: Identity }

/**
 * Identities of each keyring's files as the last load read them: a reload
 * (a SIGHUP, an erasure or a new period's key, which the gateway watches
 * for) parses only the files that changed, since deriving each public key
 * costs about a millisecond, and years of daily periods are thousands.
 */
const PARSED = new Map<string, Map<string, ParsedKey>>()

function parsedIdentity (dir: string, file: string, into: Map<string, ParsedKey>): Identity {
  const st = lstatSync(file, { bigint: true })
  const version = `${st.ino}:${st.size}:${st.mtimeNs}`
  const known = PARSED.get(dir)?.get(file)
  const identity = known?.version === version ? known.identity : identityInFile(file)
  into.set(file, { version, identity })
  return identity
}

/** The identities of one period, by role. */
type PeriodKeys = Partial<Record<KeyRole, PeriodKey>>

export class Keyring {
  private constructor (
    readonly dir: string,
    readonly nameKey: Buffer,
    private readonly keys: Map<string, PeriodKeys>,
    private readonly erasedSet: Set<string>
  ) {}

  /** Reads the keyring; throws naming the file and what is wrong. */
  static load (dir: string): Keyring {
    checkPrivate(dir, true)
    const nameFile = join(dir, NAME_KEY_FILE)
    checkPrivate(nameFile, false)
    const nameKey = Buffer.from(readFileSync(nameFile, 'utf8').trim(), 'base64')
    if (nameKey.length !== NAME_KEY_BYTES) throw new Error(`${nameFile} must hold ${NAME_KEY_BYTES} bytes in base64 (nasguard keys new makes it)`)
    // A key a crash left half destroyed is destroyed now (not read: it is no key).
    shredLeftovers(dir, true)
    const keys = new Map<string, PeriodKeys>()
    const erased = new Set<string>()
    const parsed = new Map<string, ParsedKey>()
    // By the directory itself, however it is spelt: a destroyed key's identity is forgotten whichever spelling loads next.
    const real = realpathSync(dir)
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith(ERASED_SUFFIX)) {
        // A tombstone that still holds the identity erased nothing.
        if (readFileSync(join(dir, name), 'utf8').includes('AGE-SECRET-KEY-')) throw new Error(`${join(dir, name)} holds a secret key: an erased period's identity must be destroyed, not renamed`)
        erased.add(name.slice(0, -ERASED_SUFFIX.length))
      }
      const key = keyNameOf(name)
      if (!key) continue
      const file = join(dir, name)
      checkPrivate(file, false)
      const identity = parsedIdentity(real, file, parsed)
      const roles = keys.get(key.period) ?? {}
      roles[key.role] = { period: key.period, identity, keyId: keyIdOf(key.period, identity) }
      keys.set(key.period, roles)
    }
    // The tombstone wins: a key file beside it (a crash midway through the erasure, or a copy put
    // back from a backup) opens nothing; the sweep destroys it.
    for (const period of erased) keys.delete(period)
    // Only the files read now are remembered: a destroyed key's identity is forgotten with this load.
    PARSED.set(real, parsed)
    return new Keyring(dir, nameKey, keys, erased)
  }

  /**
   * The period's key (<period>.key); undefined when it has none (never
   * made, or destroyed). For a moment of a rotation's retirement there is
   * no <period>.key: then the identity about to become it.
   */
  key (period: string): PeriodKey | undefined {
    const k = this.keys.get(period)
    return k?.primary ?? k?.next ?? k?.old
  }

  /** The key new recordings of the period are sealed to: during a rotation, the next one. */
  sealingKey (period: string): PeriodKey | undefined {
    const k = this.keys.get(period)
    return k?.next ?? k?.primary ?? k?.old
  }

  /** Every identity of the period (primary, next, old): during a rotation, a file opens with one of them. */
  identities (period: string): PeriodKey[] {
    const k = this.keys.get(period)
    return k ? [k.primary, k.next, k.old].filter((x): x is PeriodKey => x !== undefined) : []
  }

  /** The period's identity in one role. */
  role (period: string, role: KeyRole): PeriodKey | undefined {
    return this.keys.get(period)?.[role]
  }

  /** The period's identity was destroyed (its recordings are erased). */
  erased (period: string): boolean {
    return this.erasedSet.has(period)
  }

  /**
   * This keyring without the periods the directory now holds a tombstone
   * for: what a gateway keeps when a reload fails (another file of the
   * keyring is unreadable), so that an erased period is never opened
   * from memory. A directory that cannot be listed keeps no identity at
   * all: what was erased cannot be told.
   */
  withoutErased (): Keyring {
    let names: string[]
    try { names = readdirSync(this.dir) } catch { return new Keyring(this.dir, this.nameKey, new Map(), this.erasedSet) }
    const gone = names.filter((n) => n.endsWith(ERASED_SUFFIX)).map((n) => n.slice(0, -ERASED_SUFFIX.length))
    const keys = new Map([...this.keys].filter(([p]) => !gone.includes(p)))
    return new Keyring(this.dir, this.nameKey, keys, new Set([...this.erasedSet, ...gone]))
  }

  /** The periods whose identity was destroyed. */
  erasedPeriods (): string[] {
    return [...this.erasedSet]
  }

  /** One key per period: its primary. */
  list (): PeriodKey[] {
    return [...this.keys.keys()].map((p) => this.key(p) as PeriodKey)
  }
}

/**
 * openHeader with each of a period's identities (Keyring.identities): the
 * header and the key that opened it; undefined when `data` holds only part
 * of it. Throws the SealedIntegrityError of the first identity that could
 * unwrap the file key (a tampered header), else of the first one.
 */
export function openHeaderWithAny (data: Buffer, keys: readonly PeriodKey[], path: string): { header: OpenedHeader, key: PeriodKey } | undefined {
  let refusal: SealedIntegrityError | undefined
  for (const key of keys) {
    try {
      const header = openHeader(data, key.identity, path)
      return header === undefined ? undefined : { header, key }
    } catch (err) {
      if (!(err instanceof SealedIntegrityError)) throw err
      if (refusal === undefined || refusal.reason === NOT_THIS_KEY) refusal = err
    }
  }
  throw refusal ?? new SealedIntegrityError(NOT_THIS_KEY)
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
  const file = keyFileOf(dir, period, 'primary')
  for (const f of [file, keyFileOf(dir, period, 'next'), keyFileOf(dir, period, 'old'), join(dir, period + ERASED_SUFFIX)]) {
    if (exists(f)) throw new KeyExistsError(`${f} exists: a period's key is made once (replacing it would make its recordings unreadable)`)
  }
  const key = makeIdentityFile(file, period, 'sealing identity')
  undoIfErased(dir, period, file)
  return key
}

/** An erasure that began while a key was being made: the key made is destroyed too, and the caller refused. */
function undoIfErased (dir: string, period: string, made: string): void {
  if (!exists(join(dir, period + ERASED_SUFFIX))) return
  try { destroyKeyFile(made) } catch {}
  throw new Error(`period ${period} was erased: its key was destroyed`)
}

/** A key file that exists already: another process made the period's key first. */
export class KeyExistsError extends Error {
  override name = 'KeyExistsError'
}

function makeIdentityFile (file: string, period: string, what: string): PeriodKey {
  const identity = newIdentity()
  // Only the key file's own name taken is a key made first; any other EEXIST is an error of its own.
  if (!createPrivate(file, `# nasguard ${what} for period ${period}\n# created: ${new Date().toISOString()}\n# public key: ${identity.recipient}\n${encodeIdentity(identity)}\n`)) throw new KeyExistsError(`${file} exists: a period's key is made once (replacing it would make its recordings unreadable)`)
  return { period, identity: identityOf(identity.secret), keyId: keyIdOf(period, identity) }
}

/**
 * The identity a rotation re-seals a period to (<period>.next.key): made by
 * the first `keys rotate`, the same one on a rerun. The period must have
 * its key, and no retirement may be pending.
 */
export function nextPeriodKey (dir: string, period: string): PeriodKey {
  const ring = Keyring.load(dir)
  const next = ring.role(period, 'next')
  if (next) return next
  if (!ring.role(period, 'primary')) throw new Error(ring.erased(period) ? `period ${period} was erased: its key was destroyed` : `no key for period ${period} (nasguard keys new --period ${period})`)
  if (ring.role(period, 'old')) throw new Error(`${keyFileOf(dir, period, 'old')} exists: a retirement is pending (rerun nasguard keys rotate --period ${period} to finish it)`)
  if (exists(join(dir, period + ERASED_SUFFIX))) throw new Error(`period ${period} was erased: its key was destroyed`)
  try {
    const made = makeIdentityFile(keyFileOf(dir, period, 'next'), period, 'next sealing identity (rotation)')
    undoIfErased(dir, period, keyFileOf(dir, period, 'next'))
    return made
  } catch (err) {
    if (err instanceof KeyExistsError) return Keyring.load(dir).role(period, 'next') as PeriodKey
    throw err
  }
}

/** Overwrites a key file with random bytes and syncs it; the caller unlinks it. */
function overwrite (file: string): void {
  const size = lstatSync(file).size
  const fd = openSync(file, constants.O_WRONLY)
  try {
    writeSync(fd, randomBytes(size), 0, size, 0)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Where a key file goes to be destroyed: a name Keyring.load does not read as a key, so a crash while it is overwritten leaves a keyring that loads. */
const SHRED_SUFFIX = '.shred'

/**
 * Destroys a key file: renamed to <file>.shred (the directory synced), then
 * overwritten with random bytes, synced and unlinked. A crash at any point
 * leaves either the key, whole, or a .shred file that the next load or
 * retirement destroys.
 */
function destroyKeyFile (file: string): void {
  const shredding = file + SHRED_SUFFIX
  if (exists(shredding)) shred(shredding)
  renameSync(file, shredding)
  syncDir(dirname(file))
  shred(shredding)
}

/** Overwrites, unlinks and syncs; a file already gone (another process shredding the same leftover) is done. */
function shred (file: string): void {
  try {
    overwrite(file)
    unlinkSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  syncDir(dirname(file))
}

/** Destroys the .shred files a crash left (best effort when `quiet`: a reader without write access leaves them). */
function shredLeftovers (dir: string, quiet: boolean): void {
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(SHRED_SUFFIX)) continue
    try {
      shred(join(dir, name))
    } catch (err) {
      if (!quiet) throw err
    }
  }
}

/** Gives a key file a new name that must not exist (link, unlink, fsync the directory). */
function moveKey (from: string, to: string): void {
  linkSync(from, to)
  unlinkSync(from)
  syncDir(dirname(from))
}

const sameKey = (a: PeriodKey | undefined, b: PeriodKey | undefined): boolean => a !== undefined && b !== undefined && a.keyId === b.keyId

/**
 * The last step of a rotation, once every file of the period opens with
 * <period>.next.key: <period>.key becomes <period>.old.key, the next one
 * becomes <period>.key, and the old one is destroyed (overwritten, synced,
 * unlinked; no tombstone: the period lives on). Each step leaves a keyring
 * whose identities open every file, and a rerun after a crash at any point
 * goes on from where it stopped. Returns the key id retired, or undefined
 * when there was nothing to retire.
 */
export function retireKey (dir: string, period: string): string | undefined {
  let retired: string | undefined
  shredLeftovers(dir, false)
  for (;;) {
    const ring = Keyring.load(dir)
    const primary = ring.role(period, 'primary')
    const next = ring.role(period, 'next')
    const old = ring.role(period, 'old')
    const file = (role: KeyRole): string => keyFileOf(dir, period, role)
    // A crash between a link and its unlink leaves one identity under two names.
    if (sameKey(primary, old)) { unlinkSync(file('primary')); syncDir(dir); continue }
    if (sameKey(primary, next)) { unlinkSync(file('next')); syncDir(dir); continue }
    if (primary && next && !old) { moveKey(file('primary'), file('old')); continue }
    if (!primary && next && old) { moveKey(file('next'), file('primary')); continue }
    if (primary && old && !next) {
      retired = old.keyId
      destroyKeyFile(file('old'))
      continue
    }
    if (primary && !next && !old) return retired
    throw new Error(`the keyring holds an unexpected set of identities for period ${period} (${(['primary', 'next', 'old'] as const).filter((r) => ring.role(period, r)).map((r) => file(r)).join(', ')}): fix it by hand`)
  }
}

/**
 * A rotation's new identity (the keyring's <period>.next.key), put in a copy
 * of the keyring (sealing.keyBackups) before the keyring retires the old
 * one, so that the copy opens the re-sealed files: as <period>.next.key
 * beside the copy's <period>.key, or as <period>.key where the copy holds
 * none. A rerun finds it there. Throws when the copy cannot be reached or
 * holds another next identity.
 */
export function copyNextKey (keyring: string, backup: string, period: string): void {
  checkCopyOf(keyring, backup)
  const source = keyFileOf(keyring, period, 'next')
  const fresh = keyIdOf(period, identityInFile(source))
  const idIn = (file: string): string | undefined => exists(file) ? keyIdOf(period, identityInFile(file)) : undefined
  const primary = keyFileOf(backup, period, 'primary')
  const next = keyFileOf(backup, period, 'next')
  if (idIn(primary) === fresh || idIn(next) === fresh) return
  if (exists(next)) throw new Error(`${next} holds another identity than the keyring's ${source}: fix it by hand`)
  const text = readFileSync(source, 'utf8')
  if (!exists(primary)) createPrivate(primary, text)
  else createPrivate(next, text)
}

/**
 * The retirement in a copy of the keyring, once the keyring's is done: its
 * old identity destroyed and the new one (put there by copyNextKey) made
 * its <period>.key, as retireKey does in the keyring. The key id retired
 * there, or undefined when there was nothing to retire. Throws when the
 * copy cannot be reached or its next identity is not the keyring's.
 */
export function retireBackupKey (keyring: string, backup: string, period: string): string | undefined {
  checkCopyOf(keyring, backup)
  const next = keyFileOf(backup, period, 'next')
  const old = keyFileOf(backup, period, 'old')
  if (!exists(next) && !exists(old)) return undefined
  const current = keyIdOf(period, identityInFile(keyFileOf(keyring, period, 'primary')))
  const incoming = exists(next) ? next : keyFileOf(backup, period, 'primary')
  if (keyIdOf(period, identityInFile(incoming)) !== current) throw new Error(`${incoming} is not the keyring's identity of period ${period}: fix it by hand`)
  return retireKey(backup, period)
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
export function eraseKey (dir: string, period: string, o: EraseOptions = {}): string | undefined {
  return eraseKeyIn(dir, period, false, o)
}

/**
 * eraseKey in a copy of the keyring (sealing.keyBackups): the period's key
 * files there are destroyed the same way, and a tombstone left; a copy
 * that never held the period gets the tombstone alone. Undefined then.
 * Throws when the directory cannot be reached.
 */
export function eraseBackupKey (keyring: string, dir: string, period: string, o: EraseOptions = {}): string | undefined {
  checkCopyOf(keyring, dir)
  return eraseKeyIn(dir, period, true, o)
}

/** A copy of the keyring (sealing.keyBackups) locked exclusive, waiting up to drainMs for its shared holders: its unlock. Throws when it is not a copy, or stays busy. */
export function lockCopy (keyring: string, dir: string, drainMs: number): () => void {
  checkCopyOf(keyring, dir)
  return lockKeyring(dir, 'exclusive', { drainMs })
}

/**
 * Throws unless dir is a copy of the keyring: a directory holding the same
 * name key. An empty mount point (the backup volume not mounted) is not
 * one: what is done there would be done to no copy, and said to be done.
 */
function checkCopyOf (keyring: string, dir: string): void {
  if (!lstatSync(dir).isDirectory()) throw new Error(`${dir} is not a directory`)
  const own = readFileSync(join(keyring, NAME_KEY_FILE), 'utf8').trim()
  let there: string
  try {
    there = readFileSync(join(dir, NAME_KEY_FILE), 'utf8').trim()
  } catch (err) {
    throw new Error(`${dir} holds no copy of the keyring (no ${NAME_KEY_FILE}: not mounted?)`, { cause: err })
  }
  if (there !== own) throw new Error(`${dir} holds a copy of another keyring (its ${NAME_KEY_FILE} differs)`)
}

/** Whether a keyring copy still holds any identity of the period (or cannot be read: it may). */
export function holdsPeriodKey (dir: string, period: string): boolean {
  try {
    // No name key: not a copy of a keyring (a backup volume not mounted), so what it holds cannot be told.
    if (!lstatSync(dir).isDirectory() || !exists(join(dir, NAME_KEY_FILE))) return true
  } catch {
    return true
  }
  // A key file a crash left half destroyed (renamed, not yet overwritten) still holds the identity.
  return (['primary', 'next', 'old'] as const).some((r) => exists(keyFileOf(dir, period, r)) || exists(keyFileOf(dir, period, r) + SHRED_SUFFIX))
}

/**
 * drainMs: how long to wait for the seals under way (uploads, a seal run:
 * the keyring's shared holders) to finish before the keyring is reported
 * busy; new ones are turned away (an upload gets 503) meanwhile. Default 0.
 * This thread blocks while it waits: for a command line tool.
 */
/** drainMs: how long the exclusive lock waits for uploads being sealed; locked: the caller holds that lock already (lockKeyring). */
export interface EraseOptions { drainMs?: number, locked?: boolean }

function eraseKeyIn (dir: string, period: string, missingOk: boolean, o: EraseOptions): string | undefined {
  // No seal or rotation runs while it does (the keyring's lock, exclusive).
  const unlock = o.locked === true ? () => {} : lockKeyring(dir, 'exclusive', { drainMs: o.drainMs })
  try {
    // During a rotation the period has more identities: each is destroyed.
    // (A rerun after a crash finds what is left of them.)
    const filesNow = (): string[] => (['primary', 'next', 'old'] as const).map((r) => keyFileOf(dir, period, r)).filter(exists)
    const files = filesNow()
    // None, and a tombstone: erased already (by a run that got here first).
    if (files.length === 0 && !missingOk && !exists(join(dir, period + ERASED_SUFFIX))) checkPrivate(keyFileOf(dir, period, 'primary'), false)
    for (const f of files) checkPrivate(f, false)
    const keyId = files.length > 0 ? keyIdOf(period, identityInFile(files[0])) : undefined
    // The tombstone first: from here on no key of the period is made (newPeriodKey, nextPeriodKey refuse), whatever happens.
    // An erasure again (a key put back, a rerun) adds its line: what the first one recorded is kept.
    const tomb = join(dir, period + ERASED_SUFFIX)
    const before = exists(tomb) ? readFileSync(tomb, 'utf8') : ''
    writePrivate(tomb, `${before}# nasguard: the identity of period ${period}${keyId ? ` (key id ${keyId})` : ''} was destroyed at ${new Date().toISOString()}\n`)
    syncDir(dir)
    // Until none is left: one made by a process that looked before the tombstone was there is destroyed too.
    for (let left = filesNow(); left.length > 0; left = filesNow()) for (const f of left) destroyKeyFile(f)
    // And what a crash left half destroyed (renamed to .shred, not yet overwritten): a rerun must not find nothing to do.
    shredLeftovers(dir, false)
    return keyId
  } finally {
    unlock()
  }
}
