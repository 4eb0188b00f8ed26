// The admin listener: /metrics, /healthz, /readyz, optionally behind a
// credential. One gateway process serves its own; with workers the primary
// serves it for all of them.
import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Config } from './config/schema.js'
import { readSecretFile } from './config/secrets.js'

export interface Readiness { ready: boolean, checks: Record<string, string> }

/** The Authorization header value the admin listener expects, if it is protected. */
export function adminCredential (config: Readonly<Config>): string | undefined {
  if (config.admin.tokenFile) return `Bearer ${readSecretFile(config.admin.tokenFile)}`
  const b = config.admin.basicAuth
  if (b) return 'Basic ' + Buffer.from(`${b.username}:${readSecretFile(b.passwordFile)}`).toString('base64')
  return undefined
}

/** What /metrics serves: one gateway's registry, or the workers' aggregated by the primary. */
export interface MetricsSource { contentType: string, text: () => Promise<string> }

export function buildAdmin (metrics: MetricsSource, logger: FastifyBaseLogger, readiness: () => Promise<Readiness>, credential?: string): FastifyInstance {
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
  return admin
}
