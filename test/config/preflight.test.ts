// `config check` runs every check `start` runs, without listening, and
// `start` refuses the same configs: each case below is refused by both,
// with the key and the reason, exit 1.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createCa, issueServerCert } from '../../src/tls/certificates.js'
import { testCerts } from '../helpers/certs.js'
import { freePort } from '../helpers/process.js'

const CLI = resolve('dist/cli.js')

function cli (args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** A self-signed weak.crt and weak.key in dir, with openssl's key options. */
function weakCert (dir: string, keyArgs: string[]): void {
  const r = spawnSync('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', join(dir, 'weak.key'), '-out', join(dir, 'weak.crt'), '-days', '30', '-subj', '/CN=localhost'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`)
}

async function writeConfig (dir: string, o: { cert?: string, key?: string, auditDir?: string, adminPort?: number, port?: number } = {}): Promise<string> {
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), 's'.repeat(40) + '\n')
  const port = o.port ?? await freePort()
  const file = join(dir, 'nasguard.yaml')
  writeFileSync(file, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `tls: { cert: ${o.cert ?? certs.cert}, key: ${o.key ?? certs.key} }`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
    `audit: { dir: ${o.auditDir ?? 'audit'} }`,
    `admin: { host: 127.0.0.1, port: ${o.adminPort ?? await freePort()} }`
  ].join('\n'))
  return file
}

t.test('configs that start refuses: config check refuses them too, naming the key', async (t) => {
  const cases: Array<[string, (dir: string) => Promise<string>, RegExp]> = [
    ['a key that belongs to another certificate', async (dir) => {
      const other = issueServerCert(createCa('other CA'), ['localhost'])
      writeFileSync(join(dir, 'other.key'), other.keyPem)
      return await writeConfig(dir, { key: join(dir, 'other.key') })
    }, /config error at tls\.cert: .*does not belong to the certificate/],
    ['an RSA-1024 server key', async (dir) => {
      weakCert(dir, ['-newkey', 'rsa:1024'])
      return await writeConfig(dir, { cert: join(dir, 'weak.crt'), key: join(dir, 'weak.key') })
    }, /config error at tls\.cert: .*has an RSA key of 1024 bits \(at least 2048\)/],
    ['a key on a curve TLS clients do not take', async (dir) => {
      weakCert(dir, ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'])
      return await writeConfig(dir, { cert: join(dir, 'weak.crt'), key: join(dir, 'weak.key') })
    }, /config error at tls\.cert: .*has a key on the curve secp256k1/],
    ['an Ed25519 server key', async (dir) => {
      weakCert(dir, ['-newkey', 'ed25519'])
      return await writeConfig(dir, { cert: join(dir, 'weak.crt'), key: join(dir, 'weak.key') })
    }, /config error at tls\.cert: .*has an ed25519 key \(browsers take RSA/],
    ['a certificate file that is not PEM', async (dir) => {
      writeFileSync(join(dir, 'bad.crt'), 'not a certificate\n')
      return await writeConfig(dir, { cert: join(dir, 'bad.crt') })
    }, /config error at tls\.cert: .*is not a PEM certificate/],
    ['audit.dir is a file', async (dir) => {
      writeFileSync(join(dir, 'audit-file'), 'x')
      return await writeConfig(dir, { auditDir: join(dir, 'audit-file') })
    }, /config error at audit\.dir: .*audit-file is not a directory/],
    ['audit.dir under a file', async (dir) => {
      writeFileSync(join(dir, 'plain'), 'x')
      return await writeConfig(dir, { auditDir: join(dir, 'plain', 'audit') })
    }, /config error at audit\.dir: .*cannot be made: .*plain is not a directory/],
    ['the audit key missing beside a trail', async (dir) => {
      mkdirSync(join(dir, 'audit'))
      writeFileSync(join(dir, 'audit', 'audit.jsonl'), '{"seq":1}\n')
      return await writeConfig(dir)
    }, /config error at audit\.keyFile: .*missing, but .* holds a trail/],
    ['an audit key too short to be one', async (dir) => {
      writeFileSync(join(dir, 'audit.key'), 'x\n', { mode: 0o600 })
      return await writeConfig(dir)
    }, /config error at audit\.keyFile: .*an audit key must be at least 32 characters/],
    ['the admin listener on the gateway\'s port', async (dir) => {
      const port = await freePort()
      return await writeConfig(dir, { port, adminPort: port })
    }, /config error at admin\.port: .*also the gateway's listen address/]
  ]
  for (const [name, make, message] of cases) {
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-preflight-'))
    const file = await make(dir)
    const check = cli(['config', 'check', file])
    t.equal(check.status, 1, `${name}: config check exits 1`)
    t.match(check.stderr, message, `${name}: config check says why`)
    const start = cli(['start', '--config', file])
    t.equal(start.status, 1, `${name}: start exits 1 too`)
    t.match(start.stderr, message, `${name}: with the same reason`)
  }
})

t.test('a port in use is a warning for config check (the running gateway holds it), exit 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-preflight-'))
  const held = createServer()
  await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { held.close() })
  const port = (held.address() as { port: number }).port
  const check = cli(['config', 'check', await writeConfig(dir, { port })])
  t.equal(check.status, 0, check.stderr)
  t.match(check.stderr, new RegExp(`warning: config at listen\\.port: 127\\.0\\.0\\.1:${port} is in use`))
  t.match(check.stdout, /config OK/)
})

t.test('secret files every user can read: a warning naming the key from config check (start prints the same); none once chmod o-r', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-preflight-'))
  const certs = testCerts()
  copyFileSync(certs.key, join(dir, 'server.key'))
  chmodSync(join(dir, 'server.key'), 0o644)
  const file = await writeConfig(dir, { key: join(dir, 'server.key') })
  chmodSync(join(dir, 'jwt.secret'), 0o644)
  const check = cli(['config', 'check', file])
  t.equal(check.status, 0, 'a warning, not an error: ' + check.stderr)
  t.match(check.stderr, /warning: config at tls\.key: .*server\.key can be read by every user of this host \(mode 0644\): chmod o-r/)
  t.match(check.stderr, /warning: config at auth\.jwt\.secretFile: .*jwt\.secret can be read by every user/)
  chmodSync(join(dir, 'server.key'), 0o640)
  chmodSync(join(dir, 'jwt.secret'), 0o600)
  const quiet = cli(['config', 'check', file])
  t.equal(quiet.status, 0)
  t.notMatch(quiet.stderr, /can be read by every user/, 'group-readable (the service layout) is fine')
})

t.test('settings weaker than they look: a warning naming the key from config check, exit 0; none for the safe setting', async (t) => {
  const certs = testCerts()
  const tlsWith = (more: string) => (text: string): string => text.replace(/tls: \{ (.*) \}/, (_m, inner: string) => `tls: { ${inner}, ${more} }`)
  const cases: Array<[string, (text: string) => string, RegExp]> = [
    ['the admin listener on every address, without a credential', (text) => text.replace('admin: { host: 127.0.0.1', 'admin: { host: 0.0.0.0'), /warning: config at admin\.host: 0\.0\.0\.0 is reachable from other hosts and the admin listener has no credential/],
    ['HSTS max-age 0', tlsWith('hstsMaxAge: 0'), /warning: config at tls\.hstsMaxAge: 0 tells browsers to forget/],
    ['a client CA without client authentication', tlsWith(`clientCa: ${certs.ca}`), /warning: config at tls\.clientCa: is set, but tls\.clientAuth is off/],
    ['a NAS rate floor no NAS reaches', (text) => text.replace('upstream: { url: "http://127.0.0.1:9" }', 'upstream: { url: "http://127.0.0.1:9", minRate: 209715200 }'), /warning: config at upstream\.minRate: 209715200 bytes a second is more than a NAS sends/],
    ['pipelining to the NAS with a rate floor', (text) => text.replace('upstream: { url: "http://127.0.0.1:9" }', 'upstream: { url: "http://127.0.0.1:9", pipelining: 4 }'), /warning: config at upstream\.pipelining: 4 requests share a NAS connection/],
    ['the grants key is the JWT secret', (text) => text.replace('auth: { jwt: { secretFile: jwt.secret } }', 'auth: { jwt: { secretFile: jwt.secret }, grants: { secretFile: jwt.secret } }'), /warning: config at auth\.grants\.secretFile: is the JWT secret/]
  ]
  for (const [name, edit, warning] of cases) {
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-preflight-'))
    const file = await writeConfig(dir)
    const safe = cli(['config', 'check', file])
    t.notMatch(safe.stderr, /warning: config at (admin\.host|tls\.|auth\.grants|upstream\.)/, `${name}: no warning for the safe setting`)
    writeFileSync(file, edit(readFileSync(file, 'utf8')))
    const check = cli(['config', 'check', file])
    t.equal(check.status, 0, `${name}: a warning, not an error: ${check.stderr}`)
    t.match(check.stderr, warning, name)
  }
})
