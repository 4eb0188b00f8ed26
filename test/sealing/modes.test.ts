// sealing.mode migrate and require, erased periods, conditional requests and
// HEAD in plaintext terms, the keyring reloaded on SIGHUP, and `age -d`
// opening what nasguard sealed (Debian's age, no nasguard code).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startStubNas, startTestGateway } from '../helpers/gateway.js'
import { fetchAs, PROTOCOLS } from '../helpers/protocols.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { eraseKey, newPeriodKey } from '../../src/sealing/keyring.js'
import { SealedFiles, type SealedFile } from '../../src/proxy/sealed-files.js'
import { tmpdir } from 'node:os'

function haveAge (): boolean {
  try { execFileSync('age', ['--version'], { stdio: 'ignore' }); return true } catch { return false }
}

t.test('migrate: the sealed name first, then the plaintext one; require: only sealed', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const sealedPath = '/medicall/2026/11/29/101500_46701234567.wav'
  const plainPath = '/medicall/2026/11/29/101600_46707654321.wav'
  const sealedPlain = randomBytes(70000)
  const plainPlain = randomBytes(3000)
  mem.files.set(sealedName(ring, sealedPath), await sealBytes(ring, '2026-11', sealedPath, sealedPlain))
  mem.files.set(plainPath, plainPlain)
  mem.files.set('/medicall/2026/10/01/090000_4670.wav', Buffer.from('no key for October'))
  mem.files.set('/medicall/other/090000_4670.wav', Buffer.from('outside the pattern'))
  const migrate = await startTestGateway(t, nas, { sealing: { mode: 'migrate', keyring: keys.dir, periodPattern: PATTERN } })
  const requireGw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  for (const proto of PROTOCOLS) {
    const m = { authorization: `Bearer ${migrate.token()}` }
    const r = { authorization: `Bearer ${requireGw.token()}` }
    t.ok((await fetchAs(proto, migrate, sealedPath, m)).body.equals(sealedPlain), `${proto} migrate: a sealed recording, decrypted`)
    const before = nas.requests.length
    const p = await fetchAs(proto, migrate, plainPath, m)
    t.equal(p.status, 200)
    t.ok(p.body.equals(plainPlain), `${proto} migrate: a plaintext recording, as before`)
    t.same(nas.requests.slice(before).map((x) => x.url), [sealedName(ring, plainPath), plainPath], `${proto} migrate: the sealed name was asked for first`)
    t.equal((await fetchAs(proto, migrate, '/medicall/2026/10/01/090000_4670.wav', m)).status, 200, `${proto} migrate: a period without a key is served in plaintext`)
    t.equal((await fetchAs(proto, migrate, '/medicall/other/090000_4670.wav', m)).status, 200, `${proto} migrate: a path outside the pattern too`)

    t.ok((await fetchAs(proto, requireGw, sealedPath, r)).body.equals(sealedPlain), `${proto} require: sealed is served`)
    const n0 = nas.requests.length
    const noKey = await fetchAs(proto, requireGw, '/medicall/2026/10/01/090000_4670.wav', r)
    t.equal(noKey.status, 410, `${proto} require: a period without a key is erased`)
    t.equal(JSON.parse(noKey.body.toString()).error, 'NASGUARD_ERR_RECORDING_ERASED')
    const outside = await fetchAs(proto, requireGw, '/medicall/other/090000_4670.wav', r)
    t.equal(outside.status, 404, `${proto} require: a path outside the pattern`)
    t.equal(JSON.parse(outside.body.toString()).error, 'NASGUARD_ERR_NO_PERIOD')
    t.equal(nas.requests.length, n0, `${proto} require: neither reached the NAS`)
    const missing = await fetchAs(proto, requireGw, '/medicall/2026/11/29/000000_0.wav', r)
    t.equal(missing.status, 404, `${proto} require: no such recording`)
  }
})

t.test('a name too long to have a sealed name (over about 140 bytes): migrate serves the plaintext, require answers 404, neither is an internal error', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  // A 145-byte name: its sealed name would be 262 bytes, over the 255 a NAS takes (a 140-byte one seals to 254).
  const longPath = '/medicall/2026/11/29/101500_46701234567_' + 'z'.repeat(122) + '.wav'
  const plain = randomBytes(5000)
  mem.files.set(longPath, plain)
  const migrate = await startTestGateway(t, nas, { sealing: { mode: 'migrate', keyring: keys.dir, periodPattern: PATTERN } })
  const requireGw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  for (const proto of PROTOCOLS) {
    const before = nas.requests.length
    const m = await fetchAs(proto, migrate, longPath, { authorization: `Bearer ${migrate.token()}` })
    t.equal(m.status, 200, `${proto} migrate: served`)
    t.ok(m.body.equals(plain), `${proto} migrate: the plaintext recording`)
    t.same(nas.requests.slice(before).map((x) => x.url), [longPath], `${proto} migrate: no sealed name was asked for: none can exist`)
    const n0 = nas.requests.length
    const r = await fetchAs(proto, requireGw, longPath, { authorization: `Bearer ${requireGw.token()}` })
    t.equal(r.status, 404, `${proto} require: 404`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_NOT_FOUND', `${proto} require: no such recording`)
    t.equal(nas.requests.length, n0, `${proto} require: the NAS was not asked`)
  }
  t.notOk([...migrate.logs, ...requireGw.logs].some((l) => /unexpected error|"level":50/.test(l)), 'no internal error was logged')
})

t.test('HEAD, If-None-Match, If-Range and ETag in plaintext terms', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const path = '/medicall/2026/11/29/101500_46701234567.wav'
  const plain = randomBytes(200000)
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, plain))
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  const auth = { authorization: `Bearer ${gw.token()}` }
  for (const proto of PROTOCOLS) {
    const head = await fetchAs(proto, gw, path, auth, 'HEAD')
    t.equal(head.status, 200)
    t.equal(head.headers['content-length'], '200000', `${proto}: HEAD gives the plaintext length`)
    t.equal(head.headers['accept-ranges'], 'bytes')
    const etag = String(head.headers.etag)
    t.match(etag, /^"[A-Za-z0-9_-]+"$/, 'a strong ETag')
    const headRange = await fetchAs(proto, gw, path, { ...auth, range: 'bytes=100-199' }, 'HEAD')
    t.equal(headRange.status, 206)
    t.equal(headRange.headers['content-range'], 'bytes 100-199/200000')
    t.equal((await fetchAs(proto, gw, path, { ...auth, 'if-none-match': etag })).status, 304, `${proto}: If-None-Match`)
    const same = await fetchAs(proto, gw, path, { ...auth, range: 'bytes=10-19', 'if-range': etag })
    t.equal(same.status, 206, `${proto}: If-Range with the current ETag: the range`)
    t.ok(same.body.equals(plain.subarray(10, 20)))
    const changed = await fetchAs(proto, gw, path, { ...auth, range: 'bytes=10-19', 'if-range': '"another"' })
    t.equal(changed.status, 200, `${proto}: If-Range with another ETag: the whole file`)
    t.ok(changed.body.equals(plain))
  }
  // The file is replaced on the NAS: the remembered header no longer holds.
  const replaced = randomBytes(100000)
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, replaced))
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, path, { ...auth, range: 'bytes=70000-70009' })
    t.equal(res.status, 206, `${proto}: a replaced file is read afresh`)
    t.ok(res.body.equals(replaced.subarray(70000, 70010)))
  }
})

t.test('an erased period answers 410 at once, and a new period key is taken on reload (SIGHUP)', async (t) => {
  // Every file the gateway opens, to see what becomes of its payload key.
  const opened: SealedFile[] = []
  const caches = new Set<SealedFiles>()
  const open = SealedFiles.prototype.open
  SealedFiles.prototype.open = async function (...args) {
    const result = await open.apply(this, args)
    caches.add(this)
    if (result.kind === 'file') opened.push(result.file)
    return result
  }
  t.teardown(() => { SealedFiles.prototype.open = open })
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const path = '/medicall/2026/11/29/101500_46701234567.wav'
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, randomBytes(1000)))
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'migrate', keyring: keys.dir, periodPattern: PATTERN } })
  const auth = { authorization: `Bearer ${gw.token()}` }
  t.equal((await fetchAs('h2', gw, path, auth)).status, 200)
  t.ok(opened.length > 0 && opened.every((f) => [...caches].some((c) => c.cached(f.path, f.keyId) !== undefined)), 'the gateway remembers the file it opened')
  // Erasure by key destruction (what retention will do): the key goes, a tombstone stays.
  const keyId = eraseKey(keys.dir, '2026-11')
  t.notOk(existsSync(join(keys.dir, '2026-11.key')), 'the identity is gone')
  t.match(readFileSync(join(keys.dir, '2026-11.erased'), 'utf8'), keyId, 'a tombstone names the key id, and holds no key')
  t.ok(gw.gateway.reloadKeyring(), 'the keyring reloads')
  const n0 = nas.requests.length
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, path, auth)
    t.equal(res.status, 410, `${proto}: erased`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_RECORDING_ERASED')
  }
  t.equal(nas.requests.length, n0, 'the NAS was not asked')
  t.ok(opened.length > 0, 'the gateway opened the file before the erasure')
  t.ok(opened.every((f) => [...caches].every((c) => c.cached(f.path, f.keyId) === undefined)), 'the files it remembered under the erased key are forgotten (their payload keys are not kept)')
  // A keyring that no longer loads (made readable by others) is refused; the one in use stays.
  const bad = join(keys.dir, '2026-12.key')
  newPeriodKey(keys.dir, 'month', '2026-12')
  execFileSync('chmod', ['644', bad])
  t.notOk(gw.gateway.reloadKeyring(), 'a keyring others can read is refused')
  t.ok(gw.logs.some((l) => l.includes('could not be reloaded') && l.includes('chmod 600')), 'and the log says what to do')
  t.equal((await fetchAs('h1', gw, path, auth)).status, 410, 'the keyring in use stays')
})

if (!haveAge() && process.env.CI) t.fail('age is not installed, and CI should have installed it (.ci/run)')

t.test('`age -d` opens every file nasguard seals, to the original bytes (Debian age, no nasguard code)', { skip: haveAge() ? false : 'age is not installed' }, async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const dir = join(tmpdir(), `nasguard-age-${process.pid}`)
  execFileSync('mkdir', ['-p', dir])
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const size of [0, 1, 65535, 65536, 65537, 3 * 65536 + 7, 1024 * 1024 + 3]) {
    const plain = randomBytes(size)
    const file = join(dir, `${size}.age`)
    writeFileSync(file, await sealBytes(ring, '2026-11', '/medicall/2026/11/29/x.wav', plain))
    const out = execFileSync('age', ['-d', '-i', join(keys.dir, '2026-11.key'), file], { maxBuffer: 64 * 1024 * 1024 })
    t.ok(out.equals(plain), `${size} bytes: age -d gives the original`)
  }
  // And age refuses it with another period's identity.
  newPeriodKey(keys.dir, 'month', '2026-10')
  t.throws(() => execFileSync('age', ['-d', '-i', join(keys.dir, '2026-10.key'), join(dir, '1.age')], { stdio: 'pipe' }), 'another key does not open it')
})
