// `nasguard keys new|list|show` and `nasguard names encode|decode`: the
// operator's view of the keyring. Nothing here prints a secret: `keys show`
// prints the recipient (public), which is all a recorder needs, and where
// the identity file is, for `age -d -i`.
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { Keyring, newPeriodKey } from './keyring.js'
import { plainPathOf, sealedPathOf } from './names.js'
import { compilePeriodPattern, periodOf, type PeriodUnit } from './period.js'

function keyringDir (c: Readonly<Config>): string {
  if (!c.sealing.keyring) throw new Error('sealing.keyring: not set in the config; set it to a directory off the NAS (e.g. /var/lib/nasguard/keyring)')
  return c.sealing.keyring
}

/** The period that `now` falls in. */
export function currentPeriod (unit: PeriodUnit, now = new Date()): string {
  const iso = now.toISOString()
  return unit === 'year' ? iso.slice(0, 4) : unit === 'month' ? iso.slice(0, 7) : iso.slice(0, 10)
}

export function keysNew (c: Readonly<Config>, period: string | undefined): string {
  const p = period ?? currentPeriod(c.sealing.period)
  const key = newPeriodKey(keyringDir(c), c.sealing.period, p)
  return `period ${key.period}\nkey id ${key.keyId}\nrecipient ${key.identity.recipient}\nidentity ${join(keyringDir(c), `${p}.key`)}\n`
}

export function keysList (c: Readonly<Config>): string {
  const ring = Keyring.load(keyringDir(c))
  const rows = ring.list().map((k) => `${k.period.padEnd(10)}  ${k.keyId.padEnd(28)}  ${k.identity.recipient}`)
  return ['period      key id                        recipient', ...rows].join('\n') + '\n'
}

export function keysShow (c: Readonly<Config>, period: string): string {
  const ring = Keyring.load(keyringDir(c))
  const key = ring.key(period)
  if (!key) throw new Error(ring.erased(period) ? `period ${period} was erased: its key was destroyed` : `no key for period ${period} (nasguard keys new --period ${period})`)
  return `period ${key.period}\nkey id ${key.keyId}\nrecipient ${key.identity.recipient}\nidentity ${join(ring.dir, `${period}.key`)}\n`
}

/** The decoded segments of a path as a URL or the NAS spells it. */
function segmentsOf (path: string): string[] {
  const bad = (): Error => new Error(`not a canonical path: ${JSON.stringify(path)} (absolute, no empty, . or .. segments)`)
  if (!path.startsWith('/')) throw bad()
  const segments = path.split('/').slice(1).map((s) => { try { return decodeURIComponent(s) } catch { throw bad() } })
  if (segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('/'))) throw bad()
  return segments
}

/** The NAS's name for a recording, and its period (when it has one). */
export function namesEncode (c: Readonly<Config>, path: string): string {
  const ring = Keyring.load(keyringDir(c))
  const segments = segmentsOf(path)
  const sealed = sealedPathOf(ring.nameKey, segments, c.sealing.names.segments)
  const period = c.sealing.periodPattern ? periodOf(compilePeriodPattern(c.sealing.periodPattern, c.sealing.period), segments) : undefined
  return sealed + '\n' + (period ? `period ${period}${ring.key(period) ? '' : ' (no key yet)'}\n` : '')
}

/** The plaintext path of a sealed one; undefined when it does not decode with this keyring. */
export function namesDecode (c: Readonly<Config>, path: string): string | undefined {
  const ring = Keyring.load(keyringDir(c))
  return plainPathOf(ring.nameKey, segmentsOf(path), c.sealing.names.segments)
}
