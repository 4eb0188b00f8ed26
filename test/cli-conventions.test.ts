// CLI conventions, through the built CLI in a child process: --help and
// --version exit 0 without doing anything else, usage errors exit 2,
// failures exit 1, and NASGUARD_CONFIG stands for --config everywhere.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import forge from 'node-forge'
import { createCa, issueServerCert } from '../src/tls/certificates.js'
import { testCerts } from './helpers/certs.js'

const CLI = resolve('dist/cli.js')

function cli (args: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function writeConfig (dir: string): string {
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), 's'.repeat(40) + '\n')
  const file = join(dir, 'nasguard.yaml')
  writeFileSync(file, [
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
    'audit: { dir: audit }'
  ].join('\n'))
  return file
}

function cliAsync (args: string[], cwd: string): Promise<{ status: number | null, stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'ignore'] })
    let stdout = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.on('close', (status) => resolve({ status, stdout }))
  })
}

const COMMANDS = [
  [], ['start'], ['demo'], ['config'], ['config', 'check'], ['token'], ['token', 'issue'], ['token', 'revoke'],
  ['audit'], ['audit', 'verify'], ['audit', 'search'], ['audit', 'summary'], ['audit', 'new-key'], ['audit', 'prune'],
  ['cert'], ['cert', 'init'], ['cert', 'client'], ['cert', 'revoke'], ['cert', 'show'], ['cert', 'renew'], ['cert', 'crl']
]

t.test('--help on every command exits 0 with that command\'s usage, and does nothing else', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'nasguard-help-'))
  const runs = COMMANDS.flatMap((cmd) => (cmd.length === 2 && cmd[0] === 'token' ? ['--help', '-h'] : ['--help']).map((flag) => ({ cmd, flag })))
  // Four at a time: each is a process start, which is most of the cost.
  const results: Array<{ cmd: string[], flag: string, r: { status: number | null, stdout: string } }> = []
  for (let i = 0; i < runs.length; i += 4) {
    results.push(...await Promise.all(runs.slice(i, i + 4).map(async ({ cmd, flag }) => ({ cmd, flag, r: await cliAsync([...cmd, flag], cwd) }))))
  }
  for (const { cmd, flag, r } of results) {
    t.equal(r.status, 0, `${[...cmd, flag].join(' ')}: exit 0`)
    t.match(r.stdout, new RegExp(`^Usage: nasguard${cmd.map((c) => ' ' + c).join('')}( |$)`, 'm'), `${cmd.join(' ')}: its own usage`)
  }
  // demo --help did not start the demo, config check --help read no file named --help.
  t.notOk(existsSync(join(cwd, '.nasguard-demo')), 'the demo did not run')
  t.notOk(existsSync(join(cwd, 'certs')), 'no certificates were made')
})

t.test('--version prints the package version, exit 0', async (t) => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }
  for (const flag of ['--version', '-V']) {
    const r = cli([flag])
    t.equal(r.status, 0)
    t.equal(r.stdout.trim(), pkg.version)
  }
})

t.test('usage errors exit 2 and say what is wrong; no arguments prints the usage with 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /Usage: nasguard/],
    [['bogus'], /unknown command 'bogus'/],
    [['token', 'issue'], /required option '-c, --config <file>'/],
    [['token', 'issue', '--config', 'x.yaml', '--sub', 'a'], /required option '--scope <scopes>'/],
    [['token', 'revoke', '--config', 'x.yaml', '--bogus'], /unknown option '--bogus'/],
    [['config', 'check'], /config check needs a FILE/],
    [['audit', 'verify'], /needs --config .*or --dir/],
    [['cert', 'init'], /required option '--host <name>'/],
    // Option values, judged before anything is read or written.
    [['token', 'issue', '--config', 'x.yaml', '--sub', 'a', '--scope', 's', '--ttl', 'forever'], /invalid --ttl "forever"/],
    [['cert', 'init', '--host', 'gw', '--days', '5000', '--dir', 'nowhere'], /--days must be a whole number from 1 to 397/],
    [['cert', 'init', '--host', 'gw', '--days', 'soon', '--dir', 'nowhere'], /--days must be a whole number/],
    [['cert', 'init', '--host', 'a b', '--dir', 'nowhere'], /--host "a b" is neither/],
    [['cert', 'renew', '--days', '0', '--dir', 'nowhere'], /--days must be a whole number from 1 to 397/],
    [['cert', 'crl', '--days', '4000', '--dir', 'nowhere'], /--days must be a whole number from 1 to 3650/],
    [['cert', 'client', '--name', 'c', '--out', 'nowhere', '--dir', 'nowhere', '--days', '0'], /--days must be a whole number from 1 to 3650/],
    [['cert', 'client', '--name', 'c', '--out', 'nowhere', '--dir', 'nowhere', '--p12'], /--p12 needs --password-file/],
    [['cert', 'revoke', '--dir', 'nowhere'], /needs --cert FILE or --serial HEX/],
    [['start', 'extra', 'args'], /too many arguments|unknown/],
    // A single-valued option given twice: neither is silently dropped.
    [['cert', 'init', '--host', 'gw', '--key-type', 'rsa', '--key-type', 'ecdsa', '--dir', 'nowhere'], /--key-type is given more than once/],
    [['cert', 'renew', '--days', '3', '--days=4', '--dir', 'nowhere'], /--days is given more than once/],
    [['token', 'issue', '-c', 'x.yaml', '--config', 'y.yaml', '--sub', 'a', '--scope', 's'], /--config is given more than once/],
    [['token', 'issue', '-c', 'x.yaml', '--sub', 'a', '--sub', 'b', '--scope', 's'], /--sub is given more than once/],
    [['audit', 'verify', '--dir', 'a', '--dir', 'b'], /--dir is given more than once/]
  ]
  for (const [args, message] of cases) {
    const r = cli(args)
    t.equal(r.status, 2, `${args.join(' ') || '(none)'}: exit 2`)
    t.match(r.stderr, message, `${args.join(' ') || '(none)'}: says why`)
  }
})

t.test('NASGUARD_CONFIG is honoured by every command that takes --config', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-envcfg-'))
  const file = writeConfig(dir)
  const env = { NASGUARD_CONFIG: file }
  const check = cli(['config', 'check'], env)
  t.equal(check.status, 0, check.stderr)
  t.match(check.stdout, /config OK/)
  t.equal(cli(['config', 'check', '--config', file]).status, 0, 'config check takes --config too')
  const both = cli(['token', 'issue', '--config', file, '--sub', 'alice', '--scope', 'recordings:read'], { NASGUARD_CONFIG: join(dir, 'missing.yaml') })
  t.equal(both.status, 0, `--config wins over NASGUARD_CONFIG, and is not counted as given twice: ${both.stderr}`)
  const issued = cli(['token', 'issue', '--sub', 'alice', '--scope', 'recordings:read'], env)
  t.equal(issued.status, 0, issued.stderr)
  t.match(issued.stdout, /^ey/)
  const revoked = cli(['token', 'revoke', '--jti', 'j-1'], env)
  t.equal(revoked.status, 0, revoked.stderr)
  t.ok(existsSync(join(dir, 'audit', 'revoked.jsonl')), 'the denylist went where the config says')
  const verify = cli(['audit', 'verify'], env)
  t.not(verify.status, 2, 'audit verify found its trail through NASGUARD_CONFIG')
  // A config that does not load is a failure (1), not a usage error.
  const bad = cli(['config', 'check'], { NASGUARD_CONFIG: join(dir, 'missing.yaml') })
  t.equal(bad.status, 1)
})

t.test('cert show exits 1 for an expired certificate, 0 for a valid one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-show-'))
  const ca = createCa('show CA')
  const valid = join(dir, 'valid.crt')
  writeFileSync(valid, issueServerCert(ca, ['localhost']).certPem)
  const ok = cli(['cert', 'show', valid])
  t.equal(ok.status, 0, ok.stderr)
  const expired = join(dir, 'expired.crt')
  writeFileSync(expired, selfSigned(new Date(Date.now() - 3 * 86400000), new Date(Date.now() - 86400000)))
  const r = cli(['cert', 'show', expired])
  t.match(r.stdout, /EXPIRED/)
  t.equal(r.status, 1, 'expired: exit 1')
})

/** A self-signed certificate with the given validity (forge: the gateway's own issuers refuse past dates). */
function selfSigned (notBefore: Date, notAfter: Date): string {
  // node:crypto makes the key (forge's own RSA key generation is pure JavaScript, and slow).
  const { privateKey: pem } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  const privateKey = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey
  const keys = { privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) }
  const cert = forge.pki.createCertificate()
  cert.publicKey = keys.publicKey
  cert.serialNumber = '01'
  cert.validity.notBefore = notBefore
  cert.validity.notAfter = notAfter
  cert.setSubject([{ name: 'commonName', value: 'expired.test' }])
  cert.setIssuer([{ name: 'commonName', value: 'expired.test' }])
  cert.sign(keys.privateKey, forge.md.sha256.create())
  return forge.pki.certificateToPem(cert)
}
