// Admission of a fetch to the NAS. A client address may have at most
// limits.clientFetches downloads in flight, and the gateway at most
// upstream.connections; a fetch that finds every NAS connection busy waits in
// line for at most upstream.queueTimeoutMs, then is refused (503 with
// Retry-After) instead of hanging. undici's own pool queue has no bound on
// waiting, so the pool is never asked for more than this lets through.
import { Errors } from '../errors.js'
import { PerClientCount } from '../limits/per-client.js'

export interface AdmissionLimits {
  /** NAS connections this process may hold for downloads. */
  connections: number
  /** How long a fetch may wait for one, ms. */
  queueTimeoutMs: number
  /** Downloads in flight per client address. */
  clientFetches: number
}

/** One admitted fetch. release() is idempotent and must be called once the response is over. */
export interface Ticket {
  /**
   * Resolves once a NAS connection is the fetch's (undefined: it already
   * is), or when the ticket is released while it waits (the client left);
   * rejects with UpstreamBusy when none came free in time.
   */
  ready: Promise<void> | undefined
  release: () => void
}

interface Waiter { grant: () => void, cancel: () => void, timer: NodeJS.Timeout }

export class Admission {
  private inUse = 0
  private readonly queue: Waiter[] = []
  private readonly perClient: PerClientCount

  constructor (private limits: AdmissionLimits) {
    this.perClient = new PerClientCount(limits.clientFetches)
  }

  /** A config reload: new waits and client caps apply from now; the NAS connection count needs a restart (the pool is sized at start). */
  setLimits (limits: Omit<AdmissionLimits, 'connections'>): void {
    this.limits = { ...limits, connections: this.limits.connections }
    this.perClient.cap = limits.clientFetches
  }

  /** Fetches holding a NAS connection. */
  get active (): number { return this.inUse }
  /** Fetches waiting for one. */
  get waiting (): number { return this.queue.length }

  /** Throws ClientBusy when the client is at its cap; otherwise the fetch holds, or waits for, a NAS connection. */
  admit (client: string): Ticket {
    if (!this.perClient.take(client)) throw new Errors.ClientBusy()
    let state: 'waiting' | 'holding' | 'done' = 'holding'
    let waiter: Waiter | undefined
    const release = (): void => {
      if (state === 'done') return
      if (state === 'holding') this.hand()
      state = 'done'
      if (waiter) {
        this.leave(waiter)
        waiter.cancel()
      }
      this.perClient.give(client)
    }
    if (this.inUse < this.limits.connections) {
      this.inUse++
      return { ready: undefined, release }
    }
    state = 'waiting'
    const ready = new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        grant: () => { waiter = undefined; state = 'holding'; resolve() },
        cancel: resolve,
        timer: setTimeout(() => {
          waiter = undefined
          this.leave(w)
          release()
          reject(new Errors.UpstreamBusy())
        }, this.limits.queueTimeoutMs)
      }
      waiter = w
      this.queue.push(w)
    })
    return { ready, release }
  }

  /** A NAS connection came free: the longest waiter gets it, or it is returned. */
  private hand (): void {
    const next = this.queue.shift()
    if (!next) {
      this.inUse--
      return
    }
    clearTimeout(next.timer)
    next.grant()
  }

  private leave (w: Waiter): void {
    clearTimeout(w.timer)
    const i = this.queue.indexOf(w)
    if (i >= 0) this.queue.splice(i, 1)
  }
}
