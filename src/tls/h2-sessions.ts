// The HTTP/2 sessions of the public listener. Two things Node's HTTP/2 layer
// does out of the gateway's sight are made visible here:
// - Streams that nghttp2 resets before any of their headers reach
//   JavaScript (an upper-case or connection-specific header name, a
//   repeated pseudo-header, more headers than maxHeaderListPairs): the
//   session's last processed stream id runs ahead of the streams the
//   gateway was given, and the difference is those streams. They carry
//   nothing that tells them apart, so they are counted per connection.
// - A session that sent an error GOAWAY stops reading its socket and never
//   closes on its own; close() would wait for it for ever. A session with
//   no stream open is destroyed instead of closed.
// - Idleness is judged by requests, not frames: a client that only sends
//   PINGs keeps a session's socket busy, and Node's session timeout with
//   it; a session with no stream open for idleMs is retired.
import type { Http2Session, ServerHttp2Stream } from 'node:http2'

export interface SessionWatchHooks {
  /** `count` streams of one connection were reset by the protocol layer. */
  onProtocolResets: (count: number, remoteAddress: string | undefined) => void
}

interface Tracked {
  /** Highest client stream id the gateway was given (-1: none yet). */
  lastSeen: number
  open: number
  /** Runs while no stream is open. */
  idle?: NodeJS.Timeout
  /** Streams counted as reset so far. */
  counted: number
  remoteAddress: string | undefined
  bytesRead: () => number
}

/**
 * The fewest bytes a client sends per stream it opens: a frame header (9)
 * and a header block of at least one byte. A client may skip stream ids, so
 * ids alone could claim a billion resets for one request; what it sent
 * bounds what it can have had reset.
 */
const MIN_BYTES_PER_STREAM = 10

export class SessionWatch {
  private readonly sessions = new Map<Http2Session, Tracked>()

  /** @param idleMs a session with no stream open for this long is retired */
  constructor (private readonly hooks: SessionWatchHooks, private readonly idleMs: number) {}

  private idleFrom (session: Http2Session, t: Tracked): void {
    clearTimeout(t.idle)
    t.idle = setTimeout(() => this.retire(session), this.idleMs)
    t.idle.unref()
  }

  add (session: Http2Session): void {
    const socket = session.socket
    const t: Tracked = { lastSeen: -1, open: 0, counted: 0, remoteAddress: socket?.remoteAddress, bytesRead: () => socket?.bytesRead ?? 0 }
    this.sessions.set(session, t)
    session.on('stream', (stream: ServerHttp2Stream) => {
      // Client stream ids are odd and increasing: ids skipped since the last
      // stream the gateway saw were processed, and reset, below it.
      const id = stream.id ?? t.lastSeen
      this.settle(t, id - 2)
      t.lastSeen = id
      t.open++
      clearTimeout(t.idle)
      stream.once('close', () => {
        t.open--
        if (t.open > 0) return
        if (session.closed && !session.destroyed) session.destroy()
        else this.idleFrom(session, t)
      })
    })
    // A session that ends by destroy() (a GOAWAY from the client, an error,
    // retire()) has no state left once it has run: the count is settled just
    // before. (The socket's 'close' comes too late on those paths.)
    const destroy = session.destroy.bind(session)
    session.destroy = (...args: Parameters<Http2Session['destroy']>) => {
      this.settle(t, lastProcessed(session))
      destroy(...args)
    }
    // A client that drops its connection ends the session without destroy()
    // being called on it: its socket's 'close' comes first, state intact.
    socket?.prependListener('close', () => this.settle(t, lastProcessed(session)))
    session.once('close', () => {
      clearTimeout(t.idle)
      this.sessions.delete(session)
    })
    this.idleFrom(session, t)
  }

  /** Ends a session: at once when no stream is open, else after its streams (GOAWAY). */
  retire (session: Http2Session): void {
    const t = this.sessions.get(session)
    if (!t || t.open === 0) session.destroy()
    else session.close()
  }

  retireAll (): void {
    for (const s of [...this.sessions.keys()]) this.retire(s)
  }

  private settle (t: Tracked, upTo: number | undefined): void {
    if (upTo === undefined || upTo <= t.lastSeen) return
    const skipped = Math.floor((upTo - t.lastSeen) / 2)
    t.lastSeen = upTo
    const count = Math.min(skipped, Math.floor(t.bytesRead() / MIN_BYTES_PER_STREAM) - t.counted)
    if (count <= 0) return
    t.counted += count
    this.hooks.onProtocolResets(count, t.remoteAddress)
  }
}

function lastProcessed (session: Http2Session): number | undefined {
  if (session.destroyed) return undefined
  const id = session.state?.lastProcStreamID
  return typeof id === 'number' ? id : undefined
}
