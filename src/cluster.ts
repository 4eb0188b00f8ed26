// `workers: N | auto`: one primary and N gateway workers (node:cluster)
// sharing the TLS listener. What they share, and how:
//
// - Audit: one writer per chain, as ever. Worker i writes its own chain in
//   <audit.dir>/worker-<i> (its own audit.lock, head and rotation), with the
//   one audit key; a worker that is restarted continues its chain. The
//   primary keeps a sealed list of the chains (audit.chains) so that a
//   removed chain is reported by `nasguard audit verify`, not just missed.
// - Metrics: the primary serves /metrics, summing the workers' registries
//   (prom-client's AggregatorRegistry; expiry and availability take the min).
// - Readiness: the primary asks every worker; ready only when all are.
// - Revocation: every worker polls the same denylist file.
// - Playback grants and TLS session tickets: keys made once by the primary
//   and handed to every worker over IPC, so a grant or a ticket from one
//   worker is good on the next connection, whichever worker takes it.
// - Signals: SIGTERM/SIGINT close the workers gracefully, SIGHUP is passed
//   on (certificate reload). A worker that dies is restarted.
import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { AggregatorRegistry } from 'prom-client'
import { adminCredential, buildAdmin, type Readiness } from './admin.js'
import { auditKeyFile, grantsSecret } from './config/derived.js'
import { loadAuditKey } from './audit/key.js'
import { recordChains } from './audit/chains.js'
import type { Config } from './config/schema.js'
import { createLogger } from './logging.js'

export function workerCount (config: Readonly<Config>): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers
}

/** The directory of worker i's audit chain. */
export function workerChainDir (config: Readonly<Config>, index: number): string {
  return join(config.audit.dir, `worker-${index}`)
}

export interface HelloMessage { nasguard: 'hello' }
export interface InitMessage { nasguard: 'init', index: number, config: Config, grantsSecret: string, ticketKeys: string }
export interface ReadyMessage { nasguard: 'ready', index: number, url: string }
export interface ReadinessRequest { nasguard: 'readiness?', id: number }
export interface ReadinessReply { nasguard: 'readiness', id: number, result: Readiness }
type Message = HelloMessage | InitMessage | ReadyMessage | ReadinessRequest | ReadinessReply

export function isMessage (m: unknown): m is Message {
  return typeof m === 'object' && m !== null && typeof (m as { nasguard?: unknown }).nasguard === 'string'
}

/**
 * In the primary: make the shared keys, start the workers, serve the admin
 * listener, restart workers that die, and close them all on a signal.
 * Resolves once every worker is listening; rejects if one fails to start.
 */
export async function runPrimary (config: Readonly<Config>): Promise<{ url: string, adminUrl: string | null }> {
  const count = workerCount(config)
  const log = createLogger(config.log.level, { role: 'primary' })
  // Made here once: the workers must not race to create the audit key.
  loadAuditKey(auditKeyFile(config), true)
  mkdirSync(config.audit.dir, { recursive: true, mode: 0o700 })
  recordChains(config.audit.dir, loadAuditKey(auditKeyFile(config), false), Array.from({ length: count }, (_, i) => `worker-${i}`))
  const grants = grantsSecret(config) ?? randomBytes(32).toString('hex')
  const ticketKeys = randomBytes(48).toString('base64')

  const byIndex = new Map<number, Worker>()
  const ready = new Set<number>()
  let closing = false
  let started = false
  const restarts = new Map<number, number>()

  const fork = (index: number): Promise<string> => new Promise((resolve, reject) => {
    const w = cluster.fork()
    byIndex.set(index, w)
    w.on('message', (m: unknown) => {
      if (isMessage(m) && m.nasguard === 'hello') {
        w.send({ nasguard: 'init', index, config: config as Config, grantsSecret: grants, ticketKeys } satisfies InitMessage)
      }
      if (isMessage(m) && m.nasguard === 'ready') {
        ready.add(index)
        restarts.set(index, 0)
        resolve(m.url)
      }
    })
    w.once('exit', (code, signal) => {
      ready.delete(index)
      if (closing) return
      if (!started) {
        reject(new Error(`worker ${index} exited during start (${signal ?? `code ${code}`}); its error is above`))
        return
      }
      const n = (restarts.get(index) ?? 0) + 1
      restarts.set(index, n)
      const delay = Math.min(30000, 250 * 2 ** Math.min(n, 7))
      log.error({ worker: index, code, signal, restartInMs: delay }, 'worker died: restarting it')
      setTimeout(() => { if (!closing) fork(index).catch(() => {}) }, delay).unref()
    })
  })

  const stopWorkers = async (): Promise<void> => {
    closing = true
    const exits = [...byIndex.values()].filter((w) => !w.isDead()).map((w) => new Promise<void>((resolve) => {
      w.once('exit', () => resolve())
      w.process.kill('SIGTERM')
    }))
    await Promise.all(exits)
  }

  let url: string
  try {
    const urls = await Promise.all(Array.from({ length: count }, (_, i) => fork(i)))
    url = urls[0]
    started = true
  } catch (err) {
    await stopWorkers()
    throw err
  }

  // Readiness: every worker's own checks, and all of them up.
  let nextId = 0
  const pending = new Map<number, (r: Readiness) => void>()
  cluster.on('message', (_w: Worker, m: unknown) => {
    if (isMessage(m) && m.nasguard === 'readiness') pending.get(m.id)?.(m.result)
  })
  const ask = (w: Worker): Promise<Readiness> => new Promise((resolve) => {
    const id = ++nextId
    const timer = setTimeout(() => { pending.delete(id); resolve({ ready: false, checks: { worker: 'no answer' } }) }, 3000)
    pending.set(id, (r) => { clearTimeout(timer); pending.delete(id); resolve(r) })
    w.send({ nasguard: 'readiness?', id } satisfies ReadinessRequest)
  })
  const readiness = async (): Promise<Readiness> => {
    const live = [...byIndex.entries()].filter(([i, w]) => ready.has(i) && !w.isDead())
    const answers = await Promise.all(live.map(([, w]) => ask(w)))
    const checks: Record<string, string> = { workers: live.length === count ? 'ok' : `${live.length}/${count} running` }
    for (const a of answers) {
      for (const [k, v] of Object.entries(a.checks)) if (checks[k] === undefined || checks[k] === 'ok') checks[k] = v
    }
    return { ready: live.length === count && answers.every((a) => a.ready), checks }
  }

  const aggregator = new AggregatorRegistry()
  const admin = config.admin.enabled
    ? buildAdmin({ contentType: aggregator.contentType, text: async () => await aggregator.clusterMetrics() }, log, readiness, adminCredential(config))
    : null
  let adminUrl: string | null = null
  if (admin) adminUrl = new URL(await admin.listen({ host: config.admin.host, port: config.admin.port, listenTextResolver: (a) => `admin (metrics, health) listening at ${a}` })).origin

  process.on('SIGHUP', () => { for (const w of byIndex.values()) if (!w.isDead()) w.process.kill('SIGHUP') })
  closeWithGrace({ delay: 15000, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err) log.error({ err: { type: err.name, message: err.message, stack: err.stack } }, 'fatal error in the primary, closing')
    else log.info({ signal }, 'closing the workers')
    await stopWorkers()
    await admin?.close()
  })
  log.info({ address: url, admin: adminUrl, workers: count }, 'nasguard listening')
  return { url, adminUrl }
}
