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
import { requestOptions, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'
import { makeKeyring, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'

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
    files.set(sealedName(ring, path), await sealBytes(ring, '2026-11', path, randomBytes(64 * 1024 * 1024)))
    const before = nasClosed.length
    const got = await readThenLeave(proto, gw, path, { authorization: `Bearer ${gw.token()}` }, 300000)
    t.ok(got >= 300000 && got < 64 * 1024 * 1024, `${proto}: the client took part of it (${got} bytes) and left`)
    await waitFor(`${proto}: the NAS request cancelled`, () => nasClosed.length > before ? true : undefined)
    const record = await waitFor(`${proto}: the completion record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.path === path))
    t.equal(record.outcome, 'client-aborted', `${proto}: client-aborted`)
    t.ok(Number(record.bytes) <= 64 * 1024 * 1024 && Number(record.bytes) > 0, `${proto}: bytes ${String(record.bytes)}`)
  }
  await waitFor('no download left in flight', () => gw.gateway.metrics.activeStreams.get().then((m) => m.values[0].value === 0 ? true : undefined))
})
