// A listener that cannot listen stops the start with exit 1 and an error
// that names it, for one process and for workers, and leaves nothing
// listening behind (it used to serve on without metrics or readiness, and
// then exit 143 on SIGTERM with no graceful close).
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, connect, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testCerts } from './helpers/certs.js'
import { CLI, freePort } from './helpers/process.js'

function writeConfig (dir: string, port: number, adminPort: number, workers: number): string {
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), 's'.repeat(40) + '\n')
  const file = join(dir, 'nasguard.yaml')
  writeFileSync(file, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
    'audit: { dir: audit }',
    `admin: { host: 127.0.0.1, port: ${adminPort} }`,
    `workers: ${workers}`
  ].join('\n'))
  return file
}

/** Holds a port, as another process would. */
async function occupy (t: { teardown: (fn: () => unknown) => void }, port: number): Promise<Server> {
  const s = createServer()
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, '127.0.0.1', resolve) })
  t.teardown(() => new Promise<void>((resolve) => s.close(() => resolve())))
  return s
}

/** Runs `nasguard start`; resolves with its exit and stderr, or kills it after a generous bound. */
function start (file: string): Promise<{ code: number | null, signal: string | null, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'start', '--config', file], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const bound = setTimeout(() => child.kill('SIGKILL'), 60000)
    child.on('close', (code, signal) => { clearTimeout(bound); resolve({ code, signal, stderr }) })
  })
}

function listening (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

for (const workers of [1, 2]) {
  for (const clash of ['admin', 'gateway'] as const) {
    t.test(`workers: ${workers}, the ${clash} port is taken: exit 1, naming the listener, nothing left listening`, async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'nasguard-listen-'))
      const port = await freePort()
      const adminPort = await freePort()
      await occupy(t, clash === 'admin' ? adminPort : port)
      const r = await start(writeConfig(dir, port, adminPort, workers))
      t.equal(r.signal, null, 'it exited by itself')
      t.equal(r.code, 1, 'exit 1')
      t.match(r.stderr, new RegExp(`the ${clash} listener cannot listen on 127\\.0\\.0\\.1:${clash === 'admin' ? adminPort : port}: EADDRINUSE`))
      t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
      // The other listener was closed again (or never opened).
      t.notOk(await listening(clash === 'admin' ? port : adminPort), 'the other port is free')
    })
  }
}
