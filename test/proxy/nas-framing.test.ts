// What the NAS's framing lets through. A whole file whose body ends only
// when the NAS closes its connection (no Content-Length, no chunks: an
// HTTP/1.0 answer, or an HTTP/1.1 one with neither) cannot be told from one
// the NAS cut short by failing: it is refused with 502 before any byte, and
// audited so; chunks and a length can be checked, and pass. A Content-Range
// reaches the client only on a 206, or on a 416 that states a size and
// nothing else (the NAS's text, a path in it included, is not passed on).
// Over HTTP/1.1 and HTTP/2, from a NAS that writes its answers byte by byte.
import t, { type Test } from 'tap'
import { createServer, type Socket } from 'node:net'
import { bearer, startTestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const BODY = Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVEfmt '), Buffer.alloc(284, 0x55)])

/** A NAS that answers every request with `answer` (the status line and headers, then the body), then ends the connection. */
async function rawNas (t: Test, answer: (s: Socket) => void): Promise<{ url: string, requests: () => number }> {
  let requests = 0
  const nas = createServer((s) => {
    s.on('error', () => {})
    s.once('data', () => { requests++; answer(s) })
  })
  await new Promise<void>((resolve) => nas.listen(0, '127.0.0.1', resolve))
  t.teardown(() => nas.close())
  return { url: `http://127.0.0.1:${(nas.address() as { port: number }).port}`, requests: () => requests }
}

const head = (status: string, headers: string[]): string => [status, ...headers, '', ''].join('\r\n')

const CASES: Array<{ name: string, answer: (s: Socket) => void, range?: string, status: number, body?: Buffer, contentRange?: string | null }> = [
  { name: 'HTTP/1.1 200 with neither a length nor chunks, cut by a FIN', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', 'Connection: close'])), BODY])) }, status: 502 },
  { name: 'HTTP/1.0 200 without a length', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.0 200 OK', ['Content-Type: audio/wav'])), BODY])) }, status: 502 },
  { name: 'a 200 with Transfer-Encoding: identity, cut by a FIN', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', 'Transfer-Encoding: identity', 'Connection: close'])), BODY])) }, status: 502 },
  { name: 'a 200 with Transfer-Encoding: chunked and a trailing TAB, cut by a FIN', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', 'Transfer-Encoding: chunked\t', 'Connection: close'])), BODY.subarray(0, 150)])) }, status: 502 },
  { name: 'a gzip-coded 200 with a length', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', 'Content-Encoding: gzip', `Content-Length: ${BODY.length}`, 'Connection: close'])), BODY])) }, status: 502 },
  { name: 'a chunked 200 (its end is checked): passed', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', 'Transfer-Encoding: chunked', 'Connection: close'])), Buffer.from(BODY.length.toString(16) + '\r\n'), BODY, Buffer.from('\r\n0\r\n\r\n')])) }, status: 200, body: BODY },
  { name: 'a 200 with a length and a Content-Range: the Content-Range is dropped', range: 'bytes=0-99', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', `Content-Length: ${BODY.length}`, 'Content-Range: bytes 0-99/1000', 'Connection: close'])), BODY])) }, status: 200, body: BODY, contentRange: null },
  { name: 'a 416 whose Content-Range carries more than a size: not passed on', range: 'bytes=5000-', answer: (s) => { s.end(head('HTTP/1.1 416 Range Not Satisfiable', [`Content-Range: bytes */1000; path=${PATH}`, 'Content-Length: 0', 'Connection: close'])) }, status: 416, contentRange: null },
  { name: 'a 416 stating the size: passed on', range: 'bytes=5000-', answer: (s) => { s.end(head('HTTP/1.1 416 Range Not Satisfiable', ['Content-Range: bytes */1000', 'Content-Length: 0', 'Connection: close'])) }, status: 416, contentRange: 'bytes */1000' }
]

for (const c of CASES) {
  t.test(c.name, async (t) => {
    const nas = await rawNas(t, c.answer)
    const gw = await startTestGateway(t, nas)
    for (const proto of PROTOCOLS) {
      const asked = nas.requests()
      const r = await fetchAs(proto, gw, PATH, { ...bearer(gw.token({ sub: `framing-${proto}` })), ...(c.range ? { range: c.range } : {}) })
      t.equal(r.status, c.status, `${proto}: ${c.status}`)
      t.ok(nas.requests() > asked, `${proto}: the NAS was asked`)
      if (c.body) t.ok(r.body.equals(c.body), `${proto}: the whole body`)
      if (c.status === 502) {
        t.notOk(r.body.includes(BODY.subarray(0, 12)), `${proto}: no byte of the NAS's body`)
        const f = await waitFor(`${proto}: the fetch record`, () => gw.auditRecords().find((x) => x.event === 'fetch' && x.subject === `framing-${proto}`))
        t.equal(f.status, 502, `${proto}: audited as 502`)
        t.equal(f.bytes, 0, `${proto}: with no bytes`)
      }
      if (c.contentRange !== undefined) t.equal(r.headers['content-range'], c.contentRange ?? undefined, `${proto}: Content-Range ${c.contentRange ?? 'absent'}`)
    }
    t.notMatch(gw.logs.join('\n'), /46701234567/, 'no recording name in the log')
  })
}
