// The TLS port speaks TLS only. The first byte of every connection is read
// before TLS sees it: a TLS handshake starts with a handshake record (0x16);
// anything else is a plaintext client (the exposed NAS answered plain HTTP on
// 443 for years). Such a client gets one 400 line and the connection closes;
// its request is never parsed, so its headers (Authorization included) are
// never proxied or logged.
import type { Server as NetServer, Socket } from 'node:net'
import { Errors } from '../errors.js'
import { rawAnswer } from './raw-answer.js'

const TLS_HANDSHAKE_RECORD = 0x16

export interface FrontDoorOptions {
  /** A connection that sends nothing is closed after this. */
  firstByteTimeoutMs: number
  onPlaintext: (socket: Socket) => void
  /** Whether the connection may be served (per-client caps); a refused one is closed at once. */
  admit: (socket: Socket) => boolean
  onRefused: (socket: Socket) => void
}

const ANSWER = rawAnswer(400, { error: Errors.PlaintextOnTlsPort.spec.code, message: Errors.PlaintextOnTlsPort.spec.message })

/**
 * Puts the sniffer in front of a TLS server's own connection handling. The
 * server keeps listening, closing and reporting its address as usual.
 */
export function installFrontDoor (server: NetServer, opts: FrontDoorOptions): void {
  const tlsListeners = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  server.on('connection', (socket: Socket) => {
    if (!opts.admit(socket)) {
      opts.onRefused(socket)
      socket.destroy()
      return
    }
    const onEarlyError = (): void => { socket.destroy() }
    socket.on('error', onEarlyError)
    const timer = setTimeout(() => socket.destroy(), opts.firstByteTimeoutMs)
    socket.once('close', () => clearTimeout(timer))
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer)
      socket.pause()
      if (chunk[0] === TLS_HANDSHAKE_RECORD) {
        socket.removeListener('error', onEarlyError)
        // TLSSocket reads whatever is buffered on the raw socket first.
        socket.unshift(chunk)
        for (const l of tlsListeners) l.call(server, socket)
        return
      }
      opts.onPlaintext(socket)
      socket.end(ANSWER)
      // Drain and discard the rest of the request so the client reads the
      // answer instead of a reset, then make sure the socket goes away.
      socket.resume()
      setTimeout(() => socket.destroy(), 2000).unref()
    })
  })
}
