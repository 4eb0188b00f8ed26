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
// - Budgets (limits.perSubject): without state.redis, one book in the
//   primary that every worker asks over IPC (src/budgets/ipc-store.ts); with
//   it, Redis. `nasguard quota` reaches the primary, which asks a worker.
// - Playback grants and TLS session tickets: keys made once by the primary
//   and handed to every worker over IPC, so a grant or a ticket from one
//   worker is good on the next connection, whichever worker takes it.
// - Signals: SIGTERM/SIGINT close the workers gracefully, SIGHUP is passed
//   on (certificate reload). A worker that dies is restarted.
import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { join } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { AggregatorRegistry, Counter, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import { adminCredential, buildAdmin, type QuotaControl, type Readiness } from './admin.js'
import { answerBudget, isBudgetRequest, type BudgetReply } from './budgets/ipc-store.js'
import { LocalBudgets } from './budgets/store.js'
import { auditKeyFile, grantsSecret, workerCount } from './config/derived.js'
import { loadAuditKey } from './audit/key.js'
import { chainName, recordChains } from './audit/chains.js'
import { releaseLock, takeLock } from './audit/lock.js'
import { trailFiles } from './audit/verify.js'
import { AUDIT_FILE, HEAD_FILE } from './audit/writer.js'
import type { Config } from './config/schema.js'
import { createLogger } from './logging.js'
import { CLUSTER_GATEWAY_FD_ENV, inheritedSockets, listenOn, notifySystemd, socketNote, warnUnusedAdminSocket } from './systemd.js'

export { workerCount } from './config/derived.js'

/** The directory of worker i's audit chain. */
export function workerChainDir (config: Readonly<Config>, index: number): string {
  return join(config.audit.dir, chainName(index))
}

export interface HelloMessage { nasguard: 'hello' }
/** configFile: where a worker reloads its config from on SIGHUP (or when the file changes). */
/** applied: the config a worker last applied by reload (SIGHUP, the file watch), which a worker started since applies before it listens. */
export interface InitMessage { nasguard: 'init', index: number, config: Config, applied?: Config, configFile?: string, grantsSecret: string, ticketKeys: string }
/** A worker applied a reloaded config. */
export interface ReloadedMessage { nasguard: 'reloaded', config: Config }
export interface ReadyMessage { nasguard: 'ready', index: number, url: string }
export interface ReadinessRequest { nasguard: 'readiness?', id: number }
export interface ReadinessReply { nasguard: 'readiness', id: number, result: Readiness }
export interface MetricsRequest { nasguard: 'metrics?', id: number }
export interface MetricsReply { nasguard: 'metrics', id: number, metrics: Array<MetricObjectWithValues<MetricValue<string>>> }
export interface ShutdownMessage { nasguard: 'shutdown' }
/** `nasguard quota show|reset` reach the primary's admin listener; a worker answers them (and audits a reset in its chain). */
export interface QuotaRequest { nasguard: 'quota?', id: number, op: 'usage' | 'reset', subject: string, operator?: string }
export interface QuotaReply { nasguard: 'quota', id: number, result?: unknown, error?: string }
/** What a worker sends the primary. */
export type WorkerReply = ReadyMessage | ReadinessReply | MetricsReply | QuotaReply | ReloadedMessage
type Message = HelloMessage | InitMessage | ReloadedMessage | ReadyMessage | ReadinessRequest | ReadinessReply | MetricsRequest | MetricsReply | ShutdownMessage | QuotaRequest | QuotaReply | BudgetReply

export function isMessage (m: unknown): m is Message {
  return typeof m === 'object' && m !== null && typeof (m as { nasguard?: unknown }).nasguard === 'string'
}

/** A worker that died within this long of starting counts towards the back-off. */
const STABLE_MS = 30000
/** A worker that is not listening after this long is given up on. */
const START_TIMEOUT_MS = 60000
/** How long a worker gets beyond its drain deadline to cut, record and flush before it is killed. */
const CLOSE_MARGIN_MS = 10000

interface Slot { index: number, worker: Worker, ready: boolean, readyAt: number }

/**
 * In the primary: make the shared keys, start the workers, serve the admin
 * listener, restart workers that die, and close them all on a signal.
 * Resolves once every worker is listening; rejects if one fails to start.
 */
export async function runPrimary (config: Readonly<Config>, configFile?: string): Promise<{ url: string, adminUrl: string | null }> {
  const count = workerCount(config)
  // Synchronous log writes: the workers and the primary share stdout.
  const log = createLogger(config.log.level, { role: 'primary' })
  let closing = false
  const slots = new Map<number, Slot>()
  // Passed on to the ready workers. A worker starting (or waiting to be
  // restarted) then gets it once it is ready: it started from the config the
  // primary handed it, which may predate the reload.
  const missedReload = new Set<number>()
  process.on('SIGHUP', () => {
    for (let i = 0; i < count; i++) {
      const s = slots.get(i)
      if (s?.ready === true && s.worker.isConnected()) s.worker.process.kill('SIGHUP')
      else missedReload.add(i)
    }
  })

  // Made here once: the workers must not race to create the audit key.
  const auditKey = loadAuditKey(auditKeyFile(config), config.audit.dir)
  mkdirSync(config.audit.dir, { recursive: true, mode: 0o700 })
  // One gateway per audit directory: the primary holds the directory's own
  // lock (the one a single-process gateway writes under) while it runs, so
  // neither starts beside the other (each would rewrite audit.chains).
  const dirLock = await takeLock(config.audit.dir)
  // A trail written by a single process in audit.dir is a chain of the list
  // too, so that deleting it once workers run is reported as well.
  if (trailFiles(config.audit.dir).length > 0 || existsSync(join(config.audit.dir, HEAD_FILE))) recordChains(config.audit.dir, auditKey, ['.'])
  // Every worker's chain exists (an empty audit.jsonl) and is listed before
  // any worker starts: a worker stopped at any point of its start leaves
  // neither an unlisted chain nor a listed one without files.
  for (let i = 0; i < count; i++) {
    const chain = workerChainDir(config, i)
    mkdirSync(chain, { recursive: true, mode: 0o700 })
    closeSync(openSync(join(chain, AUDIT_FILE), 'a', 0o600))
  }
  recordChains(config.audit.dir, auditKey, Array.from({ length: count }, (_, i) => chainName(i)))
  const grants = grantsSecret(config) ?? randomBytes(32).toString('hex')
  // Budgets without Redis: one book here, asked by every worker.
  if (!config.state.redis) {
    const book = new LocalBudgets(Date.now)
    // One batch after another, each whole: a worker's settlement is in before its next check.
    let answering = Promise.resolve()
    cluster.on('message', (w: Worker, m: unknown) => {
      if (isBudgetRequest(m)) answering = answering.then(async () => { await answerBudget(book, m, (r) => { send(w, r) }) }).catch(() => {})
    })
  }
  const ticketKeys = randomBytes(48).toString('base64')
  // What the workers run by now: a worker restarted after a reload applies
  // it too, or a rule the reload removed would come back with it.
  let applied: Config | undefined
  const restarts = new Map<number, number>()
  // The primary's own metrics, beside the workers' sums: a worker that keeps dying shows here, not only in the log.
  const own = new Registry()
  const workerRestarts = new Counter({ name: 'nasguard_worker_restarts_total', help: 'Workers that died and were restarted by the primary', registers: [own] })
  // Socket activation: this process holds systemd's sockets (read and unset
  // here, before any fork); a worker's listen({ fd }) asks node:cluster in
  // this process for the listener on that fd, so the worker is told its number.
  const sockets = inheritedSockets()
  const workerEnv = sockets.gateway === undefined ? {} : { [CLUSTER_GATEWAY_FD_ENV]: String(sockets.gateway) }

  const send = (w: Worker, m: Message): boolean => {
    if (!w.isConnected()) return false
    w.send(m, undefined, {}, () => {})
    return true
  }

  /** Starts worker `index`; resolves with its URL once it listens, rejects if it exits or hangs first. */
  const fork = (index: number): Promise<string> => new Promise((resolve, reject) => {
    const w = cluster.fork(workerEnv)
    const slot: Slot = { index, worker: w, ready: false, readyAt: 0 }
    slots.set(index, slot)
    let settled = false
    const timer = setTimeout(() => {
      if (settled) return
      settled = true
      reject(new Error(`worker ${index} did not start listening within ${START_TIMEOUT_MS / 1000} s`))
      w.process.kill('SIGKILL')
    }, START_TIMEOUT_MS)
    timer.unref()
    // A send racing the worker's exit must not throw in the primary.
    w.on('error', () => {})
    w.on('message', (m: unknown) => {
      if (!isMessage(m)) return
      if (m.nasguard === 'hello') send(w, { nasguard: 'init', index, config: config as Config, ...(applied ? { applied } : {}), configFile, grantsSecret: grants, ticketKeys })
      if (m.nasguard === 'reloaded') applied = m.config
      if (m.nasguard === 'ready' && !settled) {
        settled = true
        clearTimeout(timer)
        slot.ready = true
        slot.readyAt = Date.now()
        if (missedReload.delete(index)) w.process.kill('SIGHUP')
        resolve(m.url)
      }
    })
    w.once('exit', (code, signal) => {
      slot.ready = false
      clearTimeout(timer)
      if (closing) return
      // One that never got ready failed its start: whoever forked it decides (the first start fails; a restart is tried again).
      if (slot.readyAt === 0) {
        if (!settled) reject(new Error(`worker ${index} exited during start (${signal ?? `code ${code}`}); its error is above`))
        settled = true
        return
      }
      log.error({ worker: index, code, signal, restartInMs: restartLater(slot) }, 'worker died: restarting it')
    })
  })

  /**
   * Starts worker `index` again after a back-off, and again while it fails
   * to start. The back-off grows for a worker that keeps dying soon after it
   * started, or failing to start; returns it.
   */
  const restartLater = (slot: Slot): number => {
    const { index } = slot
    const n = slot.readyAt > 0 && Date.now() - slot.readyAt > STABLE_MS ? 1 : (restarts.get(index) ?? 0) + 1
    restarts.set(index, n)
    const delay = Math.min(30000, 250 * 2 ** Math.min(n, 7))
    workerRestarts.inc()
    setTimeout(() => {
      if (closing) return
      fork(index).catch((err: Error) => {
        const failed = slots.get(index) as Slot
        log.error({ worker: index, reason: err.message, restartInMs: restartLater(failed) }, 'worker restart failed: trying again')
      })
    }, delay).unref()
    return delay
  }

  /** Asks every worker to close (IPC, not a second signal), then waits for them to exit. */
  const stopWorkers = async (): Promise<void> => {
    closing = true
    const exits = [...slots.values()].filter((s) => !s.worker.isDead()).map((s) => new Promise<void>((resolve) => {
      s.worker.once('exit', () => resolve())
      // A worker not yet serving has nothing to finish: stop it outright.
      if (!s.ready || !send(s.worker, { nasguard: 'shutdown' })) s.worker.process.kill('SIGTERM')
      setTimeout(() => { if (!s.worker.isDead()) s.worker.process.kill('SIGKILL') }, config.limits.drainTimeoutMs + CLOSE_MARGIN_MS).unref()
    }))
    await Promise.all(exits)
  }

  // From here on a signal closes the workers gracefully, also while they start.
  let admin: ReturnType<typeof buildAdmin> | null = null
  const grace = closeWithGrace({ delay: config.limits.drainTimeoutMs + CLOSE_MARGIN_MS + 2000, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err) log.error({ err: { type: err.name, message: err.message, stack: err.stack } }, 'fatal error in the primary, closing')
    else log.info({ signal }, 'closing the workers')
    void notifySystemd('stopping', log)
    await stopWorkers()
    await admin?.close()
    await releaseLock(dirLock)
  })

  let url: string
  try {
    const urls = await Promise.all(Array.from({ length: count }, (_, i) => fork(i)))
    url = urls[0]
  } catch (err) {
    // A failed start ends with its error and exit code 1, not a graceful 0.
    grace.uninstall()
    await stopWorkers()
    await releaseLock(dirLock)
    throw err
  }

  // Requests to the ready workers, answered by id (readiness, metrics, quota).
  let nextId = 0
  const pending = new Map<number, (m: ReadinessReply | MetricsReply | QuotaReply) => void>()
  cluster.on('message', (_w: Worker, m: unknown) => {
    if (isMessage(m) && (m.nasguard === 'readiness' || m.nasguard === 'metrics' || m.nasguard === 'quota')) pending.get(m.id)?.(m)
  })
  const ask = <T extends ReadinessReply | MetricsReply | QuotaReply>(w: Worker, m: ReadinessRequest | MetricsRequest | QuotaRequest): Promise<T | undefined> => new Promise((resolve) => {
    const id = m.id
    const timer = setTimeout(() => { pending.delete(id); resolve(undefined) }, 3000)
    pending.set(id, (r) => { clearTimeout(timer); pending.delete(id); resolve(r as T) })
    if (!send(w, m)) { clearTimeout(timer); pending.delete(id); resolve(undefined) }
  })
  const live = (): Slot[] => [...slots.values()].filter((s) => s.ready && s.worker.isConnected())

  const readiness = async (): Promise<Readiness> => {
    const up = live()
    const answers = await Promise.all(up.map((s) => ask<ReadinessReply>(s.worker, { nasguard: 'readiness?', id: ++nextId })))
    const checks: Record<string, string> = { workers: up.length === count ? 'ok' : `${up.length}/${count} running` }
    for (const a of answers) {
      const c = a?.result.checks ?? { worker: 'no answer' }
      // The worst answer shows: a NAS one worker found exposed is not hidden by another's "not checked yet".
      for (const [k, v] of Object.entries(c)) if (checks[k] === undefined || checks[k] === 'ok' || (v.startsWith('exposed') && !checks[k].startsWith('exposed'))) checks[k] = v
    }
    return { ready: up.length === count && answers.every((a) => a?.result.ready === true), checks }
  }

  // /metrics: the ready workers' registries, summed (prom-client's
  // aggregation; gauges say how they combine). A worker that restarted
  // starts its counters from zero, which Prometheus reads as a reset.
  const metricsText = async (): Promise<string> => {
    const replies = await Promise.all(live().map((s) => ask<MetricsReply>(s.worker, { nasguard: 'metrics?', id: ++nextId })))
    const workers = AggregatorRegistry.aggregate(replies.filter((r): r is MetricsReply => r !== undefined).map((r) => r.metrics))
    return await Registry.merge([workers as Registry, own]).metrics()
  }

  // `nasguard quota`: asked of one ready worker, whose store is everyone's.
  const quotaOf = async (op: 'usage' | 'reset', subject: string, operator?: string): Promise<unknown> => {
    const w = live()[0]
    if (!w) throw new Error('no worker is running')
    const r = await ask<QuotaReply>(w.worker, { nasguard: 'quota?', id: ++nextId, op, subject, operator })
    if (!r) throw new Error('the worker did not answer')
    if (r.error !== undefined) throw new Error(r.error)
    return r.result
  }
  const quota: QuotaControl = {
    usage: async (subject) => await quotaOf('usage', subject) as Record<string, unknown>,
    reset: async (subject, operator) => await quotaOf('reset', subject, operator) as boolean
  }
  admin = config.admin.enabled
    ? buildAdmin({ contentType: AggregatorRegistry.PROMETHEUS_CONTENT_TYPE, text: metricsText }, log, readiness, adminCredential(config), quota)
    : null
  let adminUrl: string | null = null
  if (!admin) warnUnusedAdminSocket(sockets, log)
  if (admin) {
    const listener = admin
    try {
      adminUrl = new URL(await listenOn('admin', config.admin, sockets.admin, (at) => listener.listen({ ...at, listenTextResolver: (a) => `admin (metrics, health) listening at ${a}${socketNote(sockets.admin)}` }))).origin
    } catch (err) {
      // As for a worker that cannot listen: the start fails, the workers go.
      grace.uninstall()
      await stopWorkers()
      await releaseLock(dirLock)
      throw err
    }
  }

  log.info({ address: url, admin: adminUrl, workers: count }, 'nasguard listening')
  // Type=notify: every worker listens and the admin listener is up.
  void notifySystemd('ready', log, `serving on ${url} with ${count} workers`)
  return { url, adminUrl }
}
