// An HTTP/1.1 connection that completes its TLS handshake and then never
// starts a request. Node's headersTimeout counts from the first byte of a
// request, and keepAliveTimeout from the end of a response, so such a
// connection was held for good. It gets limits.headersTimeoutMs from the end
// of its handshake to send a first byte; a request that has begun is left to
// the headers timeout (408), one that was answered to the keep-alive timeout.
// HTTP/2 sessions without streams are closed by SessionWatch.
import type { Http2SecureServer } from 'node:http2'
import type { TLSSocket } from 'node:tls'

export function closeIdleFirstConnections (server: Http2SecureServer, timeoutMs: number): void {
  const served = new WeakSet<object>()
  server.on('request', (req: { socket?: object, stream?: unknown }) => {
    if (req.stream === undefined && req.socket) served.add(req.socket)
  })
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') return
    const readAtHandshake = socket.bytesRead
    const timer = setTimeout(() => {
      if (!served.has(socket) && socket.bytesRead === readAtHandshake) socket.destroy()
    }, timeoutMs)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  })
}
