// Sealed recordings served in plaintext terms, over HTTP/1.1 and HTTP/2:
// for files of 0, 1, 65535, 65536, 65537, 3×65536+7 bytes and 10 MB, whole
// and for random ranges (suffix and open-ended among them), the bytes
// served equal the plaintext slice, the headers are the plaintext's, and the
// NAS is asked for the header and only the chunks the range needs.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { startStubNas, startTestGateway } from '../helpers/gateway.js'
import { fetchAs, PROTOCOLS } from '../helpers/protocols.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { CHUNK, NONCE_BYTES, SEALED_CHUNK } from '../../src/sealing/payload.js'

const SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536 + 7, 10 * 1024 * 1024]
const HEADER = 232

/** A deterministic pseudo-random source, so a failure can be replayed. */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

/** The plaintext span a Range asks of a file of `size` bytes (the test's own reading of RFC 9110). */
function expected (range: string, size: number): { start: number, end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(range)
  if (!m) throw new Error(range)
  if (m[1] === '') {
    const n = Number(m[2])
    return size === 0 ? undefined : { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(m[1])
  if (start >= size) return undefined
  return { start, end: m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) }
}

function randomRanges (size: number, next: () => number): string[] {
  const at = (): number => Math.floor(next() * Math.max(size, 1))
  const ranges = ['bytes=0-', 'bytes=0-0', `bytes=-${1 + Math.floor(next() * 70000)}`, `bytes=${at()}-`]
  for (let i = 0; i < 3; i++) {
    const a = at()
    ranges.push(`bytes=${a}-${a + Math.floor(next() * 200000)}`)
  }
  if (size > 0) ranges.push(`bytes=${size - 1}-${size + 5}`, `bytes=${CHUNK - 1}-${CHUNK}`)
  return ranges
}

/** Which sealed chunks a NAS Range request covers, given the file's sealed size. */
function chunksOf (range: string, sealedSize: number): { first: number, last: number, header: boolean } {
  const m = /^bytes=(\d+)-(\d+)$/.exec(range)
  if (!m) throw new Error(`the gateway asked the NAS for ${range}`)
  const base = HEADER + NONCE_BYTES
  const start = Number(m[1])
  const end = Math.min(Number(m[2]), sealedSize - 1)
  if (end < base) return { first: -1, last: -1, header: true }
  return { first: Math.floor((start - base) / SEALED_CHUNK), last: Math.floor((end - base) / SEALED_CHUNK), header: start < base }
}

t.test('sealed recordings: bytes served equal the plaintext slice, and the NAS is asked only for the header and the needed chunks', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const plain = new Map<number, Buffer>()
  for (const size of SIZES) {
    const path = `/medicall/2026/11/29/1015${String(size).padStart(8, '0')}_46701234567.wav`
    const p = randomBytes(size)
    plain.set(size, p)
    mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, p))
  }
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  const auth = { authorization: `Bearer ${gw.token()}` }
  const next = rng(20261129)
  const sizeChecks = new Map<string, number>()
  for (const proto of PROTOCOLS) {
    for (const size of SIZES) {
      const path = `/medicall/2026/11/29/1015${String(size).padStart(8, '0')}_46701234567.wav`
      const p = plain.get(size) as Buffer
      const sealedSize = (mem.files.get(sealedName(ring, path)) as Buffer).length
      const lastChunk = Math.max(0, Math.ceil(size / CHUNK) - 1)
      const beforeWhole = nas.requests.length
      const whole = await fetchAs(proto, gw, path, auth)
      // The size is checked before it is stated: the last chunk alone, asked for once per file version (the ranges below need no other).
      if (lastChunk > 0) {
        const checks = nas.requests.slice(beforeWhole).filter((r) => { const c = chunksOf(String(r.headers.range), sealedSize); return c.first === lastChunk && c.last === lastChunk && !c.header }).length
        sizeChecks.set(path, (sizeChecks.get(path) ?? 0) + checks)
      }
      t.equal(whole.status, 200, `${proto} ${size}: whole`)
      t.ok(whole.body.equals(p), `${proto} ${size}: the whole plaintext`)
      t.equal(whole.headers['content-length'], String(size))
      t.equal(whole.headers['content-type'], 'audio/wav')
      for (const range of randomRanges(size, next)) {
        const before = nas.requests.length
        const res = await fetchAs(proto, gw, path, { ...auth, range })
        const want = expected(range, size)
        if (!want) {
          t.equal(res.status, 416, `${proto} ${size} ${range}: unsatisfiable`)
          t.equal(res.headers['content-range'], `bytes */${size}`)
          continue
        }
        t.equal(res.status, 206, `${proto} ${size} ${range}`)
        t.equal(res.headers['content-range'], `bytes ${want.start}-${want.end}/${size}`)
        t.ok(res.body.equals(p.subarray(want.start, want.end + 1)), `${proto} ${size} ${range}: the plaintext slice`)
        for (const r of nas.requests.slice(before)) {
          const c = chunksOf(String(r.headers.range), sealedSize)
          if (c.first < 0) continue // the header alone
          t.equal(c.first, Math.floor(want.start / CHUNK), `${proto} ${size} ${range}: the NAS range starts at the first needed chunk`)
          t.equal(c.last, size === 0 ? 0 : Math.floor(want.end / CHUNK), `${proto} ${size} ${range}: and ends at the last`)
          t.notOk(c.header, 'a chunk request does not re-read the header')
        }
      }
    }
  }
  t.ok(sizeChecks.size > 0 && [...sizeChecks.values()].every((n) => n === 1), `a file's size was checked once, whatever the ranges and protocols: ${JSON.stringify([...sizeChecks.values()])}`)
  t.ok(nas.requests.every((r) => r.url.endsWith('.age') && !r.url.includes('46701234567')), 'the NAS saw only sealed names')
})
