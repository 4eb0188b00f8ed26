// Test harness: real certificates, a stub NAS that counts what reaches it,
// a gateway on real sockets, signed tokens, and captured logs and audit lines.
import { READINESS_USER_AGENT } from '../../src/proxy/upstream.js'
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { createSigner } from 'fast-jwt'
import { pino } from 'pino'
import { buildGateway, type Gateway } from '../../src/app.js'
import { loadConfig } from '../../src/config/load.js'
import { createCa, issueServerCert, writeKeyFile } from '../../src/tls/certificates.js'
import { toneWav } from '../../src/demo/recordings.js'
import { loggerOptions } from '../../src/logging.js'
import { trailFiles } from '../../src/audit/verify.js'

export interface Teardown { teardown: (fn: () => unknown) => void }

export const SECRET = 'test-secret-that-is-at-least-32-bytes-long!'

let certCache: { dir: string, ca: string, cert: string, key: string } | undefined

/**
 * A CA and a localhost server certificate, shared by every test process of
 * this user on this day (two RSA-2048 keys are about 0.6 s of CPU, and
 * about 50 test files want them). Made in a private directory and renamed
 * into place, so a process sees all four files or none; a directory another
 * user made, or one left incomplete, is not used.
 */
export function testCerts (): { dir: string, ca: string, cert: string, key: string } {
  if (certCache) return certCache
  const dir = join(tmpdir(), `nasguard-test-certs-${process.getuid?.() ?? 0}-${new Date().toISOString().slice(0, 10)}`)
  const paths = { dir, ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') }
  const usable = (): boolean => {
    try {
      const st = statSync(dir)
      return st.uid === (process.getuid?.() ?? st.uid) && (st.mode & 0o077) === 0 && [paths.ca, paths.cert, paths.key, join(dir, 'ca.key')].every((f) => existsSync(f))
    } catch {
      return false
    }
  }
  if (!usable()) {
    const tmp = mkdtempSync(join(tmpdir(), 'nasguard-certs-'))
    const ca = createCa('nasguard test CA')
    const server = issueServerCert(ca, ['localhost', '127.0.0.1'])
    writeKeyFile(join(tmp, 'ca.key'), ca.keyPem)
    writeKeyFile(join(tmp, 'server.key'), server.keyPem)
    writeKeyFile(join(tmp, 'server.crt'), server.certPem)
    writeKeyFile(join(tmp, 'ca.crt'), ca.certPem)
    try {
      renameSync(tmp, dir)
    } catch {
      // Another test process was first: its set is used.
      rmSync(tmp, { recursive: true, force: true })
    }
    if (!usable()) throw new Error(`the shared test certificates in ${dir} are not usable (another owner, or incomplete): remove it`)
  }
  certCache = paths
  return paths
}

export interface NasRequest { method: string, url: string, headers: IncomingMessage['headers'] }

export type NasHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface StubNas {
  url: string
  port: number
  server: Server
  /** Every request the gateway forwarded to the NAS, in order (not /readyz's health checks). */
  requests: NasRequest[]
  /** /readyz's health checks (user-agent READINESS_USER_AGENT), apart. */
  checks: NasRequest[]
  /** Replace the behaviour for the next requests. */
  handle: (h: NasHandler) => void
}

export const RECORDING = toneWav(440, 0.5)
export { READINESS_USER_AGENT }

/** Serves RECORDING for any path, with Range support, like a plain file server. */
export const serveRecording: NasHandler = (req, res) => {
  const body = RECORDING
  const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
  const headers: Record<string, string | number> = { 'content-type': 'audio/wav', 'accept-ranges': 'bytes', etag: '"rec-1"', server: 'StubNAS/1.0', 'x-powered-by': 'php', 'set-cookie': 'nas=1' }
  if (range) {
    const start = Number(range[1])
    const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1
    if (start >= body.length) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` })
      res.end()
      return
    }
    res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
    res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1))
    return
  }
  res.writeHead(200, { ...headers, 'content-length': body.length })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/**
 * Listens on a free loopback port and closes in teardown (all connections
 * too); close() may also be called earlier, and more than once.
 */
export async function listenOnLoopback (t: Teardown, server: Server): Promise<{ port: number, close: () => Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })
    return closed
  }
  t.teardown(close)
  return { port, close }
}

export async function startStubNas (t: Teardown, handler: NasHandler = serveRecording): Promise<StubNas> {
  let current = handler
  const requests: NasRequest[] = []
  const checks: NasRequest[] = []
  const server = createServer((req, res) => {
    const seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers }
    if (req.headers['user-agent'] === READINESS_USER_AGENT) checks.push(seen)
    else requests.push(seen)
    current(req, res)
  })
  const { port } = await listenOnLoopback(t, server)
  return { url: `http://127.0.0.1:${port}`, port, server, requests, checks, handle: (h) => { current = h } }
}

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
      sealing: o.sealing ?? {}
    }
  })
  const logs: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { logs.push(...chunk.toString().split('\n').filter(Boolean)); cb() } })
  const logger = pino({ ...loggerOptions('debug', false) } as pino.LoggerOptions, sink)
  const gateway = await buildGateway(config, { logger })
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

export interface Response { status: number, headers: IncomingMessage['headers'], body: Buffer }

export interface RequestOpts { headers?: Record<string, string>, method?: string }

/** Options for one HTTPS request over a fresh TLS connection, trusting the test CA. */
export function requestOptions (gw: { port: number }, path: string, opts: RequestOpts = {}): RequestOptions {
  return {
    host: '127.0.0.1',
    servername: 'localhost',
    port: gw.port,
    path,
    method: opts.method ?? 'GET',
    headers: opts.headers,
    ca: readFileSync(testCerts().ca),
    agent: false
  }
}

/** One HTTPS request over a fresh TLS connection, trusting the test CA. */
export function get (gw: { port: number }, path: string, opts: RequestOpts = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions(gw, path, opts), (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** One HTTPS/1.1 POST on a fresh connection: an object body goes as JSON, a string as it is. */
export function post (gw: { port: number }, path: string, body: string | object | undefined, headers: Record<string, string> = {}): Promise<Response> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  const h: Record<string, string> = { ...(typeof body === 'object' ? { 'content-type': 'application/json' } : {}), ...headers }
  if (payload !== undefined) h['content-length'] = String(Buffer.byteLength(payload))
  return new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions(gw, path, { method: 'POST', headers: h }), (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(payload)
  })
}

export function bearer (token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` }
}

/**
 * Writes raw bytes over TLS (no client-side URL or header normalisation) and
 * returns everything the server sent until it closed the connection or the
 * first response was complete.
 */
export function rawTls (gw: { port: number }, payload: string | Buffer, opts: { untilClose?: boolean } = {}): Promise<{ text: string, closed: boolean }> {
  return new Promise((resolve, reject) => {
    const tlsOpts: ConnectionOptions = { host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca) }
    const socket = tlsConnect(tlsOpts, () => { socket.write(payload) })
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      socket.destroy()
      resolve({ text, closed })
    }
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (!opts.untilClose && responseComplete(text)) finish(false)
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err) => { if (!done) { done = true; reject(err) } })
  })
}

/** Plain TCP to the TLS port, as the leaked NAS's clients did. */
export function rawPlain (gw: { port: number }, payload: string): Promise<{ text: string, closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: gw.port }, () => { socket.write(payload) })
    let text = ''
    socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
    socket.on('close', () => resolve({ text, closed: true }))
    socket.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET') resolve({ text, closed: true }); else reject(err) })
  })
}

function responseComplete (text: string): boolean {
  const headEnd = text.indexOf('\r\n\r\n')
  if (headEnd === -1) return false
  const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headEnd))
  return m !== null && text.length - headEnd - 4 >= Number(m[1])
}

export function statusOf (text: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  return m ? Number(m[1]) : 0
}

/** Parses a Prometheus text exposition into { 'name{labels}': value }. */
export async function scrape (adminUrl: string): Promise<Map<string, number>> {
  const res = await fetch(adminUrl + '/metrics')
  const text = await res.text()
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}
