// workers: 2 through the real CLI: one listener shared by two processes,
// and everything they must share shared correctly (audit chains, metrics,
// grants, session tickets, revocation, a token sent in plain HTTP
// revoked for all), a dead worker restarted, and a
// removed worker chain reported by `audit verify`.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { connect, type TLSSocket } from 'node:tls'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { SECRET, bearer, get, rawPlain, requestOptions, scrape } from '../helpers/gateway-client.js'
import { waitFor } from '../helpers/wait.js'
import { CLI, childPids, freePort, runCli } from '../helpers/process.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
// The gateway as an operator runs it: not under tap's process hooks (NODE_OPTIONS).
const CLEAN_ENV = { PATH: process.env.PATH }
const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const token = (claims: Record<string, unknown> = {}): string => sign({ sub: 'alice', scope: 'recordings:read', jti: 'j-' + Math.random().toString(36).slice(2), exp: Math.floor(Date.now() / 1000) + 600, ...claims })

/**
 * A gateway config in dir (with jwt.secret beside it): the test's port,
 * NAS and workers; `extra` lines replace the defaults of the same key.
 */
function writeConfig (dir: string, o: { port: number, nas: string, workers: number, file?: string, extra?: string[] }): string {
  const certs = testCerts()
  writeFileSync(join(dir, 'jwt.secret'), SECRET)
  const lines = new Map([
    ['listen', `listen: { host: 127.0.0.1, port: ${o.port} }`],
    ['tls', `tls: { cert: ${certs.cert}, key: ${certs.key} }`],
    ['upstream', `upstream: { url: "${o.nas}" }`],
    ['auth', 'auth: { jwt: { secretFile: jwt.secret } }'],
    ['policy', 'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]'],
    ['audit', 'audit: { dir: audit }'],
    ['admin', 'admin: { enabled: false }'],
    ['workers', `workers: ${o.workers}`],
    ['log', 'log: { level: error }']
  ])
  for (const l of o.extra ?? []) lines.set(l.slice(0, l.indexOf(':')), l)
  const file = join(dir, o.file ?? 'g.yaml')
  writeFileSync(file, [...lines.values()].join('\n'))
  return file
}

/** Pids of the primary's children (the workers), from /proc. */

/** Starts the gateway of `file` under the CLI, as an operator does; resolves with it and its first /readyz answer once it is ready. */
async function startFleet (t: { teardown: (fn: () => void) => void }, file: string, admin: string): Promise<{ child: ChildProcess, ready: Response, output: () => string }> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'inherit'], env: CLEAN_ENV })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout?.on('data', (c: Buffer) => { output += c.toString() })
  const ready = await waitFor('the workers to listen', async () => {
    const r = await fetch(`${admin}/readyz`).catch(() => undefined)
    return r?.status === 200 ? r : undefined
  }, { tries: 200, intervalMs: 50 })
  return { child, ready, output: () => output }
}

/** Waits until the primary has replaced the worker `dead` and is ready again; resolves with the workers' pids. */
async function replacement (primary: number, dead: number, admin: string): Promise<number[]> {
  return await waitFor('a replacement worker', async () => {
    const now = childPids(primary)
    if (now.length !== 2 || now.includes(dead)) return undefined
    const r = await fetch(`${admin}/readyz`).catch(() => undefined)
    return r?.status === 200 ? now : undefined
  }, { tries: 400, intervalMs: 50 })
}

function post (port: number, path: string, body: string, headers: Record<string, string>): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ ...requestOptions({ port }, path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' } }) }, (res) => {
      let b = ''
      res.on('data', (c: Buffer) => { b += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** A TLS connection: whether it resumed the session it was given, and the session it ends with. */
function handshake (port: number, session?: Buffer): Promise<{ reused: boolean, session?: Buffer }> {
  return new Promise((resolve, reject) => {
    let latest: Buffer | undefined
    let reused = false
    const s: TLSSocket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(testCerts().ca), session, ALPNProtocols: ['http/1.1'] }, () => {
      reused = s.isSessionReused()
      // TLS 1.3 tickets arrive after the handshake: a request makes the server send them.
      s.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
    })
    s.on('session', (b: Buffer) => { latest = b })
    s.on('data', () => {})
    s.on('error', reject)
    s.on('close', () => resolve({ reused, session: latest }))
  })
}

t.test('workers: 2 share the listener, the keys, the metrics and the audit trail', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const nas = await startStubNas(t)
  const port = await freePort()
  const adminPort = await freePort()
  const admin = `http://127.0.0.1:${adminPort}`
  writeConfig(dir, { port, nas: nas.url, workers: 2, extra: ['auth: { jwt: { secretFile: jwt.secret }, revocation: { pollMs: 50 } }', `admin: { host: 127.0.0.1, port: ${adminPort} }`] })
  const { child, ready: ok } = await startFleet(t, join(dir, 'g.yaml'), admin)
  t.match(await ok.json(), { status: 'ready', checks: { workers: 'ok', audit: 'ok', nas: 'ok' } }, '/readyz asks every worker')
  const workers = childPids(child.pid as number)
  t.equal(workers.length, 2, 'two worker processes')

  // Every request on its own connection: the primary deals them out.
  let served = 0
  for (let i = 0; i < 24; i++) {
    const r = await get({ port }, PATH, { headers: bearer(token()) })
    t.equal(r.status, 200)
    served++
  }
  t.equal(nas.requests.length, served, 'every request reached the NAS once')

  // Metrics: the workers' counters summed by the primary.
  const m = await scrape(admin)
  t.equal(m.get('nasguard_http_requests_total{method="GET",status_class="2xx",rule="r"}'), served, 'requests summed across workers')
  t.equal(m.get('nasguard_audit_available'), 1)

  // A grant minted on one connection opens the recording on any worker.
  const minted = await post(port, '/_nasguard/grants', JSON.stringify({ path: PATH }), bearer(token()))
  t.equal(minted.status, 201)
  const grantUrl = (JSON.parse(minted.body) as { url: string }).url
  for (let i = 0; i < 8; i++) t.equal((await get({ port }, grantUrl)).status, 200, `grant on connection ${i + 1}`)

  // TLS session tickets: one key for all workers, so every resumption works.
  const first = await handshake(port)
  t.ok(first.session, 'a session ticket was issued')
  let session = first.session
  for (let i = 0; i < 8; i++) {
    const h = await handshake(port, session)
    t.ok(h.reused, `resumed on connection ${i + 1}`)
    session = h.session ?? session
  }

  // Revocation: every worker reads the same denylist.
  // Issued a few seconds ago: `--sub` revokes tokens issued before the revocation.
  const revoked = token({ sub: 'mallory', iat: Math.floor(Date.now() / 1000) - 5 })
  t.equal((await get({ port }, PATH, { headers: bearer(revoked) })).status, 200)
  const rv = await runCli(['token', 'revoke', '--config', join(dir, 'g.yaml'), '--sub', 'mallory'])
  t.equal(rv.status, 0, rv.stderr)
  // Each worker polls on its own: wait until a run of connections (both workers) refuses.
  await waitFor('the revocation in every worker', async () => {
    for (let i = 0; i < 4; i++) if ((await get({ port }, PATH, { headers: bearer(revoked) })).status !== 401) return undefined
    return true
  }, { tries: 100, intervalMs: 50 })
  for (let i = 0; i < 8; i++) t.equal((await get({ port }, PATH, { headers: bearer(revoked) })).status, 401, `revoked on connection ${i + 1}`)

  // A valid token sent in plain HTTP to the TLS port is revoked by the worker
  // that got it, and refused over TLS by every worker (they poll the denylist).
  const exposed = token({ sub: 'eve' })
  t.equal((await get({ port }, PATH, { headers: bearer(exposed) })).status, 200)
  const plain = await rawPlain({ port }, `GET ${PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${exposed}\r\n\r\n`)
  t.match(plain.text, /is now revoked/, 'the plaintext answer says the token is revoked')
  await waitFor('the exposed token refused by every worker', async () => {
    for (let i = 0; i < 4; i++) if ((await get({ port }, PATH, { headers: bearer(exposed) })).status !== 401) return undefined
    return true
  }, { tries: 100, intervalMs: 50 })
  for (let i = 0; i < 8; i++) t.equal((await get({ port }, PATH, { headers: bearer(exposed) })).status, 401, `the exposed token is refused on connection ${i + 1}`)

  // A worker killed outright is replaced; service goes on.
  process.kill(workers[0], 'SIGKILL')
  // While one worker is gone or starting, /metrics still answers (the ready workers' sum).
  const during = await fetch(`${admin}/metrics`)
  t.equal(during.status, 200, '/metrics answers while a worker is being replaced')
  await during.text()
  const replaced = await replacement(child.pid as number, workers[0], admin)
  t.notOk(replaced.includes(workers[0]), 'the dead worker is gone')
  t.equal((await scrape(admin)).get('nasguard_worker_restarts_total'), 1, 'the restart is counted in /metrics')
  for (let i = 0; i < 8; i++) t.equal((await get({ port }, PATH, { headers: bearer(token()) })).status, 200, `served after the restart ${i + 1}`)

  // As systemd (KillMode=control-group) and Ctrl-C do: every process of
  // the group gets the signal at once. Each worker still closes gracefully
  // (the primary tells them over IPC, not with a second signal).
  const group = [child.pid as number, ...childPids(child.pid as number)]
  for (const pid of group) process.kill(pid, 'SIGTERM')
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0, 'SIGTERM to the whole group: the primary exits cleanly')
  t.same(childPids(child.pid as number), [], 'no worker left behind')
  for (const w of ['worker-0', 'worker-1']) t.notOk(existsSync(join(dir, 'audit', w, 'audit.lock')), `${w} closed its trail (its lock is released)`)

  // The trail: one chain per worker, each intact, both used.
  const v = await runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  t.equal(v.status, 0, v.stdout + v.stderr)
  t.match(v.stdout, /in 2 chain\(s\)/)
  for (const w of ['worker-0', 'worker-1']) {
    const n = Number(new RegExp(`${w}: (\\d+) records`).exec(v.stdout)?.[1])
    t.ok(n > 0, `${w} wrote records (${n})`)
  }
  const found = await runCli(['audit', 'search', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key'), '--event', 'access', '--json'])
  t.equal(found.status, 0)
  const access = found.stdout.trim().split('\n').map((l) => JSON.parse(l) as { path: string })
  t.ok(access.length >= served + 8, 'search reads every chain')

  // A chain removed whole is reported: audit.chains still lists it.
  rmSync(join(dir, 'audit', 'worker-1'), { recursive: true })
  const gone = await runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  t.equal(gone.status, 1)
  t.match(gone.stdout, /chain worker-1 is listed in audit.chains but its files are gone/)
  // And the list cannot just be edited to match.
  writeFileSync(join(dir, 'audit', 'audit.chains'), JSON.stringify({ chains: ['worker-0'], mac: '00'.repeat(32) }))
  const edited = await runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  t.equal(edited.status, 1)
  t.match(edited.stdout, /audit.chains does not carry a valid MAC/)
  rmSync(join(dir, 'audit', 'audit.chains'))
  const listless = await runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  t.equal(listless.status, 1)
  t.match(listless.stdout, /audit.chains is missing/)
})

t.test('workers: a worker that cannot start stops the gateway with an error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const busy = await freePort()
  // Something else holds the port: the workers' listen fails.
  const { createServer } = await import('node:net')
  const squatter = createServer().listen(busy, '127.0.0.1')
  t.teardown(() => { squatter.close() })
  writeConfig(dir, { port: busy, nas: 'http://127.0.0.1:9', workers: 2, extra: ['log: { level: fatal }'] })
  const child = spawn(process.execPath, [CLI, 'start', '--config', join(dir, 'g.yaml')], { stdio: ['ignore', 'ignore', 'pipe'], env: CLEAN_ENV })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await new Promise((resolve) => child.once('exit', resolve))
  t.equal(code, 1, 'exit 1')
  t.match(stderr, /worker \d exited during start/)
  t.same(childPids(child.pid as number), [], 'no worker left behind')
  // A start that failed leaves the trail consistent: every listed chain
  // exists (empty), so verify raises no false alarm.
  const v = await runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  t.equal(v.status, 0, v.stdout + v.stderr)
  t.match(v.stdout, /worker-0: 0 records/)
})

t.test('workers after a single process: its trail is a listed chain, and removing it is reported', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const nas = await startStubNas(t)
  const port = await freePort()
  const config = (workers: number): string => writeConfig(dir, { port, nas: nas.url, workers, file: `g${workers}.yaml`, extra: ['audit: { dir: audit, keyFile: audit.key }'] })
  const run = async (workers: number): Promise<void> => {
    const child = spawn(process.execPath, [CLI, 'start', '--config', config(workers)], { stdio: ['ignore', 'ignore', 'inherit'], env: CLEAN_ENV })
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    await waitFor('the gateway', async () => ((await get({ port }, PATH, { headers: bearer(token()) }).catch(() => undefined))?.status === 200 ? true : undefined), { tries: 200, intervalMs: 50 })
    for (let i = 0; i < 4; i++) t.equal((await get({ port }, PATH, { headers: bearer(token()) })).status, 200)
    child.kill('SIGTERM')
    t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0)
  }
  await run(1)
  await run(2)
  const verify = (): ReturnType<typeof runCli> => runCli(['audit', 'verify', '--dir', join(dir, 'audit'), '--key-file', join(dir, 'audit.key')])
  const ok = await verify()
  t.equal(ok.status, 0, ok.stdout)
  t.match(ok.stdout, /\(single process\): \d+ records/, 'the single-process trail is one of the chains')
  for (const f of readdirSync(join(dir, 'audit'))) if (/^audit(-\d+)?\.jsonl$|^audit\.head$/.test(f)) rmSync(join(dir, 'audit', f))
  const gone = await verify()
  t.equal(gone.status, 1, 'its removal is reported')
  t.match(gone.stdout, /single-process trail .* is listed in audit.chains but its files are gone/)
})

t.test('workers: a worker restarted after a reload runs the reloaded config, not the one started with', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const nas = await startStubNas(t)
  const port = await freePort()
  const adminPort = await freePort()
  const admin = `http://127.0.0.1:${adminPort}`
  const OTHER = '/other/2016/01/01/083012_46701234567.wav'
  const both = 'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }, { name: o, path: /other/**, scopes: [x] }]'
  const config = (policy: string): string => writeConfig(dir, { port, nas: nas.url, workers: 2, extra: [policy, `admin: { host: 127.0.0.1, port: ${adminPort} }`] })
  const { child } = await startFleet(t, config(both), admin)
  const bearerX = bearer(token({ scope: 'recordings:read x' }))
  // Every request on a connection of its own: the primary deals them out to both workers.
  const statuses = async (n: number): Promise<number[]> => {
    const out: number[] = []
    for (let i = 0; i < n; i++) out.push((await get({ port }, OTHER, { headers: bearerX })).status)
    return out
  }
  t.same(await statuses(4), [200, 200, 200, 200], 'rule o serves /other/ at first')

  // The rule is removed by a reload: every worker refuses it.
  config('policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]')
  child.kill('SIGHUP')
  await waitFor('the reload in both workers', async () => (await statuses(4)).every((s) => s === 403) ? true : undefined, { tries: 200, intervalMs: 50 })
  const asked = nas.requests.filter((r) => r.url === OTHER).length

  // A worker dies and is restarted: it must not bring the rule back.
  const workers = childPids(child.pid as number)
  process.kill(workers[0], 'SIGKILL')
  await replacement(child.pid as number, workers[0], admin)
  t.same(await statuses(12), Array(12).fill(403), 'after the restart, every connection is refused by the reloaded policy')
  t.equal(nas.requests.filter((r) => r.url === OTHER).length, asked, 'and the NAS was not asked again')
  t.equal((await get({ port }, PATH, { headers: bearer(token()) })).status, 200, 'what the reloaded policy allows is served')
  child.kill('SIGTERM')
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0)
})

/** Waits until the primary's /readyz says `workers` is this ("ok": every worker is ready). */
async function workersSay (admin: string, state: string): Promise<void> {
  await waitFor(`/readyz to say workers ${state}`, async () => {
    const r = await fetch(`${admin}/readyz`).catch(() => undefined)
    const body = r === undefined ? undefined : await r.json() as { checks?: Record<string, string> }
    return body?.checks?.workers === state ? true : undefined
  }, { tries: 400, intervalMs: 25 })
}

t.test('workers: a SIGHUP while the workers are down reaches the replacements once they are ready', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const nas = await startStubNas(t)
  const port = await freePort()
  const adminPort = await freePort()
  const admin = `http://127.0.0.1:${adminPort}`
  const OTHER = '/other/2016/01/01/083012_46701234567.wav'
  const config = (policy: string): string => writeConfig(dir, { port, nas: nas.url, workers: 2, extra: [policy, `admin: { host: 127.0.0.1, port: ${adminPort} }`] })
  const { child, output } = await startFleet(t, config('policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }, { name: o, path: /other/**, scopes: [x] }]'), admin)
  const bearerX = bearer(token({ scope: 'recordings:read x' }))
  t.equal((await get({ port }, OTHER, { headers: bearerX })).status, 200, 'rule o serves /other/ at first')

  // Both workers die; the primary has seen it (no worker ran the reload, so none reports it) when the reload comes.
  const workers = childPids(child.pid as number)
  for (const pid of workers) process.kill(pid, 'SIGKILL')
  await waitFor('the primary to see both exits', () => (output().match(/worker died: restarting it/g) ?? []).length >= 2 ? true : undefined, { tries: 400, intervalMs: 10 })
  config('policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]')
  child.kill('SIGHUP')
  await waitFor('two replacement workers', async () => {
    const now = childPids(child.pid as number)
    return now.length === 2 && !now.some((p) => workers.includes(p)) ? true : undefined
  }, { tries: 400, intervalMs: 50 })
  await workersSay(admin, 'ok')
  // Each replacement reloads once it is ready: wait for both, over connections the primary deals out.
  const statuses = async (n: number): Promise<number[]> => await Promise.all(Array.from({ length: n }, async () => (await get({ port }, OTHER, { headers: bearerX })).status))
  await waitFor('the reload in both replacements', async () => (await statuses(8)).every((s) => s === 403) ? true : undefined, { tries: 200, intervalMs: 50 })
  t.same(await statuses(12), Array(12).fill(403), 'every connection is refused by the reloaded policy')
  child.kill('SIGTERM')
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0)
})

t.test('workers: a restarted worker that fails to start is tried again until it starts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-workers-'))
  const nas = await startStubNas(t)
  const port = await freePort()
  const adminPort = await freePort()
  const admin = `http://127.0.0.1:${adminPort}`
  // Certificates of its own: the test takes the key away for a while.
  const certs = testCerts()
  const [cert, key] = [join(dir, 'server.crt'), join(dir, 'server.key')]
  copyFileSync(certs.cert, cert)
  copyFileSync(certs.key, key)
  const file = writeConfig(dir, { port, nas: nas.url, workers: 2, extra: [`tls: { cert: ${cert}, key: ${key}, watch: false }`, `admin: { host: 127.0.0.1, port: ${adminPort} }`] })
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: CLEAN_ENV })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr?.on('data', () => {})
  await workersSay(admin, 'ok')

  const workers = childPids(child.pid as number)
  renameSync(key, `${key}.away`)
  process.kill(workers[0], 'SIGKILL')
  await waitFor('a restart to fail', () => /worker restart failed/.test(out) ? true : undefined, { tries: 600, intervalMs: 50 })
  renameSync(`${key}.away`, key)
  await workersSay(admin, 'ok')
  t.pass('the worker started once its key was back')
  t.equal((await get({ port }, PATH, { headers: bearer(token()) })).status, 200, 'and the gateway serves')
  child.kill('SIGTERM')
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0)
})
