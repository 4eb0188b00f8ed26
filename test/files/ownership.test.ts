// Run as root, the CLI never leaves files the gateway's user cannot use:
// `token revoke` as root once made a root-owned 0600 denylist, and a
// gateway running as its service user then answered 503 to every request
// while the CLI had printed success. As root in a directory another user
// owns, every command that writes refuses and names the user to run it as
// (handing files over by chown was red-teamed: root follows the links that
// user plants); run as that user, the gateway (also as that user) uses what
// it wrote. Here that user is nobody.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, existsSync, lchownSync, mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { get as httpGet } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testCerts } from '../helpers/certs.js'
import { CLI, freePort } from '../helpers/process.js'

const NOBODY = 65534
const root = process.getuid?.() === 0

function cli (args: string[], as?: number): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 60000, ...(as !== undefined ? { uid: as, gid: as, cwd: '/' } : {}) })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function readyz (port: number): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/readyz' }, (res) => {
      let b = ''
      res.on('data', (c: Buffer) => { b += c.toString() })
      res.on('end', () => { try { resolve(JSON.parse(b) as Record<string, unknown>) } catch { resolve(undefined) } })
    })
    req.on('error', () => resolve(undefined))
  })
}

/** Starts the gateway as nobody and returns its readiness once it answers, then stops it. */
async function readinessAsNobody (file: string, adminPort: number): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { uid: NOBODY, gid: NOBODY, cwd: '/', env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  try {
    for (let i = 0; i < 600; i++) {
      const r = await readyz(adminPort)
      if (r) return r
      if (child.exitCode !== null) throw new Error(`the gateway exited: ${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`no readiness answer: ${stderr}`)
  } finally {
    child.kill('SIGTERM')
    await exited
  }
}

t.test('as root in the service user\'s directory, writing commands refuse and say whom to run as; as that user they work', { skip: root ? false : 'needs root (the CLI as root and as nobody)' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-owner-'))
  chmodSync(base, 0o755)
  const state = join(base, 'state')
  mkdirSync(state, { mode: 0o700 })
  chownSync(state, NOBODY, NOBODY)
  const certs = testCerts()
  for (const [from, to] of [[certs.cert, 'server.crt'], [certs.key, 'server.key']]) {
    copyFileSync(from, join(state, to))
    chownSync(join(state, to), NOBODY, NOBODY)
  }
  writeFileSync(join(state, 'jwt.secret'), 's'.repeat(40) + '\n', { mode: 0o600 })
  chownSync(join(state, 'jwt.secret'), NOBODY, NOBODY)
  const adminPort = await freePort()
  const file = join(base, 'nasguard.yaml')
  writeFileSync(file, [
    `listen: { host: 127.0.0.1, port: ${await freePort()} }`,
    `tls: { cert: ${join(state, 'server.crt')}, key: ${join(state, 'server.key')} }`,
    'upstream: { url: "http://127.0.0.1:9" }',
    `auth: { jwt: { secretFile: ${join(state, 'jwt.secret')} } }`,
    'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
    `audit: { dir: ${join(state, 'audit')} }`,
    `admin: { host: 127.0.0.1, port: ${adminPort} }`
  ].join('\n'))

  // A link the directory's owner planted where root would write is never followed.
  const victim = join(base, 'victim')
  writeFileSync(victim, 'untouched\n', { mode: 0o600 })
  mkdirSync(join(state, 'audit'), { mode: 0o700 })
  chownSync(join(state, 'audit'), NOBODY, NOBODY)
  symlinkSync(victim, join(state, 'audit', 'revoked.jsonl'))
  lchownSync(join(state, 'audit', 'revoked.jsonl'), NOBODY, NOBODY)

  const asRoot = cli(['token', 'revoke', '--config', file, '--jti', 'stolen-1'])
  t.equal(asRoot.status, 1, 'root is refused')
  t.match(asRoot.stderr, /belongs to nobody \(uid 65534\), not root: run this as that user, e\.g\. sudo -u nobody nasguard token revoke/)
  t.equal(readFileSync(victim, 'utf8'), 'untouched\n', 'nothing was written through the planted link')
  t.equal(statSync(victim).uid, 0, 'nor handed over')
  for (const args of [['audit', 'new-key', '--config', file], ['cert', 'init', '--host', 'localhost', '--dir', join(state, 'certs')]]) {
    const r = cli(args)
    t.equal(r.status, 1, `${args.slice(0, 2).join(' ')} as root is refused`)
    t.match(r.stderr, /sudo -u nobody/)
  }
  t.notOk(existsSync(join(state, 'certs')), 'cert init made nothing')

  // As the service user, the same commands work, and the gateway uses what they wrote.
  const planted = join(state, 'audit', 'revoked.jsonl')
  spawnSync('rm', ['-f', planted])
  const asNobody = cli(['token', 'revoke', '--config', file, '--jti', 'stolen-1'], NOBODY)
  t.equal(asNobody.status, 0, asNobody.stderr)
  t.equal(statSync(planted).uid, NOBODY, 'the denylist belongs to the service user')
  const ready = await readinessAsNobody(file, adminPort)
  t.match(ready, { checks: { revocation: 'ok', audit: 'ok' } }, 'the gateway, as nobody, reads it')
})

t.test('as root in root\'s own directories, the commands work as before', { skip: root ? false : 'needs root' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-owner-root-'))
  const r = cli(['cert', 'init', '--host', 'localhost', '--dir', join(base, 'certs')])
  t.equal(r.status, 0, r.stderr)
  t.equal(statSync(join(base, 'certs', 'server.key')).mode & 0o777, 0o600)
})
