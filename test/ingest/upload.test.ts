// Uploads sealed on the way in, over real sockets against Debian's nginx
// WebDAV: stored under the sealed name (PUT to a hidden temporary name,
// then MOVE), opened by stock age, served back by GET and Range; and every
// refusal, over HTTP/1.1 and HTTP/2, with the NAS's own log as the count
// of what it was asked.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PassThrough } from 'node:stream'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import type { Teardown } from '../helpers/gateway.js'
import { toneWav } from '../../src/demo/recordings.js'
import { recentPeriods } from '../../src/sealing/period.js'
import { bearer, rawTls, scrape, startTestGateway, statusOf, testCerts } from '../helpers/gateway.js'
import { startDavNas } from '../helpers/dav-nas.js'
import { fetchAs, PROTOCOLS } from '../helpers/protocols.js'
import { makeKeyring, PATTERN, sealedName } from '../helpers/sealed-nas.js'
import { newPeriodKey } from '../../src/sealing/keyring.js'
import { putAs } from '../helpers/upload.js'
import { run, runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'
import { loadAuditKey } from '../../src/audit/key.js'
import { auditKeyFile } from '../../src/config/derived.js'
import { changeHolds, fileHoldsStore, holdsKeyOf } from '../../src/retention/holds.js'
import { writeFileSync } from 'node:fs'

// Uploads may open only the current period and the one before: the paths follow today's date.
const [CUR, PREV] = recentPeriods('month', new Date()).map((p) => p.replace('-', '/'))
const [CUR_PERIOD, PREV_PERIOD] = recentPeriods('month', new Date())

const POLICY = [
  { name: 'replace', path: `/medicall/${PREV}/**`, methods: ['PUT' as const], scopes: ['recordings:write'], overwrite: true },
  { name: 'recorder', path: '/medicall/**', methods: ['PUT' as const], scopes: ['recordings:write'] },
  { name: 'read', path: '/medicall/**', methods: ['GET' as const, 'HEAD' as const], scopes: ['recordings:read'] }
]

const RECORDING = toneWav(440, 1.2)
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

async function setup (t: Teardown, sealing: Record<string, unknown> = {}, keysAhead: string[] = []): Promise<{ gw: Awaited<ReturnType<typeof startTestGateway>>, nas: Awaited<ReturnType<typeof startDavNas>>, keys: ReturnType<typeof makeKeyring>, writer: Record<string, string>, reader: Record<string, string> }> {
  const keys = makeKeyring(keysAhead)
  const nas = await startDavNas(t)
  const gw = await startTestGateway(t, nas, { policy: POLICY, sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN, ...sealing } })
  return { gw, nas, keys, writer: bearer(gw.token({ sub: 'recorder-7', scope: 'recordings:write' })), reader: bearer(gw.token({ scope: 'recordings:read' })) }
}

/** Only sealed names and no temporary ones on the NAS: its files, by name. */
function nasFiles (nas: { files: () => Map<string, number> }): string[] {
  return [...nas.files().keys()].sort()
}

t.test('an upload is sealed on its way to the NAS, opens with stock age, and is served back with Range', async (t) => {
  const { gw, nas, keys, writer, reader } = await setup(t)
  for (const [i, proto] of PROTOCOLS.entries()) {
    const path = `/medicall/${CUR}/29/10150${i}_46701234567.wav`
    const put = await putAs(proto, gw, path, writer, RECORDING)
    t.equal(put.status, 201, `${proto}: stored`)
    const answer = JSON.parse(put.body.toString()) as { bytes: number, sha256: string, keyId: string }
    t.equal(answer.bytes, RECORDING.length, `${proto}: every byte`)
    t.equal(answer.sha256, sha256(RECORDING), `${proto}: the plaintext's SHA-256`)
    const ring = keys.ring()
    const name = sealedName(ring, path)
    t.ok(nasFiles(nas).includes(name), `${proto}: under its sealed name`)
    const stored = readFileSync(join(nas.root, name))
    t.ok(stored.subarray(0, 22).toString().startsWith('age-encryption.org/v1'), `${proto}: an age file`)
    t.equal(stored.indexOf(RECORDING.subarray(44, 108)), -1, `${proto}: no plaintext on the NAS`)
    t.notOk(nasFiles(nas).some((f) => f.includes('46701234567')), `${proto}: no phone number in a NAS name`)
    const opened = execFileSync('age', ['-d', '-i', join(keys.dir, `${CUR_PERIOD}.key`), join(nas.root, name)])
    t.ok(opened.equals(RECORDING), `${proto}: stock age opens it`)
    const whole = await fetchAs(proto, gw, path, reader)
    t.equal(whole.status, 200, `${proto}: served back`)
    t.ok(whole.body.equals(RECORDING), `${proto}: the same bytes`)
    const part = await fetchAs(proto, gw, path, { ...reader, range: 'bytes=1000-70999' })
    t.equal(part.status, 206, `${proto}: a range`)
    t.ok(part.body.equals(RECORDING.subarray(1000, 71000)), `${proto}: the range's bytes`)
    const record = gw.auditRecords().find((r) => r.event === 'ingest' && r.path === path)
    t.match(record, { subject: 'recorder-7', bytes: RECORDING.length, sha256: sha256(RECORDING), keyId: answer.keyId, method: 'PUT' }, `${proto}: the ingest record`)
  }
  t.ok(existsSync(join(keys.dir, `${CUR_PERIOD}.key`)), "the period's first upload made its key")
  t.notOk(nasFiles(nas).some((f) => f.includes('.nasguard-upload-')), 'no temporary file is left')
  const m = await scrape(gw.adminUrl)
  t.equal(m.get('nasguard_ingests_total{outcome="stored"}'), 2, 'counted')
  t.equal(m.get('nasguard_ingest_bytes_total'), 2 * RECORDING.length, 'bytes counted')
})

t.test('an existing recording is not replaced (409) unless the rule allows it', async (t) => {
  // PREV's key is made ahead, as an operator would: if the month turns
  // mid-test, PREV is no longer a period an upload may open by itself.
  const { gw, nas, keys, writer } = await setup(t, {}, [PREV_PERIOD])
  const path = `/medicall/${CUR}/29/111500_46709999999.wav`
  t.equal((await putAs('h1', gw, path, writer, RECORDING)).status, 201)
  const name = sealedName(keys.ring(), path)
  const before = readFileSync(join(nas.root, name))
  for (const proto of PROTOCOLS) {
    const again = await putAs(proto, gw, path, writer, toneWav(660, 1))
    t.equal(again.status, 409, `${proto}: refused`)
    t.equal(JSON.parse(again.body.toString()).error, 'NASGUARD_ERR_RECORDING_EXISTS', `${proto}: says why`)
    t.ok(readFileSync(join(nas.root, name)).equals(before), `${proto}: the recording on the NAS is untouched`)
  }
  const replaceable = `/medicall/${PREV}/02/090000_46701111111.wav`
  const second = toneWav(550, 1)
  t.equal((await putAs('h2', gw, replaceable, writer, RECORDING)).status, 201, 'first upload under overwrite: true')
  t.equal((await putAs('h1', gw, replaceable, writer, second)).status, 201, 'the second replaces it')
  const opened = execFileSync('age', ['-d', '-i', join(keys.dir, `${PREV_PERIOD}.key`), join(nas.root, sealedName(keys.ring(), replaceable))])
  t.ok(opened.equals(second), 'the NAS holds the second')
  t.notOk(nasFiles(nas).some((f) => f.includes('.nasguard-upload-')), 'no temporary file is left')
})

t.test('refused before the NAS is asked anything: wrong type, no write scope, too large, no period, encoded', async (t) => {
  const { gw, nas, keys, writer, reader } = await setup(t, {})
  const huge = { ...writer, 'content-length': String(2 * 1024 * 1024 * 1024) }
  const cases: Array<[string, string, Record<string, string>, Buffer, number, string]> = [
    ['an HTML page as .wav', `/medicall/${CUR}/29/a.wav`, writer, Buffer.from('<html><body>not audio</body></html>'.repeat(200)), 415, 'NASGUARD_ERR_UPLOAD_TYPE'],
    ['a short text as .wav', `/medicall/${CUR}/29/b.wav`, writer, Buffer.from('hello'), 415, 'NASGUARD_ERR_UPLOAD_TYPE'],
    ['a read-only token', `/medicall/${CUR}/29/c.wav`, reader, RECORDING, 403, 'NASGUARD_ERR_INSUFFICIENT_SCOPE'],
    ['no token', `/medicall/${CUR}/29/d.wav`, {}, RECORDING, 401, 'NASGUARD_ERR_TOKEN_MISSING'],
    ['a type not served', `/medicall/${CUR}/29/e.exe`, writer, RECORDING, 403, 'NASGUARD_ERR_FILE_TYPE'],
    ['a hidden name (no rule matches one)', `/medicall/${CUR}/29/.e.wav`, writer, RECORDING, 403, 'NASGUARD_ERR_NO_RULE'],
    ['no period in the path', '/medicall/misc/f.wav', writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_PATH'],
    ['gzip-encoded', `/medicall/${CUR}/29/g.wav`, { ...writer, 'content-encoding': 'gzip' }, RECORDING, 415, 'NASGUARD_ERR_UPLOAD_TYPE'],
    ['a partial upload', `/medicall/${CUR}/29/h.wav`, { ...writer, 'content-range': 'bytes 0-9/100' }, RECORDING, 400, 'NASGUARD_ERR_BAD_REQUEST'],
    // On a NAS that folds names (the default), names it would resolve to another file are refused too.
    ['a trailing dot (folding NAS)', `/medicall/${CUR}/29/m.wav.`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['a trailing space (folding NAS)', `/medicall/${CUR}/29/m.wav%20`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['an alternate data stream (folding NAS)', `/medicall/${CUR}/29/m.wav::$DATA`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['an 8.3 short name (folding NAS)', `/medicall/${CUR}/29/MEDICA~1.WAV`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['a case variant of the rule (folding NAS)', `/MEDICALL/${CUR}/29/n.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['a period long past, with no key', '/medicall/1999/01/01/j.wav', writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_PERIOD'],
    ['a period in the future, with no key', '/medicall/2199/12/01/k.wav', writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_PERIOD'],
    // Only the file name is sealed (names.segments 1): a directory above it stays readable on the NAS.
    ['a phone number as a directory', `/medicall/${CUR}/29/46701234567/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a phone number inside a directory name', `/medicall/${CUR}/29/caller_0701234567_x/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a directory named like a recording', `/medicall/${CUR}/29/101500_46701234599.wav/up1.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    // Full-width digits fold to ASCII on a folding NAS: refused as a folding hazard before that.
    ['a phone number in full-width digits', `/medicall/${CUR}/29/${encodeURIComponent('４６７０１２３４５６７')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_BAD_PATH'],
    ['a phone number as it is written', `/medicall/${CUR}/29/${encodeURIComponent('+46 70-123 45 67')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a phone number in parentheses and spaces', `/medicall/${CUR}/29/${encodeURIComponent('(070) 123 45 67')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a name too long to seal (145 bytes: 262 sealed, over 255)', `/medicall/${CUR}/29/${'n'.repeat(141)}.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_NAME_TOO_LONG'],
    // A date beside the number in one directory name does not hide it.
    ['a date and a phone number', `/medicall/${CUR}/29/${encodeURIComponent('20261129 0701234567')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a written date and a written phone number', `/medicall/${CUR}/29/${encodeURIComponent('2026-11-29 070-123 45 67')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a phone number with underscores for spaces', `/medicall/${CUR}/29/${encodeURIComponent('+46_70_123_45_67')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a phone number with en dashes', `/medicall/${CUR}/29/${encodeURIComponent('070–123–4567')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a phone number in Arabic-Indic digits', `/medicall/${CUR}/29/${encodeURIComponent('٤٦٧٠١٢٣٤٥٦٧')}/p.wav`, writer, RECORDING, 400, 'NASGUARD_ERR_UPLOAD_READABLE_NUMBER'],
    ['a WAV header whose chunks run past its first 4 KiB', `/medicall/${CUR}/29/l.wav`, writer, Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVEJUNK\xf0\xff\xff\x7f', 'latin1'), Buffer.from('<html>not audio</html>'.repeat(400))]), 415, 'NASGUARD_ERR_UPLOAD_TYPE']
  ]
  for (const proto of PROTOCOLS) {
    for (const [name, path, headers, body, status, code] of cases) {
      const asked = nas.requests().length
      const r = await putAs(proto, gw, path, headers, body)
      t.equal(r.status, status, `${proto}: ${name}: ${status}`)
      t.equal(JSON.parse(r.body.toString()).error, code, `${proto}: ${name}: ${code}`)
      t.equal(nas.requests().length, asked, `${proto}: ${name}: the NAS was asked nothing`)
    }
  }
  // Declared over limits.maxUploadBytes: refused on its headers, before a byte is read.
  for (const proto of PROTOCOLS) {
    const asked = nas.requests().length
    const r = await putAs(proto, gw, `/medicall/${CUR}/29/i.wav`, huge, Buffer.alloc(0)).catch(() => ({ status: 413, body: Buffer.from('{"error":"NASGUARD_ERR_UPLOAD_TOO_LARGE"}') }))
    t.equal(r.status, 413, `${proto}: too large by Content-Length`)
    t.equal(nas.requests().length, asked, `${proto}: too large: the NAS was asked nothing`)
  }
  t.same(nasFiles(nas), [], 'nothing on the NAS')
  // Refused uploads make no key: a token cannot fill the keyring with periods.
  t.same(readdirSync(keys.dir).filter((f) => f.endsWith('.key') && f !== 'names.key'), [], 'no period key was made')
})

t.test('a per-caller folder is taken when it is sealed too (names.segments 2), and no NAS name holds the number', async (t) => {
  const { gw, nas, writer, reader } = await setup(t, { names: { segments: 2 } })
  for (const proto of PROTOCOLS) {
    const path = `/medicall/${CUR}/29/4670123456${proto === 'h1' ? 1 : 2}/p.wav`
    t.equal((await putAs(proto, gw, path, writer, RECORDING)).status, 201, `${proto}: stored`)
    t.ok((await fetchAs(proto, gw, path, reader)).body.equals(RECORDING), `${proto}: served back`)
  }
  t.notOk(nasFiles(nas).some((f) => /\d{9,}/.test(f)), 'no run of 9 digits in any NAS name')
})

t.test('a legal hold keeps a recording from being replaced (409), and holds that cannot be read refuse replacing (503)', async (t) => {
  // PREV's key made ahead (see above).
  const { gw, nas, keys, writer } = await setup(t, {}, [PREV_PERIOD])
  const held = `/medicall/${PREV}/02/090000_46701111111.wav`
  const free = `/medicall/${PREV}/03/090000_46702222222.wav`
  for (const path of [held, free]) t.equal((await putAs('h1', gw, path, writer, RECORDING)).status, 201, `${path}: first upload`)
  const before = readFileSync(join(nas.root, sealedName(keys.ring(), held)))
  const holdsFile = join(gw.auditDir, 'legal-holds.json')
  const key = holdsKeyOf(loadAuditKey(auditKeyFile({ audit: { dir: gw.auditDir } })))
  await changeHolds(fileHoldsStore(holdsFile), key, (d) => ({ ...d, holds: [{ case: 'CASE-9', prefix: `/medicall/${PREV}/02/`, reason: 'litigation', at: new Date().toISOString(), by: 'test' }] }))
  const second = toneWav(550, 1)
  // Seen within the gateway's second of caching; probed on a name of its own under the hold.
  await waitFor('the hold to be seen', async () => (await putAs('h1', gw, `/medicall/${PREV}/02/probe.wav`, writer, second)).status === 409 ? true : undefined, { tries: 100, intervalMs: 100 })
  for (const proto of PROTOCOLS) {
    const asked = nas.requests().length
    const r = await putAs(proto, gw, held, writer, second)
    t.equal(r.status, 409, `${proto}: replacing a held recording: 409`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_RECORDING_HELD', `${proto}: NASGUARD_ERR_RECORDING_HELD`)
    t.equal(nas.requests().length, asked, `${proto}: the NAS was asked nothing`)
    t.equal((await putAs(proto, gw, free, writer, second)).status, 201, `${proto}: outside the hold, replacing goes on`)
  }
  t.ok(readFileSync(join(nas.root, sealedName(keys.ring(), held))).equals(before), 'the held recording is untouched')
  // Holds that do not verify: whether one covers the path cannot be told.
  writeFileSync(holdsFile, 'not a sealed holds document\n')
  await waitFor('the broken holds to be seen', async () => (await putAs('h2', gw, free, writer, second)).status === 503 ? true : undefined, { tries: 100, intervalMs: 100 })
  for (const proto of PROTOCOLS) {
    const r = await putAs(proto, gw, free, writer, second)
    t.equal(r.status, 503, `${proto}: holds unreadable: 503`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_HOLDS_UNAVAILABLE', `${proto}: NASGUARD_ERR_HOLDS_UNAVAILABLE`)
  }
  t.equal((await putAs('h1', gw, `/medicall/${CUR}/29/120000_46703333333.wav`, writer, RECORDING)).status, 201, 'an upload that replaces nothing does not need the holds')
})

t.test('the NAS refusing the PUT: 502, and nothing is left', async (t) => {
  const keys = makeKeyring([])
  const nas = await startDavNas(t)
  const gw = await startTestGateway(t, nas, { policy: [{ name: 'up', path: '/refusing/**', methods: ['PUT'], scopes: ['recordings:write'] }], sealing: { mode: 'require', keyring: keys.dir, periodPattern: '/refusing/{yyyy}/{mm}/**' } })
  const writer = bearer(gw.token({ scope: 'recordings:write' }))
  for (const proto of PROTOCOLS) {
    const r = await putAs(proto, gw, `/refusing/${CUR}/${proto}.wav`, writer, RECORDING)
    t.equal(r.status, 502, `${proto}: 502`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_ERROR', `${proto}: the NAS failed`)
    t.ok(nas.requests().some((l) => l.startsWith('PUT 507')), `${proto}: the NAS refused the PUT`)
  }
  t.same(nasFiles(nas), [], 'nothing on the NAS')
  t.notOk(gw.auditRecords().some((r) => r.event === 'ingest'), 'no ingest record')
  const m = await scrape(gw.adminUrl)
  t.equal(m.get('nasguard_ingests_total{outcome="failed"}'), 2, 'counted as failed')
})

t.test('the config refuses uploads without sealing', async (t) => {
  const { loadConfig } = await import('../../src/config/load.js')
  const { startProblems } = await import('../../src/config/preflight.js')
  const { testCerts } = await import('../helpers/gateway.js')
  const certs = testCerts()
  const dir = join(makeKeyring([]).dir, '..')
  const c = loadConfig({ object: { tls: { cert: certs.cert, key: certs.key }, upstream: { url: 'http://127.0.0.1:1' }, auth: { jwt: { secret: 'x'.repeat(32) } }, policy: POLICY, audit: { dir: join(dir, 'audit') } } })
  const problems = startProblems(c)
  t.match(problems, [{ key: 'policy[0].methods', reason: /PUT \(uploads\) needs sealing.mode migrate or require/ }, { key: 'policy[1].methods' }], 'each PUT rule is named')
})

t.test('a refused request whose body is not read closes its connection (uploads have no whole-request deadline)', async (t) => {
  const { gw, nas } = await setup(t)
  const token = gw.token({ scope: 'recordings:write' })
  const cases: Array<[string, string, number]> = [
    ['a GET with a body', `GET /medicall/${CUR}/29/a.wav HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 100000\r\n\r\nabc`, 400],
    ['an upload without the write scope', `PUT /medicall/${CUR}/29/a.wav HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.token()}\r\nContent-Length: 100000\r\n\r\nRIFF`, 403],
    ['a partial upload', `PUT /medicall/${CUR}/29/a.wav HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 0-1/2\r\n\r\n4\r\nRIFF\r\n`, 400]
  ]
  for (const [name, payload, status] of cases) {
    // The body never ends: only the gateway closing the connection ends this.
    const r = await rawTls(gw, payload, { untilClose: true })
    t.equal(statusOf(r.text), status, `${name}: ${status}`)
    t.ok(r.closed, `${name}: the connection is closed`)
  }
  t.same(nas.requests(), [], 'the NAS was asked nothing')
})

t.test('while a retirement or an erasure holds the keyring, an upload waits its turn (503) and nothing is sealed to a key about to go', async (t) => {
  const { gw, nas, keys, writer } = await setup(t)
  const { lockKeyring } = await import('../../src/sealing/keyring.js')
  const unlock = lockKeyring(keys.dir, 'exclusive')
  for (const proto of PROTOCOLS) {
    const r = await putAs(proto, gw, `/medicall/${CUR}/29/busy-${proto}.wav`, writer, RECORDING)
    t.equal(r.status, 503, `${proto}: 503`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_KEYRING_BUSY', `${proto}: says why`)
    t.ok(r.headers['retry-after'], `${proto}: with Retry-After`)
  }
  unlock()
  t.same(nasFiles(nas), [], 'nothing on the NAS')
  t.equal((await putAs('h2', gw, `/medicall/${CUR}/29/busy-after.wav`, writer, RECORDING)).status, 201, 'stored once the keyring is free')
})

t.test('an erasure waits for the uploads being sealed to finish, turning new ones away (503) meanwhile; then destroys the old period\'s key', async (t) => {
  for (const [slow, other] of [['h1', 'h2'], ['h2', 'h1']] as const) {
    const { gw, nas, keys, writer, reader } = await setup(t)
    newPeriodKey(keys.dir, 'month', '2016-01')
    const sharedLocks = (): string[] => readdirSync(keys.dir).filter((n) => /^\.keyring-shared-.*\.lock$/.test(n))
    // An upload under way: half its body sent, the rest held back.
    const body = new PassThrough()
    const path = `/medicall/${CUR}/29/slow-${slow}.wav`
    const stored = putAs(slow, gw, path, { ...writer, 'content-length': String(RECORDING.length) }, body)
    body.write(RECORDING.subarray(0, 8 * 1024))
    await waitFor(`${slow}: the upload to hold the keyring (shared)`, () => sharedLocks().length > 0 ? true : undefined, { tries: 500, intervalMs: 20 })
    // The erasure, in a process of its own (as nasguard retention sweep --apply runs it).
    const code = `import('${pathToFileURL(resolve('dist/sealing/keyring.js')).href}').then((m) => { m.eraseKey(process.argv[1], '2016-01', { drainMs: 120000 }) })`
    const eraser = run(process.execPath, ['--input-type=module', '-e', code, keys.dir])
    await waitFor(`${slow}: the erasure to take the keyring`, () => existsSync(join(keys.dir, '.keyring.lock')) ? true : undefined, { tries: 1000, intervalMs: 20 })
    t.ok(existsSync(join(keys.dir, '2016-01.key')), `${slow}: the erasure waits for the upload under way`)
    const turned = await putAs(other, gw, `/medicall/${CUR}/29/meanwhile-${other}.wav`, writer, RECORDING)
    t.equal(turned.status, 503, `${other}: a new upload meanwhile: 503`)
    t.equal(JSON.parse(turned.body.toString()).error, 'NASGUARD_ERR_KEYRING_BUSY', `${other}: says why`)
    body.end(RECORDING.subarray(8 * 1024))
    t.equal((await stored).status, 201, `${slow}: the upload under way is stored`)
    const erased = await eraser
    t.equal(erased.status, 0, `${slow}: then the erasure runs (${erased.stderr.trim()})`)
    t.notOk(existsSync(join(keys.dir, '2016-01.key')), `${slow}: the old period's key is destroyed`)
    t.ok(existsSync(join(keys.dir, '2016-01.erased')), `${slow}: its tombstone left`)
    t.ok((await fetchAs(other, gw, path, reader)).body.equals(RECORDING), `${slow}: the upload is served back`)
    t.notOk(nasFiles(nas).some((f) => f.includes('meanwhile')), `${slow}: nothing of the turned-away upload on the NAS`)
  }
})

t.test('keys rotate\'s retirement waits for an upload being sealed to the keyring, as an erasure does, then retires the old identity', async (t) => {
  const { gw, nas, keys, writer, reader } = await setup(t)
  newPeriodKey(keys.dir, 'month', '2016-01')
  const old = readFileSync(join(keys.dir, '2016-01.key'), 'utf8')
  const sharedLocks = (): string[] => readdirSync(keys.dir).filter((n) => /^\.keyring-shared-.*\.lock$/.test(n))
  const body = new PassThrough()
  const path = `/medicall/${CUR}/29/slow-rotate.wav`
  const stored = putAs('h2', gw, path, { ...writer, 'content-length': String(RECORDING.length) }, body)
  body.write(RECORDING.subarray(0, 8 * 1024))
  await waitFor('the upload to hold the keyring (shared)', () => sharedLocks().length > 0 ? true : undefined, { tries: 500, intervalMs: 20 })
  // The rotation, in a process of its own: the share holds no file of 2016-01, so it goes straight to its end.
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-rotate-'))
  const config = join(dir, 'nasguard.yaml')
  writeFileSync(config, `listen: { port: 8443 }
tls: { cert: ${testCerts().cert}, key: ${testCerts().key} }
upstream: { url: "http://127.0.0.1:1" }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: "/medicall/**", scopes: [recordings:read] }]
audit: { dir: ${join(dir, 'audit')} }
sealing: { mode: require, keyring: ${keys.dir}, periodPattern: "${PATTERN}" }
`)
  const rotation = runCli(['keys', 'rotate', '--config', config, '--source', nas.root, '--period', '2016-01'])
  await waitFor('the rotation to take the keyring', () => existsSync(join(keys.dir, '.keyring.lock')) ? true : undefined, { tries: 1500, intervalMs: 20 })
  t.equal(readFileSync(join(keys.dir, '2016-01.key'), 'utf8'), old, 'the old identity waits for the upload under way')
  const turned = await putAs('h1', gw, `/medicall/${CUR}/29/meanwhile-rotate.wav`, writer, RECORDING)
  t.equal(turned.status, 503, 'a new upload meanwhile: 503')
  body.end(RECORDING.subarray(8 * 1024))
  t.equal((await stored).status, 201, 'the upload under way is stored')
  const r = await rotation
  t.equal(r.status, 0, `then the rotation retires the old identity (${r.stderr.trim()})`)
  t.not(readFileSync(join(keys.dir, '2016-01.key'), 'utf8'), old, 'a new identity for 2016-01')
  t.ok((await fetchAs('h1', gw, path, reader)).body.equals(RECORDING), 'the upload is served back')
})

t.test('a gateway that makes no keys (sealing.makeKeysOnUpload: false) refuses an upload into a period without one (503), until an operator makes it', async (t) => {
  const { gw, nas, keys, writer, reader } = await setup(t, { makeKeysOnUpload: false })
  const periodKeys = (): string[] => readdirSync(keys.dir).filter((f) => f.endsWith('.key') && f !== 'names.key')
  for (const proto of PROTOCOLS) {
    const r = await putAs(proto, gw, `/medicall/${CUR}/29/nokey-${proto}.wav`, writer, RECORDING)
    t.equal(r.status, 503, `${proto}: 503`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_PERIOD_KEY_MISSING', `${proto}: says why`)
    t.ok(r.headers['retry-after'], `${proto}: with Retry-After`)
    t.equal((await putAs(proto, gw, '/medicall/1999/01/01/old.wav', writer, RECORDING)).status, 400, `${proto}: an old period is still upload_period`)
  }
  t.same(nas.requests(), [], 'the NAS was asked nothing')
  t.same(periodKeys(), [], 'no period key was made')
  // The operator's key (nasguard keys new --period P), seen without a SIGHUP for a recent period.
  newPeriodKey(keys.dir, 'month', CUR_PERIOD)
  const path = `/medicall/${CUR}/29/made-ahead.wav`
  await waitFor('the new key to be seen', async () => (await putAs('h1', gw, path, writer, RECORDING)).status === 201 ? true : undefined, { tries: 100, intervalMs: 100 })
  t.same(periodKeys(), [`${CUR_PERIOD}.key`], 'the one key is the operator\'s')
  for (const proto of PROTOCOLS) t.ok((await fetchAs(proto, gw, path, reader)).body.equals(RECORDING), `${proto}: served back`)
})
