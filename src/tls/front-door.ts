// The TLS port speaks TLS only. The first byte of every connection is read
// before TLS sees it: a TLS handshake starts with a handshake record (0x16);
// anything else is a plaintext client (the exposed NAS answered plain HTTP on
// 443 for years). Such a client gets one 400 line and the connection closes;
// its request is never proxied, and its headers are never logged. Its head
// (up to HEAD_MAX bytes, for at most HEAD_MS) is handed to onPlaintext, which
// may revoke a bearer token found in it (src/auth/exposed.ts): the answer
// then says so.
//
// Behind a load balancer that passes TLS through (listen.proxyProtocol), a
// connection from a trusted proxy first carries a PROXY header naming the
// client: it is read here, before the cap and the sniffer, and the client
// becomes the socket's peer (adoptPeer) for everything after.
import type { Server as NetServer, Socket } from 'node:net'
import { Errors } from '../errors.js'
import { rawAnswer } from './raw-answer.js'
import { parseProxyHeader, type ProxiedSource, type ProxyHeaderProblem, type TrustedProxies } from './proxy-protocol.js'

const TLS_HANDSHAKE_RECORD = 0x16

export interface FrontDoorOptions {
  /** A connection that sends nothing is closed after this. */
  firstByteTimeoutMs: number
  /** A plaintext request and its head (bounded); resolves true when it carried a token that is now revoked. Must not reject. */
  onPlaintext: (socket: Socket, head: Buffer) => boolean | Promise<boolean>
  /** Whether the connection may be served (per-client caps); a refused one is closed at once. */
  admit: (socket: Socket) => boolean
  onRefused: (socket: Socket) => void
  /** listen.proxyProtocol: connections from these must start with a PROXY header. */
  proxyProtocol?: {
    trusted: TrustedProxies
    /**
     * Connections one trusted address may hold while their headers are
     * still coming (the per-client cap can only apply once the client is
     * known): more are closed at accept.
     */
    maxPending: number
    /** A trusted proxy's connection without a valid header: closed before TLS, nothing read past it. */
    onRefused: (problem: ProxyHeaderProblem | 'timeout' | 'truncated' | 'pending', socket: Socket) => void
  }
}

const ANSWER = rawAnswer(400, { error: Errors.PlaintextOnTlsPort.spec.code, message: Errors.PlaintextOnTlsPort.spec.message })
const ANSWER_REVOKED = rawAnswer(400, { error: Errors.PlaintextOnTlsPort.spec.code, message: `${Errors.PlaintextOnTlsPort.spec.message}. The bearer token it carried crossed the network in the clear and is now revoked: get a new one` })
/** How much of a plaintext request's head is read, and for how long, looking for a bearer token. */
const HEAD_MAX = 16384
const HEAD_MS = 1000
/** The longest a plaintext client waits for its answer while its token is being revoked. */
const ANSWER_MS = 5000

/**
 * Puts the sniffer in front of a TLS server's own connection handling. The
 * server keeps listening, closing and reporting its address as usual.
 */
export function installFrontDoor (server: NetServer, opts: FrontDoorOptions): void {
  const tlsListeners = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  const proxy = opts.proxyProtocol
  const pending = new Map<string, number>()
  server.on('connection', (socket: Socket) => {
    if (proxy !== undefined && proxy.trusted.includes(socket.remoteAddress)) {
      const address = socket.remoteAddress ?? ''
      const waiting = pending.get(address) ?? 0
      if (waiting >= proxy.maxPending) {
        proxy.onRefused('pending', socket)
        socket.destroy()
        return
      }
      pending.set(address, waiting + 1)
      let counted = true
      const settle = (): void => {
        if (!counted) return
        counted = false
        const n = (pending.get(address) ?? 1) - 1
        if (n === 0) pending.delete(address)
        else pending.set(address, n)
      }
      socket.once('close', settle)
      readProxyHeader(socket, opts.firstByteTimeoutMs, (verdict, rest) => {
        settle()
        if (typeof verdict === 'string') {
          proxy.onRefused(verdict, socket)
          socket.destroy()
          return
        }
        if (verdict !== undefined && !adoptPeer(socket, verdict)) return
        admitAndSniff(socket, rest)
      })
      return
    }
    admitAndSniff(socket, Buffer.alloc(0))
  })

  function admitAndSniff (socket: Socket, buffered: Buffer): void {
    if (!opts.admit(socket)) {
      opts.onRefused(socket)
      socket.destroy()
      return
    }
    if (buffered.length > 0) {
      sniff(socket, buffered)
      return
    }
    const onEarlyError = (): void => { socket.destroy() }
    socket.on('error', onEarlyError)
    const timer = setTimeout(() => socket.destroy(), opts.firstByteTimeoutMs)
    socket.once('close', () => clearTimeout(timer))
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer)
      socket.pause()
      socket.removeListener('error', onEarlyError)
      sniff(socket, chunk)
    })
    // Paused after a PROXY header: a 'data' listener alone does not resume it.
    socket.resume()
  }

  function sniff (socket: Socket, chunk: Buffer): void {
    if (chunk[0] === TLS_HANDSHAKE_RECORD) {
      // TLSSocket reads whatever is buffered on the raw socket first.
      socket.unshift(chunk)
      for (const l of tlsListeners) l.call(server, socket)
      return
    }
    socket.on('error', () => { socket.destroy() })
    // A client that half-closes after its request (printf ... | nc) still gets the answer.
    socket.allowHalfOpen = true
    readHead(socket, chunk, (head) => {
      let answered = false
      const answer = (revoked: boolean): void => {
        if (answered) return
        answered = true
        clearTimeout(deadline)
        socket.end(revoked ? ANSWER_REVOKED : ANSWER)
        // Drain and discard the rest of the request so the client reads the
        // answer instead of a reset, then make sure the socket goes away.
        socket.resume()
        setTimeout(() => socket.destroy(), 2000).unref()
      }
      // Whatever onPlaintext waits for, the client is answered within ANSWER_MS.
      const deadline = setTimeout(() => { answer(false) }, ANSWER_MS)
      let verdict: boolean | Promise<boolean>
      try {
        verdict = opts.onPlaintext(socket, head)
      } catch {
        verdict = false
      }
      if (verdict instanceof Promise) verdict.then(answer, () => { answer(false) })
      else answer(verdict)
    })
  }
}

/** The head of a plaintext request: up to its blank line, HEAD_MAX bytes, HEAD_MS or its end, whichever comes first. */
function readHead (socket: Socket, first: Buffer, done: (head: Buffer) => void): void {
  let head = first
  let finished = false
  const finish = (): void => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    socket.removeListener('data', onData)
    socket.removeListener('end', finish)
    socket.removeListener('close', finish)
    socket.pause()
    done(head.subarray(0, HEAD_MAX))
  }
  const complete = (): boolean => head.length >= HEAD_MAX || head.includes('\r\n\r\n')
  const onData = (c: Buffer): void => {
    head = Buffer.concat([head, c])
    if (complete()) finish()
  }
  const timer = setTimeout(finish, HEAD_MS)
  if (complete()) {
    finish()
    return
  }
  socket.on('data', onData)
  socket.once('end', finish)
  socket.once('close', finish)
  socket.resume()
}

/**
 * Reads a PROXY header off the socket: `done` gets the client it names
 * (undefined for LOCAL: the proxy speaks for itself) and the bytes after it,
 * or the problem. Never waits for more than the header's bound, nor longer
 * than timeoutMs; the socket is left paused.
 */
function readProxyHeader (socket: Socket, timeoutMs: number, done: (verdict: ProxiedSource | undefined | ProxyHeaderProblem | 'timeout' | 'truncated', rest: Buffer) => void): void {
  let received: Buffer = Buffer.alloc(0)
  const finish = (verdict: ProxiedSource | undefined | ProxyHeaderProblem | 'timeout' | 'truncated', rest: Buffer): void => {
    clearTimeout(timer)
    socket.pause()
    socket.removeListener('data', onData)
    socket.removeListener('error', onEarlyError)
    socket.removeListener('end', onEnd)
    done(verdict, rest)
  }
  const onEarlyError = (): void => { clearTimeout(timer); socket.destroy() }
  const onData = (chunk: Buffer): void => {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
    let r: ReturnType<typeof parseProxyHeader>
    try {
      r = parseProxyHeader(received)
    } catch {
      // A parser bug must cost this connection, never the process.
      r = { kind: 'invalid', problem: 'malformed' }
    }
    if (r.kind === 'incomplete') return
    if (r.kind === 'invalid') finish(r.problem, Buffer.alloc(0))
    else finish(r.kind === 'proxied' ? r.source : undefined, received.subarray(r.length))
  }
  const timer = setTimeout(() => { finish('timeout', Buffer.alloc(0)) }, timeoutMs)
  const onEnd = (): void => { finish('truncated', Buffer.alloc(0)) }
  socket.once('close', () => clearTimeout(timer))
  socket.once('end', onEnd)
  socket.on('error', onEarlyError)
  socket.on('data', onData)
}

/**
 * Makes the proxied client the socket's peer, for this socket and for the
 * TLSSocket that will wrap it. Both read their peer from the TCP handle's
 * getpeername (Node's net.Socket#_getpeername; a TLSSocket's TLSWrap
 * forwards getpeername to the handle it wraps), so answering there is the
 * one place that every reader downstream sees: the connection cap, the
 * sniffer, Fastify's request.ip over HTTP/1.1 and HTTP/2 (whose compat
 * request.socket reads the session's TLSSocket), grants' bindIp, the audit
 * records and the logs. The raw socket has read its peer already (the trust
 * check) and keeps it cached, so its own properties say the same.
 */
export function adoptPeer (socket: Socket, source: ProxiedSource): boolean {
  const handle = (socket as unknown as { _handle?: { getpeername?: unknown } | null })._handle
  if (handle == null || typeof handle.getpeername !== 'function') {
    // Not a socket over a TCP handle: nothing downstream could be made to
    // see the client, so the connection is not served under the proxy's name.
    socket.destroy()
    return false
  }
  handle.getpeername = (out: Record<string, unknown>): number => {
    out.address = source.address
    out.port = source.port
    out.family = source.family
    return 0
  }
  for (const [name, value] of [['remoteAddress', source.address], ['remotePort', source.port], ['remoteFamily', source.family]] as const) {
    Object.defineProperty(socket, name, { value, enumerable: true, configurable: true })
  }
  return true
}
