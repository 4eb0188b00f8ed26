// A NAS that sends a recording as 1-byte chunks ("1\r\nX\r\n"), at full
// speed. Its short chunks are gathered and written together, so the client
// does not pay a write per byte: over HTTP/1.1 an HTTP chunk header per byte
// made the client's traffic six times the recording, and a write per byte
// cost the gateway about 16 times the CPU (HTTP/2 already packed the writes
// into few DATA frames; the CPU per write was paid there too). Counted from
// the client's side, which does not depend on the machine's speed: a busy
// machine's NAS reads are larger, not smaller. The record counts every
// byte of a whole download. When the NAS fails mid-body, in the same read
// as its last good chunk or later, what it sent is passed on, then the cut,
// and the record's bytes and unconfirmedBytes bound what the client got.
import t, { type Test } from 'tap'
import { createServer, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import { bearer, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const SIZE = 16384
const BODY = Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVEfmt '), Buffer.alloc(SIZE, 0x55)]).subarray(0, SIZE)
/** How many bytes a NAS that fails mid-body sends first. */
const BEFORE_FAILING = 1000

const oneByteChunks = (body: Buffer): Buffer => Buffer.concat([...body].map((b) => Buffer.concat([Buffer.from('1\r\n'), Buffer.from([b]), Buffer.from('\r\n')])))
const HEAD = ['HTTP/1.1 200 OK', 'Content-Type: audio/wav', 'Transfer-Encoding: chunked', 'Connection: close', '', ''].join('\r\n')

/** A NAS answering every request with `answer`. */
async function rawNas (t: Test, answer: (s: Socket) => void): Promise<{ url: string, requests: () => number }> {
  let requests = 0
  const nas = createServer((s: Socket) => {
    s.on('error', () => {})
    s.once('data', () => { requests++; answer(s) })
  })
  await new Promise<void>((resolve) => nas.listen(0, '127.0.0.1', resolve))
  t.teardown(() => nas.close())
  return { url: `http://127.0.0.1:${(nas.address() as { port: number }).port}`, requests: () => requests }
}

const whole = (s: Socket): void => { s.end(Buffer.concat([Buffer.from(HEAD), oneByteChunks(BODY), Buffer.from('0\r\n\r\n')])) }

/**
 * The client has seen the response's first bytes: a failing NAS sends the
 * rest of its answer only then, so that the failure comes after the
 * response was under way, on a busy machine too (the first write's
 * headers are held until the read that carried them is done).
 */
let clientSaw: () => void = () => {}

/**
 * NASes that fail after BEFORE_FAILING 1-byte chunks: the first one, then,
 * once the client saw it, the others and the failure: in the same read as
 * the last good chunk (a chunk header that does not parse; the end of a
 * chunked 206 short of its span), or in a later one (a reset).
 */
const FAILING: Array<{ name: string, range?: string, head?: string, status: number, fail: (s: Socket) => void }> = [
  { name: 'a chunk header that does not parse', status: 200, fail: (s) => { s.end('zz\r\n') } },
  { name: 'a chunked 206 that ends short of its span', range: 'bytes=0-1999', head: HEAD.replace('200 OK', `206 Partial Content\r\nContent-Range: bytes 0-1999/${SIZE}`), status: 206, fail: (s) => { s.end('0\r\n\r\n') } },
  { name: 'a reset', status: 200, fail: (s) => { s.resetAndDestroy() } }
]

function failingAnswer (c: typeof FAILING[number]): (s: Socket) => void {
  return (s) => {
    const saw = new Promise<void>((resolve) => { clientSaw = resolve })
    s.write(Buffer.concat([Buffer.from(c.head ?? HEAD), oneByteChunks(BODY.subarray(0, 1))]))
    void saw.then(() => { s.write(oneByteChunks(BODY.subarray(1, BEFORE_FAILING)), () => { c.fail(s) }) })
  }
}

interface Got { status: number, body: Buffer, wire: number, writes: number }

/** HTTP/1.1 over a raw TLS socket: the body as decoded, and every byte after the headers (the chunk framing included). */
/** @param seen told how many bytes came after the headers so far (the chunk framing included) */
async function getH1 (gw: TestGateway, sub: string, range: string | undefined, seen: (n: number) => void): Promise<Got> {
  const ca = readFileSync(testCerts().ca)
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = []
    const s = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] }, () => {
      s.write(`GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${bearer(gw.token({ sub })).authorization}\r\n${range ? `Range: ${range}\r\n` : ''}Connection: close\r\n\r\n`)
    })
    s.on('data', (d: Buffer) => {
      parts.push(d)
      const so = Buffer.concat(parts)
      const split = so.indexOf('\r\n\r\n')
      if (split >= 0) seen(so.length - split - 4)
    })
    s.on('error', () => {})
    s.on('close', () => { resolve(Buffer.concat(parts)) })
    s.setTimeout(60000, () => { reject(new Error('no end in 60 s')); s.destroy() })
  })
  const split = raw.indexOf('\r\n\r\n')
  const status = Number(raw.subarray(0, split).toString('latin1').split(' ')[1])
  const framed = raw.subarray(split + 4)
  // A 206 has its span's length: its body is not chunked.
  if (/\r\ncontent-length:/i.test(raw.subarray(0, split).toString('latin1'))) return { status, body: framed, wire: framed.length, writes: 1 }
  const body: Buffer[] = []
  let writes = 0
  for (let at = 0; at < framed.length;) {
    const eol = framed.indexOf('\r\n', at)
    if (eol < 0) break
    const n = parseInt(framed.subarray(at, eol).toString('latin1'), 16)
    if (!(n > 0) || eol + 2 + n > framed.length) break
    body.push(framed.subarray(eol + 2, eol + 2 + n))
    writes++
    at = eol + 2 + n + 2
  }
  return { status, body: Buffer.concat(body), wire: framed.length, writes }
}

/** HTTP/2: the body, and how many DATA frames carried it (one 'data' event each). */
/** @param seen told how many body bytes came so far */
async function getH2 (gw: TestGateway, sub: string, range: string | undefined, seen: (n: number) => void): Promise<Got> {
  const ca = readFileSync(testCerts().ca)
  const session = http2Connect(`https://localhost:${gw.port}`, { ca })
  session.on('error', () => {})
  try {
    return await new Promise<Got>((resolve) => {
      const st = session.request({ ':path': PATH, ...bearer(gw.token({ sub })), ...(range ? { range } : {}) })
      let status = 0
      const parts: Buffer[] = []
      st.on('response', (h) => { status = Number(h[':status']) })
      let n = 0
      st.on('data', (d: Buffer) => { parts.push(d); seen(n += d.length) })
      st.on('error', () => {})
      st.on('close', () => { const body = Buffer.concat(parts); resolve({ status, body, wire: body.length, writes: parts.length }) })
      st.end()
    })
  } finally {
    session.close()
  }
}

const get = async (proto: Protocol, gw: TestGateway, sub: string, range?: string, seen: (n: number) => void = () => { clientSaw() }): Promise<Got> => proto === 'h1' ? await getH1(gw, sub, range, seen) : await getH2(gw, sub, range, seen)

t.test('a NAS sending 1-byte chunks: the client gets the recording in few writes, and the record counts every byte', async (t) => {
  const nas = await rawNas(t, whole)
  const gw = await startTestGateway(t, nas)
  for (const proto of PROTOCOLS) {
    const sub = `tiny-${proto}`
    const r = await get(proto, gw, sub)
    t.equal(r.status, 200, `${proto}: 200`)
    t.ok(r.body.equals(BODY), `${proto}: the whole recording`)
    // Without gathering: 16384 writes (and over HTTP/1.1 6 bytes on the wire for each byte of the recording).
    t.ok(r.writes <= 64, `${proto}: ${r.writes} writes for ${SIZE} 1-byte chunks (at most 64)`)
    if (proto === 'h1') t.ok(r.wire <= SIZE * 1.05, `${proto}: ${r.wire} bytes of body on the client's wire for ${SIZE}`)
    const f = await waitFor(`${proto}: the completion record`, () => gw.auditRecords().find((x) => x.event === 'fetch' && x.subject === sub && x.bytes !== undefined))
    t.match(f, { status: 200, bytes: SIZE }, `${proto}: the record counts ${SIZE} bytes`)
  }
})

t.test('a NAS that sends a few short chunks and then waits: they reach the client at once, not when the NAS goes on', async (t) => {
  const FEW = 100
  let sawFew: () => void = () => {}
  const nas = await rawNas(t, (s) => {
    const saw = new Promise<void>((resolve) => { sawFew = resolve })
    s.write(Buffer.concat([Buffer.from(HEAD), oneByteChunks(BODY.subarray(0, FEW))]))
    // The rest only once the client has the first FEW bytes: held back until more came, they never would.
    void saw.then(() => { s.end(Buffer.concat([oneByteChunks(BODY.subarray(FEW)), Buffer.from('0\r\n\r\n')])) })
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 5000 } })
  for (const proto of PROTOCOLS) {
    // Over HTTP/1.1 the first chunk's size line (4 bytes) comes before its FEW bytes.
    const r = await get(proto, gw, `few-${proto}`, undefined, (n) => { if (n >= FEW + (proto === 'h1' ? 4 : 0)) sawFew() })
    t.equal(r.status, 200, `${proto}: 200`)
    t.ok(r.body.equals(BODY), `${proto}: the whole recording (${r.body.length} bytes): the first ${FEW} went out before the NAS sent the rest`)
  }
})

for (const c of FAILING) {
  t.test(`a NAS that fails after ${BEFORE_FAILING} 1-byte chunks (${c.name}): those bytes reach the client before the cut, and the record bounds them`, async (t) => {
    const nas = await rawNas(t, failingAnswer(c))
    const gw = await startTestGateway(t, nas)
    for (const proto of PROTOCOLS) {
      const sub = `tiny-fail-${proto}`
      const r = await get(proto, gw, sub, c.range)
      t.equal(r.status, c.status, `${proto}: the headers went out (${c.status})`)
      t.ok(r.body.equals(BODY.subarray(0, BEFORE_FAILING)), `${proto}: the ${BEFORE_FAILING} bytes the NAS sent, then the cut (got ${r.body.length})`)
      const f = await waitFor(`${proto}: the completion record`, () => gw.auditRecords().find((x) => x.event === 'fetch' && x.subject === sub && x.bytes !== undefined))
      // The record's contract: the client had between bytes and bytes + unconfirmedBytes (a write still in
      // progress at the cut, or an HTTP/2 stream's queue, may or may not have gone out).
      const bytes = Number(f.bytes)
      const unconfirmed = Number(f.unconfirmedBytes ?? 0)
      t.ok(bytes <= r.body.length && r.body.length <= bytes + unconfirmed, `${proto}: the record's bytes (${bytes}) and unconfirmedBytes (${unconfirmed}) bound the ${r.body.length} bytes the client got`)
      t.equal(f.outcome, 'upstream-error', `${proto}: outcome upstream-error`)
    }
    t.notMatch(gw.logs.join('\n'), /46701234567/, 'no recording name in the log')
  })
}
