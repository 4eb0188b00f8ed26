// What serving sealed recordings needs, built from the config: the mode, the
// period pattern, how many name segments are sealed, and the keyring (read
// at start, and again on reload: SIGHUP).
import type { Config } from '../config/schema.js'
import { Keyring } from './keyring.js'
import { SealedNameTooLong, sealedPathOf } from './names.js'
import { compilePeriodPattern, type PeriodPattern } from './period.js'

export interface SealingSettings {
  mode: 'migrate' | 'require'
  pattern: PeriodPattern
  keyring: Keyring
  /** sealing.names.segments: how many trailing segments are sealed. */
  nameSegments: number
  /** sealing.makeKeysOnUpload: a recent period's first upload makes its key. */
  makeKeys: boolean
  /**
   * The NAS's name for a canonical path (its decoded segments), remembered:
   * AES-SIV in JavaScript is the costly part of the sealing stage. Null
   * when a sealed segment would be longer than a NAS takes: no sealed
   * recording can have this path.
   */
  sealedPath: (path: string, segments: string[]) => string | null
}

function sealedOrNull (key: Buffer, segments: string[], count: number): string | null {
  try {
    return sealedPathOf(key, segments, count)
  } catch (err) {
    if (err instanceof SealedNameTooLong) return null
    throw err
  }
}

/** Sealed names remembered per canonical path, the oldest dropped first; a new keyring starts afresh. */
function rememberedNames (keyring: Keyring, count: number, max = 10000): SealingSettings['sealedPath'] {
  const names = new Map<string, string | null>()
  return (path, segments) => {
    let sealed = names.get(path)
    if (sealed === undefined) {
      sealed = sealedOrNull(keyring.nameKey, segments, count)
      if (names.size >= max) names.delete(names.keys().next().value as string)
      names.set(path, sealed)
    }
    return sealed
  }
}

/** The sealing settings of a config; undefined when mode is off. Throws naming the key and what is wrong. */
export function sealingOf (config: Readonly<Config>): SealingSettings | undefined {
  const s = config.sealing
  if (s.mode === 'off') return undefined
  if (!s.keyring) throw new Error(`sealing.keyring: needed when sealing.mode is ${s.mode}`)
  if (!s.periodPattern) throw new Error(`sealing.periodPattern: needed when sealing.mode is ${s.mode} (e.g. /medicall/{yyyy}/{mm}/**)`)
  let pattern: PeriodPattern
  try {
    pattern = compilePeriodPattern(s.periodPattern, s.period)
  } catch (err) {
    throw new Error(`sealing.periodPattern: ${(err as Error).message}`)
  }
  let keyring: Keyring
  try {
    keyring = Keyring.load(s.keyring)
  } catch (err) {
    throw new Error(`sealing.keyring: ${(err as Error).message}`)
  }
  return { mode: s.mode, pattern, keyring, nameSegments: s.names.segments, makeKeys: s.makeKeysOnUpload, sealedPath: rememberedNames(keyring, s.names.segments) }
}
