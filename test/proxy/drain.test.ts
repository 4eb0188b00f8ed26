// SIGTERM with downloads in flight: they may go on for limits.drainTimeoutMs,
// then they are cut, each gets its completion record (outcome `shutdown`),
// the audit trail is flushed and its lock released, and the process exits 0.
// It used to exit 1 at a fixed 10 s with 21 of 21 streams unrecorded and the
// lock left behind. Through the real CLI, over HTTP/1.1 and HTTP/2.
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as http2Connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ServerResponse } from 'node:http'
import { testCerts } from '../helpers/certs.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { SECRET } from '../helpers/gateway-client.js'
import { CLI, freePort, runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'

const CHUNK = Buffer.alloc(64 * 1024, 0x44)

t.test('SIGTERM with 20 downloads in flight: 20 shutdown records, a verified trail, no lock, exit 0', async (t) => {
  const nas = await startStubNas(t, (_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 1024 * 1024 * 1024 })
    const pump = (): void => { while (!res.destroyed && res.write(CHUNK)) { /* until backpressure */ } }
    res.on('drain', pump)
    pump()
  })
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-drain-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  const certs = testCerts()
  const auditDir = join(dir, 'audit')
  const config = join(dir, 'g.yaml')
  writeFileSync(config, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`, '  watch: false',
    `upstream: { url: "${nas.url}", timeoutMs: 600000 }`,
    `auth: { jwt: { secret: "${SECRET}" } }`,
    'policy:', '  - { name: recordings, path: /medicall/**, scopes: [recordings:read] }',
    `audit: { dir: ${JSON.stringify(auditDir)} }`,
    'admin: { enabled: false }',
    'limits: { drainTimeoutMs: 500, sendTimeoutMs: 600000 }'
  ].join('\n') + '\n')
  const child = spawn(process.execPath, [CLI, 'start', '--config', config], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })

  const { createSigner } = await import('fast-jwt')
  const now = Math.floor(Date.now() / 1000)
  const token = createSigner({ key: SECRET })({ sub: 'alice', scope: 'recordings:read', exp: now + 600, iat: now })
  const ca = readFileSync(certs.ca)
  const records = (): Array<Record<string, unknown>> => existsSync(join(auditDir, 'audit.jsonl')) ? readFileSync(join(auditDir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []

  // Wait until the gateway listens (an HTTP/1.1 request answered 401).
  await waitFor('the gateway to listen', () => new Promise<true | undefined>((resolve) => {
    const r = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port, path: '/medicall/x.wav', ca, agent: false }, (res) => { res.resume(); resolve(res.statusCode === 401 ? true : undefined) })
    r.on('error', () => resolve(undefined))
    r.end()
  }), { tries: 200, intervalMs: 50 })

  const path = (i: number): string => `/medicall/2016/01/01/drain-${i}.wav`
  const clients: Array<Promise<void>> = []
  t.teardown(() => { void Promise.all(clients) })
  for (let i = 0; i < 10; i++) {
    clients.push(new Promise((resolve) => {
      const r = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port, path: path(i), ca, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
        res.once('data', () => res.pause())
        res.on('error', () => resolve())
        res.on('close', () => resolve())
      })
      r.on('error', () => resolve())
      r.end()
    }))
  }
  const session = http2Connect(`https://localhost:${port}`, { ca })
  session.on('error', () => {})
  for (let i = 10; i < 20; i++) {
    clients.push(new Promise((resolve) => {
      const s = session.request({ ':path': path(i), authorization: `Bearer ${token}` })
      s.once('data', () => s.pause())
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.end()
    }))
  }
  await waitFor('20 access records', () => records().filter((r) => r.event === 'access').length >= 20 ? true : undefined, { tries: 300, intervalMs: 50 })

  child.kill('SIGTERM')
  const code = await exited
  session.destroy()
  t.equal(code, 0, `exit 0 (${stderr.slice(-500)})`)
  const fetches = records().filter((r) => r.event === 'fetch')
  t.equal(fetches.length, 20, '20 completion records')
  t.ok(fetches.every((r) => r.outcome === 'shutdown'), `each says shutdown (${[...new Set(fetches.map((r) => String(r.outcome)))].join(', ')})`)
  t.notOk(existsSync(join(auditDir, 'audit.lock')), 'the audit lock is released')
  const verify = await runCli(['audit', 'verify', '--config', config])
  t.equal(verify.status, 0, `audit verify: ${verify.stdout}${verify.stderr}`)
})
