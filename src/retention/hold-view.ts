// The gateway's view of the legal holds: read when a request needs them (a
// recording past its retention, or one dated by Last-Modified), and kept
// for a second, so that a burst of such requests reads the store once and a
// hold placed or released is seen within a second. One read at a time.
// The document never goes back in generation: not below the newest one
// read, nor below the newest this host's audit trail records.
import { HoldsProblem, loadHolds, type Hold, type HoldsStore } from './holds.js'

/** How long a floor that could not be read is not asked again. */
const FLOOR_RETRY_MS = 30_000

export type HoldsNow = { ok: true, holds: readonly Hold[] } | { ok: false, problem: string }

export class HoldView {
  private cached: { at: number, value: HoldsNow } | undefined
  private pending: Promise<HoldsNow> | undefined
  /** The highest generation read: the document never goes back. */
  private seen = 0
  /** Whether `floor` was read: until it is, no document is trusted. */
  private floored: boolean
  /** Why the floor could not be read, and when: asked again only FLOOR_RETRY_MS later. */
  private floorFailed: { at: number, problem: string } | undefined

  /**
   * `floor`: the newest generation known before this view's first read (this
   * host's ops chain: auditedGeneration), or why it cannot be known; read
   * until it is known, so that a document put back while no view was
   * watching (a gateway stopped) is caught as one put back while it was.
   */
  constructor (private readonly store: HoldsStore, private readonly key: Buffer, private readonly ttlMs = 1000, private readonly floor?: () => Promise<number | string>, private readonly floorRetryMs = FLOOR_RETRY_MS) {
    this.floored = floor === undefined
  }

  async current (): Promise<HoldsNow> {
    const c = this.cached
    if (c && performance.now() - c.at < this.ttlMs) return c.value
    this.pending ??= this.read().finally(() => { this.pending = undefined })
    return await this.pending
  }

  private async read (): Promise<HoldsNow> {
    let value: HoldsNow
    try {
      // None yet: no hold was ever placed. (The sweep, which destroys, asks for the document itself: hold init.)
      // But a document that was seen and is gone, or older than one seen, was removed or rolled back.
      if (!this.floored) await this.readFloor()
      const doc = await loadHolds(this.store, this.key)
      const generation = doc?.generation ?? 0
      if (generation < this.seen) throw new HoldsProblem(`${this.store.where} ${doc ? `went back from generation ${this.seen} to ${generation}` : `is gone (generation ${this.seen} was seen)`}: restore the newest document`)
      this.seen = generation
      value = { ok: true, holds: doc?.holds ?? [] }
    } catch (err) {
      value = { ok: false, problem: err instanceof HoldsProblem ? err.message : `the legal holds cannot be read: ${(err as Error).message}` }
    }
    this.cached = { at: performance.now(), value }
    return value
  }

  /**
   * The floor, or the problem that keeps it unknown. A floor that cannot be
   * read is asked again only after floorRetryMs: reading it walks the ops
   * chain, and a broken one must not be walked at every holds read.
   */
  private async readFloor (): Promise<void> {
    const failed = this.floorFailed
    if (failed && performance.now() - failed.at < this.floorRetryMs) throw new HoldsProblem(failed.problem)
    let floor: number | string
    try {
      floor = await (this.floor as () => Promise<number | string>)()
    } catch (err) {
      floor = `the newest holds generation the audit trail records cannot be read: ${(err as Error).message}`
    }
    if (typeof floor === 'string') {
      this.floorFailed = { at: performance.now(), problem: floor }
      throw new HoldsProblem(floor)
    }
    this.floorFailed = undefined
    this.seen = Math.max(this.seen, floor)
    this.floored = true
  }
}
