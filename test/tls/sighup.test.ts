// SIGHUP reloads the certificate of a running gateway process (here with
// the file watcher off, so nothing else could have done it).
import t from 'tap'
import { spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { createCa, issueServerCert, writeKeyFile } from '../../src/tls/certificates.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { waitFor } from '../helpers/wait.js'
import { freePort } from '../helpers/process.js'

function fingerprint (port: number, ca: string): Promise<string | undefined> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => { const f = s.getPeerCertificate().fingerprint256; s.destroy(); res(f) })
    s.on('error', () => res(undefined))
  })
}

t.test('SIGHUP: new handshakes get the new certificate, no restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-sighup-'))
  const ca = createCa('sighup CA')
  const first = issueServerCert(ca, ['localhost', '127.0.0.1'])
  const second = issueServerCert(ca, ['localhost', '127.0.0.1'])
  writeFileSync(join(dir, 'server.crt'), first.certPem)
  writeKeyFile(join(dir, 'server.key'), first.keyPem)
  writeFileSync(join(dir, 'jwt.secret'), 's'.repeat(40))
  const nas = await startStubNas(t)
  const port = await freePort()
  writeFileSync(join(dir, 'g.yaml'), [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    'tls: { cert: server.crt, key: server.key, watch: false }',
    `upstream: { url: "${nas.url}" }`,
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
    'audit: { dir: audit }',
    'admin: { enabled: false }',
    'log: { level: error }'
  ].join('\n'))
  // As an operator runs it: not under tap's process hooks (NODE_OPTIONS).
  const child = spawn(process.execPath, [resolve('dist/cli.js'), 'start', '--config', join(dir, 'g.yaml')], { stdio: 'ignore', env: { PATH: process.env.PATH } })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const fpFirst = new X509Certificate(first.certPem).fingerprint256
  const fpSecond = new X509Certificate(second.certPem).fingerprint256
  t.equal(await waitFor('the gateway to listen', () => fingerprint(port, ca.certPem), { tries: 200, intervalMs: 50 }), fpFirst)

  // Renew by rename, as certificate tools do.
  writeFileSync(join(dir, 'server.crt.new'), second.certPem)
  writeKeyFile(join(dir, 'server.key.new'), second.keyPem)
  renameSync(join(dir, 'server.key.new'), join(dir, 'server.key'))
  renameSync(join(dir, 'server.crt.new'), join(dir, 'server.crt'))
  t.equal(await fingerprint(port, ca.certPem), fpFirst, 'with the watcher off, nothing changes by itself')

  child.kill('SIGHUP')
  t.equal(await waitFor('the new certificate', async () => ((await fingerprint(port, ca.certPem)) === fpSecond ? fpSecond : undefined)), fpSecond, 'after SIGHUP: the new certificate')
  t.equal(child.exitCode, null, 'the same process, still running')

  // A broken pair on SIGHUP keeps the current one.
  copyFileSync(join(dir, 'jwt.secret'), join(dir, 'server.key'))
  child.kill('SIGHUP')
  t.equal(await fingerprint(port, ca.certPem), fpSecond, 'a broken key: the current certificate stays')
  child.kill('SIGTERM')
  t.equal(await new Promise((res) => child.on('exit', res)), 0)
})
