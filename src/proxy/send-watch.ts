// Slow readers. A client that takes a recording slower than
// limits.minSendRate bytes a second, over any window of limits.sendTimeoutMs,
// or takes nothing at all for that long, is cut off, and its NAS request with
// it: otherwise a reader taking 5 bytes a second holds a NAS connection and
// the response's buffers for days.
//
// Only time in which the client had bytes waiting counts against it: a
// response waiting on a slow NAS is the NAS's business (upstream.timeoutMs).
// One timer serves every response in flight.
//
// The same watch judges the NAS's side (nas-pace.ts), with "behind" meaning
// that the gateway waits on the NAS, and "delivered" the bytes it sent.

export interface Watched {
  /** Body bytes the client has taken so far. */
  delivered: () => number
  /** Bytes written for the client that it has not taken yet. */
  backlog: () => number
  /** The client is too slow: end the response. */
  cut: (reason: 'stalled' | 'too_slow') => void
}

interface Entry {
  watched: Watched
  samples: Array<{ at: number, delivered: number }>
  /** What was delivered at the last look, and whether bytes were waiting then. */
  last: { delivered: number, behind: boolean }
  /** The largest step of progress seen while the client was behind (the kernel's wake-up quantum). */
  step: number
}

export interface SendWatchLimits {
  /** The window, ms (limits.sendTimeoutMs). */
  windowMs: number
  /** Bytes a second the client must take over each window (0: only a client that takes nothing is cut). */
  minBytesPerSec: number
}

export class SendWatch {
  private readonly entries = new Map<object, Entry>()
  private timer: NodeJS.Timeout | undefined
  /** How often responses are looked at: the cut comes at most this long after the window. */
  private tickMs: number
  /** How far apart kept samples are: a handful per response, whatever the window. */
  private sampleMs: number

  constructor (private limits: SendWatchLimits, private readonly now: () => number = Date.now) {
    this.tickMs = Math.max(25, Math.min(1000, Math.floor(limits.windowMs / 4)))
    this.sampleMs = Math.max(this.tickMs, Math.floor(limits.windowMs / 16))
  }

  /** A config reload: the new window and rate apply to every response from the next look. */
  setLimits (limits: SendWatchLimits): void {
    this.limits = limits
    this.tickMs = Math.max(25, Math.min(1000, Math.floor(limits.windowMs / 4)))
    this.sampleMs = Math.max(this.tickMs, Math.floor(limits.windowMs / 16))
    if (this.timer) {
      clearInterval(this.timer)
      this.timer = setInterval(() => this.tick(), this.tickMs)
      this.timer.unref()
    }
  }

  add (key: object, watched: Watched): void {
    const delivered = watched.delivered()
    this.entries.set(key, { watched, samples: [{ at: this.now(), delivered }], last: { delivered, behind: false }, step: 0 })
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.tickMs)
      this.timer.unref()
    }
  }

  delete (key: object): void {
    this.entries.delete(key)
    if (this.entries.size === 0 && this.timer) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }

  /** Looks at every response once; exported for tests that drive the clock. */
  tick (): void {
    const now = this.now()
    for (const [key, entry] of this.entries) {
      const reason = this.judge(entry, now)
      if (reason) {
        this.delete(key)
        entry.watched.cut(reason)
      }
    }
  }

  /**
   * The window a client is judged over. Progress is seen in steps (HTTP/1.1:
   * the kernel wakes the writer once a third of the socket's send buffer is
   * free; HTTP/2: a write completes): a client that has shown steps of S
   * bytes while behind gets the time S takes at minSendRate, up to five
   * windows, before it counts as taking nothing.
   */
  private windowFor (entry: Entry): number {
    const w = this.limits.windowMs
    if (this.limits.minBytesPerSec === 0) return w
    return Math.min(5 * w, Math.max(w, entry.step * 1000 / this.limits.minBytesPerSec))
  }

  private judge (entry: Entry, now: number): 'stalled' | 'too_slow' | undefined {
    const delivered = entry.watched.delivered()
    const { samples } = entry
    const behind = entry.watched.backlog() > 0
    // A step taken while the client was behind (not the first fill of the buffers).
    if (entry.last.behind && delivered > entry.last.delivered) entry.step = Math.max(entry.step, delivered - entry.last.delivered)
    entry.last = { delivered, behind }
    // Nothing waits for the client: it keeps up. The window starts again.
    if (!behind) {
      samples.length = 0
      samples.push({ at: now, delivered })
      return undefined
    }
    if (now - samples[samples.length - 1].at >= this.sampleMs) samples.push({ at: now, delivered })
    const from = now - this.windowFor(entry)
    while (samples.length > 1 && samples[1].at <= from) samples.shift()
    const first = samples[0]
    if (first.at > from) return undefined
    const taken = delivered - first.delivered
    if (taken <= 0) return 'stalled'
    return taken < this.limits.minBytesPerSec * (now - first.at) / 1000 ? 'too_slow' : undefined
  }
}
