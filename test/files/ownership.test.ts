// Run as root, the CLI leaves the files it writes usable by the gateway's
// user: `token revoke` once made a root-owned 0600 denylist, and a gateway
// running as its service user then answered 503 to every request while the
// CLI had printed success. Here the gateway runs as nobody, the CLI as root.
import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { get as httpGet } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testCerts } from '../helpers/gateway.js'
import { CLI, freePort, runCli } from '../helpers/process.js'

const NOBODY = 65534
const root = process.getuid?.() === 0

function readyz (port: number): Promise<{ status: number, body: Record<string, unknown> } | undefined> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/readyz' }, (res) => {
      let b = ''
      res.on('data', (c: Buffer) => { b += c.toString() })
      res.on('end', () => { try { resolve({ status: res.statusCode ?? 0, body: JSON.parse(b) as Record<string, unknown> }) } catch { resolve(undefined) } })
    })
    req.on('error', () => resolve(undefined))
  })
}

/** Starts the gateway as nobody and returns its readiness once it answers, then stops it. */
async function readinessAsNobody (file: string, adminPort: number): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { uid: NOBODY, gid: NOBODY, env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  try {
    for (let i = 0; i < 600; i++) {
      const r = await readyz(adminPort)
      if (r) return r.body
      if (child.exitCode !== null) throw new Error(`the gateway exited: ${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`no readiness answer: ${stderr}`)
  } finally {
    child.kill('SIGTERM')
    await exited
  }
}

t.test('as root, token revoke and audit new-key leave files the gateway\'s user can use', { skip: root ? false : 'needs root (the CLI must run as root, the gateway as nobody)' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-owner-'))
  chmodSync(base, 0o755)
  // The service user's state directory; audit.dir inside it does not exist yet.
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

  const revoke = await runCli(['token', 'revoke', '--config', file, '--jti', 'stolen-1'])
  t.equal(revoke.status, 0, revoke.stderr)
  for (const made of [join(state, 'audit'), join(state, 'audit', 'revoked.jsonl')]) {
    t.equal(statSync(made).uid, NOBODY, `${made} belongs to the gateway's user`)
  }
  t.equal(statSync(join(state, 'audit', 'revoked.jsonl')).mode & 0o777, 0o600, 'and is still 0600')
  const first = await readinessAsNobody(file, adminPort)
  t.match(first, { checks: { revocation: 'ok', audit: 'ok' } }, 'the gateway, as nobody, reads the denylist root wrote')

  // A second revoke keeps the owner; the key is lost and remade by root.
  t.equal((await runCli(['token', 'revoke', '--config', file, '--sub', 'mallory'])).status, 0)
  t.equal(statSync(join(state, 'audit', 'revoked.jsonl')).uid, NOBODY)
  unlinkSync(join(state, 'audit.key'))
  const newKey = await runCli(['audit', 'new-key', '--config', file])
  t.equal(newKey.status, 0, newKey.stderr)
  for (const made of ['audit.key', 'audit/audit.jsonl', 'audit/audit.head']) {
    t.equal(statSync(join(state, made)).uid, NOBODY, `${made} belongs to the gateway's user`)
  }
  const second = await readinessAsNobody(file, adminPort)
  t.match(second, { checks: { revocation: 'ok', audit: 'ok' } }, 'and starts on the key and trail root made')
})

t.test('as root, cert init and cert renew leave keys the gateway\'s user can read', { skip: root ? false : 'needs root' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-owner-certs-'))
  chmodSync(base, 0o755)
  const certs = join(base, 'certs')
  mkdirSync(certs, { mode: 0o700 })
  chownSync(certs, NOBODY, NOBODY)
  const init = await runCli(['cert', 'init', '--host', 'localhost', '--dir', certs])
  t.equal(init.status, 0, init.stderr)
  const renew = await runCli(['cert', 'renew', '--dir', certs])
  t.equal(renew.status, 0, renew.stderr)
  for (const f of ['ca.key', 'server.key']) {
    t.equal(statSync(join(certs, f)).uid, NOBODY, `${f} belongs to the owner of its directory`)
    t.equal(statSync(join(certs, f)).mode & 0o777, 0o600, `${f} is still 0600`)
  }
  t.equal(statSync(join(certs, 'server.crt')).mode & 0o777, 0o644, 'the certificate is readable by all')
})
