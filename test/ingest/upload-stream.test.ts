// Uploads as streams, against Debian's nginx WebDAV, over HTTP/1.1 and
// HTTP/2: a 200 MB recording passes at constant memory (sealed chunk by
// chunk, never held whole), and a client that leaves in the middle leaves
// nothing on the NAS: its PUT is cancelled, and nginx drops what it had.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import t from 'tap'
import { toneWav } from '../../src/demo/recordings.js'
import { recentPeriods } from '../../src/sealing/period.js'
import { bearer, rawTls, scrape, startTestGateway } from '../helpers/gateway.js'
import { startDavNas } from '../helpers/dav-nas.js'
import { PROTOCOLS } from '../helpers/protocols.js'
import { makeKeyring, PATTERN } from '../helpers/sealed-nas.js'
import { putAs } from '../helpers/upload.js'
import { waitFor } from '../helpers/wait.js'

const HEAD = toneWav(440, 0.01).subarray(0, 44)
const CUR = recentPeriods('month', new Date())[0].replace('-', '/')
const BLOCK = Buffer.alloc(64 * 1024, 0x11)

/** A WAV of `size` bytes, made as it is read; its SHA-256 once it ended. */
function wavStream (size: number, stopAfter?: number): { body: Readable, sha256: () => string } {
  const hash = createHash('sha256')
  let sent = 0
  const body = new Readable({
    read () {
      if (stopAfter !== undefined && sent >= stopAfter) return
      if (sent >= size) { this.push(null); return }
      const chunk = sent === 0 ? HEAD : BLOCK.subarray(0, Math.min(BLOCK.length, size - sent))
      sent += chunk.length
      hash.update(chunk)
      this.push(chunk)
    }
  })
  return { body, sha256: () => hash.digest('hex') }
}

async function setup (t: Parameters<typeof startDavNas>[0], limits: Record<string, number> = {}) {
  const keys = makeKeyring([])
  const nas = await startDavNas(t)
  const gw = await startTestGateway(t, nas, {
    policy: [{ name: 'recorder', path: '/medicall/**', methods: ['PUT'], scopes: ['recordings:write'] }],
    sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN },
    limits
  })
  return { nas, gw, writer: bearer(gw.token({ scope: 'recordings:write' })) }
}

t.test('a 200 MB upload passes at constant memory', async (t) => {
  const { nas, gw, writer } = await setup(t)
  const SIZE = 200 * 1024 * 1024
  for (const proto of PROTOCOLS) {
    // Live memory (after a collection: what the process holds, not what the
    // collector has yet to give back), every second while it streams and
    // when the client has sent its last byte: a gateway that held the
    // upload would hold most of it then.
    const live = (): number => { global.gc?.(); const m = process.memoryUsage(); return m.heapUsed + m.external }
    const base = live()
    let peak = base
    const sample = (): void => { peak = Math.max(peak, live()) }
    const sampler = setInterval(sample, 1000)
    const { body, sha256 } = wavStream(SIZE)
    body.once('end', sample)
    const r = await putAs(proto, gw, `/medicall/${CUR}/29/big-${proto}.wav`, { ...writer, 'content-length': String(SIZE) }, body).finally(() => clearInterval(sampler))
    t.equal(r.status, 201, `${proto}: stored ${r.body.toString()}`)
    t.equal(JSON.parse(r.body.toString()).sha256, sha256(), `${proto}: every byte, in order`)
    // Held whole, the plaintext alone would add 200 MB (and its sealed copy as much again).
    t.ok(peak - base < 64 * 1024 * 1024, `${proto}: memory grew by ${Math.round((peak - base) / 1048576)} MB for 200 MB`)
    const stored = [...nas.files().values()]
    t.ok(stored.some((size) => size > SIZE), `${proto}: the sealed file is on the NAS`)
  }
})

// A client that leaves mid-body leaves nothing: with a Content-Length, and
// without one (HTTP/2's streamed body, HTTP/1.1 chunked), where the gateway
// has no length to hold the body to. Over HTTP/2 Node's stream.close() sends
// END_STREAM before its RST_STREAM, so the body looks whole: such an upload
// was stored (its first part, sealed), with an ingest record and a completion
// that said the client left.
const LEAVING: Array<{ name: string, tag: string, sent: number, headers: (proto: string, writer: Record<string, string>) => Record<string, string> }> = [
  { name: 'with a Content-Length', tag: 'left', sent: 4 * 1024 * 1024, headers: (_proto, writer) => ({ ...writer, 'content-length': String(64 * 1024 * 1024) }) },
  // The part sent fits in HTTP/2's first flow-control window (64 KiB): it is
  // on the wire at once, so the stream's END_STREAM follows it.
  { name: 'without a Content-Length', tag: 'unsized', sent: 48 * 1024, headers: (proto, writer) => proto === 'h1' ? { ...writer, 'transfer-encoding': 'chunked' } : writer }
]

for (const row of LEAVING) {
  t.test(`a client that leaves in the middle of a body ${row.name} leaves nothing on the NAS`, async (t) => {
    const { nas, gw, writer } = await setup(t)
    for (const [i, proto] of PROTOCOLS.entries()) {
      const { body } = wavStream(64 * 1024 * 1024, row.sent)
      const crash = new AbortController()
      const put = putAs(proto, gw, `/medicall/${CUR}/29/${row.tag}-${proto}.wav`, row.headers(proto, writer), body, crash.signal)
      put.catch(() => {})
      // The NAS is receiving the body: the PUT is in flight there.
      await waitFor(`${proto}: the PUT in flight on the NAS`, () => nas.bodiesInFlight() > 0 ? true : undefined)
      crash.abort()
      await t.rejects(put, `${proto}: the client's request failed`)
      await waitFor(`${proto}: the abort counted`, async () => (await scrape(gw.adminUrl)).get('nasguard_ingests_total{outcome="aborted"}') === i + 1 ? true : undefined)
      await waitFor(`${proto}: nginx dropped the body`, () => nas.bodiesInFlight() === 0 ? true : undefined)
      t.same([...nas.files().keys()], [], `${proto}: nothing on the NAS`)
      const done = await waitFor(`${proto}: the completion record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && String(r.path).includes(`${row.tag}-${proto}`)))
      t.equal(done.outcome, 'client-aborted', `${proto}: the completion says the client left`)
      t.notOk(gw.auditRecords().some((r) => r.event === 'ingest'), `${proto}: no ingest record`)
    }
  })
}

/** A WAV whose first 8 KiB come at once, then one byte at a time, every `everyMs`, until destroyed. */
function trickle (everyMs: number): Readable {
  let sent = 0
  let timer: NodeJS.Timeout | undefined
  return new Readable({
    read () {
      if (sent === 0) { sent = 8192; this.push(Buffer.concat([HEAD, BLOCK.subarray(0, 8192 - HEAD.length)])); return }
      timer = setTimeout(() => { sent++; this.push(Buffer.from([0x11])) }, everyMs)
    },
    destroy (err, cb) { clearTimeout(timer); cb(err) }
  })
}

t.test('a body that trickles is cut (408) and leaves nothing; a body that never comes does not hold a connection', async (t) => {
  const { nas, gw, writer } = await setup(t, { sendTimeoutMs: 1000, minSendRate: 4096, headersTimeoutMs: 500 })
  for (const proto of PROTOCOLS) {
    const body = trickle(200)
    const r = await putAs(proto, gw, `/medicall/${CUR}/29/slow-${proto}.wav`, { ...writer, 'content-length': String(1 << 20) }, body).finally(() => body.destroy())
    t.equal(r.status, 408, `${proto}: cut`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_UPLOAD_STALLED', `${proto}: says why`)
    await waitFor(`${proto}: nginx dropped the body`, () => nas.bodiesInFlight() === 0 ? true : undefined)
    t.same([...nas.files().keys()], [], `${proto}: nothing on the NAS`)
  }
  // The grants endpoint's JSON body, declared and never sent: the connection goes (3 x headersTimeoutMs).
  const token = gw.token({ scope: 'recordings:write' })
  const r = await rawTls(gw, `POST /_nasguard/grants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{`, { untilClose: true })
  t.ok(r.closed, 'a grants request whose body never comes is closed')
})
