// A client that leaves mid-stream of a sealed recording cancels the NAS
// request at once (HTTP/1.1: the connection closes; HTTP/2: the stream is
// reset, as a browser does when it seeks), and the completion record says
// client-aborted with the bytes it took.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Pool } from 'undici'
import { requestOptions, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { fetchAs, PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor, within } from '../helpers/wait.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName, startSealed } from '../helpers/sealed-nas.js'

/** Reads until `bytes` arrived, then leaves. */
function readThenLeave (proto: Protocol, gw: TestGateway, path: string, headers: Record<string, string>, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0
    if (proto === 'h1') {
      const req = httpsRequest(requestOptions(gw, path, { headers }), (res) => {
        res.on('data', (c: Buffer) => { got += c.length; if (got >= bytes) { req.destroy(); resolve(got) } })
      })
      req.on('error', () => {})
      req.on('close', () => resolve(got))
      req.end()
      return
    }
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    session.on('error', reject)
    const stream = session.request({ ':path': path, ...headers })
    stream.on('data', (c: Buffer) => { got += c.length; if (got >= bytes) { stream.close(0x8); resolve(got) } })
    stream.on('error', () => {})
    stream.on('close', () => { session.close(); resolve(got) })
    stream.end()
  })
}

t.test('a client leaving a sealed stream cancels the NAS request, and is recorded client-aborted', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const files = new Map<string, Buffer>()
  const nasClosed: string[] = []
  // A NAS that sends big answers slowly enough that the client leaves first.
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const body = files.get(req.url ?? '')
    if (!body) { res.writeHead(404); res.end(); return }
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range))
    const start = Number(m?.[1] ?? 0)
    const end = Math.min(Number(m?.[2] ?? body.length - 1), body.length - 1)
    res.writeHead(206, { 'content-type': 'application/octet-stream', etag: '"v1"', 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
    let at = start
    const pump = (): void => {
      while (at <= end) {
        const next = Math.min(at + 65536, end + 1)
        const ok = res.write(body.subarray(at, next))
        at = next
        if (!ok) { res.once('drain', pump); return }
      }
      res.end()
    }
    res.on('close', () => { if (!res.writableFinished) nasClosed.push(String(req.headers.range)) })
    pump()
  }
  const nas = await startStubNas(t, handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  for (const proto of PROTOCOLS) {
    const path = `/medicall/2026/11/29/1015${proto}_46701234567.wav`
    files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, randomBytes(32 * 1024 * 1024)))
    const before = nasClosed.length
    const got = await readThenLeave(proto, gw, path, { authorization: `Bearer ${gw.token()}` }, 300000)
    t.ok(got >= 300000 && got < 32 * 1024 * 1024, `${proto}: the client took part of it (${got} bytes) and left`)
    await waitFor(`${proto}: the NAS request cancelled`, () => nasClosed.length > before ? true : undefined)
    const record = await waitFor(`${proto}: the completion record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.path === path))
    t.equal(record.outcome, 'client-aborted', `${proto}: client-aborted`)
    t.ok(Number(record.bytes) <= 32 * 1024 * 1024 && Number(record.bytes) > 0, `${proto}: bytes ${String(record.bytes)}`)
  }
  await waitFor('no download left in flight', () => gw.gateway.metrics.activeStreams.get().then((m) => m.values[0].value === 0 ? true : undefined))
})

/** Reads the whole response slowly (a pause after every 256 KiB), so that the gateway's last writes find it full. */
function slowRead (proto: Protocol, gw: TestGateway, path: string, headers: Record<string, string>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let since = 0
    const take = (source: { pause: () => void, resume: () => void }, c: Buffer): void => {
      chunks.push(c)
      since += c.length
      if (since >= 262144) { since = 0; source.pause(); setTimeout(() => source.resume(), 20) }
    }
    if (proto === 'h1') {
      const req = httpsRequest(requestOptions(gw, path, { headers }), (res) => {
        res.on('data', (c: Buffer) => take(res, c))
        res.on('end', () => resolve(Buffer.concat(chunks)))
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end()
      return
    }
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    session.on('error', reject)
    const stream = session.request({ ':path': path, ...headers })
    stream.on('data', (c: Buffer) => take(stream, c))
    stream.on('end', () => { session.close(); resolve(Buffer.concat(chunks)) })
    stream.on('error', reject)
    stream.end()
  })
}

t.test('a sealed download whose response is full at its last chunk gives its NAS connection back (one connection, many downloads)', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  // One download connection (a pool of two): a connection left paused at the
  // end would be held until upstream.timeoutMs, and the third download would
  // wait for it.
  const gw = await startTestGateway(t, nas, { upstream: { connections: 1, timeoutMs: 120000 }, sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  const path = '/medicall/2026/11/29/101500_46701234567.wav'
  const plain = randomBytes(12 * 1024 * 1024)
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, plain))
  for (const proto of PROTOCOLS) {
    const auth = { authorization: `Bearer ${gw.token()}` }
    for (let i = 0; i < 2; i++) t.ok((await within(`${proto} slow download ${i + 1}`, slowRead(proto, gw, path, auth))).equals(plain), `${proto} slow download ${i + 1}`)
    // One whole chunk: over HTTP/2 it is more than the stream's first flow-control window, so the response is full when it ends.
    for (let i = 0; i < 4; i++) {
      const res = await within(`${proto} chunk download ${i + 1}`, fetchAs(proto, gw, path, { ...auth, range: `bytes=${i * 65536}-${i * 65536 + 65535}` }))
      t.ok(res.status === 206 && res.body.equals(plain.subarray(i * 65536, (i + 1) * 65536)), `${proto} chunk download ${i + 1} gets a NAS connection`)
    }
  }
})

t.test('many keep-alive clients reading one-chunk ranges at once: every NAS connection comes back (h1 and h2)', async (t) => {
  const { mem, gw, ring } = await startSealed(t, ['2026-11'], { upstream: { connections: 8, timeoutMs: 120000 }, limits: { clientFetches: 64 } })
  const path = '/medicall/2026/11/29/101500_46701234567.wav'
  const plain = randomBytes(16 * 65536)
  mem.files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, plain))
  const auth = `Bearer ${gw.token()}`
  for (const allowH2 of [false, true]) {
    const pool = new Pool(`https://localhost:${gw.port}`, { connections: 16, allowH2, connect: { ca: readFileSync(testCerts().ca) } })
    t.teardown(() => pool.close())
    let ok = 0
    const client = async (n: number): Promise<void> => {
      for (let i = 0; i < 20; i++) {
        const k = (n + i) % 16
        const res = await pool.request({ method: 'GET', path, headers: { authorization: auth, range: `bytes=${k * 65536}-${k * 65536 + 65535}` } })
        const body = Buffer.from(await res.body.arrayBuffer())
        if (res.statusCode === 206 && body.equals(plain.subarray(k * 65536, (k + 1) * 65536))) ok++
      }
    }
    await within(`${allowH2 ? 'h2' : 'h1'}: 16 clients x 20 ranges`, Promise.all(Array.from({ length: 16 }, (_x, n) => client(n))))
    t.equal(ok, 320, `${allowH2 ? 'h2' : 'h1'}: every range, right`)
  }
})

