// SIGHUP (and the config file changing) reloads the policy, the extensions
// and the per-request limits, not only certificates; a bad new config is
// refused, logged and counted, and the running one stays. Through the real
// CLI, for one process and for workers.
import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { RECORDING, startStubNas, type NasHandler } from '../helpers/stub-nas.js'
import { CLI, childPids, freePort } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'

const SECRET = 's'.repeat(40)
const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 3600 })

function config (o: { port: number, adminPort: number, nas: string, stockholm: boolean, workers: number, watch: boolean, broken?: boolean, drainTimeoutMs?: number, auth?: string, upstreamExtra?: string }): string {
  const certs = testCerts()
  return [
    `listen: { host: 127.0.0.1, port: ${o.port} }`,
    `tls: { cert: ${certs.cert}, key: ${certs.key}, watch: ${o.watch} }`,
    `upstream: { url: "${o.nas}"${o.upstreamExtra ?? ''} }`,
    `auth: ${o.auth ?? `{ jwt: { secret: "${SECRET}" } }`}`,
    'policy:',
    '  - { name: recordings, path: /medicall/**, scopes: [recordings:read] }',
    ...(o.stockholm ? ['  - { name: stockholm, path: /stockholm/**, scopes: [recordings:read] }'] : []),
    ...(o.broken ? ['  - { name: broken, path: /x/**, scopes: [] , bogus: 1 }'] : []),
    'audit: { dir: audit }',
    `admin: { host: 127.0.0.1, port: ${o.adminPort} }`,
    `workers: ${o.workers}`,
    ...(o.drainTimeoutMs === undefined ? [] : [`limits: { drainTimeoutMs: ${o.drainTimeoutMs} }`])
  ].join('\n')
}

/** Writes the file the way editors and config management do: a new file renamed over the old. */
function replaceFile (file: string, text: string): void {
  writeFileSync(file + '.new', text)
  renameSync(file + '.new', file)
}

/** A stub NAS (answering with `handler`, else as stub NASes do), a new directory with the config file's path in it, and the ports and NAS URL a config() needs. */
async function setup (t: Test, handler?: NasHandler): Promise<{ dir: string, file: string, base: { port: number, adminPort: number, nas: string } }> {
  const nas = await startStubNas(t, handler)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-'))
  return { dir, file: join(dir, 'nasguard.yaml'), base: { port: await freePort(), adminPort: await freePort(), nas: nas.url } }
}

/** @param bearer the token, or '' for none (a grant's URL) */
function status (port: number, path: string, bearer = token): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, servername: 'localhost', ca: readFileSync(testCerts().ca), headers: bearer === '' ? {} : { authorization: `Bearer ${bearer}` }, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', () => resolve(0))
    req.end()
  })
}

async function startCli (t: { teardown: (fn: () => unknown) => void }, file: string, adminPort: number, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess, output: () => string }> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (c: Buffer) => { output += c.toString() })
  child.stderr?.on('data', (c: Buffer) => { output += c.toString() })
  t.teardown(() => new Promise<void>((resolve) => { if (child.exitCode !== null) { resolve(); return } child.once('close', () => resolve()); child.kill('SIGTERM') }))
  await waitFor(`the gateway to be ready: ${output}`, async () => {
    const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined)
    return r?.status === 200 ? true : undefined
  }, { tries: 600, intervalMs: 100 })
  return { child, output: () => output }
}

/** Two workers again, `dead` not among them, and the gateway ready: the primary's replacement for the killed worker started. */
async function replacementReady (child: ChildProcess, dead: number, adminPort: number): Promise<void> {
  await waitFor('a replacement worker, ready', async () => {
    const now = childPids(child.pid as number)
    if (now.length !== 2 || now.includes(dead)) return undefined
    const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined)
    return r?.status === 200 ? true : undefined
  }, { tries: 600, intervalMs: 100 })
}

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: SIGHUP applies a new policy; a bad config is refused and the running one stays`, async (t) => {
    const { file, base } = await setup(t)
    const o = { ...base, stockholm: false, workers, watch: false }
    writeFileSync(file, config(o))
    const gw = await startCli(t, file, o.adminPort)
    t.equal(await status(o.port, '/stockholm/a.wav'), 403, 'no rule for /stockholm yet')

    replaceFile(file, config({ ...o, stockholm: true }))
    gw.child.kill('SIGHUP')
    // Every worker must have it: several requests, on new connections.
    t.ok(await waitFor('the new rule in every process', async () => {
      const all = await Promise.all(Array.from({ length: 6 }, async () => await status(o.port, '/stockholm/a.wav')))
      return all.every((s) => s === 200) ? true : undefined
    }, { tries: 300, intervalMs: 100 }), 'the new rule serves /stockholm')
    t.match(gw.output(), /"applied":\["policy"\]/, 'the log says what was applied')

    replaceFile(file, config({ ...o, stockholm: false, broken: true }))
    gw.child.kill('SIGHUP')
    await waitFor('the refusal in the log', () => /config reload refused: the running config stays/.test(gw.output()) ? true : undefined, { tries: 300, intervalMs: 100 })
    t.match(gw.output(), /config error at policy/, 'it names the key')
    const after = await Promise.all(Array.from({ length: 6 }, async () => await status(o.port, '/stockholm/a.wav')))
    t.same(after, after.map(() => 200), 'the running policy stays')
    const metrics = await (await fetch(`http://127.0.0.1:${o.adminPort}/metrics`)).text()
    t.match(metrics, /nasguard_config_reloads_total\{result="failed"\} [1-9]/, 'the failed reload is counted')
    t.equal(gw.child.exitCode, null, 'still running')
  })
}

t.test('with tls.watch, a changed config file is applied without a signal; restart-only keys are reported, not applied', async (t) => {
  const { file, base } = await setup(t)
  const o = { ...base, stockholm: false, workers: 1, watch: true }
  writeFileSync(file, config(o))
  const gw = await startCli(t, file, o.adminPort)
  t.equal(await status(o.port, '/stockholm/a.wav'), 403)
  replaceFile(file, config({ ...o, stockholm: true }).replace(`port: ${o.adminPort}`, `port: ${o.adminPort}, enabled: true`).replace('audit: { dir: audit }', 'audit: { dir: audit, batchMs: 50 }'))
  t.ok(await waitFor('the new rule', async () => (await status(o.port, '/stockholm/a.wav')) === 200 ? true : undefined, { tries: 300, intervalMs: 100 }), 'applied without a signal')
  t.ok(await waitFor('the restart note', () => /"restart":\["audit.batchMs"\]/.test(gw.output()) ? true : undefined, { tries: 100, intervalMs: 100 }), 'audit.batchMs is reported as needing a restart')
  // A limit: paths longer than limits.maxPathLength are refused from the next request.
  const long = `/medicall/${'a'.repeat(60)}.wav`
  t.equal(await status(o.port, long), 200, 'a 75-byte path is served')
  replaceFile(file, config({ ...o, stockholm: true }) + '\nlimits: { maxPathLength: 40 }\n')
  t.ok(await waitFor('the new limit', async () => (await status(o.port, long)) === 400 ? true : undefined, { tries: 300, intervalMs: 100 }), 'limits.maxPathLength applied without a restart')
})

t.test('a SIGHUP that lengthens limits.drainTimeoutMs lengthens the close\'s backstop too', async (t) => {
  // A download the NAS never finishes: the close must wait for the drain
  // deadline in force when it starts (12 s, after the reload), not for the
  // backstop set from the start's (0.1 s + 10 s), which would exit 1 first.
  const { file, base } = await setup(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': String(RECORDING.length * 100) })
    if (req.method === 'HEAD') res.end()
    else res.write(RECORDING)
  })
  const o = { ...base, stockholm: false, workers: 1, watch: false, drainTimeoutMs: 100 }
  writeFileSync(file, config(o))
  const gw = await startCli(t, file, o.adminPort)
  replaceFile(file, config({ ...o, drainTimeoutMs: 12000 }))
  gw.child.kill('SIGHUP')
  t.ok(await waitFor('the reload applied', async () => /"applied":\[[^\]]*"limits\.drainTimeoutMs"/.test(gw.output()) ? true : undefined, { tries: 300, intervalMs: 100 }))
  const downloading = new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port: o.port, path: '/medicall/a.wav', servername: 'localhost', ca: readFileSync(testCerts().ca), headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      res.once('data', () => resolve())
      res.on('error', () => {})
    })
    req.on('error', () => {})
    req.end()
  })
  await downloading
  const exited = new Promise<number | null>((resolve) => gw.child.once('exit', (code) => resolve(code)))
  gw.child.kill('SIGTERM')
  t.equal(await exited, 0, gw.output())
  t.notMatch(gw.output(), /killed by timeout|did not finish within/)
  t.match(gw.output(), /closing/)
})

/** A token for alice signed with key (and kid). */
function tokenFor (key: string, o: { kid?: string, algorithm?: 'HS256' | 'HS512' } = {}): string {
  return createSigner({ key, algorithm: o.algorithm ?? 'HS256', ...(o.kid ? { kid: o.kid } : {}) })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 3600 })
}

/** A playback grant's URL for /medicall/a.wav, minted with `bearer`. */
function mintGrant (port: number, bearer: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/_nasguard/grants', method: 'POST', servername: 'localhost', ca: readFileSync(testCerts().ca), headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, agent: false }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => { res.statusCode === 201 ? resolve(JSON.parse(Buffer.concat(parts).toString()).url as string) : reject(new Error(`grant: ${res.statusCode ?? 0}`)) })
    })
    req.on('error', reject)
    req.end(JSON.stringify({ path: '/medicall/a.wav' }))
  })
}

/** The statuses of `n` requests, each on its own connection (so every worker answers some). */
async function statuses (port: number, bearer: string, n = 6, path = '/medicall/a.wav'): Promise<number[]> {
  return await Promise.all(Array.from({ length: n }, async () => await status(port, path, bearer)))
}
const grantStatuses = async (port: number, url: string): Promise<number[]> => await statuses(port, '', 6, url)

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: JWT keys rotated by a reload, a secret rewritten in its own file included, are applied; the old key's tokens are refused, remembered or not, and the grants they minted`, async (t) => {
    const { dir, file, base } = await setup(t)
    const secretFile = join(dir, 'jwt.secret')
    const grantsFile = join(dir, 'grants.secret')
    const [a, b, k1, k2] = ['a', 'b', '1', '2'].map((c) => c.repeat(40))
    writeFileSync(secretFile, a + '\n', { mode: 0o600 })
    writeFileSync(grantsFile, 'g'.repeat(40), { mode: 0o600 })
    const grants = `grants: { secretFile: ${grantsFile} }`
    const o = { ...base, stockholm: false, workers, watch: false, auth: `{ jwt: { secretFile: ${secretFile} }, ${grants} }` }
    writeFileSync(file, config(o))
    const gw = await startCli(t, file, o.adminPort)
    const reloads = (): number => gw.output().split('config reloaded').length - 1
    const reload = async (what: string): Promise<void> => {
      const before = reloads()
      gw.child.kill('SIGHUP')
      // Every process logs its own reload.
      await waitFor(`the reload (${what})`, () => reloads() >= before + workers ? true : undefined, { tries: 300, intervalMs: 100 })
    }
    t.same(await statuses(o.port, tokenFor(a)), [200, 200, 200, 200, 200, 200], 'the first secret\'s tokens are served (and remembered)')
    const grantA = await mintGrant(o.port, tokenFor(a))
    t.same(await grantStatuses(o.port, grantA), [200, 200, 200, 200, 200, 200], 'a grant minted with one of its tokens serves')

    // The leaked secret replaced in the same file, written in place.
    writeFileSync(secretFile, b + '\n')
    await reload('the secret file rewritten')
    t.same(await statuses(o.port, tokenFor(b)), [200, 200, 200, 200, 200, 200], 'the new secret\'s tokens are served')
    t.same(await statuses(o.port, tokenFor(a)), [401, 401, 401, 401, 401, 401], 'the old secret\'s tokens are refused, though verified before')
    t.same(await grantStatuses(o.port, grantA), [401, 401, 401, 401, 401, 401], 'and so is the grant minted with one, before its ttl')
    t.match(gw.output(), /"applied":\["auth\.jwt\.secretFile"\],"msg":"config reloaded"/, 'the log names what was applied')

    // Rotation by kid: k2 added beside k1, then k1 removed.
    replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k1, algorithms: [HS256], secret: "${k1}" }, { kid: k2, algorithms: [HS256], secret: "${k2}" }] }, ${grants} }` }))
    await reload('k2 added')
    t.same(await statuses(o.port, tokenFor(k2, { kid: 'k2' })), [200, 200, 200, 200, 200, 200], 'k2 is accepted from the reload on')
    t.same(await statuses(o.port, tokenFor(k1, { kid: 'k1' })), [200, 200, 200, 200, 200, 200], 'k1 still is')
    const [grant1, grant2] = [await mintGrant(o.port, tokenFor(k1, { kid: 'k1' })), await mintGrant(o.port, tokenFor(k2, { kid: 'k2' }))]
    t.same(await statuses(o.port, tokenFor(b)), [401, 401, 401, 401, 401, 401], 'the secret file\'s key is gone with it')
    replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k2, algorithms: [HS256], secret: "${k2}" }] }, ${grants} }` }))
    await reload('k1 removed')
    t.same(await statuses(o.port, tokenFor(k1, { kid: 'k1' })), [401, 401, 401, 401, 401, 401], 'k1 is refused once removed')
    t.same(await statuses(o.port, tokenFor(k2, { kid: 'k2' })), [200, 200, 200, 200, 200, 200], 'k2 serves on')
    t.same(await grantStatuses(o.port, grant1), [401, 401, 401, 401, 401, 401], 'a grant minted with a k1 token is refused with k1')
    t.same(await grantStatuses(o.port, grant2), [200, 200, 200, 200, 200, 200], 'one minted with k2 serves on')

    // Another algorithm: the verifier was built for HS256, so that key waits for a restart, and a warning says so.
    const k3 = '3'.repeat(64)
    replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k2, algorithms: [HS256], secret: "${k2}" }, { kid: k3, algorithms: [HS512], secret: "${k3}" }] }, ${grants} }` }))
    await reload('an HS512 key beside k2')
    t.match(gw.output(), /"level":40[^\n]*"restart":\[[^\]]*"auth\.jwt\.keys\[1\] \(HS512\)"[^\n]*not applied until a restart/, 'a warning names the key')
    t.same(await statuses(o.port, tokenFor(k2, { kid: 'k2' })), [200, 200, 200, 200, 200, 200], 'k2 serves on')
    t.same(await statuses(o.port, tokenFor(k3, { kid: 'k3', algorithm: 'HS512' })), [401, 401, 401, 401, 401, 401], 'k3 waits for the restart')
    // A key that keeps its algorithm and gains another: the one it gains is named too, not dropped in silence.
    replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k2, algorithms: [HS256, HS384], secret: "${k2.repeat(2)}" }] }, ${grants} }` }))
    await reload('k2 with HS384 too')
    t.match(gw.output(), /"level":40[^\n]*"restart":\[[^\]]*"auth\.jwt\.keys\[0\] \(HS384\)"/, 'the algorithm gained is named as needing a restart')
    t.same(await statuses(o.port, tokenFor(k2.repeat(2), { kid: 'k2' })), [200, 200, 200, 200, 200, 200], 'its HS256 tokens serve')

    // A secret only a restart takes, rewritten in place: reported, not passed over.
    replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k2, algorithms: [HS256], secret: "${k2}" }] }, ${grants} }` }))
    writeFileSync(grantsFile, 'h'.repeat(40))
    await reload('the grants secret rewritten')
    t.match(gw.output(), /"level":40[^\n]*"restart":\["auth\.grants\.secretFile"\]/, 'the grants secret file is named as needing a restart')
    t.notMatch(gw.output(), new RegExp([a, b, k1, k2, 'g'.repeat(40), 'h'.repeat(40)].join('|')), 'no secret in the log')
    t.equal(gw.child.exitCode, null, 'still running')
  })
}

t.test('a key the environment sets is named at start and at every reload: edits to it in the file do not apply', async (t) => {
  const { file, base } = await setup(t)
  const o = { ...base, stockholm: false, workers: 1, watch: false }
  writeFileSync(file, config(o))
  const env = { NASGUARD_POLICY: JSON.stringify([{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }]) }
  const gw = await startCli(t, file, o.adminPort, env)
  t.match(gw.output(), /warning: config at policy: NASGUARD_POLICY in the environment overrides the file's value/, 'said at start')
  replaceFile(file, config({ ...o, stockholm: true }))
  gw.child.kill('SIGHUP')
  await waitFor('the reload', () => /the environment overrides these keys/.test(gw.output()) ? true : undefined, { tries: 300, intervalMs: 100 })
  t.match(gw.output(), /"level":40[^\n]*"keys":\["policy"\],"variables":\["NASGUARD_POLICY"\][^\n]*the environment overrides these keys of the config file/, 'a warning at the reload names the key and the variable')
  t.equal(await status(o.port, '/stockholm/a.wav'), 403, 'the file\'s new rule does not apply: the environment\'s policy does')
})

t.test('workers: 2: a reload that drops keys (an algorithm with them) holds in a worker restarted after it, though the dropped key\'s file is gone', async (t) => {
  const { dir, file, base } = await setup(t)
  const k1File = join(dir, 'k1.secret')
  const [k1, k2, k9] = ['1'.repeat(40), '2'.repeat(40), '9'.repeat(64)]
  writeFileSync(k1File, k1, { mode: 0o600 })
  const o = { ...base, stockholm: false, workers: 2, watch: false, auth: `{ jwt: { keys: [{ kid: k1, algorithms: [HS256], secretFile: ${k1File} }, { kid: k9, algorithms: [HS512], secret: "${k9}" }] } }` }
  writeFileSync(file, config(o))
  const gw = await startCli(t, file, o.adminPort)
  t.same(await statuses(o.port, tokenFor(k9, { kid: 'k9', algorithm: 'HS512' })), [200, 200, 200, 200, 200, 200], 'k9 (the only HS512 key) serves')
  replaceFile(file, config({ ...o, auth: `{ jwt: { keys: [{ kid: k2, algorithms: [HS256], secret: "${k2}" }] } }` }))
  gw.child.kill('SIGHUP')
  await waitFor('both workers reloaded', () => gw.output().split('config reloaded').length - 1 >= 2 ? true : undefined, { tries: 300, intervalMs: 100 })
  const dropped = async (): Promise<void> => {
    t.same(await statuses(o.port, tokenFor(k9, { kid: 'k9', algorithm: 'HS512' })), [401, 401, 401, 401, 401, 401], 'k9, leaked and removed, is refused though it was the only key of its algorithm')
    t.same(await statuses(o.port, tokenFor(k1, { kid: 'k1' })), [401, 401, 401, 401, 401, 401], 'k1 is refused')
    t.same(await statuses(o.port, tokenFor(k2, { kid: 'k2' })), [200, 200, 200, 200, 200, 200], 'k2 serves')
  }
  await dropped()
  // The operator cleans up, and a worker dies: the one started in its place must hold the keys the other holds.
  rmSync(k1File)
  const [dead] = childPids(gw.child.pid as number)
  process.kill(dead, 'SIGKILL')
  await replacementReady(gw.child, dead, o.adminPort)
  await dropped()
  t.notMatch(gw.output(), /worker restart failed/, 'the replacement started at the first try')
})

t.test('workers: 2: a restart-only secret file removed while running: a worker restarted after it fails naming the config key and the file, is retried, and starts once the file is back; the other worker serves on', async (t) => {
  const { dir, file, base } = await setup(t)
  const pw = join(dir, 'nas.password')
  writeFileSync(pw, 'nas-password-kept-secret\n', { mode: 0o600 })
  const o = { ...base, stockholm: false, workers: 2, watch: false, upstreamExtra: `, username: nasguard, passwordFile: ${pw}` }
  writeFileSync(file, config(o))
  const gw = await startCli(t, file, o.adminPort)
  rmSync(pw)
  const [dead] = childPids(gw.child.pid as number)
  process.kill(dead, 'SIGKILL')
  await waitFor('a failed restart', () => /worker restart failed/.test(gw.output()) ? true : undefined, { tries: 300, intervalMs: 100 })
  t.match(gw.output(), new RegExp(`nasguard worker \\d: upstream\\.passwordFile: cannot read ${pw.replace(/[.]/g, '\\.')}: ENOENT`), 'the error names the config key and the file')
  t.same(await statuses(o.port, token), [200, 200, 200, 200, 200, 200], 'the other worker serves on')
  // The operator puts the file back: the next try starts the worker.
  writeFileSync(pw, 'nas-password-kept-secret\n', { mode: 0o600 })
  await replacementReady(gw.child, dead, o.adminPort)
  t.notMatch(gw.output(), /nas-password-kept-secret/, 'the password is in no log line')
  t.equal(gw.child.exitCode, null, 'still running')
})

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: a SIGHUP while the gateway starts is held and applied once it is up, not the end of it`, async (t) => {
    const { dir, file, base } = await setup(t)
    // The JWT secret is a FIFO: the gateway's first read of it blocks until
    // this test writes it, so the SIGHUP lands while the start is under way.
    // Every later read (the workers', the reload's) finds a plain file.
    const secret = join(dir, 'jwt.secret')
    const fifo = join(dir, 'jwt.fifo')
    execFileSync('mkfifo', ['-m', '600', fifo])
    renameSync(fifo, secret)
    writeFileSync(file, config({ ...base, stockholm: false, workers, watch: false, auth: `{ jwt: { secretFile: "${secret}" } }` }))
    const child = spawn(process.execPath, [CLI, 'start', '--config', file], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (c: Buffer) => { output += c.toString() })
    child.stderr?.on('data', (c: Buffer) => { output += c.toString() })
    const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(`exited with ${String(code ?? signal)}`)))
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) { child.kill('SIGTERM'); await exited }
    })
    const writer = await open(secret, 'w') // resolves once the gateway opened the secret to read it: it is starting
    t.equal(child.exitCode, null, 'starting')
    child.kill('SIGHUP')
    writeFileSync(secret + '.new', SECRET, { mode: 0o600 })
    renameSync(secret + '.new', secret)
    await writer.write(SECRET)
    await writer.close()
    const ready = await Promise.race([
      waitFor(`the gateway to be ready: ${output}`, async () => (await fetch(`http://127.0.0.1:${base.adminPort}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined, { tries: 600, intervalMs: 100 }).then(() => 'ready'),
      exited.then((how) => `${how}: ${output}`)
    ])
    t.equal(ready, 'ready', 'the gateway started')
    t.equal(await status(base.port, '/medicall/2024/05/06/101010_46701234567.wav'), 200, 'and serves')
    await waitFor('the held reload applied', async () => /config (reloaded|unchanged)|"applied"/.test(output) ? true : undefined, { tries: 300, intervalMs: 100 })
    t.equal(child.exitCode, null, 'still running')
  })
}
