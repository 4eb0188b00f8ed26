// How many of something (connections, downloads) each client address holds,
// against a cap. Addresses at zero are forgotten, so the map holds only the
// clients with something open.
export class PerClientCount {
  private readonly counts = new Map<string, number>()

  /** The cap may be changed (a config reload); clients above a lowered cap keep what they hold. */
  constructor (public cap: number) {}

  /** Counts one more for the client; false (and nothing counted) when it is at the cap. */
  take (client: string): boolean {
    const n = this.counts.get(client) ?? 0
    if (n >= this.cap) return false
    this.counts.set(client, n + 1)
    return true
  }

  give (client: string): void {
    const n = (this.counts.get(client) ?? 1) - 1
    if (n > 0) this.counts.set(client, n)
    else this.counts.delete(client)
  }
}
