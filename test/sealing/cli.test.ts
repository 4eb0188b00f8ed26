// `nasguard keys` and `nasguard names`, run as an operator would (the built CLI).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { testCerts } from '../helpers/gateway.js'

const CLI = resolve('dist/cli.js')

function run (args: string[]): { code: number | null, out: string, err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8' })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

t.test('keys new|list|show and names encode|decode', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-keys-'))
  const keyring = join(dir, 'keyring')
  const config = join(dir, 'nasguard.yaml')
  const certs = testCerts()
  writeFileSync(config, `listen: { port: 8443 }
tls: { cert: ${certs.cert}, key: ${certs.key} }
upstream: { url: http://127.0.0.1:1 }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]
audit: { dir: ${dir}/audit }
sealing: { mode: require, keyring: ${keyring}, periodPattern: "/medicall/{yyyy}/{mm}/**" }
`)
  const made = run(['keys', 'new', '--config', config, '--period', '2026-11'])
  t.equal(made.code, 0, made.err)
  t.match(made.out, /^period 2026-11\nkey id 2026-11:[0-9a-f]{16}\nrecipient age1[a-z0-9]{58}\nidentity .*2026-11\.key\n$/)
  t.notMatch(made.out + made.err, /AGE-SECRET-KEY/, 'no secret printed')
  t.equal(statSync(keyring).mode & 0o777, 0o700)
  t.equal(statSync(join(keyring, '2026-11.key')).mode & 0o777, 0o600)
  t.equal(statSync(join(keyring, 'names.key')).mode & 0o777, 0o600)
  const again = run(['keys', 'new', '--config', config, '--period', '2026-11'])
  t.equal(again.code, 1, 'a period key is never replaced')
  t.match(again.err, /exists/)
  const recipient = /recipient (\S+)/.exec(made.out)?.[1]
  const list = run(['keys', 'list', '--config', config])
  t.equal(list.code, 0)
  t.match(list.out, new RegExp(`2026-11 .* ${recipient}`))
  const show = run(['keys', 'show', '--config', config, '--period', '2026-11'])
  t.match(show.out, `recipient ${recipient}`)

  const enc = run(['names', 'encode', '--config', config, '/medicall/2026/11/29/101500_46701234567.wav'])
  t.equal(enc.code, 0, enc.err)
  const sealed = enc.out.split('\n')[0]
  t.match(sealed, /^\/medicall\/2026\/11\/29\/[a-z2-7]+\.age$/)
  t.match(enc.out, /period 2026-11\n/)
  const dec = run(['names', 'decode', '--config', config, sealed])
  t.equal(dec.out, '/medicall/2026/11/29/101500_46701234567.wav\n')
})
