// The audit key: the HMAC key of the audit chain, apart from the JWT keys.
// Made on first start when missing (32 random bytes, hex, mode 0600). Keep
// it where whoever can write the audit directory cannot read it.
import { randomBytes } from 'node:crypto'
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

export function loadAuditKey (file: string, create: boolean): Buffer {
  try {
    const text = readFileSync(file, 'utf8').trim()
    if (text.length < 32) throw new Error(`${file}: an audit key must be at least 32 characters`)
    return Buffer.from(text)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw err
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const key = randomBytes(32).toString('hex')
  // O_EXCL: two processes starting at once must not each make their own.
  try {
    const fd = openSync(file, 'wx', 0o600)
    try { writeSync(fd, key + '\n') } finally { closeSync(fd) }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadAuditKey(file, false)
    throw err
  }
  return Buffer.from(key)
}
