// Gateways as an admin runs several: each a real process of the built CLI
// (`nasguard start --config`), with its own ports, audit.dir and
// audit.instance, sharing the JWT secret, the grants secret, the audit
// key file and one Redis for shared state.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { testCerts } from '../helpers/certs.js'
import { CLI, freePort } from '../helpers/process.js'
import type { Teardown } from '../helpers/stub-nas.js'
import { waitFor } from '../helpers/wait.js'

export const JWT_SECRET = 'fleet-test-jwt-secret-that-is-long-enough-0123'
export const GRANTS_SECRET = 'fleet-test-grants-secret-that-is-long-enough-0'

export interface GatewayProcess {
  name: string
  port: number
  adminPort: number
  config: string
  auditDir: string
  child: ChildProcess
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output: () => string
}

/**
 * redisUrl: state.redis (none: no shared state); direct: clients connect
 * themselves, without HAProxy's PROXY header; config: top-level keys whose
 * lines replace the defaults (workers, limits, ...); adminTokenFile:
 * the admin listener's credential; batched: audit.durability batched
 * (for tests about something else than the trail).
 */
export interface FleetOptions { base: string, nasUrl: string, redisUrl?: string, auditKeyFile: string, direct?: true, adminTokenFile?: string, batched?: true, config?: Record<string, string> }

/** The config file of one gateway of the fleet. */
export function gatewayConfig (o: FleetOptions & { name: string, port: number, adminPort: number, auditDir: string }): string {
  const certs = testCerts()
  const lines = new Map<string, string>([
    // HAProxy (send-proxy-v2) connects from 127.0.0.1 and names the client.
    ['listen', `listen: { host: 127.0.0.1, port: ${o.port}${o.direct ? '' : ', proxyProtocol: { trustedProxies: [127.0.0.1] }'} }`],
    ['tls', `tls: { cert: ${JSON.stringify(certs.cert)}, key: ${JSON.stringify(certs.key)} }`],
    ['upstream', `upstream: { url: "${o.nasUrl}", timeoutMs: 5000 }`],
    ['auth', `auth:\n  jwt: { secret: "${JWT_SECRET}" }\n  grants: { secret: "${GRANTS_SECRET}" }`],
    ['policy', 'policy:\n  - { name: recordings, path: /medicall/**, scopes: [recordings:read] }'],
    ['audit', `audit: { dir: ${JSON.stringify(o.auditDir)}, durability: ${o.batched ? 'batched' : 'strict'}, instance: ${o.name}, keyFile: ${JSON.stringify(o.auditKeyFile)} }`],
    ['admin', `admin: { host: 127.0.0.1, port: ${o.adminPort}${o.adminTokenFile === undefined ? '' : `, tokenFile: ${JSON.stringify(o.adminTokenFile)}`} }`],
    ...(o.redisUrl === undefined ? [] : [['state', `state: { redis: { url: "${o.redisUrl}" } }`] as [string, string]]),
    ['log', 'log: { level: warn }']
  ])
  for (const [k, v] of Object.entries(o.config ?? {})) lines.set(k, v)
  return [...lines.values()].join('\n') + '\n'
}

/** /readyz's status and body; status 0 and the error when nothing answers. */
function readyz (port: number, tokenFile?: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve) => {
    const headers = tokenFile === undefined ? {} : { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` }
    const req = httpRequest({ host: '127.0.0.1', port, path: '/readyz', agent: false, headers }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', (err) => resolve({ status: 0, body: err.message }))
    req.end()
  })
}

/** Starts one gateway process; resolved once its /readyz says 200. Killed in teardown if still running. */
export async function startGateway (t: Teardown, o: FleetOptions & { name: string }): Promise<GatewayProcess> {
  const port = await freePort()
  const adminPort = await freePort()
  const auditDir = join(o.base, `${o.name}-audit`)
  const config = join(o.base, `${o.name}.yaml`)
  writeFileSync(config, gatewayConfig({ ...o, port, adminPort, auditDir }))
  // A clean environment: no NASGUARD_* from the caller, no tap hooks.
  const child = spawn(process.execPath, [CLI, 'start', '--config', config], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const keep = (c: Buffer): void => { out = (out + c.toString()).slice(-20000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await exited
  })
  let last = { status: 0, body: 'not asked yet' }
  try {
    await waitFor(`gateway ${o.name} to be ready`, async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`gateway ${o.name} exited:\n${out}`)
      last = await readyz(adminPort, o.adminTokenFile)
      return last.status === 200 ? true : undefined
    // A gateway starts in 1-2 s on an idle machine, 5-9 s when it is loaded (load average 11 here).
    }, { intervalMs: 100, tries: 900 })
  } catch (err) {
    throw new Error(`${(err as Error).message}; its /readyz said ${last.status} ${last.body}; its output:\n${out}`)
  }
  return { name: o.name, port, adminPort, config, auditDir, child, exited, output: () => out }
}

/** SIGTERM, as systemd stops it: resolved with how it exited. */
export async function stopGateway (gw: GatewayProcess): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
  if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGTERM')
  return await gw.exited
}
