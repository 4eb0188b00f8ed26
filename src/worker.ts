// A worker of `workers: N`: waits for the primary's init message (config
// and shared keys), starts the gateway on the shared listener with its own
// audit chain, and answers the primary's metrics and readiness requests.
import { AggregatorRegistry } from 'prom-client'
import { isMessage, workerChainDir, type HelloMessage, type InitMessage, type ReadinessReply, type ReadyMessage } from './cluster.js'
import { createLogger } from './logging.js'
import { closeOnSignals, startGateway, type RunningGateway } from './server.js'

/** In a worker: wait for the primary's init, start the gateway on the shared listener, report ready. */
export async function runWorker (): Promise<void> {
  const init = await new Promise<InitMessage>((resolve) => {
    const onMessage = (m: unknown): void => {
      if (isMessage(m) && m.nasguard === 'init') { process.off('message', onMessage); resolve(m) }
    }
    process.on('message', onMessage)
    // Messages sent before a listener exists are lost: ask only now.
    process.send?.({ nasguard: 'hello' } satisfies HelloMessage)
  })
  const { config, index } = init
  const logger = createLogger(config.log.level, { worker: index })
  let running: RunningGateway
  try {
    running = await startGateway(config, {
      logger,
      auditDir: workerChainDir(config, index),
      grantsSecret: init.grantsSecret,
      ticketKeys: Buffer.from(init.ticketKeys, 'base64'),
      admin: false
    })
  } catch (err) {
    // The IPC channel would keep this process alive: exit, and the primary sees it.
    process.stderr.write(`nasguard worker ${index}: ${(err as Error).message}\n`, () => process.exit(1))
    return
  }
  // The primary's /metrics asks every worker for its registry.
  // (Constructing one installs prom-client's worker-side listener.)
  AggregatorRegistry.setRegistries([running.gateway.metrics.registry])
  void new AggregatorRegistry()
  process.on('message', (m: unknown) => {
    if (!isMessage(m) || m.nasguard !== 'readiness?') return
    const id = m.id
    running.gateway.readiness().then((result) => {
      process.send?.({ nasguard: 'readiness', id, result } satisfies ReadinessReply)
    }, () => {})
  })
  closeOnSignals(running)
  process.send?.({ nasguard: 'ready', index, url: running.url } satisfies ReadyMessage)
}
