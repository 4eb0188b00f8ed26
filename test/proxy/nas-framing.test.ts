// What the NAS's framing lets through. A whole file whose body ends only
// when the NAS closes its connection (no Content-Length, no chunks: an
// HTTP/1.0 answer, or an HTTP/1.1 one with neither) cannot be told from one
// the NAS cut short by failing: it is refused with 502 before any byte, and
// audited so; chunks and a length can be checked, and pass. A Content-Range
// reaches the client only on a 206, or on a 416 that states a size and
// nothing else (the NAS's text, a path in it included, is not passed on);
// Accept-Ranges, ETag and Last-Modified only in their own grammar.
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

/** Header values a NAS could use to pass text on: a path with another caller's number in it. */
const LEAKY = ['Accept-Ranges: bytes; file=/volume1/medicall/secret_46709999999.wav', 'ETag: "x" /volume1/medicall/secret_46709999999.wav', 'Last-Modified: see /volume1/medicall/secret_46709999999.wav']

const CASES: Array<{ name: string, answer: (s: Socket) => void, range?: string, status: number, body?: Buffer, contentRange?: string | null, headers?: Record<string, string | undefined> }> = [
  { name: 'header values outside their grammar are not passed on', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', `Content-Length: ${BODY.length}`, ...LEAKY, 'Connection: close'])), BODY])) }, status: 200, body: BODY, headers: { 'accept-ranges': undefined, etag: undefined, 'last-modified': undefined } },
  { name: 'values in their grammar pass, without the whitespace around them', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 200 OK', ['Content-Type: audio/wav', `Content-Length: ${BODY.length}`, 'Accept-Ranges: Bytes\t', 'ETag: W/"5f-1a2b"\t', 'Last-Modified: Sunday, 29-Nov-26 10:15:00 GMT', 'Connection: close'])), BODY])) }, status: 200, body: BODY, headers: { 'accept-ranges': 'bytes', etag: 'W/"5f-1a2b"', 'last-modified': 'Sunday, 29-Nov-26 10:15:00 GMT' } },
  { name: 'a 206 whose Content-Range ends in a TAB: written anew from the checked span (an HTTP/2 client would drop it)', range: 'bytes=100-199', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 206 Partial Content', ['Content-Type: audio/wav', 'Content-Length: 100', 'Content-Range: BYTES 100-199/300\t', 'Connection: close'])), BODY.subarray(100, 200)])) }, status: 206, body: BODY.subarray(100, 200), contentRange: 'bytes 100-199/300' },
  { name: 'a chunked 206 whose first chunk is longer than its span: a 502, not a bare reset', range: 'bytes=100-199', answer: (s) => { s.end(Buffer.concat([Buffer.from(head('HTTP/1.1 206 Partial Content', ['Content-Type: audio/wav', 'Content-Range: bytes 100-199/300', 'Transfer-Encoding: chunked', 'Connection: close'])), Buffer.from('96\r\n'), BODY.subarray(100, 250), Buffer.from('\r\n0\r\n\r\n')])) }, status: 502 },
  { name: 'a 304 to a request that was not conditional: a 502, not an empty answer', answer: (s) => { s.end(head('HTTP/1.1 304 Not Modified', ['ETag: "x"', 'Connection: close'])) }, status: 502 },
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
      for (const [name, value] of Object.entries(c.headers ?? {})) t.equal(r.headers[name], value, `${proto}: ${name} ${value ?? 'absent'}`)
      t.notMatch(JSON.stringify(r.headers), /volume1|46709999999/, `${proto}: no NAS text in any header`)
    }
    t.notMatch(gw.logs.join('\n'), /46701234567/, 'no recording name in the log')
  })
}
