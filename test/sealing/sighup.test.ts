// The keyring is read at start and on SIGHUP, through the real CLI, with
// workers: a period whose key is destroyed answers 410 after
// the signal, a new period's key is served after it.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { startStubNas, testCerts } from '../helpers/gateway.js'
import { CLI, freePort } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { eraseKey, Keyring, newPeriodKey } from '../../src/sealing/keyring.js'

const SECRET = 's'.repeat(40)
const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 3600 })

function status (port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, servername: 'localhost', ca: readFileSync(testCerts().ca), headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', () => resolve(0))
    req.end()
  })
}

// Workers: the primary passes SIGHUP on, and each worker reloads (one process runs the same reload).
for (const workers of [2]) {
  t.test(`workers: ${workers}: SIGHUP reloads the keyring`, async (t) => {
    const keys = makeKeyring(['2026-10', '2026-11'])
    const mem = memoryNas()
    const nas = await startStubNas(t, mem.handler)
    const ring = keys.ring()
    const oct = '/medicall/2026/10/01/090000_46701234567.wav'
    const dec = '/medicall/2026/12/01/090000_46707654321.wav'
    mem.files.set(sealedName(ring, oct), await sealBytes(ring, '2026-10', oct, randomBytes(1000)))
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-sighup-'))
    const [port, adminPort] = [await freePort(), await freePort()]
    const certs = testCerts()
    const file = join(dir, 'nasguard.yaml')
    writeFileSync(file, [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `tls: { cert: ${certs.cert}, key: ${certs.key} }`,
      `upstream: { url: "${nas.url}" }`,
      `auth: { jwt: { secret: "${SECRET}" } }`,
      'policy: [{ name: recordings, path: /medicall/**, scopes: [recordings:read] }]',
      `audit: { dir: ${join(dir, 'audit')} }`,
      `admin: { host: 127.0.0.1, port: ${adminPort} }`,
      `sealing: { mode: require, keyring: ${keys.dir}, periodPattern: "${PATTERN}" }`,
      `workers: ${workers}`
    ].join('\n'))
    const child = spawn(process.execPath, [CLI, 'start', '--config', file], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (c: Buffer) => { output += c.toString() })
    child.stderr?.on('data', (c: Buffer) => { output += c.toString() })
    t.teardown(() => new Promise<void>((resolve) => { if (child.exitCode !== null) { resolve(); return } child.once('close', () => resolve()); child.kill('SIGTERM') }))
    await waitFor(`the gateway to be ready: ${output}`, async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined, { tries: 600, intervalMs: 100 })
    t.equal(await status(port, oct), 200, 'October is served')
    t.equal(await status(port, dec), 410, 'December has no key yet: erased under require')

    eraseKey(keys.dir, '2026-10')
    newPeriodKey(keys.dir, 'month', '2026-12')
    const ring2 = Keyring.load(keys.dir)
    mem.files.set(sealedName(ring2, dec), await sealBytes(ring2, '2026-12', dec, randomBytes(1000)))
    child.kill('SIGHUP')
    // Every worker: several requests, so that each worker answers some.
    await waitFor('October erased and December served, everywhere', async () => {
      const all = await Promise.all(Array.from({ length: 6 }, async () => [await status(port, oct), await status(port, dec)]))
      return all.every(([o, d]) => o === 410 && d === 200) ? true : undefined
    }, { tries: 300, intervalMs: 100 })
    t.equal(await status(port, oct), 410, 'after SIGHUP: the erased October is 410')
    t.equal(await status(port, dec), 200, 'after SIGHUP: the new December is served')
    t.notMatch(output, /AGE-SECRET-KEY|46701234567|46707654321/, 'no key or recording name in the output')
  })
}
