// With workers, the trail is several chains: <audit.dir>/worker-<i>, one per
// worker; operator tools (seal, keys rotate) write their own chain,
// <audit.dir>/ops, so that they can record while gateways hold theirs.
// audit.chains lists every chain ever written there, sealed with the audit
// key, so that `audit verify` reports a chain that was removed whole (a
// deletion no single chain can show).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'

export const CHAINS_FILE = 'audit.chains'
/** The operator tools' chain (src/audit/operator-events.ts), a directory under audit.dir. */
export const OPS_CHAIN = 'ops'
const WORKER_CHAIN = /^worker-\d+$/
const CHAIN_DIR = /^(worker-\d+|ops)$/
/** A listed chain: a worker's directory, the operator tools' (ops), or `.` for the trail a single process wrote in audit.dir itself. */
const CHAIN_NAME = /^(worker-\d+|ops|\.)$/

/** A chain that is a directory of its own under audit.dir: worker-<i> or ops. */
export function isChainDir (name: string): boolean {
  return CHAIN_DIR.test(name)
}

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

/**
 * The key the oldest records of a chain may be sealed with: a worker chain
 * written before chains had keys of their own used the audit key itself.
 * `.` uses that key anyway, and ops never had another: none.
 */
export function legacyChainKey (key: Buffer, name: string): Buffer | undefined {
  return WORKER_CHAIN.test(name) ? key : undefined
}

/** Chains in order: `.` first, then the workers by number, then ops. */
export function byChainOrder (a: string, b: string): number {
  const n = (c: string): number => (c === '.' ? -1 : c === OPS_CHAIN ? Number.MAX_SAFE_INTEGER : Number(c.slice(7)))
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

/**
 * Adds chains to the sealed list (it only grows), atomically. A gateway
 * starting and an operator tool may add at once: each writes under a
 * temporary name of its own, and reads the list back until it holds what
 * it added (the other's rename may have replaced its list).
 */
export function recordChains (dir: string, key: Buffer, add: string[]): void {
  for (let attempt = 0; attempt < 10; attempt++) {
    const current = readChains(dir, key)
    if (current && !current.ok) throw new Error(`${join(dir, CHAINS_FILE)}: ${current.reason}; refusing to add ${add.join(', ')} to it (check the trail with nasguard audit verify)`)
    const chains = [...new Set([...(current?.chains ?? []), ...add])].sort(byChainOrder)
    if (current && chains.length === current.chains.length) return
    writeChains(dir, key, chains)
  }
  throw new Error(`${join(dir, CHAINS_FILE)} kept changing while ${add.join(', ')} was added to it: is something rewriting it?`)
}

/** Durable like the trail: the file, then the rename in the directory. */
function writeChains (dir: string, key: Buffer, chains: string[]): void {
  const tmp = join(dir, `${CHAINS_FILE}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const fd = openSync(tmp, 'wx', 0o600)
  try {
    writeSync(fd, JSON.stringify({ chains, mac: seal(key, chains) }) + '\n')
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  try {
    renameSync(tmp, join(dir, CHAINS_FILE))
  } catch (err) {
    try { unlinkSync(tmp) } catch {}
    throw err
  }
  const d = openSync(dir, 'r')
  try { fsyncSync(d) } finally { closeSync(d) }
}

/** Chain directories present under dir: the workers', and ops. */
export function chainDirs (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir).filter((f) => isChainDir(f) && statSync(join(dir, f)).isDirectory())
    .sort(byChainOrder)
}
