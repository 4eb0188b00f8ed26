// The process around the gateway: listen, and close gracefully on signals
// or reload on SIGHUP.
import { setDefaultHighWaterMark } from 'node:stream'
import closeWithGrace from 'close-with-grace'
import { buildGateway, type Gateway, type GatewayOptions } from './app.js'
import type { Config } from './config/schema.js'
import { inheritedSockets, listenOn, notifySystemd, socketNote, warnUnusedAdminSocket } from './systemd.js'
import { reloadable } from './config/reload.js'
import { envOverrides } from './config/load.js'
import { watchFiles } from './files/watch.js'

export interface RunningGateway { gateway: Gateway, url: string, adminUrl: string | null }

function urlOf (address: string, scheme: string): string {
  const u = new URL(address.replace(/^https?:/, scheme))
  return u.origin
}

/** Stream buffer size for this process's sockets and bodies (Node 20 defaults to 16 KiB; Node 22 to 64 KiB). */
export const STREAM_HIGH_WATER_MARK = 64 * 1024

/**
 * applied: a config reloaded since `config` was started with (a worker
 * restarted after a reload), applied as a reload is before the first
 * request: what needs a restart is still judged against `config`.
 */
export async function startGateway (config: Readonly<Config>, opts: GatewayOptions = {}): Promise<RunningGateway> {
  // Bigger buffers mean fewer pause/resume round trips between the NAS
  // socket and the client's TLS socket on long recordings (bench W2).
  setDefaultHighWaterMark(false, STREAM_HIGH_WATER_MARK)
  const gateway = await buildGateway(config, opts)
  if (opts.applied) gateway.reloadConfig(opts.applied)
  // Every listener or none: a gateway serving without its admin listener
  // has no metrics and no readiness, and a failure to listen is a failed
  // start (exit 1), with what was opened closed again.
  try {
    // Under socket activation systemd holds the ports (443 needs no
    // capability then) and listen.host/port and admin.host/port are not used.
    const sockets = inheritedSockets()
    const address = await listenOn('gateway', config.listen, sockets.gateway, (at) => gateway.app.listen({ ...at, listenTextResolver: (a) => `gateway listening at ${urlOf(a, 'https:')}${socketNote(sockets.gateway)}` }))
    let adminUrl: string | null = null
    if (!gateway.admin) warnUnusedAdminSocket(sockets, gateway.app.log)
    if (gateway.admin) {
      const admin = gateway.admin
      adminUrl = urlOf(await listenOn('admin', config.admin, sockets.admin, (at) => admin.listen({ ...at, listenTextResolver: (a) => `admin (metrics, health) listening at ${a}${socketNote(sockets.admin)}` })), 'http:')
    }
    // Type=notify: ready once every listener is up (a worker leaves this to its primary).
    void notifySystemd('ready', gateway.app.log, `serving on ${urlOf(address, 'https:')}`)
    return { gateway, url: urlOf(address, 'https:'), adminUrl }
  } catch (err) {
    await gateway.close()
    throw err
  }
}

/**
 * Graceful close on SIGINT/SIGTERM: stop accepting, let streams finish (up
 * to limits.drainTimeoutMs, then cut them), flush the audit trail, exit 0.
 * SIGHUP reloads the certificate.
 *
 * One process: a second signal while closing exits at once (a second
 * Ctrl-C means it). A worker is asked to close twice as a rule (Ctrl-C and
 * systemd signal the whole group, and its primary asks over IPC), so with
 * `worker` it handles SIGINT/SIGTERM itself and closes once, gracefully; a
 * forced stop is the primary's business (a worker exits with its primary).
 */
export function closeOnSignals (running: RunningGateway, extra: () => Promise<void> = async () => {}, opts: { worker?: boolean, configFile?: string, watchConfig?: boolean, onApplied?: (config: Config) => void } = {}): { close: () => void } {
  const reloadFile = (file: string): void => {
    const next = reloadConfigFile(running.gateway, file)
    if (next) opts.onApplied?.(next)
  }
  const reload = (): void => {
    if (opts.configFile) reloadFile(opts.configFile)
    else running.gateway.reloadKeyring()
    running.gateway.reloadCertificate()
  }
  process.on('SIGHUP', reload)
  const stopWatching = opts.configFile && opts.watchConfig === true ? watchFiles([opts.configFile], () => { if (opts.configFile) reloadFile(opts.configFile) }) : () => {}
  let closing = false
  // SIGHUP means reload here, not close (close-with-grace closes on it by
  // default). The gateway's close() cuts what is left at its drain deadline
  // and then flushes the trail. The backstop behind it is set when the close
  // starts, from the drain deadline then in force (a reload may have changed
  // it), so close-with-grace's own timer (fixed at start) is off.
  const grace = closeWithGrace({ delay: null, skip: opts.worker ? ['SIGHUP', 'SIGINT', 'SIGTERM'] : ['SIGHUP'] }, async ({ signal, err }) => {
    closing = true
    stopWatching()
    const log = running.gateway.app.log
    const backstop = running.gateway.drainTimeoutMs + 10000
    setTimeout(() => {
      log.error({ timeoutMs: backstop }, 'the close did not finish within the drain deadline plus 10 s: exiting')
      process.exit(1)
    }, backstop)
    if (err) log.error({ err: { type: err.name, message: err.message, stack: err.stack } }, 'fatal error, closing')
    else log.info({ signal }, 'closing')
    void notifySystemd('stopping', log)
    await running.gateway.close()
    await extra()
  })
  const close = (): void => { if (!closing) { closing = true; void grace.close() } }
  if (opts.worker) for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, close)
  return { close }
}

/** Loads the config file again and applies it (and returns it), or logs why it was refused (the running config stays). */
export function reloadConfigFile (gateway: Gateway, file: string): Config | undefined {
  const next = reloadable(file)
  if ('error' in next) {
    gateway.metrics.configReloads.inc({ result: 'failed' })
    gateway.app.log.error({ file, reason: next.error }, 'config reload refused: the running config stays')
    return undefined
  }
  gateway.reloadConfig(next.config)
  const shadowed = envOverrides(process.env, file).filter((o) => o.shadows)
  if (shadowed.length > 0) gateway.app.log.warn({ keys: shadowed.map((o) => o.key), variables: shadowed.map((o) => o.name) }, 'the environment overrides these keys of the config file: their values in the file do not apply')
  return next.config
}
