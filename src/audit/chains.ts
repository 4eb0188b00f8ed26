// With workers, the trail is several chains: <audit.dir>/worker-<i>, one per
// worker. audit.chains lists every chain ever written there, sealed with the
// audit key, so that `audit verify` reports a chain that was removed whole
// (a deletion no single chain can show).
import { createHmac, timingSafeEqual } from 'node:crypto'
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'

export const CHAINS_FILE = 'audit.chains'
const CHAIN_DIR = /^worker-\d+$/
/** A listed chain: a worker's directory, or `.` for the trail a single process wrote in audit.dir itself. */
const CHAIN_NAME = /^(worker-\d+|\.)$/

/** Worker i's chain, a directory under audit.dir. */
export function chainName (index: number): string {
  return `worker-${index}`
}

/**
 * The key a chain is sealed with. The single-process trail (`.`) uses the
 * audit key itself; worker-<i> uses a key derived from it and the chain's
 * name. A chain's records, head and checkpoint then verify only under their
 * own name: a chain moved, swapped or copied to another worker's name does
 * not verify there.
 */
export function chainKey (key: Buffer, name: string): Buffer {
  if (name === '.') return key
  return createHmac('sha256', key).update('nasguard-chain-v1.').update(name).digest()
}

/** Chains in order: `.` first, then the workers by number. */
export function byChainOrder (a: string, b: string): number {
  const n = (c: string): number => (c === '.' ? -1 : Number(c.slice(7)))
  return n(a) - n(b)
}

function seal (key: Buffer, chains: string[]): string {
  return createHmac('sha256', key).update('nasguard-chains-v1.').update(JSON.stringify(chains)).digest('hex')
}

export type ChainList = { ok: true, chains: string[] } | { ok: false, reason: string }

/** The sealed list, if there is one: undefined when absent. */
export function readChains (dir: string, key: Buffer): ChainList | undefined {
  const file = join(dir, CHAINS_FILE)
  if (!existsSync(file)) return undefined
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as { chains?: unknown, mac?: unknown }
    if (!Array.isArray(v.chains) || !v.chains.every((c) => typeof c === 'string' && CHAIN_NAME.test(c)) || typeof v.mac !== 'string') {
      return { ok: false, reason: `${CHAINS_FILE} is malformed` }
    }
    const want = Buffer.from(seal(key, v.chains as string[]), 'hex')
    const got = Buffer.from(v.mac, 'hex')
    if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, reason: `${CHAINS_FILE} does not carry a valid MAC (edited, or another key)` }
    return { ok: true, chains: v.chains as string[] }
  } catch {
    return { ok: false, reason: `${CHAINS_FILE} is not readable JSON` }
  }
}

/** Adds chains to the sealed list (it only grows), atomically. */
export function recordChains (dir: string, key: Buffer, add: string[]): void {
  const current = readChains(dir, key)
  if (current && !current.ok) throw new Error(`${join(dir, CHAINS_FILE)}: ${current.reason}; refusing to start (check the trail with nasguard audit verify)`)
  const chains = [...new Set([...(current?.chains ?? []), ...add])].sort(byChainOrder)
  if (current && chains.length === current.chains.length) return
  // Durable like the trail: the file, then the rename in the directory.
  const tmp = join(dir, `${CHAINS_FILE}.tmp`)
  const fd = openSync(tmp, 'w', 0o600)
  try {
    writeSync(fd, JSON.stringify({ chains, mac: seal(key, chains) }) + '\n')
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, join(dir, CHAINS_FILE))
  const d = openSync(dir, 'r')
  try { fsyncSync(d) } finally { closeSync(d) }
}

/** Worker chain directories present under dir. */
export function chainDirs (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir).filter((f) => CHAIN_DIR.test(f) && statSync(join(dir, f)).isDirectory())
    .sort(byChainOrder)
}
