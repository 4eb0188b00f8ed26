// Values derived from the config that more than one process needs (the
// gateway, the workers' primary, the CLI): kept apart from the app so that
// reading them loads nothing else.
import { availableParallelism } from 'node:os'
import { basename, dirname, join } from 'node:path'
import type { Config } from './schema.js'
import { readSecretFile } from './secrets.js'

/** Where the audit key lives unless configured: audit.key beside (not inside) the audit directory. */
export function auditKeyFile (config: { readonly audit: Pick<Config['audit'], 'dir' | 'keyFile'> }): string {
  return config.audit.keyFile ?? join(dirname(config.audit.dir), `${basename(config.audit.dir)}.key`)
}

/** The configured playback-grant key, if any (else each gateway makes a random one). */
export function grantsSecret (config: Readonly<Config>): string | undefined {
  const g = config.auth.grants
  return g.secret ?? (g.secretFile ? readSecretFile(g.secretFile) : undefined)
}

/** Gateway processes serving requests: the workers, or the one process. */
export function workerCount (config: Readonly<Config>): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers
}

/** One process's share of a limit set for the whole gateway (rounded up, at least 1). */
export function processShare (config: Readonly<Config>, total: number): number {
  return Math.max(1, Math.ceil(total / workerCount(config)))
}
