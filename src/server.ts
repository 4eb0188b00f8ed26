// The process around the gateway: listen, close gracefully on signals, and
// the demo that `npm start` runs when no config is given.
import { randomBytes } from 'node:crypto'
import { setDefaultHighWaterMark } from 'node:stream'
import { join, relative, resolve } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { buildGateway, type Gateway, type GatewayOptions } from './app.js'
import { loadConfig } from './config/load.js'
import type { Config } from './config/schema.js'
import { ensureLocalCertificates } from './tls/certificates.js'
import { demoRecordings } from './demo/recordings.js'
import { DEMO_PERIOD_PATTERN, sealDemoTree } from './demo/sealed-tree.js'
import { startDemoNas } from './demo/nas.js'
import { describeExposure } from './proxy/exposure-check.js'
import { DEMO_CASE, DEMO_RETENTION, ensureDemoHold } from './demo/hold.js'
import { issueToken } from './auth/tokens.js'
import { inheritedSockets, listenOn, notifySystemd, socketNote, warnUnusedAdminSocket } from './systemd.js'
import { reloadable } from './config/reload.js'
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
export async function startGateway (config: Readonly<Config>, opts: GatewayOptions & { applied?: Readonly<Config> } = {}): Promise<RunningGateway> {
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
  return next.config
}

export async function runDemo (env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const cwd = process.cwd()
  const dataDir = resolve(cwd, '.nasguard-demo')
  const certs = ensureLocalCertificates(resolve(cwd, 'certs'), ['localhost', '127.0.0.1', '::1'])
  const keyring = join(dataDir, 'keyring')
  const sealed = await sealDemoTree(join(dataDir, 'nas'), keyring, demoRecordings())
  const nas = await startDemoNas(join(dataDir, 'nas'))
  const secret = randomBytes(32).toString('hex')
  const config = loadConfig({
    object: {
      listen: { host: '127.0.0.1', port: 8443 },
      tls: { cert: certs.serverCert, key: certs.serverKey },
      upstream: { url: nas.url },
      auth: { jwt: { secret, algorithms: ['HS256'] } },
      policy: [{ name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] }],
      audit: { dir: join(dataDir, 'audit') },
      admin: { host: '127.0.0.1', port: 9464 },
      sealing: { mode: 'require', keyring, periodPattern: DEMO_PERIOD_PATTERN },
      retention: DEMO_RETENTION
    },
    env
  })
  await ensureDemoHold(config)
  const running = await startGateway(config)
  closeOnSignals(running, async () => { await nas.app.close() })
  const { token } = issueToken(config.auth.jwt, { sub: 'demo-user', scope: 'recordings:read', ttlSeconds: 3600 })
  const base = running.url.replace('127.0.0.1', 'localhost')
  const first = sealed.files.find((r) => r.path.endsWith('.wav')) ?? sealed.files[0]
  const file = first.path
  const dir = file.slice(0, file.lastIndexOf('/') + 1)
  const expired = (sealed.files.find((r) => r.path.startsWith('/medicall/2019/') && r.path.endsWith('.wav')) ?? first).path
  const rel = (f: string): string => relative(cwd, f)
  const ca = certs.caCert
  const line = '='.repeat(78)
  // The lockdown check finds the demo NAS open: shown, as an admin would see it.
  const lockdown = describeExposure(await running.gateway.exposure.once())
  process.stdout.write([
    '', line,
    '  nasguard DEMO MODE: synthetic recordings, a throw-away signing secret,',
    '  loopback only. For real use: nasguard start --config FILE (see README).',
    line,
    `  gateway   ${base}   (in front of the demo NAS at ${nas.url})`,
    `  metrics   ${running.adminUrl ?? '(admin off)'}/metrics`,
    `  audit     ${config.audit.dir}/audit.jsonl`,
    `  CA        ${ca}`,
    '',
    '  Demo token (sub demo-user, scope recordings:read, valid 1 hour):',
    `  TOKEN=${token}`,
    '',
    '  1) No token: 401',
    `     curl -i --cacert ${ca} ${base}${file}`,
    '  2) With the token: the recording',
    `     curl --cacert ${ca} -H "Authorization: Bearer $TOKEN" -o call.wav ${base}${file}`,
    '  3) A directory, even with the token: 403, no listing',
    `     curl -i --cacert ${ca} -H "Authorization: Bearer $TOKEN" ${base}${dir}`,
    '  4) What the NAS holds: sealed names and ciphertext only (the demo NAS lists, on purpose)',
    `     curl -s ${nas.url}${dir}`,
    '  5) Open one offline with age, no nasguard involved (the key stays off the NAS)',
    `     age -d -i ${rel(first.identityFile)} ${rel(first.sealedFile)} > call.wav`,
    '  6) Retention keeps calls 365 days: this 2019 call is past it, 410, and the NAS is not asked',
    `     curl -i --cacert ${ca} -H "Authorization: Bearer $TOKEN" ${base}${expired}`,
    `     (the 2016 calls are older still: a legal hold, case ${DEMO_CASE}, keeps them)`,
    '  7) The gateway checks that the NAS refuses everyone else. This one does not, on purpose:',
    `     ${lockdown}`,
    `     curl -s ${running.adminUrl ?? 'http://127.0.0.1:9464'}/metrics | grep '^nasguard_upstream_exposed'   # 1`,
    '     (a NAS that asks for the gateway\'s credentials, upstream.username, refuses it: then it is 0)',
    line, ''
  ].join('\n'))
}
