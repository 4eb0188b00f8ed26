// A worker of `workers: N`: waits for the primary's init message (config
// and shared keys), starts the gateway on the shared listener with its own
// audit chain, and answers the primary: metrics, readiness, shutdown.
import { chainName } from './audit/chains.js'
import { isMessage, type HelloMessage, type InitMessage, type WorkerReply } from './cluster.js'
import { createLogger } from './logging.js'
import { PrimaryBudgets } from './budgets/ipc-store.js'
import { closeOnSignals, startGateway, type RunningGateway } from './server.js'

function reply (m: WorkerReply): void {
  // The primary may be gone (then this process is about to exit too).
  if (process.connected) process.send?.(m, undefined, {}, () => {})
}

/** In a worker: wait for the primary's init, start the gateway on the shared listener, report ready. */
export async function runWorker (): Promise<void> {
  // Until the gateway is up, a SIGHUP (a certificate renewal) must not kill
  // this process: the new certificate is read at start anyway.
  const early = (): void => {}
  process.on('SIGHUP', early)
  const init = await new Promise<InitMessage>((resolve) => {
    const onMessage = (m: unknown): void => {
      if (isMessage(m) && m.nasguard === 'init') { process.off('message', onMessage); resolve(m) }
    }
    process.on('message', onMessage)
    // Messages sent before a listener exists are lost: ask only now.
    process.send?.({ nasguard: 'hello' } satisfies HelloMessage)
  })
  const { config, index } = init
  // The workers and the primary share stdout: createLogger's writes hold
  // whole lines (at most PIPE_BUF), so their lines never interleave.
  const logger = createLogger(config.log.level, { worker: index })
  let running: RunningGateway
  try {
    running = await startGateway(config, {
      logger,
      auditChain: chainName(index),
      grantsSecret: init.grantsSecret,
      ticketKeys: Buffer.from(init.ticketKeys, 'base64'),
      admin: false,
      ...(init.applied ? { applied: init.applied } : {}),
      // Without Redis, the budgets are the primary's: one book for every worker.
      ...(config.state.redis ? {} : { budgets: new PrimaryBudgets() })
    })
  } catch (err) {
    // The IPC channel would keep this process alive: exit, and the primary sees it.
    process.stderr.write(`nasguard worker ${index}: ${(err as Error).message}\n`, () => process.exit(1))
    return
  }
  const closer = closeOnSignals(running, async () => {}, { worker: true, configFile: init.configFile, watchConfig: config.tls.watch, onApplied: (applied) => { reply({ nasguard: 'reloaded', config: applied }) } })
  process.off('SIGHUP', early)
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return
    if (m.nasguard === 'shutdown') {
      closer.close()
    } else if (m.nasguard === 'readiness?') {
      const id = m.id
      running.gateway.readiness().then((result) => { reply({ nasguard: 'readiness', id, result }) }, () => {})
    } else if (m.nasguard === 'quota?') {
      const { id, op, subject } = m
      const quota = running.gateway.quota
      const done = op === 'usage' ? quota.usage(subject) : quota.reset(subject, m.operator ?? 'unknown')
      done.then((result) => { reply({ nasguard: 'quota', id, result }) }, (err: Error) => { reply({ nasguard: 'quota', id, error: err.message }) })
    } else if (m.nasguard === 'metrics?') {
      const id = m.id
      running.gateway.metrics.registry.getMetricsAsJSON().then((metrics) => { reply({ nasguard: 'metrics', id, metrics }) }, () => {})
    }
  })
  reply({ nasguard: 'ready', index, url: running.url })
}
