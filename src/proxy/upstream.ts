// The way to the NAS: @fastify/http-proxy over one keep-alive undici pool.
// Headers cross in both directions through allow-lists, which strips the
// hop-by-hop set (RFC 9110 §7.6.1: Connection, Keep-Alive, TE, Trailer,
// Transfer-Encoding, Upgrade, Proxy-*) and whatever Connection names, and
// also the client's Authorization and cookies, which the NAS must never see.
// The NAS answer is checked before a byte of its body is passed on.
import { readFileSync } from 'node:fs'
import httpProxy from '@fastify/http-proxy'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { Pool } from 'undici'
import { EventEmitter } from 'node:events'
import type { Readable } from 'node:stream'
import type { Config } from '../config/schema.js'
import { readSecretFile } from '../config/secrets.js'
import { Errors, type NasguardError } from '../errors.js'
import { contentTypeFor } from '../policy/file-types.js'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'
import { checkPartialAnswer } from './content-range.js'
import { HeadCheck, peek } from './head-check.js'

/** Request headers that may reach the NAS (conditional and range requests). */
const REQUEST_HEADERS = ['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since'] as const
/** NAS response headers that may reach the client. Content-Type is set from the extension. */
const RESPONSE_HEADERS = ['content-length', 'content-range', 'accept-ranges', 'etag', 'last-modified'] as const

/** NAS failures that are retried once, before any byte was sent: a reset connection. */
const RESETS = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

/** What the gateway decided about a request, filled in by the gate. */
export interface ProxyTarget { path: string, extension: string }

export interface UpstreamHooks {
  target: (request: FastifyRequest) => ProxyTarget
  /** Called for every body chunk passed on to the client. */
  onBody: (request: FastifyRequest, bytes: number) => void
  /** The NAS's response headers arrived this many seconds after it was asked. */
  onUpstreamResponse: (request: FastifyRequest, seconds: number) => void
  /** The NAS failed or answered something that is not passed on; kind is a bounded label. */
  onUpstreamError: (request: FastifyRequest, kind: string) => void
}

function basicAuth (cfg: Config['upstream']): string | undefined {
  if (!cfg.username) return undefined
  const password = cfg.password ?? (cfg.passwordFile ? readSecretFile(cfg.passwordFile) : '')
  return 'Basic ' + Buffer.from(`${cfg.username}:${password}`).toString('base64')
}

/**
 * The NAS pool. reply-from sends requests without an abort signal, so a
 * client that leaves before the NAS answers would still have its request
 * sent and waited for. Each request is tied here, by its x-request-id, to
 * a signal that fires when the client goes away.
 */
export class UpstreamSignal extends EventEmitter {
  aborted = false
  reason: Error | undefined
  abort (): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = Object.assign(new Error('the client went away'), { name: 'AbortError', code: 'UND_ERR_ABORTED' })
    this.emit('abort')
  }
}

function gone (): UpstreamSignal {
  const s = new UpstreamSignal()
  s.abort()
  return s
}

export class AbortablePool extends Pool {
  readonly signals = new Map<string, UpstreamSignal>()

  override request (opts: Parameters<Pool['request']>[0], callback?: unknown): never {
    const id = (opts.headers as Record<string, string> | undefined)?.['x-request-id']
    // A request for a client that has left (a retry scheduled just before
    // it went) goes out already aborted.
    const signal = id ? this.signals.get(id) ?? gone() : undefined
    return (super.request as (o: unknown, cb?: unknown) => never)(signal ? { ...opts, signal } : opts, callback)
  }
}

/**
 * The pool for `downloads` NAS connections (the admission's share), and an
 * eighth more for the short head checks a download may need on the side:
 * undici would otherwise queue those behind the downloads, without bound.
 */
export function createPool (cfg: Config['upstream'], downloads: number): AbortablePool {
  const url = new URL(cfg.url)
  return new AbortablePool(url.origin, {
    connections: downloads + Math.ceil(downloads / 8),
    pipelining: cfg.pipelining,
    keepAliveTimeout: 4000,
    headersTimeout: cfg.timeoutMs,
    bodyTimeout: cfg.timeoutMs,
    connect: {
      timeout: cfg.connectTimeoutMs,
      // reply-from would disable certificate checks on its own pools; this
      // pool is ours and checks them.
      rejectUnauthorized: true,
      ...(cfg.caFile ? { ca: readFileSync(cfg.caFile) } : {})
    }
  })
}

/**
 * Audio, or a generic binary type, is what a recording looks like. Listings
 * are HTML, JSON or XML; an answer that does not say what it is gets no
 * benefit of the doubt.
 */
function looksLikeRecording (contentType: string | string[] | undefined): boolean {
  if (typeof contentType !== 'string') return false
  const ct = contentType.split(';')[0].trim().toLowerCase()
  return ct.startsWith('audio/') || ct === 'application/octet-stream'
}

function clearUpstreamHeaders (reply: FastifyReply): void {
  for (const h of RESPONSE_HEADERS) reply.removeHeader(h)
}

function classify (error: NasguardError & { cause?: { code?: string } }): { err: NasguardError, kind: string } {
  const code = error.cause?.code ?? error.code
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'FST_REPLY_FROM_GATEWAY_TIMEOUT':
      return { err: new Errors.UpstreamTimeout(), kind: 'timeout' }
    case 'UND_ERR_CONNECT_TIMEOUT':
      return { err: new Errors.UpstreamTimeout(), kind: 'connect_timeout' }
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return { err: new Errors.UpstreamUnreachable(), kind: 'unreachable' }
    default:
      if (/^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_SSL)/.test(String(code))) return { err: new Errors.UpstreamUnreachable(), kind: 'tls' }
      return { err: new Errors.UpstreamError(), kind: 'other' }
  }
}

/**
 * The refusal for an error of the NAS's body stream that reached the app
 * before any byte was sent (a NAS that stalls after its headers: 504, not a
 * bug), or undefined when the error did not come from the NAS.
 */
export function upstreamRefusal (error: unknown): NasguardError | undefined {
  const e = error as NasguardError & { cause?: { code?: string } }
  const code = String(e?.cause?.code ?? e?.code ?? '')
  if (!/^(UND_ERR_|E[A-Z]+$)/.test(code) || code === 'UND_ERR_ABORTED') return undefined
  return classify(e).err
}

/**
 * Ends a response that cannot be completed (the NAS failed mid-body, it sent
 * more than it declared, a slow reader, the drain deadline). HTTP/1.1 closes
 * the connection. An HTTP/2 stream is destroyed with an error, which resets
 * it with INTERNAL_ERROR (a bare destroy says NO_ERROR, which a client cannot
 * tell from a complete body) and frees it at once: stream.close() would wait
 * to write its RST_STREAM, which never happens on a socket the client no
 * longer reads, and the stream, its NAS connection and its record with it.
 */
export function cutResponse (reply: FastifyReply): void {
  const stream = (reply.raw as unknown as { stream?: { destroyed: boolean, on: (e: 'error', l: () => void) => void, destroy: (err: Error) => void } }).stream
  if (stream && !stream.destroyed) {
    stream.on('error', () => {})
    stream.destroy(Object.assign(new Error('cut by the gateway'), { code: 'NASGUARD_CUT' }))
  } else {
    reply.raw.destroy()
  }
}

/**
 * Registers the proxy routes. The returned close() is for after the app has
 * closed: closing the pool in an onClose hook would cut requests still in
 * flight on keep-alive connections (plugins close before the server does).
 */
export interface UpstreamOptions {
  upstream: Config['upstream']
  /** NAS connections this process may use for downloads (Admission holds them to it). */
  connections: number
  /** Check each recording's first bytes against its type before sending any. */
  checkMagic: boolean
}

export async function registerUpstream (app: FastifyInstance, opts: UpstreamOptions, hooks: UpstreamHooks): Promise<{ close: () => Promise<void>, check: () => Promise<string> }> {
  const { upstream: cfg } = opts
  const asked = new WeakMap<FastifyRequest, bigint>()
  const pool = createPool(cfg, opts.connections)
  const authorization = basicAuth(cfg)
  const heads = new HeadCheck((o) => pool.request(o), { 'user-agent': 'nasguard', ...(authorization ? { authorization } : {}) })

  const refuse = (request: FastifyRequest, reply: FastifyReply, stream: Readable, err: NasguardError, kind: string | null): void => {
    stream.destroy()
    clearUpstreamHeaders(reply)
    if (kind) hooks.onUpstreamError(request, kind)
    reply.send(err)
  }

  /** Streams a checked recording to the client, counting bytes (slow readers are the app's SendWatch's). */
  const sendRecording = (request: FastifyRequest, reply: FastifyReply, stream: Readable, extension: string): void => {
    reply.header('content-type', contentTypeFor(extension))
    // Count what is handed to the response, where Fastify's pipe writes
    // it: no stream stage of our own in between (a Transform per response
    // cost more than the rest of the bookkeeping). Fastify destroys the NAS
    // stream when the client goes away, which cancels the upstream request.
    // Never more than the length the answer declared (a chunked 206 is
    // given its span's length): a NAS that sends more is cut, not passed on.
    const raw = reply.raw as unknown as { write: (chunk: Buffer, ...rest: unknown[]) => boolean }
    const write = raw.write
    const declared = Number(reply.getHeader('content-length'))
    let written = 0
    raw.write = function (chunk: Buffer, ...rest: unknown[]): boolean {
      written += chunk.length
      if (written > declared) {
        restore()
        hooks.onUpstreamError(request, 'range')
        stream.destroy()
        cutResponse(reply)
        return false
      }
      hooks.onBody(request, chunk.length)
      return write.call(this, chunk, ...rest)
    }
    // A NAS that fails mid-body (reset, body timeout): the response is
    // cut, and the audit outcome must say whose fault it was. Errors we
    // cause ourselves by tearing down after a client abort don't count.
    // Only the recording is counted: once the NAS stream is over, what is
    // written (an HTTP/2 error body goes through write) is not.
    const restore = (): void => { raw.write = write }
    stream.once('end', restore)
    stream.once('close', restore)
    stream.once('error', (err: NodeJS.ErrnoException) => {
      restore()
      const ours = err.name === 'AbortError' || err.code === 'ERR_STREAM_PREMATURE_CLOSE' || err.code === 'UND_ERR_ABORTED'
      if (ours) return
      // A NAS that stops sending is a timeout; any other failure mid-body a body error.
      const { kind } = classify(err as unknown as Parameters<typeof classify>[0])
      hooks.onUpstreamError(request, kind === 'timeout' ? 'timeout' : 'body')
      // Once bytes are out, the client must see a cut, not an end.
      if (reply.raw.headersSent) cutResponse(reply)
    })
    reply.send(stream)
  }

  /**
   * files.checkMagic: the first bytes of the file must match its type before
   * a byte is sent. An answer from byte 0 that holds them (or the whole
   * file) is judged as it streams; any other (a seek, a short probe such as
   * `bytes=0-1`) is judged by the file's head, fetched once per version.
   */
  const checkHead = (request: FastifyRequest, reply: FastifyReply, stream: Readable, start: number, whole: boolean, headers: Record<string, string | string[] | undefined>): void => {
    const { extension, path } = hooks.target(request)
    const fail = (kind: string): void => {
      // A client that left while the head was fetched is no NAS failure.
      if (reply.sent || pool.signals.get(request.id)?.aborted === true || reply.raw.destroyed) { stream.destroy(); return }
      refuse(request, reply, stream, kind === 'magic' ? new Errors.UpstreamListing() : new Errors.UpstreamError(), kind)
    }
    const judged = (ok: boolean, body: Readable): void => {
      if (reply.sent) { stream.destroy(); return }
      if (!ok) fail('magic')
      else sendRecording(request, reply, body, extension)
    }
    const fromHead = (body: Readable): void => {
      const etag = typeof headers.etag === 'string' ? headers.etag : undefined
      const lastModified = typeof headers['last-modified'] === 'string' ? headers['last-modified'] : undefined
      heads.judge({ path, extension, etag, lastModified }, pool.signals.get(request.id)).then((verdict) => {
        if (verdict === 'ok' || verdict === 'mismatch') judged(verdict === 'ok', body)
        else fail('body')
      }, () => fail('body'))
    }
    if (start !== 0) { fromHead(stream); return }
    peek(stream, MAGIC_BYTES).then(({ head, body, ended }) => {
      if (head.length >= MAGIC_BYTES || (ended && whole)) judged(magicMatches(extension, head, ended && whole), body)
      else fromHead(body)
    }, () => fail('body'))
  }

  // The plugin's types assume an http server; ours is https.
  await app.register(httpProxy as unknown as FastifyPluginAsync<Record<string, unknown>>, {
    upstream: cfg.url,
    undici: pool as never,
    disableRequestLogging: true,
    httpMethods: ['GET', 'HEAD'],
    proxyPayloads: false,
    internalRewriteLocationHeader: false,
    // The gate already produced the canonical path; that exact string goes
    // to the NAS, and no query string with it.
    handler: (request: FastifyRequest, reply: FastifyReply, _dest: string, options: object) => {
      // undici takes an EventEmitter with `aborted` as a signal: cheaper
      // than an AbortController, and fired only when the client left
      // before the response was complete (an abort builds an error).
      const signal = new UpstreamSignal()
      pool.signals.set(request.id, signal)
      asked.set(request, process.hrtime.bigint())
      // Over HTTP/2 a stream the client reset also reads writableFinished:
      // its reset code says it was not complete.
      reply.raw.once('close', () => {
        pool.signals.delete(request.id)
        const rst = (reply.raw as unknown as { stream?: { rstCode?: number } }).stream?.rstCode
        if (!reply.raw.writableFinished || (rst !== undefined && rst !== 0)) signal.abort()
      })
      return reply.from(hooks.target(request).path, options)
    },
    replyOptions: {
      queryString: () => '',
      // A NAS that resets a connection before it answers (a small NAS
      // shedding load, a keep-alive connection it closed as it was reused)
      // is asked once more: nothing was sent to the client yet, and the
      // method is safe. Any other failure is the client's to retry.
      retriesCount: 1,
      retryDelay: ({ err, req, attempt }: { err?: { code?: string }, req: { headers?: Record<string, string> }, attempt: number }) => {
        if (attempt > 0 || !err || !RESETS.has(err.code ?? '')) return null
        // Only while the client is there: its signal is gone once it left.
        const signal = req.headers?.['x-request-id'] === undefined ? undefined : pool.signals.get(req.headers['x-request-id'])
        return signal !== undefined && !signal.aborted ? 1 : null
      },
      rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, string | string[] | undefined>) => {
        const out: Record<string, string | string[] | undefined> = { host: headers.host, 'x-request-id': request.id, 'user-agent': 'nasguard' }
        for (const h of REQUEST_HEADERS) if (headers[h] !== undefined) out[h] = headers[h]
        if (authorization) out.authorization = authorization
        return out
      },
      rewriteHeaders: (headers: Record<string, string | string[] | undefined>) => {
        const out: Record<string, string | string[] | undefined> = {}
        for (const h of RESPONSE_HEADERS) if (headers[h] !== undefined) out[h] = headers[h]
        return out
      },
      onResponse: (request: FastifyRequest, reply: FastifyReply, res: { statusCode: number, headers: Record<string, string | string[] | undefined>, stream: Readable }) => {
        const { statusCode: status, headers, stream } = res
        const t0 = asked.get(request)
        if (t0 !== undefined) hooks.onUpstreamResponse(request, Number(process.hrtime.bigint() - t0) / 1e9)
        // Whatever happens to the NAS stream from here (destroyed by a
        // refusal, aborted with the client) must not become an unhandled
        // 'error' event; the cases that matter have listeners of their own.
        stream.on('error', () => {})
        // reply-from may already have answered (a NAS status it could not
        // set goes to onError and then still arrives here).
        if (reply.sent) {
          stream.destroy()
          return
        }
        if (status === 200 || status === 206) {
          if (!looksLikeRecording(headers['content-type'])) {
            refuse(request, reply, stream, new Errors.UpstreamListing(), 'listing')
            return
          }
          let start = 0
          let whole = true
          if (status === 206) {
            const answer = checkPartialAnswer(request.headers.range, headers['content-range'], headers['content-length'])
            if (!answer.ok) {
              request.log.warn({ reason: answer.reason }, 'the NAS answered another range than was asked for')
              refuse(request, reply, stream, new Errors.UpstreamError(), 'range')
              return
            }
            start = answer.span.start
            whole = answer.span.end + 1 === answer.span.total
            if (headers['content-length'] === undefined) reply.header('content-length', String(answer.span.end - answer.span.start + 1))
          }
          if (opts.checkMagic && request.method === 'GET') {
            checkHead(request, reply, stream, start, whole, headers)
            return
          }
          sendRecording(request, reply, stream, hooks.target(request).extension)
          return
        }
        if (status === 304) {
          stream.destroy()
          reply.send()
          return
        }
        if (status === 404 || status === 410) {
          refuse(request, reply, stream, new Errors.NotFound(), null)
          return
        }
        if (status === 416) {
          stream.destroy()
          reply.removeHeader('content-length')
          reply.send(new Errors.RangeNotSatisfiable())
          return
        }
        if (status >= 300 && status < 400) {
          refuse(request, reply, stream, new Errors.UpstreamListing(), 'redirect')
          return
        }
        refuse(request, reply, stream, new Errors.UpstreamError(), status === 401 || status === 403 ? 'auth' : `status_${Math.floor(status / 100)}xx`)
      },
      onError: (reply: FastifyReply, { error }: { error: NasguardError & { cause?: { code?: string } } }) => {
        const { err, kind } = classify(error)
        hooks.onUpstreamError(reply.request, kind)
        reply.send(err)
      }
    }
  })
  return { close: () => pool.close(), check: () => checkNas(pool, cfg, authorization) }
}

/** The user-agent of /readyz's HEAD, so that NAS logs tell health checks from downloads. */
export const READINESS_USER_AGENT = 'nasguard (readiness check)'

/**
 * /readyz's look at the NAS: an authenticated HEAD of upstream.healthPath
 * through the pool, as a download would go. 'ok' when the NAS answers and
 * takes the credentials (a 403 or 404 for a path is still an answer); else
 * why not: a 401 (wrong credentials), a 5xx, or the error that stopped it.
 */
async function checkNas (pool: Pool, cfg: Config['upstream'], authorization: string | undefined): Promise<string> {
  try {
    const { statusCode, body } = await pool.request({
      method: 'HEAD',
      path: cfg.healthPath,
      headers: { 'user-agent': READINESS_USER_AGENT, ...(authorization ? { authorization } : {}) },
      headersTimeout: Math.min(cfg.timeoutMs, 5000),
      bodyTimeout: Math.min(cfg.timeoutMs, 5000)
    })
    body.resume()
    if (statusCode === 401) return `credentials refused (401): check upstream.username and upstream.password${cfg.username ? '' : ' (none are configured)'}`
    if (statusCode >= 500) return `failing (${statusCode})`
    return 'ok'
  } catch (err) {
    return classify(err as Parameters<typeof classify>[0]).kind + ` (${(err as { code?: string }).code ?? 'error'})`
  }
}
