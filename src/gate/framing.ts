// Stage 1, method and framing: a GET or HEAD that the NAS and the gateway
// read the same way. Headers within HEADER_LIMITS (Node parses more HTTP/1.1
// headers than that, so an oversized request is refused here, where it is
// audited in full); no body (HTTP/2: the headers end the stream, as
// browsers, curl and Node send them; a body without content-length is
// otherwise invisible here); no upgrade; and an HTTP/1.1 Host (RFC 9112
// §3.2; Node's HTTP/2 layer itself resets a stream with neither :authority
// nor host).
import { Errors } from '../errors.js'
import { HEADER_LIMITS } from '../tls/server.js'
import type { Stage } from './state.js'

const READ_METHODS = new Set(['GET', 'HEAD'])

/** Whether the request's headers pass HEADER_LIMITS (raw: names and values, alternating). */
export function headersWithinLimits (raw: string[]): boolean {
  if (raw.length > 2 * HEADER_LIMITS.fields) return false
  let n = 0
  for (const s of raw) n += s.length
  return n <= HEADER_LIMITS.bytes
}

export const methodAndFraming: Stage = (request) => {
  if (!headersWithinLimits(request.rawHeaders)) throw new Errors.HeadersTooLarge()
  if (!READ_METHODS.has(request.method)) throw new Errors.MethodNotAllowed()
  const h = request.headers
  if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0') || request.endAfterHeaders === false) {
    throw new Errors.BadRequest('a GET or HEAD request carries no body')
  }
  if (h.upgrade !== undefined) throw new Errors.BadRequest('protocol upgrades are not supported')
  if (request.httpVersion === '1.1' && h.host === undefined) throw new Errors.BadRequest('an HTTP/1.1 request needs a Host header')
}
