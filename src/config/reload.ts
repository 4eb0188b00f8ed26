// Reloading the config while the gateway runs (SIGHUP, or the config file
// changing when tls.watch is on): the new file is loaded and checked like at
// start; a bad one is refused and the running config stays, as certificates
// already do. Only what a request reads afresh each time can change in
// place; a change to anything else is reported as needing a restart.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Config } from './schema.js'
import { loadConfig } from './load.js'
import { secretFiles, startProblems } from './preflight.js'

/** The keys a reload applies without a restart. */
export const RELOADABLE = [
  'policy', 'files.extensions',
  'limits.maxPathLength', 'limits.maxRanges', 'limits.maxUploadBytes', 'limits.clientFetches', 'limits.sendTimeoutMs', 'limits.minSendRate', 'limits.drainTimeoutMs', 'limits.perSubject', 'limits.onStoreError',
  'upstream.queueTimeoutMs', 'sealing', 'retention'
] as const

/** Dotted paths of the leaves that differ between two configs (arrays compare whole). */
export function changedKeys (a: unknown, b: unknown, at = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
  if (!isObject(a) || !isObject(b) || RELOADABLE.includes(at as typeof RELOADABLE[number])) {
    return JSON.stringify(a) === JSON.stringify(b) ? [] : [at]
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  return [...keys].flatMap((k) => changedKeys(a[k], b[k], at ? `${at}.${k}` : k))
}

/**
 * The JWT verification keys: applied in place by a reload (the token cache
 * emptied with them) as long as the algorithms they allow stay the same,
 * since the verifier was built for those.
 */
export const JWT_KEY_PATHS = ['auth.jwt.secret', 'auth.jwt.secretFile', 'auth.jwt.publicKeyFile', 'auth.jwt.algorithms', 'auth.jwt.keys'] as const

/** Whether a changed key (a path, or a key file's content) is one of the JWT verification keys. */
export function isJwtKey (key: string): boolean {
  return JWT_KEY_PATHS.some((k) => key === k || key.startsWith(k + '.') || key.startsWith(k + '['))
}

/**
 * The files whose content is key material the gateway reads at start, by
 * key: a file rewritten in place (a leaked secret rotated) changes the
 * config as much as a new path does. tls.key is the certificate reload's,
 * and auth.jwt.privateKeyFile only `token issue` reads.
 */
function materialFiles (c: Readonly<Config>): Array<[string, string]> {
  const publicKeys: Array<[string, string | undefined]> = [['auth.jwt.publicKeyFile', c.auth.jwt.publicKeyFile], ...(c.auth.jwt.keys ?? []).map((k, i): [string, string | undefined] => [`auth.jwt.keys[${i}].publicKeyFile`, k.publicKeyFile])]
  const secrets = secretFiles(c).filter(([k]) => k !== 'tls.key' && k !== 'auth.jwt.privateKeyFile')
  return [...secrets, ...publicKeys.filter((e): e is [string, string] => e[1] !== undefined)]
}

/** A digest of each key file's content (never the content), by key. */
export function materialDigests (c: Readonly<Config>): Map<string, string> {
  return new Map(materialFiles(c).map(([key, file]) => {
    try {
      return [key, createHash('sha256').update(readFileSync(file)).digest('hex')]
    } catch (err) {
      return [key, `unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`]
    }
  }))
}

/** Keys whose file's content differs between two digests (a key present in only one is a change of the config itself). */
export function changedMaterial (a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): string[] {
  return [...b].filter(([k, d]) => a.has(k) && a.get(k) !== d).map(([k]) => k)
}

export interface ReloadResult {
  /** Applied now. */
  applied: string[]
  /** Changed in the file, kept as they were until a restart. */
  restart: string[]
}

/** Loads and checks the file: the new config, or the problems that refuse it. */
export function reloadable (file: string): { config: Readonly<Config> } | { error: string } {
  try {
    const config = loadConfig({ file, env: process.env })
    const problems = startProblems(config)
    if (problems.length > 0) return { error: problems.map((p) => `config error at ${p.key}: ${p.reason}`).join('; ') }
    return { config }
  } catch (err) {
    return { error: (err as Error).message.replace(/\n/g, '; ') }
  }
}
