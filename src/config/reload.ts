// Reloading the config while the gateway runs (SIGHUP, or the config file
// changing when tls.watch is on): the new file is loaded and checked like at
// start; a bad one is refused and the running config stays, as certificates
// already do. Only what a request reads afresh each time can change in
// place; a change to anything else is reported as needing a restart.
import type { Config } from './schema.js'
import { loadConfig } from './load.js'
import { startProblems } from './preflight.js'

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
