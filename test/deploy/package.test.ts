// The production install: `npm pack` makes a tarball with dist/ and the
// deploy files and nothing else, and both `npm install -g` of that tarball
// and `npm ci --omit=dev` beside it give a working nasguard without a single
// dev dependency.
//
// dist/ is built by `npm test`'s pretest (the tarball's own prepack builds it
// for a real pack); this test packs with --ignore-scripts and never builds:
// other test files use dist/ while it runs. The npm cache is warm after
// `npm ci`, so --prefer-offline keeps the registry out of it mostly.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { testCerts } from '../helpers/certs.js'
import { SECRET } from '../helpers/gateway-client.js'

const ROOT = resolve('.')
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
const DEV_ONLY = ['tap', 'typescript', 'tsx', 'playwright-core', 'kubernetes-models', '@kubernetes-models/prometheus-operator', 'hpack.js', '@types/node']

// npm run under `npm test` exports npm_config_* (local_prefix among them:
// the project nasguard's checkout). A nested npm must not see them, or it
// acts on the checkout instead of the temporary directory. What reaches the
// registry stays: proxies, and the CAs a proxy that inspects TLS is trusted
// by (without them npm retries SELF_SIGNED_CERT_IN_CHAIN until it times out).
const ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) =>
  ['PATH', 'HOME', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy', 'npm_config_registry', 'npm_config_cache',
    'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'npm_config_cafile', 'npm_config_strict_ssl'].includes(k)))
const NPM_QUIET = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error']

interface Run { status: number | null, stdout: string, stderr: string, seconds: number }

/** Runs a command to its end (asynchronously, so two installs can overlap). */
function run (cmd: string, args: string[], cwd: string): Promise<Run> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: ENV, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr, seconds: (Date.now() - started) / 1000 }))
  })
}

/** Every package name under a node_modules tree (scoped and nested ones too). */
function installedPackages (nodeModules: string, out = new Set<string>()): Set<string> {
  if (!existsSync(nodeModules)) return out
  for (const entry of readdirSync(nodeModules)) {
    if (entry.startsWith('.')) continue
    const dirs = entry.startsWith('@') ? readdirSync(join(nodeModules, entry)).map((e) => [`${entry}/${e}`, join(nodeModules, entry, e)]) : [[entry, join(nodeModules, entry)]]
    for (const [name, dir] of dirs) {
      out.add(name)
      installedPackages(join(dir, 'node_modules'), out)
    }
  }
  return out
}

t.test('npm pack, npm install -g and npm ci --omit=dev give a working nasguard', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-pack-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))

  const pack = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir, '--loglevel=error'], ROOT)
  t.equal(pack.status, 0, pack.status === 0 ? 'npm pack --ignore-scripts' : `npm pack: ${pack.stderr.slice(-500)}`)
  const tarball = join(dir, `nasguard-${VERSION}.tgz`)
  const listed = spawnSync('tar', ['tzf', tarball], { encoding: 'utf8' })
  const files = listed.stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''))
  for (const f of ['package.json', 'README.md', 'dist/cli.js', 'dist/config/config-validator.js', 'deploy/nasguard.example.yaml',
    'deploy/systemd/nasguard.service', 'deploy/systemd/nasguard.socket', 'deploy/systemd/nasguard-admin.socket', 'deploy/systemd/nasguard.sysusers', 'deploy/systemd/nasguard.tmpfiles']) {
    t.ok(files.includes(f), `the tarball holds ${f}`)
  }
  t.same(files.filter((f) => /^(src|test|scripts|certs|node_modules)\//.test(f) || f.endsWith('.tsbuildinfo') || f.endsWith('.ts')), [], 'and no sources, tests, certificates or build info')
  const size = statSync(tarball).size
  t.comment(`tarball ${(size / 1024).toFixed(0)} KiB, ${files.length} files; npm pack ${pack.seconds.toFixed(1)} s`)

  // A valid config (certificates and the JWT secret beside it) for `config check`.
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), SECRET)
  const config = join(dir, 'g.yaml')
  writeFileSync(config, [
    'listen: { host: 127.0.0.1, port: 0 }',
    `tls: { cert: ${certs.cert}, key: ${certs.key} }`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
    'audit: { dir: audit }',
    'admin: { enabled: false }'
  ].join('\n'))

  // The two installs at once: each is mostly waiting on the cache and the disk.
  const prefix = join(dir, 'g')
  const extracted = join(dir, 'ci')
  const untar = spawnSync('sh', ['-c', `mkdir -p "${extracted}" && tar xzf "${tarball}" -C "${extracted}"`])
  t.equal(untar.status, 0, 'the tarball extracts')
  const app = join(extracted, 'package')
  copyFileSync(join(ROOT, 'package-lock.json'), join(app, 'package-lock.json'))
  const [global, ci] = await Promise.all([
    run('npm', ['install', '-g', '--prefix', prefix, ...NPM_QUIET, tarball], dir),
    run('npm', ['ci', '--omit=dev', '--ignore-scripts=false', ...NPM_QUIET], app)
  ])

  t.equal(global.status, 0, global.status === 0 ? 'npm install -g of the tarball' : `npm install -g: ${global.stderr.slice(-800)}`)
  const bin = join(prefix, 'bin', 'nasguard')
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8', env: ENV })
  t.equal(v.stdout.trim(), VERSION, 'the installed nasguard --version')
  const check = spawnSync(bin, ['config', 'check', config], { encoding: 'utf8', env: ENV, cwd: dir })
  t.equal(check.status, 0, check.status === 0 ? 'the installed nasguard config check' : `the installed nasguard config check: ${check.stdout}${check.stderr}`)
  t.match(check.stdout, /^config OK/im, 'it says the config is OK')
  const globalPackages = installedPackages(join(prefix, 'lib', 'node_modules', 'nasguard', 'node_modules'))
  t.ok(globalPackages.has('fastify'), 'the runtime dependencies are installed')
  t.same(DEV_ONLY.filter((p) => globalPackages.has(p)), [], 'no dev dependency came with npm install -g')

  t.equal(ci.status, 0, ci.status === 0 ? 'npm ci --omit=dev beside the lock file' : `npm ci --omit=dev: ${ci.stderr.slice(-800)}`)
  const ciVersion = spawnSync(process.execPath, ['dist/cli.js', '--version'], { encoding: 'utf8', env: ENV, cwd: app })
  t.equal(ciVersion.stdout.trim(), VERSION, 'node dist/cli.js --version after npm ci --omit=dev')
  const ciPackages = installedPackages(join(app, 'node_modules'))
  t.same(DEV_ONLY.filter((p) => ciPackages.has(p)), [], 'no dev dependency came with npm ci --omit=dev')
  t.comment(`npm install -g of the tarball ${global.seconds.toFixed(1)} s (${globalPackages.size} packages), npm ci --omit=dev ${ci.seconds.toFixed(1)} s (${ciPackages.size} packages), run at the same time`)
})
