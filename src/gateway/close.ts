// Closing the gateway: stop accepting, let downloads in flight finish for
// limits.drainTimeoutMs (as it is when the close starts: a reload may have
// changed it), cut what is left (its completion records say `shutdown`),
// then release the NAS pool and flush the audit trail and its lock. Safe
// to call more than once.
import type { FastifyInstance } from 'fastify'
import type { AuditWriter } from '../audit/writer.js'
import type { RefusalTally } from '../limits/refusal-tally.js'
import type { TlsServer } from '../tls/server.js'
import type { Deliveries } from './deliveries.js'

export interface ClosingParts {
  app: FastifyInstance
  admin: FastifyInstance | null
  deliveries: Deliveries
  tls: () => TlsServer | undefined
  upstream: { close: () => Promise<void> }
  /** Refusals summed per address, reported once more on close so that none goes unrecorded. */
  refusalTallies: RefusalTally[]
  stopRevocations: () => Promise<void>
  audit: AuditWriter
  /** The records the trail did not take yet: tried once more before it closes. */
  records: { close: () => Promise<void> }
  drainTimeoutMs: () => number
}

export function closer (p: ClosingParts): () => Promise<void> {
  let closing: Promise<void> | undefined
  return async () => {
    closing ??= (async () => {
      const closed = Promise.all([p.app.close(), p.admin?.close()])
      let deadline: NodeJS.Timeout | undefined
      const drained = await Promise.race([
        closed.then(() => true),
        new Promise<false>((resolve) => { deadline = setTimeout(() => resolve(false), p.drainTimeoutMs()) })
      ])
      clearTimeout(deadline)
      if (!drained) {
        p.app.log.warn({ streams: p.deliveries.inFlight }, 'drain deadline passed: cutting the downloads still in flight')
        p.deliveries.cutAll()
        // Connections that still do not close (a client that stopped
        // reading its socket) are destroyed a moment later.
        const stragglers = setTimeout(() => p.tls()?.destroyConnections(), 1000)
        await closed
        clearTimeout(stragglers)
      }
      await p.upstream.close()
      for (const t of p.refusalTallies) t.flush()
      await p.stopRevocations()
      await p.records.close()
      await p.audit.close()
    })()
    return await closing
  }
}
