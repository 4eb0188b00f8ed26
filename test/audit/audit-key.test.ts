// A missing audit key beside an existing trail stops the start (it used to
// be made anew: 503 for ever in one process, and a fresh key sealing new
// records under workers while `audit verify` called every old one edited).
// A new key is the deliberate `nasguard audit new-key`, which sets the old
// trail aside and records that it did. Through the real CLI.
import t from 'tap'
import { existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testCerts } from '../helpers/certs.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { SECRET, bearer, get } from '../helpers/gateway-client.js'
import { CLI, freePort, runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'
import { spawn } from 'node:child_process'
import { buildGateway } from '../../src/app.js'
import { loadConfig } from '../../src/config/load.js'

function writeConfig (dir: string, nasUrl: string, port: number, workers: number): string {
  const certs = testCerts()
  const file = join(dir, `nasguard-${workers}.yaml`)
  writeFileSync(file, [
    'listen: { host: 127.0.0.1, port: ' + String(port) + ' }',
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`, '  watch: false',
    `upstream: { url: "${nasUrl}" }`,
    `auth: { jwt: { secret: "${SECRET}" } }`,
    'policy:', '  - { name: recordings, path: /medicall/**, scopes: [recordings:read] }',
    `audit: { dir: ${JSON.stringify(join(dir, 'audit'))} }`,
    'admin: { enabled: false }',
    `workers: ${workers}`
  ].join('\n') + '\n')
  return file
}

t.test('a missing audit key beside a trail stops the start; audit new-key is the way on', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-auditkey-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  const file = writeConfig(dir, nas.url, port, 1)
  const config = loadConfig({ file })

  // A first start makes the key and writes a trail.
  const gw = await buildGateway(config)
  await gw.app.listen({ host: '127.0.0.1', port })
  const { createSigner } = await import('fast-jwt')
  const token = createSigner({ key: SECRET })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 600, iat: Math.floor(Date.now() / 1000) })
  t.equal((await get({ port }, '/medicall/a.wav', { headers: bearer(token) })).status, 200)
  await gw.close()
  const keyFile = join(dir, 'audit.key')
  t.ok(existsSync(keyFile), 'the key was made on the first start')

  unlinkSync(keyFile)
  await t.rejects(buildGateway(config), /audit key .* is missing, but .* holds an audit trail/, 'the app will not start')
  for (const workers of [1, 2]) {
    const started = await runCli(['start', '--config', writeConfig(dir, nas.url, port, workers)])
    t.equal(started.status, 1, `nasguard start (workers: ${workers}) exits 1`)
    t.match(started.stderr + started.stdout, /audit new-key/, `workers: ${workers}: the message names the way out`)
  }
  t.notOk(existsSync(keyFile), 'no key was made behind the operator\'s back')

  const made = await runCli(['audit', 'new-key', '--config', file])
  t.equal(made.status, 0, `audit new-key: ${made.stdout}${made.stderr}`)
  t.ok(existsSync(keyFile), 'a new key')
  const retired = readdirSync(join(dir, 'audit')).filter((n) => n.startsWith('retired-'))
  t.equal(retired.length, 1, 'the old trail is set aside')
  t.ok(readdirSync(join(dir, 'audit', retired[0])).includes('audit.jsonl'), 'whole')
  const verify = await runCli(['audit', 'verify', '--config', file])
  t.equal(verify.status, 0, `the new chain verifies: ${verify.stdout}${verify.stderr}`)
  const search = await runCli(['audit', 'search', '--config', file, '--event', 'new-key', '--json'])
  t.match(search.stdout, /"event":"new-key"/, 'and starts with a new-key record')

  const again = await runCli(['audit', 'new-key', '--config', file])
  t.equal(again.status, 1, 'a second new-key while the key exists is refused')
  t.match(again.stderr, /exists/)

  const gw2 = await buildGateway(config)
  t.teardown(() => gw2.close())
  t.ok(gw2, 'the gateway starts with the new key')
})

t.test('one gateway per audit directory: audit new-key is refused while one runs (one process or workers), and a single-process gateway and a cluster do not start beside each other', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-auditkey-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const keyFile = join(dir, 'audit.key')
  const snapshot = (): string => JSON.stringify(readdirSync(join(dir, 'audit'), { recursive: true }).sort())
  for (const workers of [1, 2]) {
    const port = await freePort()
    const file = writeConfig(dir, nas.url, port, workers)
    const child = spawn(process.execPath, [CLI, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (c: Buffer) => { output += c.toString() })
    child.stderr?.on('data', (c: Buffer) => { output += c.toString() })
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    await waitFor(`workers: ${workers}: the gateway listening: ${output}`, async () => /nasguard listening/.test(output) ? true : undefined, { tries: 600, intervalMs: 100 })

    // The other kind of gateway on the same directory does not start beside it.
    const unchanged = snapshot()
    const other = await runCli(['start', '--config', writeConfig(dir, nas.url, await freePort(), workers === 1 ? 2 : 1)], 120_000)
    t.equal(other.status, 1, `a ${workers === 1 ? 'cluster' : 'single-process gateway'} beside it does not start`)
    t.match(other.stderr + other.stdout, /one writer per directory/, 'one writer per audit directory')

    t.equal(snapshot(), unchanged, 'and changed nothing')

    // The key file lost while it runs (the message of a restarted worker then names audit new-key).
    rmSync(keyFile)
    const before = snapshot()
    const made = await runCli(['audit', 'new-key', '--config', file])
    t.equal(made.status, 1, `workers: ${workers}: audit new-key is refused while the gateway runs`)
    t.match(made.stderr, /writes to the audit trail .*stop it, every worker, before audit new-key; nothing was changed/, `workers: ${workers}: and says why`)
    t.equal(snapshot(), before, `workers: ${workers}: nothing was moved`)
    t.notOk(existsSync(keyFile), `workers: ${workers}: no key was made`)

    child.kill('SIGTERM')
    await exited
    const after = await runCli(['audit', 'new-key', '--config', file])
    t.equal(after.status, 0, `workers: ${workers}: once it stopped, audit new-key goes on: ${after.stderr}`)
    t.notOk(readdirSync(join(dir, 'audit'), { recursive: true }).some((f) => String(f).endsWith('audit.lock') && !String(f).startsWith('retired-') && String(f) !== 'audit.lock'), 'no chain lock left behind')
    const verify = await runCli(['audit', 'verify', '--config', file])
    t.equal(verify.status, 0, `the new chain verifies: ${verify.stdout}${verify.stderr}`)
  }
})
