// Requests Node's HTTP parser cannot frame (bad framing, CL+TE, oversized
// or too slow headers) never reach a route: they are answered here, on the
// socket, in the gateway's error shape, counted and audited.
import type { Socket } from 'node:net'
import { Errors, errorBody, specFor } from '../errors.js'
import { refusedTarget } from '../audit/record-bounds.js'
import type { AuditRecord } from '../audit/writer.js'
import { rawAnswer } from '../tls/raw-answer.js'

export interface ClientErrorParts {
  hsts: string
  /** Counts a refusal by its metric reason. */
  count: (reason: string) => void
  log: (fields: Record<string, unknown>, message: string) => void
  record: (r: Omit<AuditRecord, 'event' | 'time'>) => void
  requestId: () => string
}

/** Method and target of the request line at the start of what a client sent, when it is one. */
function requestLine (raw: Buffer | undefined): { method: string, target: string } | undefined {
  const m = raw ? /^([A-Z]{1,16}) ([^\s]{1,8192}) HTTP\/1\.[01]\r?\n/.exec(raw.subarray(0, 8300).toString('latin1')) : null
  return m ? { method: m[1], target: m[2] } : undefined
}

export function clientErrorHandler (p: ClientErrorParts): (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => void {
  const refusedSockets = new WeakSet<Socket>()
  return (err, socket) => {
    // One refusal per connection: errors that follow the first (the
    // socket torn down under the parser) are not requests.
    if (refusedSockets.has(socket)) return
    refusedSockets.add(socket)
    const remoteAddress = socket.remoteAddress
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
    const slow = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    const refusal = tooLarge ? new Errors.HeadersTooLarge() : slow ? new Errors.RequestTimeout() : new Errors.BadRequest('the request could not be parsed')
    // Node's own rule: answer only if no response has started on this
    // connection, so no client gets a 400 spliced into another response.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (socket.writable && !socket.destroyed && !inFlight?.headersSent) {
      socket.end(rawAnswer(refusal.statusCode, errorBody(refusal), { 'Strict-Transport-Security': p.hsts }))
      // The rest of the request is read and dropped, so the client reads
      // the answer instead of a reset; then the socket goes for good.
      socket.on('error', () => {})
      socket.resume()
      setTimeout(() => socket.destroy(), 2000).unref()
    } else {
      socket.destroy()
    }
    // A reset sent no request to refuse.
    if (err.code === 'ECONNRESET') return
    p.count(specFor(refusal.code)?.reason ?? 'other')
    p.log({ code: err.code, remoteAddress }, tooLarge ? 'request headers too large: refused' : slow ? 'request headers too slow: refused' : 'unparsable request refused')
    const line = requestLine(err.rawPacket)
    p.record({
      requestId: p.requestId(),
      clientIp: remoteAddress ?? '',
      ...(line ? { method: line.method, path: refusedTarget(line.target) } : {}),
      status: refusal.statusCode,
      reason: tooLarge || slow ? refusal.code : `${refusal.code}:${err.code ?? 'parse'}`
    })
  }
}
