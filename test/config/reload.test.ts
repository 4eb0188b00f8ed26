// SIGHUP (and the config file changing) reloads the policy, the extensions
// and the per-request limits, not only certificates; a bad new config is
// refused, logged and counted, and the running one stays. Through the real
// CLI, for one process and for workers.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync, renameSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { RECORDING, startStubNas } from '../helpers/stub-nas.js'
import { CLI, freePort } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'

const SECRET = 's'.repeat(40)
const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 3600 })

function config (o: { port: number, adminPort: number, nas: string, stockholm: boolean, workers: number, watch: boolean, broken?: boolean, drainTimeoutMs?: number }): string {
  const certs = testCerts()
  return [
    `listen: { host: 127.0.0.1, port: ${o.port} }`,
    `tls: { cert: ${certs.cert}, key: ${certs.key}, watch: ${o.watch} }`,
    `upstream: { url: "${o.nas}" }`,
    `auth: { jwt: { secret: "${SECRET}" } }`,
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

function status (port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, servername: 'localhost', ca: readFileSync(testCerts().ca), headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', () => resolve(0))
    req.end()
  })
}

async function startCli (t: { teardown: (fn: () => unknown) => void }, file: string, adminPort: number): Promise<{ child: ChildProcess, output: () => string }> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', file], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
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

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: SIGHUP applies a new policy; a bad config is refused and the running one stays`, async (t) => {
    const nas = await startStubNas(t)
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-'))
    const file = join(dir, 'nasguard.yaml')
    const o = { port: await freePort(), adminPort: await freePort(), nas: nas.url, stockholm: false, workers, watch: false }
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
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-'))
  const file = join(dir, 'nasguard.yaml')
  const o = { port: await freePort(), adminPort: await freePort(), nas: nas.url, stockholm: false, workers: 1, watch: true }
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
  const nas = await startStubNas(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': String(RECORDING.length * 100) })
    if (req.method === 'HEAD') res.end()
    else res.write(RECORDING)
  })
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-'))
  const file = join(dir, 'nasguard.yaml')
  const o = { port: await freePort(), adminPort: await freePort(), nas: nas.url, stockholm: false, workers: 1, watch: false, drainTimeoutMs: 100 }
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
