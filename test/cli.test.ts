// The command line and the newcomer's demo, run as a user would: the built
// CLI in a child process (npm test builds first).
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createVerifier } from 'fast-jwt'
import { testCerts } from './helpers/certs.js'

const CLI = resolve('dist/cli.js')
const SECRET = 's'.repeat(40)

function cli (args: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function writeConfig (dir: string, extra = ''): string {
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), SECRET + '\n')
  const file = join(dir, 'nasguard.yaml')
  writeFileSync(file, [
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret, issuer: "https://idp.test/" } }',
    'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
    'audit: { dir: audit }',
    extra
  ].join('\n'))
  return file
}

t.test('config check: OK for a good file, key and reason for a bad one, no stack trace', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cli-'))
  const good = cli(['config', 'check', writeConfig(dir)])
  t.equal(good.status, 0)
  t.match(good.stdout, /config OK/)

  const bad = cli(['config', 'check', writeConfig(dir, 'listen: { port: "eighty" }')])
  t.equal(bad.status, 1)
  t.match(bad.stderr, /config error at listen\.port: must be integer/)
  t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace')

  const env = cli(['config', 'check', writeConfig(dir)], { NASGUARD_UPSTREAM_URL: 'nas.lan' })
  t.equal(env.status, 1)
  t.match(env.stderr, /config error at upstream\.url: is not a URL/)

  const example = cli(['config', 'check', resolve('deploy/nasguard.example.yaml')], {
    NASGUARD_TLS_CERT: testCerts().cert,
    NASGUARD_TLS_KEY: testCerts().key,
    NASGUARD_UPSTREAM_PASSWORD_FILE: join(dir, 'jwt.secret'),
    NASGUARD_AUTH_JWT_SECRET_FILE: join(dir, 'jwt.secret')
  })
  t.equal(example.status, 0, 'the shipped example is valid: ' + example.stderr)

  const usage = cli(['frobnicate'])
  t.equal(usage.status, 2)
  t.match(usage.stderr, /unknown command/)
})

t.test('token issue refuses a subject or scope the gateway would refuse (exit 2), and cert revoke a file that holds no certificate, naming it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cli-'))
  const file = writeConfig(dir)
  for (const [sub, scope] of [['', 'recordings:read'], ['x'.repeat(257), 'recordings:read'], ['a\nb', 'recordings:read'], ['alice', ' ']]) {
    const r = cli(['token', 'issue', '--config', file, '--sub', sub, '--scope', scope])
    t.equal(r.status, 2, `sub ${JSON.stringify(sub.slice(0, 10))} scope ${JSON.stringify(scope)}: exit 2`)
    t.match(r.stderr, /--(sub|scope): /)
    t.equal(r.stdout, '', 'no token')
  }
  t.equal(cli(['token', 'issue', '--config', file, '--sub', 'x'.repeat(256), '--scope', 'recordings:read']).status, 0, '256 characters are a subject')
  t.equal(cli(['cert', 'init', '--dir', join(dir, 'certs'), '--host', 'localhost']).status, 0)
  writeFileSync(join(dir, 'junk.txt'), 'not a certificate\n')
  const revoke = cli(['cert', 'revoke', '--dir', join(dir, 'certs'), '--cert', join(dir, 'junk.txt')])
  t.equal(revoke.status, 2, 'cert revoke of a junk file: exit 2')
  t.match(revoke.stderr, /--cert .*junk\.txt: not a PEM certificate/)
})

t.test('a time option that is no time is a usage error (exit 2) naming the forms, before anything is touched', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cli-'))
  const file = writeConfig(dir)
  for (const args of [['token', 'revoke', '--config', file, '--sub', 'zed', '--issued-before', '12'], ['token', 'revoke', '--config', file, '--sub', 'zed', '--issued-before', 'garbage'], ['audit', 'prune', '--config', file, '--before', '2026-02-31T00:00:00Z', '--dry-run'], ['audit', 'prune', '--config', file, '--before', '17640000001', '--dry-run']]) {
    const r = cli(args)
    t.equal(r.status, 2, `${args.join(' ')}: exit 2 (${r.stderr.trim()})`)
    t.match(r.stderr, /invalid time .*: use ISO 8601 with a time zone|more than a day from now: to prune every rotated file, say now/, 'names the forms, or says the time is ahead')
  }
  t.notOk(existsSync(join(dir, 'revoked.json')) && readFileSync(join(dir, 'revoked.json'), 'utf8').includes('zed'), 'nothing revoked')
})

t.test('config check names every key the environment sets, and warns for one it takes from the file (never a value)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cli-'))
  const policy = JSON.stringify([{ name: 'all', path: '/**', scopes: ['recordings:read'] }])
  const r = cli(['config', 'check', writeConfig(dir)], { NASGUARD_POLICY: policy, NASGUARD_RETENTION: '[]', NASGUARD_UPSTREAM_TIMEOUT_MS: '1234' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stderr, /warning: config at policy: NASGUARD_POLICY in the environment overrides the file's value/, 'the file sets policy: a warning')
  const note = /note: from the environment: (.*)/.exec(r.stderr)?.[1] ?? ''
  t.same(note.split(', ').sort(), ['retention (NASGUARD_RETENTION)', 'upstream.timeoutMs (NASGUARD_UPSTREAM_TIMEOUT_MS)'], 'the file sets neither: a note names both')
  t.notMatch(r.stderr + r.stdout, /1234|\/\*\*/, 'no value')
  const none = cli(['config', 'check', writeConfig(dir)])
  t.notMatch(none.stderr, /environment/, 'nothing without NASGUARD_ variables')
})

t.test('token issue prints a signed token with a jti that the config verifies', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cli-'))
  const file = writeConfig(dir)
  const r = cli(['token', 'issue', '--config', file, '--sub', 'agent-7', '--scope', 'recordings:read recordings:read:stockholm', '--ttl', '15m'])
  t.equal(r.status, 0, r.stderr)
  const token = r.stdout.trim()
  const claims = createVerifier({ key: SECRET, algorithms: ['HS256'], allowedIss: 'https://idp.test/' })(token) as Record<string, unknown>
  t.equal(claims.sub, 'agent-7')
  t.equal(claims.scope, 'recordings:read recordings:read:stockholm')
  t.match(claims.jti, /^[0-9a-f-]{36}$/)
  t.equal((claims.exp as number) - (claims.iat as number), 900)
  t.match(r.stderr, new RegExp(`jti ${claims.jti as string}`))

  const badTtl = cli(['token', 'issue', '--config', file, '--sub', 'a', '--scope', 's', '--ttl', 'forever'])
  t.equal(badTtl.status, 2, 'a bad --ttl is a usage error')
  t.match(badTtl.stderr, /invalid --ttl "forever"/)
  const both = cli(['token', 'revoke', '--config', file, '--jti', 'x', '--sub', 'y'])
  t.equal(both.status, 2, '--jti with --sub is a usage error')
  t.match(both.stderr, /takes --jti or --sub, not both/)
})

function httpsGet (port: number, path: string, ca: Buffer, token?: string): Promise<{ status: number, type: string, body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: 'localhost', port, path, ca, agent: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('the demo: certificates, a demo NAS, a token and the three curl commands', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'nasguard-demo-'))
  const child = spawn(process.execPath, [CLI, 'start'], { cwd, env: { PATH: process.env.PATH, NASGUARD_LISTEN_PORT: '0', NASGUARD_ADMIN_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      if (/3\) A directory[\s\S]*=====/.test(out)) resolve()
    })
    child.on('exit', () => reject(new Error('demo exited early:\n' + out)))
  })
  t.match(out, /DEMO MODE/)
  const token = /TOKEN=(\S+)/.exec(out)?.[1] ?? ''
  const port = Number(/https:\/\/localhost:(\d+)/.exec(out)?.[1])
  const recording = /-o call\.wav https:\/\/localhost:\d+(\S+)/.exec(out)?.[1] ?? ''
  const directory = /Bearer \$TOKEN" https:\/\/localhost:\d+(\S+\/)\n/.exec(out)?.[1] ?? ''
  t.match(recording, /^\/medicall\/\d{4}\/\d{2}\/\d{2}\/\d{6}_4670\d{7}\.wav$/)
  t.match(directory, /^\/medicall\/\d{4}\/\d{2}\/\d{2}\/$/)

  for (const f of ['ca.key', 'server.key']) t.equal(statSync(join(cwd, 'certs', f)).mode & 0o777, 0o600, `${f} is 0600`)
  const ca = readFileSync(join(cwd, 'certs', 'ca.crt'))

  const noToken = await httpsGet(port, recording, ca)
  t.equal(noToken.status, 401)
  const audio = await httpsGet(port, recording, ca, token)
  t.equal(audio.status, 200)
  t.equal(audio.type, 'audio/wav')
  t.equal(audio.body.subarray(0, 4).toString(), 'RIFF')
  t.equal(audio.body.subarray(8, 12).toString(), 'WAVE')
  // Retention: the 2019 calls are past their 365 days (410); the 2016 ones are held.
  const expired = /Bearer \$TOKEN" https:\/\/localhost:\d+(\/medicall\/2019\/\S+\.wav)\n/.exec(out)?.[1] ?? ''
  t.match(expired, /^\/medicall\/2019\/02\/18\/\d{6}_4670\d{7}\.wav$/, 'the demo prints a 2019 call')
  const gone = await httpsGet(port, expired, ca, token)
  t.equal(gone.status, 410)
  t.match(JSON.parse(gone.body.toString()), { error: 'NASGUARD_ERR_RETENTION_EXPIRED' })
  t.match(recording, /^\/medicall\/2016\//, 'the call served is a held 2016 one')
  const dir = await httpsGet(port, directory, ca, token)
  t.equal(dir.status, 403)
  t.match(JSON.parse(dir.body.toString()), { error: 'NASGUARD_ERR_DIRECTORY' })
  t.ok(existsSync(join(cwd, '.nasguard-demo', 'audit', 'audit.jsonl')))
  // The demo NAS holds sealed names and ciphertext only; the printed age command names a real file and key.
  const nasDir = /curl -s (http:\/\/127\.0\.0\.1:\d+\S+\/)\n/.exec(out)?.[1] ?? ''
  const listing = await (await fetch(nasDir)).text()
  t.match(listing, /[a-z2-7]{40,}\.age/, 'the NAS lists sealed names')
  t.notMatch(listing, /4670|\.wav|\.mp3/, 'and no phone number or plaintext name')
  const age = /age -d -i (\S+) (\S+) > call\.wav/.exec(out)
  t.ok(age && existsSync(join(cwd, age[1])) && existsSync(join(cwd, age[2])), 'the age command names the identity and the sealed file')
  t.equal(statSync(join(cwd, age?.[1] ?? '')).mode & 0o777, 0o600, 'the identity is 0600')
  t.notOk(readFileSync(join(cwd, age?.[2] ?? '')).includes(audio.body.subarray(44, 1044)), 'the file on the NAS is not the audio')
  t.notMatch(out.split('TOKEN=')[0] + out.split('=====').slice(-1)[0], new RegExp(recording), 'logs do not carry the recording path')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'closes cleanly on SIGTERM')
})
