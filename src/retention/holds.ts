// Legal holds: a recording under a hold is served past its retention and
// never erased. A hold names a case, a path prefix (the plaintext path, as
// the audit trail spells it), a reason, and optionally when it lapses.
//
// All holds are one document, sealed with an HMAC under a key derived from
// the audit key, so that whoever can write the file (or Redis) but not read
// the key cannot narrow a hold, move it, or forge one. Its generation
// counts every change. Kept in a file (state.holdsFile, default
// <audit.dir>/legal-holds.json), or in Redis under <prefix>{holds} when
// state.redis is set, so that every gateway and the sweep see one set.
// A change is a compare-and-swap on the whole document: two operators at
// once never lose one another's hold. What cannot be read or does not
// verify is a problem, never "no holds": the gateway refuses expired
// recordings with 503 then, and the sweep erases nothing.
import { createHmac, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { releaseLock, takeLockFile } from '../audit/lock.js'
import { makeDir } from '../files/ownership.js'
import { syncDir, writePrivate } from '../files/private-file.js'
import { foldName, foldingHazard, type FileSystemMode } from '../policy/file-system.js'

export interface Hold {
  case: string
  /** A plaintext path prefix: `/medicall/2016/03/` holds a month, `/medicall/2016/03/14/46701234567` one caller's calls that day. */
  prefix: string
  reason: string
  /** ISO 8601: the hold lapses then. None: until released. */
  until?: string
  /** When it was placed, and by whom (the OS user). */
  at: string
  by: string
}

export interface HoldsDoc { version: 1, generation: number, holds: Hold[] }

export const EMPTY_HOLDS: HoldsDoc = { version: 1, generation: 0, holds: [] }

/** The HMAC key of the holds document: derived from the audit key, apart from the chain's. */
export function holdsKeyOf (auditKey: Buffer): Buffer {
  return createHmac('sha256', auditKey).update('nasguard legal holds v1').digest()
}

/** A hold with its fields in one order (what the MAC covers); unknown fields dropped. */
function canonicalHold (h: Hold): Hold {
  return { case: h.case, prefix: h.prefix, reason: h.reason, ...(h.until !== undefined ? { until: h.until } : {}), at: h.at, by: h.by }
}

function bodyOf (doc: HoldsDoc): string {
  return JSON.stringify({ version: doc.version, generation: doc.generation, holds: doc.holds.map(canonicalHold) })
}

const macOf = (key: Buffer, body: string): string => createHmac('sha256', key).update(body).digest('hex')

/** The document as stored: its body and its MAC, one line. */
export function sealHolds (doc: HoldsDoc, key: Buffer): string {
  return JSON.stringify({ ...JSON.parse(bodyOf(doc)), mac: macOf(key, bodyOf(doc)) }) + '\n'
}

/** A hold problem: the document is there but cannot be trusted (or read). */
export class HoldsProblem extends Error {
  override name = 'HoldsProblem'
}

const isString = (v: unknown): v is string => typeof v === 'string'

function holdOf (v: unknown): Hold | undefined {
  if (typeof v !== 'object' || v === null) return undefined
  const h = v as Record<string, unknown>
  if (!isString(h.case) || !isString(h.prefix) || !isString(h.reason) || !isString(h.at) || !isString(h.by)) return undefined
  if (h.until !== undefined && !isString(h.until)) return undefined
  return h as unknown as Hold
}

/** The document a stored text holds; throws HoldsProblem when it is not whole, not well-formed, or not sealed with this key. */
export function unsealHolds (text: string, key: Buffer, where: string): HoldsDoc {
  let v: Record<string, unknown>
  try {
    v = JSON.parse(text) as Record<string, unknown>
  } catch {
    throw new HoldsProblem(`${where} is not a legal holds document (not JSON: torn or edited)`)
  }
  const holds = Array.isArray(v?.holds) ? v.holds.map(holdOf) : undefined
  if (v?.version !== 1 || !Number.isSafeInteger(v.generation) || holds === undefined || holds.some((h) => h === undefined) || !isString(v.mac)) {
    throw new HoldsProblem(`${where} is not a legal holds document (fields missing or of the wrong type)`)
  }
  const doc: HoldsDoc = { version: 1, generation: v.generation as number, holds: holds as Hold[] }
  const want = Buffer.from(macOf(key, bodyOf(doc)), 'hex')
  const got = Buffer.from(/^[0-9a-f]{64}$/.test(v.mac) ? v.mac : '', 'hex')
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new HoldsProblem(`${where} does not verify (its MAC is wrong): it was edited, or sealed with another audit key`)
  return doc
}

// ---- Which holds cover what -------------------------------------------------------

/** A hold in force at `now` (not lapsed); an `until` that does not read as a time never lapses it (holds err on holding more). */
export function inForce (h: Hold, now: number): boolean {
  return h.until === undefined || !(now >= Date.parse(h.until))
}

/**
 * Whether a hold's prefix and a path (or a period's directory) meet: one
 * starts the other, segment by segment. A prefix's last segment may be
 * part of a name (`46701234567` holds `46701234567-0930.wav`). On a NAS
 * that folds names, segments compare by fold key, and a partial one
 * matches either way its fold could be read: holds err on holding more.
 * `whole`: the path is a recording, so the prefix must start it; else
 * (a directory) either may start the other.
 */
export function prefixMeets (prefix: string, segments: readonly string[], mode: FileSystemMode, whole: boolean): boolean {
  const parts = prefix.slice(1).split('/')
  const same = (a: string, b: string): boolean => mode === 'folding' ? foldName(a) === foldName(b) : a === b
  const starts = (name: string, part: string): boolean => mode === 'folding'
    ? foldName(name).startsWith(foldName(part)) || foldName(name.slice(0, part.length)) === foldName(part)
    : name.startsWith(part)
  for (let i = 0; i < parts.length; i++) {
    if (i >= segments.length) return !whole
    const last = i === parts.length - 1
    if (last ? !starts(segments[i], parts[i]) : !same(segments[i], parts[i])) return false
  }
  return true
}

/** The holds in force that cover a recording (its canonical segments). */
export function holdsOn (holds: readonly Hold[], segments: readonly string[], mode: FileSystemMode, now: number): Hold[] {
  return holds.filter((h) => inForce(h, now) && prefixMeets(h.prefix, segments, mode, true))
}

/**
 * What is wrong with a prefix given to `hold add`, or undefined: it must
 * be absolute, without empty, `.` or `..` segments (but it may end with /),
 * and, on a folding NAS, without a name the NAS resolves otherwise.
 */
export function prefixProblem (prefix: string, mode: FileSystemMode): string | undefined {
  if (!prefix.startsWith('/')) return 'it must start with /'
  if (prefix.length > 1024) return 'it is longer than 1024 characters'
  if (/[\x00-\x1f\x7f]/.test(prefix)) return 'it holds a control character'
  // Compared with decoded names: an encoded prefix (as a URL spells it) would hold nothing.
  if (prefix.includes('%')) return 'give the path decoded (`Anna Söder`, not `Anna%20S%C3%B6der`): % is refused'
  if (prefix !== prefix.normalize('NFC')) return 'it is not in Unicode NFC (as canonical paths are): retype it'
  const parts = prefix.slice(1).split('/')
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]
    if (p === '' && i !== parts.length - 1) return 'it has an empty segment (//)'
    if (p === '.' || p === '..') return 'it has a . or .. segment'
    if (mode === 'folding' && p !== '' && foldingHazard(p) !== undefined) return `segment ${JSON.stringify(p)} is a name the NAS resolves differently (${foldingHazard(p) as string})`
  }
  return undefined
}

// ---- Where the document is kept -----------------------------------------------------

export interface HoldsStore {
  /** Names it in messages: the file, or Redis's key. */
  readonly where: string
  /** The stored text; undefined when there is none. Throws HoldsProblem when it cannot be read. */
  read: () => Promise<string | undefined>
  /** Stores `next` if the text is still `expected` (undefined: none); false when another change came first. */
  replace: (expected: string | undefined, next: string) => Promise<boolean>
}

/** The holds in a file, changed under a lock beside it, written whole (temporary name, fsync, rename, fsync the directory). */
export function fileHoldsStore (file: string): HoldsStore {
  const read = async (): Promise<string | undefined> => {
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new HoldsProblem(`${file} cannot be read: ${(err as Error).message}`)
    }
  }
  return {
    where: file,
    read,
    replace: async (expected, next) => {
      makeDir(dirname(file))
      const lock = await takeLockFile(`${file}.lock`)
      try {
        if (await read() !== expected) return false
        writePrivate(file, next)
        syncDir(dirname(file))
        return true
      } finally {
        await releaseLock(lock)
      }
    }
  }
}

/** Reads the document: undefined when there is none yet; throws HoldsProblem when it is there and cannot be trusted. */
export async function loadHolds (store: HoldsStore, key: Buffer): Promise<HoldsDoc | undefined> {
  const text = await store.read()
  return text === undefined ? undefined : unsealHolds(text, key, store.where)
}

/**
 * Changes the document (`change` gets the current one, or the empty one
 * when there is none, and returns the next); the generation goes up by
 * one. Retried when another change came first. Resolves with both.
 */
export async function changeHolds (store: HoldsStore, key: Buffer, change: (doc: HoldsDoc) => HoldsDoc): Promise<{ before: HoldsDoc, after: HoldsDoc }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const text = await store.read()
    const before = text === undefined ? EMPTY_HOLDS : unsealHolds(text, key, store.where)
    const after = { ...change(before), version: 1 as const, generation: before.generation + 1 }
    if (await store.replace(text, sealHolds(after, key))) return { before, after }
  }
  throw new HoldsProblem(`${store.where} kept changing while this change was made: try again`)
}
