// The way to the NAS: one keep-alive undici pool, and a GET/HEAD route that
// streams each recording the gate passed straight from the pool into the
// client's response (nas-exchange.ts). Headers cross in both directions
// through allow-lists, which strips the hop-by-hop set (RFC 9110 §7.6.1:
// Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*)
// and whatever Connection names, and also the client's Authorization and
// cookies, which the NAS must never see.
import { readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Pool, type Dispatcher } from 'undici'
import type { Config } from '../config/schema.js'
import { readSecretFile } from '../config/secrets.js'
import { HeadCheck } from './head-check.js'
import { fetchRecording, type ExchangeParts } from './nas-exchange.js'
import { classify, type UpstreamHooks } from './nas-failures.js'
import { nasPace } from './nas-pace.js'
import { ingest, type IngestParts } from './ingest.js'
import { fetchSealed, type SealedHooks, type SealedParts } from './sealed-exchange.js'
import { WebDav } from './webdav.js'
import { SealedFiles } from './sealed-files.js'
import type { SealingSettings } from '../sealing/settings.js'
import type { Keyring } from '../sealing/keyring.js'

export { cutResponse, type ProxyTarget, type UpstreamHooks } from './nas-failures.js'

/** Request headers that may reach the NAS (conditional and range requests). */
const REQUEST_HEADERS = ['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since'] as const

function basicAuth (cfg: Config['upstream']): string | undefined {
  if (!cfg.username) return undefined
  const password = cfg.password ?? (cfg.passwordFile ? readSecretFile(cfg.passwordFile, 'upstream.passwordFile') : '')
  return 'Basic ' + Buffer.from(`${cfg.username}:${password}`).toString('base64')
}

/**
 * The pool for `downloads` NAS connections (the admission's share), and an
 * eighth more for the short head checks a download may need on the side:
 * undici would otherwise queue those behind the downloads, without bound.
 * Every answer is watched for trickling (nas-pace.ts).
 */
export function createPool (cfg: Config['upstream'], downloads: number): Dispatcher {
  const url = new URL(cfg.url)
  const pool = new Pool(url.origin, {
    connections: downloads + Math.ceil(downloads / 8),
    pipelining: cfg.pipelining,
    keepAliveTimeout: 4000,
    headersTimeout: cfg.timeoutMs,
    bodyTimeout: cfg.timeoutMs,
    connect: {
      timeout: cfg.connectTimeoutMs,
      rejectUnauthorized: true,
      ...(cfg.caFile ? { ca: readFileSync(cfg.caFile) } : {})
    }
  })
  const paced = nasPace({ minBytesPerSec: cfg.minRate, windowMs: cfg.timeoutMs })
  return paced ? pool.compose(paced) : pool
}

export interface UpstreamOptions {
  upstream: Config['upstream']
  /** NAS connections this process may use for downloads (Admission holds them to it). */
  connections: number
  /** Check each recording's first bytes against its type before sending any. */
  checkMagic: boolean
  /** The gateway's own response headers for a recording (a fresh object), just before the NAS's go out. */
  ownHeaders: (request: FastifyRequest, reply: FastifyReply) => Record<string, unknown>
  /** Sealed recordings' settings, read afresh per request (a reload replaces them); undefined when sealing is off. */
  sealing: () => SealingSettings | undefined
  /** Uploads (PUT): what src/proxy/ingest.ts needs besides the NAS. */
  uploads: Omit<IngestParts, 'dav' | 'sealing'>
}

/**
 * Registers the recording route. The returned close() is for after the app
 * has closed: closing the pool in an onClose hook would cut requests still in
 * flight on keep-alive connections (plugins close before the server does).
 */
export interface Upstream {
  close: () => Promise<void>
  /** /readyz's authenticated look at the NAS. */
  check: () => Promise<string>
  /** A request through the pool with no credentials added (the lockdown check's). */
  anonymous: (o: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>
  /** The keyring now in use (a reload, an erasure): what was opened with any other key is forgotten. */
  keyringChanged: (keyring: Keyring | undefined) => void
}

export function registerUpstream (app: FastifyInstance, opts: UpstreamOptions, hooks: UpstreamHooks & SealedHooks): Upstream {
  const { upstream: cfg } = opts
  const pool = createPool(cfg, opts.connections)
  const authorization = basicAuth(cfg)
  const own = { 'user-agent': 'nasguard', ...(authorization ? { authorization } : {}) }
  const parts: ExchangeParts = {
    pool,
    hooks,
    checkMagic: opts.checkMagic,
    ownHeaders: opts.ownHeaders,
    heads: new HeadCheck((o) => pool.request(o), own),
    nasHeaders: (request) => {
      const out: Record<string, string> = { 'x-request-id': request.id, ...own }
      for (const h of REQUEST_HEADERS) {
        const v = request.headers[h]
        if (typeof v === 'string') out[h] = v
      }
      return out
    }
  }
  const sealed: SealedParts = {
    pool,
    files: new SealedFiles((o) => pool.request(o), own),
    own,
    hooks,
    checkMagic: opts.checkMagic,
    ownHeaders: opts.ownHeaders,
    sealing: opts.sealing,
    plaintext: (request, reply) => { fetchRecording(parts, request, reply) }
  }
  // The gate already produced the canonical path (or, sealed, the NAS's
  // name for it); that exact string goes to the NAS, and no query string.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/*',
    handler: (request, reply) => {
      if (request.ng.sealed) fetchSealed(sealed, request, reply)
      else fetchRecording(parts, request, reply)
      return reply
    }
  })
  registerUploads(app, { ...opts.uploads, dav: new WebDav({ pool, origin: new URL(cfg.url).origin, own, timeoutMs: cfg.timeoutMs }), sealing: opts.sealing })
  // The keyring is read again often (an upload, a recent period's first request): the cache is walked only when its keys changed.
  let keys: string | undefined
  const keyringChanged = (keyring: Keyring | undefined): void => {
    const ids = keyring?.list().flatMap((k) => keyring.identities(k.period).map((i) => i.keyId)).sort() ?? []
    if (ids.join('\n') === keys) return
    keys = ids.join('\n')
    sealed.files.keepOnly(new Set(ids))
  }
  return { close: () => pool.close(), check: () => checkNas(pool, cfg, authorization), anonymous: async (o) => await pool.request(o), keyringChanged }
}

/**
 * The upload route, in a context of its own whose one body parser reads
 * nothing: the body is the recording, streamed by ingest() into the sealing
 * transform, never parsed or buffered by Fastify (whatever its type).
 */
function registerUploads (app: FastifyInstance, parts: IngestParts): void {
  void app.register(async (uploads) => {
    uploads.removeAllContentTypeParsers()
    uploads.addContentTypeParser('*', (_request, _body, done) => { done(null) })
    uploads.route({
      method: 'PUT',
      url: '/*',
      handler: async (request, reply) => {
        await ingest(parts, request, reply)
        return reply
      }
    })
  })
}

/** The user-agent of /readyz's HEAD, so that NAS logs tell health checks from downloads. */
export const READINESS_USER_AGENT = 'nasguard (readiness check)'

/**
 * /readyz's look at the NAS: an authenticated HEAD of upstream.healthPath
 * through the pool, as a download would go. 'ok' when the NAS answers and
 * takes the credentials (a 403 or 404 for a path is still an answer); else
 * why not: a 401 (wrong credentials), a 5xx, or the error that stopped it.
 * Bounded by twice min(upstream.timeoutMs, 5 s), a wait for a pool connection included.
 */
async function checkNas (pool: Dispatcher, cfg: Config['upstream'], authorization: string | undefined): Promise<string> {
  try {
    const { statusCode, body } = await pool.request({
      method: 'HEAD',
      path: cfg.healthPath,
      headers: { 'user-agent': READINESS_USER_AGENT, ...(authorization ? { authorization } : {}) },
      headersTimeout: Math.min(cfg.timeoutMs, 5000),
      bodyTimeout: Math.min(cfg.timeoutMs, 5000),
      // The wait for a pool connection has no timer of its own.
      signal: AbortSignal.timeout(2 * Math.min(cfg.timeoutMs, 5000))
    })
    body.resume()
    if (statusCode === 401) return `credentials refused (401): check upstream.username and upstream.password${cfg.username ? '' : ' (none are configured)'}`
    if (statusCode >= 500) return `failing (${statusCode})`
    return 'ok'
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') return `timeout (no answer within ${2 * Math.min(cfg.timeoutMs, 5000)} ms, a wait for a NAS connection included)`
    return classify(err as Parameters<typeof classify>[0]).kind + ` (${(err as { code?: string }).code ?? 'error'})`
  }
}
