// The container image (deploy/container/Containerfile), built by
// scripts/build-image.sh and run the way the README says: --read-only,
// --cap-drop=all, the config, certificate, key and JWT secret mounted
// read-only at /etc/nasguard, and the state (audit trail and its key) in a
// volume at /var/lib/nasguard.
//
// - It runs with --network host, so the gateway inside reaches the stub NAS
//   on the host's loopback and the test reaches the gateway the same way
//   (slirp4netns would need the NAS on a non-loopback address). The ports are
//   free ones, set through NASGUARD_LISTEN_PORT and NASGUARD_ADMIN_PORT.
// - A recording is fetched through it over HTTPS with a signed JWT: the bytes
//   are the NAS's, and `nasguard audit verify` on the host passes over the
//   trail the container wrote into the volume, which holds the fetch.
// - The running gateway is uid 10001 with no capabilities (read from the
//   host's /proc), cannot write its root filesystem, and the image has no
//   shell: /bin/sh cannot be started and no shell binary exists in it.
// - The image's HEALTHCHECK runs dist/healthcheck.js; `podman healthcheck run`
//   passes, and the same script fails when pointed at a closed port.
// - `podman stop` (SIGTERM to node as PID 1) ends it with status 0.
//
// The first build on a machine runs mmdebstrap twice, fetches the Node
// binary and runs npm ci: measured 119 s on this 2-core VM under a load of
// 10 with an empty npm cache (CI's npm cache already holds the dependencies);
// a warm build of the same source about 30 s, the rest of the test about
// 20 s. The tap default (240 s a file) is too close for a slow mirror, hence
// the file's timeout below.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chownSync, chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { RECORDING, startStubNas } from '../helpers/stub-nas.js'
import { SECRET, bearer } from '../helpers/gateway-client.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'
import { CLI, freePort, run, type Run } from '../helpers/process.js'

t.setTimeout(10 * 60 * 1000)

const SCRIPT = resolve('scripts/build-image.sh')
const IMAGE = 'localhost/nasguard:test'
const UID = 10001
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const NODE = '/usr/local/bin/node'

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
const skip = !has('podman') || !has('mmdebstrap')
  ? 'podman or mmdebstrap is not installed (apt-get install podman runc mmdebstrap)'
  : process.getuid?.() !== 0 ? 'needs root: the image is built and run with rootful podman' : false


t.test('the image builds, runs read-only with no capabilities and serves a recording', { skip }, async (t) => {
  // The podman flags this VM needs (runc, ulimits) come from the script, so
  // they are written down once.
  const flags = (await run(SCRIPT, ['--print-podman-flags'])).stdout.trim().split('\n').map((l) => l.split(' ').filter(Boolean))
  const [globalFlags, runFlags] = [flags[0] ?? [], flags[1] ?? []]
  const podman = (...args: string[]): Promise<Run> => run('podman', [...globalFlags, ...args])

  // dist/ is built by npm test's pretest (or by hand); building it here would
  // rewrite it under the other test files running beside this one.
  const built = await run(SCRIPT, ['--no-build', '--tag', IMAGE])
  t.equal(built.status, 0, 'scripts/build-image.sh succeeds' + (built.status === 0 ? '' : ':\n' + built.stderr.slice(-3000)))
  if (built.status !== 0) return
  const summary = built.stderr.split('\n').find((l) => /bytes .* built in/.test(l))
  t.ok(summary, 'the script prints the size and the build time')
  t.comment(summary ?? '')

  // The image's own metadata.
  const inspect = async (field: string): Promise<unknown> => JSON.parse((await podman('image', 'inspect', '--format', `{{json ${field}}}`, IMAGE)).stdout || 'null')
  t.equal(await inspect('.Config.User'), `${UID}:${UID}`, 'USER is the fixed non-root uid:gid')
  t.same(((await inspect('.Config.Healthcheck')) as { Test?: string[] } | null)?.Test, ['CMD', NODE, '/opt/nasguard/dist/healthcheck.js'], 'a HEALTHCHECK in exec form (kept by --format docker)')
  t.same(await inspect('.Config.Entrypoint'), [NODE, '/opt/nasguard/dist/cli.js'], 'an exec-form ENTRYPOINT: no shell between podman and node')

  // No shell: it cannot be started, and none is in the image.
  const sh = await podman('run', '--rm', ...runFlags, '--entrypoint', '/bin/sh', IMAGE, '-c', 'true')
  t.not(sh.status, 0, 'podman run --entrypoint /bin/sh fails')
  t.match(sh.stderr, /no such file or directory/i, 'because there is no /bin/sh')
  const shells = ['/bin/sh', '/usr/bin/sh', '/bin/bash', '/usr/bin/bash', '/bin/dash', '/usr/bin/dash', '/bin/busybox', '/usr/bin/busybox']
  const present = await podman('run', '--rm', ...runFlags, '--read-only', '--cap-drop=all', '--network=none', '--entrypoint', NODE, IMAGE,
    '-e', `console.log(JSON.stringify(${JSON.stringify(shells)}.filter((f) => require('fs').existsSync(f))))`)
  t.equal(present.status, 0, 'node runs in the image' + (present.status === 0 ? '' : ': ' + present.stderr))
  t.same(JSON.parse(present.stdout || 'null'), [], 'no shell binary anywhere in the image')

  // The mounts: config, certificate, key and secret read-only; the state
  // directory writable by uid 10001 only.
  const nas = await startStubNas(t)
  const [port, adminPort] = [await freePort(), await freePort()]
  const work = mkdtempSync(join(tmpdir(), 'nasguard-container-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  const etc = join(work, 'etc')
  const state = join(work, 'state')
  mkdirSync(join(etc, 'tls'), { recursive: true })
  mkdirSync(state, { mode: 0o700 })
  chownSync(state, UID, UID)
  const certs = testCerts()
  copyFileSync(certs.cert, join(etc, 'tls/server.crt'))
  chmodSync(join(etc, 'tls/server.crt'), 0o644)
  copyFileSync(certs.key, join(etc, 'tls/server.key'))
  writeFileSync(join(etc, 'jwt.secret'), SECRET + '\n')
  writeFileSync(join(etc, 'nasguard.yaml'), [
    'listen: { host: 127.0.0.1, port: 8443 }',
    'tls: { cert: /etc/nasguard/tls/server.crt, key: /etc/nasguard/tls/server.key }',
    `upstream: { url: "${nas.url}", timeoutMs: 5000 }`,
    'auth: { jwt: { secretFile: /etc/nasguard/jwt.secret, algorithms: [HS256] } }',
    'policy: [ { name: recordings, path: "/medicall/**", scopes: ["recordings:read"] } ]',
    'audit: { dir: /var/lib/nasguard/audit }',
    'admin: { host: 127.0.0.1, port: 9464 }',
    'workers: 1',
    ''
  ].join('\n'))
  for (const f of ['tls/server.key', 'jwt.secret']) {
    chownSync(join(etc, f), UID, UID)
    chmodSync(join(etc, f), 0o400)
  }

  const name = `nasguard-test-${process.pid}`
  t.teardown(() => run('podman', [...globalFlags, 'rm', '--force', '--time', '5', name]))
  const started = await podman('run', '--detach', '--name', name, ...runFlags,
    '--read-only', '--cap-drop=all', '--security-opt', 'no-new-privileges', '--network', 'host',
    '--volume', `${etc}:/etc/nasguard:ro`, '--volume', `${state}:/var/lib/nasguard`,
    // The config says 8443 and 9464; free ports here, as NASGUARD_* overrides.
    '--env', `NASGUARD_LISTEN_PORT=${port}`, '--env', `NASGUARD_ADMIN_PORT=${adminPort}`,
    IMAGE)
  t.equal(started.status, 0, 'podman run --read-only --cap-drop=all starts it' + (started.status === 0 ? '' : ': ' + started.stderr))
  if (started.status !== 0) return
  const logs = async (): Promise<string> => { const l = await podman('logs', name); return (l.stdout + l.stderr).slice(-3000) }
  await waitFor('the container\'s admin listener to answer /healthz', async () => {
    const state = (await podman('inspect', '--format', '{{.State.Status}}', name)).stdout.trim()
    if (state !== 'running') throw new Error(`the container is ${state}:\n${await logs()}`)
    const r = await fetch(`http://127.0.0.1:${adminPort}/healthz`).catch(() => undefined)
    return r?.status === 200 ? true : undefined
  }, { intervalMs: 250, tries: 240 })

  // The image's HEALTHCHECK, as podman runs it, and the same script against
  // a port nothing listens on: it can fail.
  const health = await podman('healthcheck', 'run', name)
  t.equal(health.status, 0, 'podman healthcheck run passes' + (health.status === 0 ? '' : ': ' + health.stdout + health.stderr))
  const closed = await freePort()
  const unhealthy = await podman('exec', '--env', `NASGUARD_ADMIN_PORT=${closed}`, name, NODE, '/opt/nasguard/dist/healthcheck.js')
  t.equal(unhealthy.status, 1, 'the health check fails when /healthz does not answer')

  // The process, as the host sees it: uid 10001, no capabilities.
  const pid = Number((await podman('inspect', '--format', '{{.State.Pid}}', name)).stdout.trim())
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1).map(Number)
  t.same(uids, [UID, UID, UID, UID], 'the gateway runs as uid 10001 (real, effective, saved, fs), not root')
  t.match(status, /^CapEff:\s+0+$/m, 'with no effective capability')
  t.match(status, /^CapBnd:\s+0+$/m, 'and none it could gain')

  // The root filesystem is read-only; the state volume is not.
  const write = await podman('exec', name, NODE, '-e', "try { require('fs').writeFileSync('/opt/nasguard/x', '') } catch (e) { console.log(e.code) }")
  t.equal(write.stdout.trim(), 'EROFS', 'the root filesystem cannot be written')

  // A recording through the container, with a real signed JWT.
  const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
  const token = sign({ sub: 'alice', scope: 'recordings:read', jti: 'container-1', exp: Math.floor(Date.now() / 1000) + 600 })
  for (const proto of PROTOCOLS) {
    const before = nas.requests.length
    const res = await fetchAs(proto, { port }, PATH, bearer(token))
    t.equal(res.status, 200, `${proto}: HTTPS GET with a JWT through the container`)
    t.ok(res.body.equals(RECORDING), `${proto}: the bytes are the NAS's recording`)
    t.equal(nas.requests.length, before + 1, `${proto}: one request reached the NAS`)
    t.equal(nas.requests.at(-1)?.url, PATH, `${proto}: for that path`)
    const refused = await fetchAs(proto, { port }, PATH)
    t.equal(refused.status, 401, `${proto}: without a token: 401`)
    t.equal(nas.requests.length, before + 1, `${proto}: and the NAS was not asked`)
  }

  // The audit trail, written by the container into the volume, checked on
  // the host with the CLI.
  const auditDir = join(state, 'audit')
  const records = await waitFor('the fetch record in the volume', () => {
    const lines = readdirSync(auditDir).filter((f) => f.endsWith('.jsonl') && f !== 'revoked.jsonl')
      .flatMap((f) => readFileSync(join(auditDir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>))
    return lines.some((r) => r.event === 'fetch' && r.path === PATH) ? lines : undefined
  }, { intervalMs: 100 })
  t.ok(records.some((r) => r.event === 'access' && r.path === PATH && r.subject === 'alice'), 'an access record for alice and the path')
  const verify = await run(process.execPath, [CLI, 'audit', 'verify', '--dir', auditDir, '--key-file', join(state, 'audit.key')], { PATH: process.env.PATH })
  t.equal(verify.status, 0, 'nasguard audit verify passes over the container\'s trail:\n' + verify.stdout + verify.stderr)

  // SIGTERM to node as PID 1: it has handlers (close-with-grace), so it ends.
  const stopped = await podman('stop', '--time', '30', name)
  t.equal(stopped.status, 0, 'podman stop')
  const exit = (await podman('inspect', '--format', '{{.State.ExitCode}}', name)).stdout.trim()
  t.equal(exit, '0', 'the gateway exits 0 on SIGTERM' + (exit === '0' ? '' : ':\n' + await logs()))
})
