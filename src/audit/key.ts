// The audit key: the HMAC key of the audit chain, apart from the JWT keys.
// Made on first start (32 random bytes, hex, mode 0600) — but only for a
// directory that holds no trail yet. A key that goes missing beside a trail
// is an incident, not a first start: a new key would seal new records while
// `audit verify` calls every old one edited. Making a new key for an
// existing trail is the deliberate `nasguard audit new-key`, which sets the
// old trail aside and records that it did. Keep the key where whoever can
// write the audit directory cannot read it.
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs'
import { makeDir } from '../files/ownership.js'
import { dirname, join } from 'node:path'
import { isChainDir } from './chains.js'

/** Files in an audit directory that belong to a trail (a chain's files, the list of chains). */
const TRAIL_FILE = /^(audit\.jsonl|audit\.head|audit\.chains|audit-\d{12}\.jsonl)$/

/** The trail entries in an audit directory (none when it does not exist): non-empty trail files, and chain directories (workers', ops). */
export function trailEntries (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).filter((e) => isChainDir(e.name) ? e.isDirectory() : TRAIL_FILE.test(e.name) && e.isFile() && statSync(join(dir, e.name)).size > 0).map((e) => e.name)
}

function readKey (file: string): Buffer {
  const text = readFileSync(file, 'utf8').trim()
  if (text.length < 32) throw new Error(`${file}: an audit key must be at least 32 characters`)
  return Buffer.from(text)
}

/**
 * The key in `file`. With `createFor` (the audit directory), a missing key
 * is made, unless that directory already holds a trail: then the start
 * stops, naming the way out.
 */
export function loadAuditKey (file: string, createFor?: string): Buffer {
  try {
    return readKey(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || createFor === undefined) throw err
  }
  if (trailEntries(createFor).length > 0) {
    throw new Error(`the audit key ${file} is missing, but ${createFor} holds an audit trail sealed with it: restore the key from your backup, or start a new chain deliberately with \`nasguard audit new-key --config FILE\` (the old trail is set aside, unverifiable without its key)`)
  }
  return createKey(file)
}

/** Writes a new key; refuses when one exists (O_EXCL: two processes starting at once must not each make their own). */
export function createKey (file: string): Buffer {
  makeDir(dirname(file))
  const key = randomBytes(32).toString('hex')
  try {
    const fd = openSync(file, 'wx', 0o600)
    try { writeSync(fd, key + '\n') } finally { closeSync(fd) }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readKey(file)
    throw err
  }
  return Buffer.from(key)
}
