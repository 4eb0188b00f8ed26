// Refusals that can come by the thousand (connections over a client's cap)
// are summed per client address and reported once per interval, so that an
// attacker cannot turn them into an audit and log storm. Nothing is dropped:
// every refusal is in some report's count.
export class RefusalTally {
  private readonly counts = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly report: (client: string, count: number) => void, private readonly intervalMs = 1000) {}

  note (client: string): void {
    this.counts.set(client, (this.counts.get(client) ?? 0) + 1)
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.intervalMs)
      this.timer.unref()
    }
  }

  /** Reports what was noted since the last report (also on close). */
  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    const counts = [...this.counts]
    this.counts.clear()
    for (const [client, count] of counts) this.report(client, count)
  }
}
