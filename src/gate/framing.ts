// Stage 1, method and framing: a request that the NAS and the gateway read
// the same way. Headers within HEADER_LIMITS (Node parses more HTTP/1.1
// headers than that, so an oversized request is refused here, where it is
// audited in full); no upgrade; and one valid HTTP/1.1 Host (RFC 9112 §3.2; Node's
// HTTP/2 layer itself resets a stream with neither :authority nor host).
// A GET or HEAD carries no body (HTTP/2: the headers end the stream, as
// browsers, curl and Node send them; a body without content-length is
// otherwise invisible here). A PUT (an upload, sealed on its way in)
// carries one whole recording: a Content-Length within
// limits.maxUploadBytes, or a chunked / HTTP/2 body counted as it comes;
// no Content-Range (no partial uploads), no content coding (the bytes
// sealed are the bytes judged).
import { Errors, methodNotAllowed } from '../errors.js'
import { methodsOf } from '../policy/rules.js'
import { HEADER_LIMITS } from '../tls/server.js'
import type { GateRequest, Stage } from './state.js'

const READ_METHODS = new Set(['GET', 'HEAD'])

// RFC 9112 §3.2: one Host, and its value an authority (RFC 3986 §3.2.2,
// 3.2.3) without user info: a name, an IPv4 or a bracketed IPv6 address
// (with a zone, RFC 6874: [fe80::1%25eth0]), and a port up to 65535; empty
// is allowed. A server must refuse anything else with 400.
const HOST = /^(?:\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9\-._~]+)?\]|[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?::(\d{0,5}))?$/

/** Why an HTTP/1.1 request's Host is refused, or undefined when it is one valid Host. */
function hostProblem (request: GateRequest): string | undefined {
  const h = request.headers
  if (h.host === undefined) return 'an HTTP/1.1 request needs a Host header'
  let count = 0
  for (let i = 0; i < request.rawHeaders.length; i += 2) if (request.rawHeaders[i].toLowerCase() === 'host') count++
  if (count > 1) return 'an HTTP/1.1 request carries one Host header'
  const m = HOST.exec(h.host)
  if (m === null || Number(m[1] ?? 0) > 65535) return 'the Host header is not a host name or address with an optional port'
  return undefined
}

/** Whether the request's headers pass HEADER_LIMITS (raw: names and values, alternating). */
export function headersWithinLimits (raw: string[]): boolean {
  if (raw.length > 2 * HEADER_LIMITS.fields) return false
  let n = 0
  for (const s of raw) n += s.length
  return n <= HEADER_LIMITS.bytes
}

function readFraming (request: GateRequest): void {
  const h = request.headers
  if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0') || request.endAfterHeaders === false) {
    throw new Errors.BadRequest('a GET or HEAD request carries no body')
  }
}

function uploadFraming (request: GateRequest, maxBytes: number): void {
  const h = request.headers
  if (h['content-range'] !== undefined) throw new Errors.BadRequest('partial uploads (Content-Range) are not supported: send the whole recording')
  const coding = h['content-encoding']
  if (coding !== undefined && coding.toLowerCase() !== 'identity') throw new Errors.UploadType('it is content-encoded')
  const length = h['content-length']
  if (length !== undefined) {
    if (!/^\d{1,17}$/.test(length)) throw new Errors.BadRequest('the Content-Length is not a number')
    if (Number(length) > maxBytes) throw new Errors.UploadTooLarge()
    if (length === '0') throw new Errors.UploadType('it is empty')
  } else if (h['transfer-encoding'] === undefined && request.endAfterHeaders !== false) {
    throw new Errors.UploadType('it is empty')
  }
}

export const methodAndFraming: Stage = (request, _state, ctx) => {
  if (!headersWithinLimits(request.rawHeaders)) throw new Errors.HeadersTooLarge()
  if (request.method === 'PUT') uploadFraming(request, ctx.live().maxUploadBytes)
  else if (READ_METHODS.has(request.method)) readFraming(request)
  else throw methodNotAllowed(methodsOf(ctx.live().rules))
  const h = request.headers
  if (h.upgrade !== undefined) throw new Errors.BadRequest('protocol upgrades are not supported')
  if (request.httpVersion === '1.1') {
    const problem = hostProblem(request)
    if (problem !== undefined) throw new Errors.BadRequest(problem)
  }
}
