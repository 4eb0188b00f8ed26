// The admin listener: /metrics, /healthz, /readyz, optionally behind a
// credential. One gateway process serves its own; with workers the primary
// serves it for all of them.
import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Config } from './config/schema.js'
import { readSecretFile } from './config/secrets.js'
import { HEADER_LIMITS } from './tls/server.js'
import { repeatsKeys } from './json-keys.js'

export interface Readiness { ready: boolean, checks: Record<string, string> }

/** The Authorization header value the admin listener expects, if it is protected. */
export function adminCredential (config: Readonly<Config>): string | undefined {
  if (config.admin.tokenFile) return `Bearer ${readSecretFile(config.admin.tokenFile, 'admin.tokenFile')}`
  const b = config.admin.basicAuth
  if (b) return 'Basic ' + Buffer.from(`${b.username}:${readSecretFile(b.passwordFile, 'admin.basicAuth.passwordFile')}`).toString('base64')
  return undefined
}

/** What /metrics serves: one gateway's registry, or the workers' aggregated by the primary. */
export interface MetricsSource { contentType: string, text: () => Promise<string> }

/** What `nasguard quota show|reset` reach through the admin listener: the gateway's budgets (with workers, one worker's, which are everyone's). */
export interface QuotaControl {
  /** What the subject used, per ledger (as a token's sub, as a certificate's CN). */
  usage: (subject: string) => Promise<Record<string, unknown>>
  /** Resets the subject's budgets; resolves false when the reset could not be audited (nothing was reset then). */
  reset: (subject: string, operator: string) => Promise<boolean>
}

export function buildAdmin (metrics: MetricsSource, logger: FastifyBaseLogger, readiness: () => Promise<Readiness>, credential?: string, quota?: QuotaControl): FastifyInstance {
  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }), logController: new LogController({ disableRequestLogging: true }) })
  if (credential) {
    const expected = createHash('sha256').update(credential).digest()
    admin.addHook('onRequest', async (request, reply) => {
      if (request.url === '/healthz') return
      // Compare digests: equal length, constant time.
      const given = createHash('sha256').update(String(request.headers.authorization ?? '')).digest()
      if (!timingSafeEqual(given, expected)) {
        reply.code(401).header('www-authenticate', credential.startsWith('Basic') ? 'Basic realm="nasguard-admin"' : 'Bearer realm="nasguard-admin"')
        return reply.send({ error: 'NASGUARD_ERR_TOKEN_MISSING', message: 'the admin listener needs its credential' })
      }
    })
  }
  admin.get('/metrics', async (_request, reply) => {
    reply.type(metrics.contentType)
    return await metrics.text()
  })
  admin.get('/healthz', async () => ({ status: 'ok' }))
  admin.get('/readyz', async (_request, reply) => {
    const r = await readiness()
    reply.code(r.ready ? 200 : 503)
    return { status: r.ready ? 'ready' : 'not ready', checks: r.checks }
  })
  if (quota) registerQuota(admin, quota, credential !== undefined)
  return admin
}

/**
 * The longest subject asked about, in characters: as long as the gateway's
 * request headers may be in bytes (a token's sub is longer in its header,
 * base64url-encoded), so every subject a budget was charged to can be shown
 * and reset.
 */
export const MAX_SUBJECT = HEADER_LIMITS.bytes

/**
 * The subject of a body that is exactly the JSON object `{"sub": S}`: a
 * second member, another "sub" among them, is refused rather than one of
 * them chosen.
 */
function bodySubject (text: unknown): string | undefined {
  let body: unknown
  const json = String(text).replace(/^\uFEFF/, '')
  try { body = JSON.parse(json) } catch { return undefined }
  if (typeof body !== 'object' || body === null || Object.keys(body).join() !== 'sub' || repeatsKeys(json)) return undefined
  const sub = (body as { sub: unknown }).sub
  return typeof sub === 'string' && sub.length > 0 && sub.length <= MAX_SUBJECT ? sub : undefined
}

/**
 * POST /quota (what a subject used) and POST /quota/reset (audited), the
 * subject in a JSON body `{"sub": S}` (a query string could not hold every
 * subject a token can carry): only behind the admin credential, which the
 * command line reads from the config; without one they refuse, since the
 * budgets say who took what.
 */
function registerQuota (admin: FastifyInstance, quota: QuotaControl, protectedListener: boolean): void {
  // The body reaches the routes as text: JSON.parse lets the last of two
  // "sub" members win, and a proxy or log in front may read the first.
  // Only JSON: a text/plain POST is a request a browser sends cross-site
  // without asking first (with cached Basic credentials, a reset).
  admin.removeAllContentTypeParsers()
  admin.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => { done(null, body) })
  const NO_SUBJECT = { error: 'NASGUARD_ERR_BAD_REQUEST', message: `the body must be the JSON object {"sub": S} and nothing else (one member): the subject, 1 to ${MAX_SUBJECT} characters` }
  const guard = (reply: import('fastify').FastifyReply): boolean => {
    if (protectedListener) return true
    void reply.code(403).send({ error: 'NASGUARD_ERR_FORBIDDEN', message: 'set admin.tokenFile or admin.basicAuth: the budgets are served only behind the admin credential' })
    return false
  }
  admin.post('/quota', async (request, reply) => {
    if (!guard(reply)) return reply
    const sub = bodySubject(request.body)
    if (sub === undefined) return await reply.code(400).send(NO_SUBJECT)
    try {
      return { subject: sub, ...await quota.usage(sub) }
    } catch (err) {
      return await reply.code(503).send({ error: 'NASGUARD_ERR_BUDGETS_UNAVAILABLE', message: `the budgets cannot be read: ${(err as Error).message}` })
    }
  })
  admin.post('/quota/reset', async (request, reply) => {
    if (!guard(reply)) return reply
    const sub = bodySubject(request.body)
    if (sub === undefined) return await reply.code(400).send(NO_SUBJECT)
    const operator = String(request.headers['x-nasguard-operator'] ?? 'unknown').slice(0, 64)
    let done: boolean
    try {
      done = await quota.reset(sub, operator)
    } catch (err) {
      return await reply.code(503).send({ error: 'NASGUARD_ERR_BUDGETS_UNAVAILABLE', message: `the reset was audited but the budgets could not be reset: ${(err as Error).message}; run it again` })
    }
    if (!done) return await reply.code(503).send({ error: 'NASGUARD_ERR_AUDIT_UNAVAILABLE', message: 'the reset could not be audited, so nothing was reset' })
    return { subject: sub, reset: true }
  })
}
