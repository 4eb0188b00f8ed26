// Test harness: a gateway on real sockets in this process, with signed
// tokens and captured logs and audit lines. The certificates (certs.ts), the
// stub NAS (stub-nas.ts) and the HTTPS client (gateway-client.ts) live apart, so a
// test that needs only those does not load the gateway (about 1.5 s of CPU);
// they are exported from here too.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { createSigner } from 'fast-jwt'
import { pino } from 'pino'
import { buildGateway, type Gateway } from '../../src/app.js'
import { loadConfig } from '../../src/config/load.js'
import { loggerOptions } from '../../src/logging.js'
import { trailFiles } from '../../src/audit/verify.js'
import { testCerts } from './certs.js'
import { SECRET } from './gateway-client.js'
import type { Teardown } from './stub-nas.js'

export { testCerts } from './certs.js'
export { READINESS_USER_AGENT, RECORDING, listenOnLoopback, serveRecording, startStubNas, type NasHandler, type NasRequest, type StubNas, type Teardown } from './stub-nas.js'
export { SECRET, bearer, get, post, rawPlain, rawTls, requestOptions, scrape, statusOf, type RequestOpts, type Response } from './gateway-client.js'

export interface TestGateway {
  gateway: Gateway
  port: number
  url: string
  adminUrl: string
  auditDir: string
  /** Raw log lines the gateway wrote. */
  logs: string[]
  auditRecords: () => Array<Record<string, unknown>>
  token: (claims?: Record<string, unknown>) => string
}

export const DEFAULT_POLICY = [
  { name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] },
  { name: 'stockholm', path: '/stockholm/**', scopes: ['recordings:read:stockholm'] }
]

export interface GatewayOverrides {
  upstream?: Record<string, unknown>
  /** Replaces auth.jwt (the name is kept for existing callers). */
  auth?: Record<string, unknown>
  /** Other auth sections (revocation, grants), merged into auth next to jwt. */
  authExtra?: Record<string, unknown>
  policy?: unknown[]
  files?: Record<string, unknown>
  audit?: Record<string, unknown>
  limits?: Record<string, unknown>
  tls?: Record<string, unknown>
  admin?: Record<string, unknown>
  listen?: Record<string, unknown>
  sealing?: Record<string, unknown>
  /** Shared state (state.redis, state.holdsFile). */
  state?: Record<string, unknown>
  /** config.retention. */
  retention?: unknown[]
  /** The clock retention is judged by (ms since the epoch). */
  clock?: () => number
}

export async function startTestGateway (t: Teardown, nas: { url: string }, o: GatewayOverrides = {}): Promise<TestGateway> {
  const certs = testCerts()
  const auditDir = mkdtempSync(join(tmpdir(), 'nasguard-audit-'))
  const config = loadConfig({
    object: {
      listen: { host: '127.0.0.1', port: 0, ...o.listen },
      tls: { cert: certs.cert, key: certs.key, ...o.tls },
      upstream: { url: nas.url, timeoutMs: 2000, ...o.upstream },
      auth: { ...o.authExtra, jwt: o.auth ?? { secret: SECRET } },
      policy: o.policy ?? DEFAULT_POLICY,
      files: o.files ?? {},
      audit: { dir: auditDir, ...o.audit },
      admin: { host: '127.0.0.1', port: 0, ...o.admin },
      limits: o.limits ?? {},
      sealing: o.sealing ?? {},
      state: o.state ?? {},
      retention: o.retention ?? []
    }
  })
  const logs: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { logs.push(...chunk.toString().split('\n').filter(Boolean)); cb() } })
  const logger = pino({ ...loggerOptions('debug', false) } as pino.LoggerOptions, sink)
  const gateway = await buildGateway(config, { logger, clock: o.clock })
  await gateway.app.listen({ host: '127.0.0.1', port: 0 })
  await gateway.admin!.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => gateway.close())
  const port = (gateway.app.server.address() as { port: number }).port
  const adminPort = (gateway.admin!.server.address() as { port: number }).port
  const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
  return {
    gateway,
    port,
    url: `https://localhost:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    auditDir,
    logs,
    // Every file of the trail in chain order: rotated archives, then audit.jsonl.
    auditRecords: () => {
      if (!existsSync(auditDir)) return []
      return trailFiles(auditDir).flatMap((f) => readFileSync(join(auditDir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>))
    },
    token: (claims = {}) => sign({ sub: 'alice', scope: 'recordings:read', jti: 'jti-' + Math.random().toString(36).slice(2), exp: Math.floor(Date.now() / 1000) + 600, ...claims })
  }
}
