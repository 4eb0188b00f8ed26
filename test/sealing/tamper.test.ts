// The tamper table, over real sockets, HTTP/1.1 and HTTP/2: a sealed file
// altered on the NAS in each way an attacker (or a failing disk) could.
// No byte of a bad chunk reaches the client: a failure found before the
// first byte is a 502 NASGUARD_ERR_SEALED_INTEGRITY, one found later cuts
// the response (HTTP/1.1 closes short of Content-Length, HTTP/2 resets the
// stream) right after the last good chunk. The completion record says
// integrity-error and nasguard_sealed_integrity_failures_total counts it.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import { testCerts, type TestGateway } from '../helpers/gateway.js'
import { fetchAs, PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { getLoose, waitFor } from '../helpers/wait.js'
import { sealBytes, sealedName, startSealed } from '../helpers/sealed-nas.js'
import { CHUNK, NONCE_BYTES, SEALED_CHUNK } from '../../src/sealing/payload.js'

const HEADER = 232
const BASE = HEADER + NONCE_BYTES
const SIZE = 3 * CHUNK + 7 // four chunks, the last one short

interface Loose { status: number, body: Buffer, complete: boolean }

/** A GET that keeps what arrived, and says whether the response ended complete. */
function fetchLoose (proto: Protocol, gw: TestGateway, path: string, headers: Record<string, string>): Promise<Loose> {
  if (proto === 'h1') return getLoose(gw, path, { headers }).then((r) => ({ status: r.status, body: r.body, complete: r.complete && r.error === undefined }))
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    session.on('error', () => {})
    const stream = session.request({ ':path': path, ...headers })
    const chunks: Buffer[] = []
    let status = 0
    let ended = false
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { ended = true })
    stream.on('error', () => {})
    stream.on('close', () => { session.close(); resolve({ status, body: Buffer.concat(chunks), complete: ended && stream.rstCode === 0 }) })
    stream.on('aborted', () => {})
    setTimeout(() => reject(new Error('no close')), 60000).unref()
    stream.end()
  })
}

function flip (b: Buffer, at: number): Buffer {
  const c = Buffer.from(b)
  c[at] ^= 0x01
  return c
}

function chunkAt (i: number): number { return BASE + i * SEALED_CHUNK }

async function metric (gw: TestGateway, line: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text()
  const m = text.split('\n').find((l) => l.startsWith(line + ' '))
  return m ? Number(m.split(' ')[1]) : NaN
}

t.test('tampered sealed files: no byte of a bad chunk reaches the client; audited integrity-error and counted', async (t) => {
  const { mem, gw, ring } = await startSealed(t, ['2026-10', '2026-11'])
  const auth = { authorization: `Bearer ${gw.token()}` }
  let n = 0

  // Each case: how the sealed file on the NAS is made from a good one, and
  // how many plaintext bytes may arrive before the cut (undefined: a 502).
  type Case = { name: string, make: (good: Buffer, path: string, other: { sealed: Buffer }) => Promise<Buffer> | Buffer, good?: number }
  const cases: Case[] = [
    { name: 'a flipped byte in the header (the wrapped file key)', make: (g) => flip(g, 80) },
    { name: 'a flipped byte in the header MAC', make: (g) => flip(g, HEADER - 10) },
    { name: 'a flipped byte in the payload nonce', make: (g) => flip(g, HEADER + 3) },
    { name: 'a flipped byte in chunk 0', make: (g) => flip(g, chunkAt(0) + 100) },
    { name: 'a flipped byte in chunk 2', make: (g) => flip(g, chunkAt(2) + 5), good: 2 * CHUNK },
    // The last chunk is opened before the size is stated (with the headers): these are refused before any byte.
    { name: 'a flipped byte in the last chunk (its tag)', make: (g) => flip(g, g.length - 1) },
    { name: 'truncated at a chunk boundary (the last chunk dropped)', make: (g) => g.subarray(0, chunkAt(3)) },
    { name: 'truncated mid-chunk', make: (g) => g.subarray(0, chunkAt(2) + 1000) },
    { name: 'an appended chunk', make: (g) => Buffer.concat([g, g.subarray(chunkAt(1), chunkAt(2))]) },
    { name: 'two chunks swapped', make: (g) => Buffer.concat([g.subarray(0, chunkAt(1)), g.subarray(chunkAt(2), chunkAt(3)), g.subarray(chunkAt(1), chunkAt(2)), g.subarray(chunkAt(3))]), good: CHUNK },
    { name: 'two files swapped (another recording under this name)', make: (_g, _p, other) => other.sealed },
    { name: "sealed under another period's key", make: async (_g, path) => await sealBytes(ring, '2026-10', path, randomBytes(SIZE)) }
  ]
  for (const proto of PROTOCOLS) {
    for (const c of cases) {
      const path = `/medicall/2026/11/29/1015${String(++n).padStart(2, '0')}_46701234567.wav`
      const plain = randomBytes(SIZE)
      const good = await sealBytes(ring, '2026-11', path, plain)
      const otherPath = `/medicall/2026/11/29/0900${String(n).padStart(2, '0')}_46709999999.wav`
      const other = { sealed: await sealBytes(ring, '2026-11', otherPath, randomBytes(SIZE)) }
      mem.files.set(sealedName(ring, path), await c.make(good, path, other))
      const where = c.good === undefined ? 'before_body' : 'in_body'
      const before = await metric(gw, `nasguard_sealed_integrity_failures_total{where="${where}"}`)
      const res = await fetchLoose(proto, gw, path, auth)
      if (c.good === undefined) {
        t.equal(res.status, 502, `${proto} ${c.name}: 502`)
        t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_SEALED_INTEGRITY', `${proto} ${c.name}: the error code`)
      } else {
        t.equal(res.status, 200, `${proto} ${c.name}: the good chunks went out`)
        t.notOk(res.complete, `${proto} ${c.name}: the response is cut, not ended`)
        t.ok(res.body.length <= c.good, `${proto} ${c.name}: nothing past the last good chunk (${res.body.length} <= ${c.good})`)
        t.ok(res.body.equals(plain.subarray(0, res.body.length)), `${proto} ${c.name}: what arrived is the authentic plaintext`)
      }
      const record = await waitFor(`${proto} ${c.name}: the completion record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.path === path))
      t.equal(record.outcome, 'integrity-error', `${proto} ${c.name}: outcome integrity-error`)
      t.match(record.keyId, /^2026-11:[0-9a-f]{16}$/, `${proto} ${c.name}: the record names the key`)
      t.equal(await metric(gw, `nasguard_sealed_integrity_failures_total{where="${where}"}`), before + 1, `${proto} ${c.name}: counted ${where}`)
    }
  }
  t.notOk(gw.logs.some((l) => l.includes('46701234567')), 'no log line names a recording')
})

t.test('require: a plaintext recording on the NAS is refused, logged and counted, and never served', async (t) => {
  const { mem, nas, gw } = await startSealed(t, ['2026-11'])
  const auth = { authorization: `Bearer ${gw.token()}` }
  for (const proto of PROTOCOLS) {
    const path = `/medicall/2026/11/29/1015${proto}_46701234567.wav`
    mem.files.set(path, randomBytes(5000))
    const before = await metric(gw, 'nasguard_plaintext_on_nas_total{action="refused"}')
    const res = await fetchLoose(proto, gw, path, auth)
    t.equal(res.status, 403, `${proto}: refused`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_PLAINTEXT_ON_NAS')
    t.equal(await metric(gw, 'nasguard_plaintext_on_nas_total{action="refused"}'), before + 1, `${proto}: counted`)
    t.ok(nas.requests.filter((r) => r.url === path).every((r) => r.method === 'HEAD'), `${proto}: the plaintext was only looked at (HEAD), never fetched`)
  }
  t.ok(gw.logs.some((l) => l.includes('plaintext on the NAS')), 'logged')
  t.notOk(gw.logs.some((l) => l.includes('46701234567')), 'without the name')
})

t.test('the red team\'s cases: ETags, HEAD, low-order shares, NAS failures that are not tampering, encoded paths, migrate counted', async (t) => {
  const { mem, nas, gw, ring } = await startSealed(t, ['2026-11'], { files: { checkMagic: true } })
  const auth = { authorization: `Bearer ${gw.token()}` }
  const wav = (n: number): Buffer => { const b = randomBytes(n); b.write('RIFF', 0); b.write('WAVEfmt ', 8); b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(8000, 24); b.writeUInt32LE(16000, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); return b }
  for (const proto of PROTOCOLS) {
    // Two recordings of one size, and one recording sealed twice: three ETags.
    const a = `/medicall/2026/11/29/a-${proto}.wav`
    const b = `/medicall/2026/11/29/b-${proto}.wav`
    mem.files.set(sealedName(ring, a), await sealBytes(ring, '2026-11', a, wav(100000)))
    mem.files.set(sealedName(ring, b), await sealBytes(ring, '2026-11', b, wav(100000)))
    const ea = (await fetchLoose(proto, gw, a, { ...auth, range: 'bytes=0-0' }))
    const eb = await fetchLoose(proto, gw, b, { ...auth, range: 'bytes=0-0' })
    t.equal(ea.status, 206)
    const etagA = await headEtag(proto, gw, a, auth)
    t.not(etagA, await headEtag(proto, gw, b, auth), `${proto}: two recordings of one size have two ETags`)
    void eb
    const lastModifiedA = String((await fetchAs(proto, gw, a, auth, 'HEAD')).headers['last-modified'])
    const second = wav(100000)
    mem.files.set(sealedName(ring, a), await sealBytes(ring, '2026-11', a, second))
    // Sealed again under the same Last-Modified (this NAS gives every file one date): a resume by that date is no proof of the version.
    const byDate = await fetchLoose(proto, gw, a, { ...auth, range: 'bytes=50000-', 'if-range': lastModifiedA })
    t.equal(byDate.status, 200, `${proto}: an If-Range resume by the NAS's date gets the whole new file, not a splice`)
    t.ok(byDate.body.equals(second), `${proto}: the new file`)
    const after = await fetchLoose(proto, gw, a, { ...auth, 'if-none-match': etagA })
    t.equal(after.status, 200, `${proto}: re-sealed, the old ETag no longer matches`)
    t.ok(after.body.equals(second))
    const resumed = await fetchLoose(proto, gw, a, { ...auth, range: 'bytes=50000-', 'if-range': etagA })
    t.equal(resumed.status, 200, `${proto}: an If-Range resume with the old ETag gets the whole new file, not a splice`)

    // HEAD authenticates the length: a file whose last chunk was dropped is refused.
    const c = `/medicall/2026/11/29/c-${proto}.wav`
    const sealedC = await sealBytes(ring, '2026-11', c, wav(3 * CHUNK + 7))
    mem.files.set(sealedName(ring, c), sealedC.subarray(0, chunkAt(3)))
    const head = await fetchAs(proto, gw, c, auth, 'HEAD')
    t.equal(head.status, 502, `${proto}: HEAD of a truncated file`)

    // A low-order X25519 share in the header is a tampered header.
    const d = `/medicall/2026/11/29/d-${proto}.wav`
    const sealedD = Buffer.from(await sealBytes(ring, '2026-11', d, wav(1000)))
    const share = /-> X25519 (\S+)\n/.exec(sealedD.toString('latin1'))?.[1] as string
    mem.files.set(sealedName(ring, d), Buffer.from(sealedD.toString('latin1').replace(share, Buffer.alloc(32).toString('base64').replace(/=+$/, '')), 'latin1'))
    const before = await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}')
    const low = await fetchLoose(proto, gw, d, auth)
    t.equal(low.status, 502)
    t.equal(JSON.parse(low.body.toString()).error, 'NASGUARD_ERR_SEALED_INTEGRITY', `${proto}: a low-order share is an integrity failure`)
    t.equal(await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}'), before + 1)

    // A NAS that fails while chunk 0 is fetched for the magic check is a NAS failure, not tampering.
    const e = `/medicall/2026/11/29/e-${proto}.wav`
    mem.files.set(sealedName(ring, e), await sealBytes(ring, '2026-11', e, wav(3 * CHUNK)))
    let fail = false
    nas.handle((req, res) => { if (fail && /^bytes=248-/.test(String(req.headers.range))) { res.writeHead(503); res.end(); return } mem.handler(req, res) })
    await fetchLoose(proto, gw, e, { ...auth, range: 'bytes=0-0' }) // the header, remembered
    const integrityBefore = await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}')
    fail = true
    gw.gateway.reloadKeyring() // forgets nothing, but a fresh file object is not needed: the magic verdict is per file
    const e2 = `/medicall/2026/11/29/e2-${proto}.wav`
    mem.files.set(sealedName(ring, e2), await sealBytes(ring, '2026-11', e2, wav(3 * CHUNK)))
    const seek = await fetchLoose(proto, gw, e2, { ...auth, range: `bytes=${2 * CHUNK}-` })
    t.equal(seek.status, 502, `${proto}: the seek fails`)
    t.equal(JSON.parse(seek.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_ERROR', `${proto}: as a NAS failure`)
    t.equal(await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}'), integrityBefore, `${proto}: not counted as tampering`)
    nas.handle(mem.handler)

    // A readable directory with a space: the NAS gets it percent-encoded, and the binding is the canonical path.
    const f = `/medicall/2026/11/29/team%20a/f-${proto}.wav`
    const plainF = wav(5000)
    mem.files.set(sealedName(ring, decodeURIComponent(f)).split('/').map((s) => s.includes(' ') ? encodeURIComponent(s) : s).join('/'), await sealBytes(ring, '2026-11', f, plainF))
    const got = await fetchLoose(proto, gw, f, auth)
    t.equal(got.status, 200, `${proto}: a path with an encoded space`)
    t.ok(got.body.equals(plainF))
  }
})

async function headEtag (proto: Protocol, gw: TestGateway, path: string, auth: Record<string, string>): Promise<string> {
  return String((await fetchAs(proto, gw, path, auth, 'HEAD')).headers.etag)
}

t.test('a size is stated only once it is authenticated: any range, the whole file, or a 416, of a truncated or extended file is a 502', async (t) => {
  const { mem, nas, gw, ring } = await startSealed(t, ['2026-11'])
  const auth = { authorization: `Bearer ${gw.token()}` }
  let n = 0
  // Each case: the file on the NAS made from a good one, and a range: short of its (apparent) last chunk, up to it, past its end, or none.
  const cases: Array<{ name: string, make: (g: Buffer) => Buffer, range?: string }> = [
    { name: 'truncated at a chunk boundary, the first bytes', make: (g) => g.subarray(0, chunkAt(3)), range: 'bytes=0-99' },
    { name: 'truncated at a chunk boundary, from chunk 1 to the end (a player\'s seek)', make: (g) => g.subarray(0, chunkAt(3)), range: `bytes=${CHUNK}-` },
    { name: 'truncated at a chunk boundary, a suffix over two chunks', make: (g) => g.subarray(0, chunkAt(3)), range: 'bytes=-70000' },
    { name: 'truncated at a chunk boundary, bytes=0-', make: (g) => g.subarray(0, chunkAt(3)), range: 'bytes=0-' },
    { name: 'truncated at a chunk boundary, no Range', make: (g) => g.subarray(0, chunkAt(3)) },
    { name: 'an appended chunk, bytes=0-', make: (g) => Buffer.concat([g, g.subarray(chunkAt(1), chunkAt(2))]), range: 'bytes=0-' },
    { name: 'truncated at a chunk boundary, the middle', make: (g) => g.subarray(0, chunkAt(3)), range: `bytes=${CHUNK}-${CHUNK + 99}` },
    { name: 'truncated mid-chunk', make: (g) => g.subarray(0, chunkAt(2) + 1000), range: 'bytes=0-99' },
    { name: 'an appended chunk', make: (g) => Buffer.concat([g, g.subarray(chunkAt(1), chunkAt(2))]), range: 'bytes=100-199' },
    { name: 'an appended copy of the last chunk', make: (g) => Buffer.concat([g, g.subarray(chunkAt(3))]), range: `bytes=${2 * CHUNK}-${2 * CHUNK + 9}` },
    { name: 'truncated, a range past the shortened end (a 416 would state the size)', make: (g) => g.subarray(0, chunkAt(3)), range: `bytes=${3 * CHUNK}-` }
  ]
  for (const proto of PROTOCOLS) {
    for (const c of cases) {
      const path = `/medicall/2026/11/29/1116${String(++n).padStart(2, '0')}_46701234567.wav`
      mem.files.set(sealedName(ring, path), c.make(await sealBytes(ring, '2026-11', path, randomBytes(SIZE))))
      const before = await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}')
      const res = await fetchLoose(proto, gw, path, c.range === undefined ? auth : { ...auth, range: c.range })
      t.equal(res.status, 502, `${proto} ${c.name}: 502, no size stated`)
      t.match(res.body.toString('latin1'), /"error":"NASGUARD_ERR_SEALED_INTEGRITY"/, `${proto} ${c.name}: the error code`)
      t.equal(await metric(gw, 'nasguard_sealed_integrity_failures_total{where="before_body"}'), before + 1, `${proto} ${c.name}: counted before_body`)
      const record = await waitFor(`${proto} ${c.name}: the completion record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.path === path))
      t.equal(record.outcome, 'integrity-error', `${proto} ${c.name}: outcome integrity-error`)
    }

    // Control: the good file is served in ranges, and its end is asked for once per version, not per seek.
    const path = `/medicall/2026/11/29/1117${proto}_46701234567.wav`
    const plain = randomBytes(SIZE)
    const sealed = await sealBytes(ring, '2026-11', path, plain)
    mem.files.set(sealedName(ring, path), sealed)
    const endRange = `bytes=${chunkAt(3)}-${sealed.length - 1}`
    const asked = nas.requests.length
    for (const [from, to] of [[0, 99], [CHUNK + 5, CHUNK + 104], [2 * CHUNK, 2 * CHUNK + 9]]) {
      const res = await fetchLoose(proto, gw, path, { ...auth, range: `bytes=${from}-${to}` })
      t.equal(res.status, 206, `${proto} control ${from}-${to}: 206`)
      t.equal(res.complete, true, `${proto} control ${from}-${to}: complete`)
      t.ok(res.body.equals(plain.subarray(from, to + 1)), `${proto} control ${from}-${to}: the plaintext`)
    }
    const ends = nas.requests.slice(asked).filter((r) => r.headers.range === endRange).length
    t.equal(ends, 1, `${proto} control: the last chunk was asked for once for three ranges`)
    const tail = await fetchLoose(proto, gw, path, { ...auth, range: `bytes=${SIZE - 3}-` })
    t.equal(tail.status, 206, `${proto} control: a range that ends the file`)
    t.ok(tail.body.equals(plain.subarray(SIZE - 3)), `${proto} control: its bytes`)
  }
  t.notOk(gw.logs.some((l) => l.includes('46701234567')), 'no log line names a recording')
})

t.test('migrate: plaintext served for a period with a key is counted (action served)', async (t) => {
  const { mem, gw } = await startSealed(t, ['2026-11'], { sealing: { mode: 'migrate' } })
  mem.files.set('/medicall/2026/11/29/x.wav', randomBytes(100))
  for (const proto of PROTOCOLS) {
    const before = await metric(gw, 'nasguard_plaintext_on_nas_total{action="served"}')
    t.equal((await fetchLoose(proto, gw, '/medicall/2026/11/29/x.wav', { authorization: `Bearer ${gw.token()}` })).status, 200)
    t.equal(await metric(gw, 'nasguard_plaintext_on_nas_total{action="served"}'), before + 1, `${proto}: counted`)
  }
})

t.test('files.checkMagic judges the decrypted bytes: a sealed file that is not its type is refused, from byte 0 and on a seek', async (t) => {
  const { mem, gw, ring } = await startSealed(t, ['2026-11'], { files: { checkMagic: true } })
  for (const proto of PROTOCOLS) {
    for (const range of [undefined, `bytes=${2 * CHUNK}-`]) {
      const path = `/medicall/2026/11/29/html-${proto}-${range === undefined ? 0 : 1}.wav`
      mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, Buffer.concat([Buffer.from('<html><body>not audio</body></html>'), randomBytes(3 * CHUNK)])))
      const res = await fetchLoose(proto, gw, path, { authorization: `Bearer ${gw.token()}`, ...(range ? { range } : {}) })
      t.equal(res.status, 502, `${proto} ${range ?? 'from byte 0'}: refused`)
      t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_LISTING', `${proto}: as not its type`)
    }
  }
})

t.test('on a NAS that folds names, the spellings it would resolve to another file are refused before the sealed name is made', async (t) => {
  const { ring, mem, nas, gw } = await startSealed(t, ['2026-11'], { upstream: { fileSystem: 'folding' } })
  const path = '/medicall/2026/11/29/101500_46701234567.wav'
  const plain = randomBytes(5000)
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, plain))
  const auth = { authorization: `Bearer ${gw.token()}` }
  for (const proto of PROTOCOLS) {
    t.ok((await fetchLoose(proto, gw, path, auth)).body.equals(plain), `${proto}: the canonical spelling is served`)
    for (const spelling of [path + '.', path + '%20', path + '::$DATA', '/medicall/2026/11/29/101500~1.WAV']) {
      const before = nas.requests.length
      const res = await fetchLoose(proto, gw, spelling, auth)
      t.equal(res.status, 400, `${proto} ${spelling}: refused`)
      t.equal(nas.requests.length, before, `${proto} ${spelling}: the NAS got nothing`)
    }
    // Another case is another name to the gateway: its sealed name is another file, never this one's bytes.
    const upper = await fetchLoose(proto, gw, path.toUpperCase().replace('.WAV', '.wav'), auth)
    t.not(upper.status, 200, `${proto}: a case variant does not reach the recording (${upper.status})`)
    t.notOk(upper.body.includes(plain.subarray(0, 64)), `${proto}: and none of its bytes`)
  }
})
