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
import { startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { getLoose, waitFor } from '../helpers/wait.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
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
  const keys = makeKeyring(['2026-10', '2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
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
    { name: 'a flipped byte in the last chunk (its tag)', make: (g) => flip(g, g.length - 1), good: 3 * CHUNK },
    { name: 'truncated at a chunk boundary (the last chunk dropped)', make: (g) => g.subarray(0, chunkAt(3)), good: 2 * CHUNK },
    { name: 'truncated mid-chunk', make: (g) => g.subarray(0, chunkAt(2) + 1000), good: 2 * CHUNK },
    { name: 'an appended chunk', make: (g) => Buffer.concat([g, g.subarray(chunkAt(1), chunkAt(2))]), good: 3 * CHUNK },
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
  const keys = makeKeyring(['2026-11'])
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  const auth = { authorization: `Bearer ${gw.token()}` }
  for (const proto of PROTOCOLS) {
    const path = `/medicall/2026/11/29/1015${proto}_46701234567.wav`
    mem.files.set(path, randomBytes(5000))
    const before = await metric(gw, 'nasguard_plaintext_on_nas_total')
    const res = await fetchLoose(proto, gw, path, auth)
    t.equal(res.status, 403, `${proto}: refused`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_PLAINTEXT_ON_NAS')
    t.equal(await metric(gw, 'nasguard_plaintext_on_nas_total'), before + 1, `${proto}: counted`)
    t.ok(nas.requests.filter((r) => r.url === path).every((r) => r.method === 'HEAD'), `${proto}: the plaintext was only looked at (HEAD), never fetched`)
  }
  t.ok(gw.logs.some((l) => l.includes('plaintext on the NAS')), 'logged')
  t.notOk(gw.logs.some((l) => l.includes('46701234567')), 'without the name')
})
