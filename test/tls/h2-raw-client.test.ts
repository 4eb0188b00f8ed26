// Self-test of test/helpers/h2-raw.ts against a plain node:http2 server: a
// normal request, the header blocks Node rejects (and how it rejects them),
// CONTINUATION frames, HEADERS + DATA, a body past the default flow-control
// windows, and GOAWAY (with and without an error) on one connection.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createSecureServer, type IncomingHttpHeaders, type ServerHttp2Session } from 'node:http2'
import { testCerts } from '../helpers/certs.js'
import { H2_ERROR, baseHeaders, h2Raw } from '../helpers/h2-raw.js'

const LARGE = Buffer.alloc(300 * 1024, 'z')

interface Seen { path: string, headers: IncomingHttpHeaders, body: string }

async function startServer (t: { teardown: (fn: () => unknown) => void }): Promise<{ port: number, seen: Seen[] }> {
  const certs = testCerts()
  const seen: Seen[] = []
  const server = createSecureServer({ cert: readFileSync(certs.cert), key: readFileSync(certs.key) }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString()
      seen.push({ path: req.url, headers: req.headers, body })
      if (req.url === '/large') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        res.end(LARGE)
        return
      }
      if (req.url === '/bye') res.stream.session?.close()
      const answer = JSON.stringify({ ok: true, path: req.url, received: body })
      res.writeHead(200, { 'content-type': 'application/json', 'x-raw-test': 'yes', 'content-length': Buffer.byteLength(answer) })
      res.end(answer)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  // After it sent an error GOAWAY, node:http2 stops reading the socket and never
  // sees the client's close: its session stays open and server.close() would
  // wait forever, so sessions are destroyed first.
  const sessions = new Set<ServerHttp2Session>()
  server.on('session', (s: ServerHttp2Session) => { sessions.add(s); s.once('close', () => sessions.delete(s)) })
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sessions) s.destroy()
    server.close(() => resolve())
  }))
  return { port: (server.address() as { port: number }).port, seen }
}

t.test('the raw h2 client against node:http2', async (t) => {
  const srv = await startServer(t)

  t.test('a normal GET: 200, headers and body', async (t) => {
    const r = await h2Raw(srv, [{ headers: baseHeaders('/hello', [['accept', '*/*']]) }])
    const s = r.streams[0]
    t.equal(r.timedOut, false)
    t.equal(s.id, 1)
    t.equal(s.status, 200)
    t.equal(s.headers[':status'], '200')
    t.equal(s.headers['x-raw-test'], 'yes', 'a custom response header')
    t.same(s.json, { ok: true, path: '/hello', received: '' }, 'the body, parsed as JSON')
    t.equal(s.rstCode, undefined)
    t.equal(r.goawayCode, undefined)
    t.equal(r.closed, false)
  })

  t.test('several streams on one connection, concurrently and sequentially', async (t) => {
    for (const sequential of [false, true]) {
      const r = await h2Raw(srv, ['/a', '/b', '/c'].map((p) => ({ headers: baseHeaders(p) })), { sequential })
      t.same(r.streams.map((s) => s.id), [1, 3, 5])
      t.same(r.streams.map((s) => s.json?.path), ['/a', '/b', '/c'], `sequential: ${sequential}`)
    }
  })

  t.test('an upper-case header name: RST_STREAM PROTOCOL_ERROR', async (t) => {
    const r = await h2Raw(srv, [{ headers: baseHeaders('/upper', [['X-Upper', '1']]) }])
    t.equal(r.streams[0].rstCode, H2_ERROR.PROTOCOL_ERROR)
    t.equal(r.streams[0].status, undefined, 'no response')
  })

  t.test('a repeated :path: RST_STREAM PROTOCOL_ERROR', async (t) => {
    const r = await h2Raw(srv, [{ headers: [...baseHeaders('/one'), [':path', '/two']] }])
    t.equal(r.streams[0].rstCode, H2_ERROR.PROTOCOL_ERROR)
  })

  t.test('200 headers: RST_STREAM ENHANCE_YOUR_CALM (maxHeaderListPairs 128)', async (t) => {
    const many = Array.from({ length: 200 }, (_, i): [string, string] => [`x-h-${i}`, 'v'])
    const r = await h2Raw(srv, [{ headers: baseHeaders('/many', many) }])
    t.equal(r.streams[0].rstCode, H2_ERROR.ENHANCE_YOUR_CALM)
  })

  t.test('connection: close: RST_STREAM PROTOCOL_ERROR', async (t) => {
    const r = await h2Raw(srv, [{ headers: baseHeaders('/conn', [['connection', 'close']]) }])
    t.equal(r.streams[0].rstCode, H2_ERROR.PROTOCOL_ERROR)
  })

  t.test('CR/LF and NUL in a value: the field is dropped, the request goes through', async (t) => {
    const before = srv.seen.length
    const r = await h2Raw(srv, [
      { headers: baseHeaders('/crlf', [['x-inject', 'a\r\nx-evil: 1'], ['x-kept', 'ok']]) },
      { headers: baseHeaders('/nul', [['x-nul', 'a\u0000b']]) }
    ])
    t.same(r.streams.map((s) => s.status), [200, 200])
    const crlf = srv.seen.slice(before).find((s) => s.path === '/crlf')
    const nul = srv.seen.slice(before).find((s) => s.path === '/nul')
    t.ok(crlf && nul, 'both requests reached the handler')
    t.equal(crlf?.headers['x-inject'], undefined, 'the CR/LF header never reached the handler')
    t.equal(crlf?.headers['x-evil'], undefined, 'nor anything smuggled in it')
    t.equal(crlf?.headers['x-kept'], 'ok', 'the valid header next to it did')
    t.equal(nul?.headers['x-nul'], undefined, 'the NUL header never reached the handler')
  })

  t.test('a 20 KB header: HEADERS + CONTINUATION', async (t) => {
    const big = 'b'.repeat(20 * 1024)
    const before = srv.seen.length
    const r = await h2Raw(srv, [{ headers: baseHeaders('/big', [['x-big', big]]) }])
    t.equal(r.streams[0].status, 200)
    t.equal(srv.seen.slice(before).find((s) => s.path === '/big')?.headers['x-big'], big, 'the value arrived whole')
  })

  t.test('HEADERS without END_STREAM, then DATA frames', async (t) => {
    const r = await h2Raw(srv, [{
      headers: baseHeaders('/post', [['content-type', 'text/plain']]).map(([n, v]): [string, string] => n === ':method' ? [n, 'POST'] : [n, v]),
      data: [Buffer.from('hello '), Buffer.from('world')]
    }])
    t.equal(r.streams[0].status, 200)
    t.equal(r.streams[0].json?.received, 'hello world', 'the handler read the body')
  })

  t.test('a bad stream then a good one on the same connection', async (t) => {
    const r = await h2Raw(srv, [
      { headers: baseHeaders('/bad', [['Bad', '1']]) },
      { headers: baseHeaders('/good') }
    ], { sequential: true })
    t.equal(r.streams[0].rstCode, H2_ERROR.PROTOCOL_ERROR)
    t.equal(r.streams[1].status, 200)
    t.equal(r.goawayCode, undefined)
  })

  t.test('a body larger than the default flow-control windows', async (t) => {
    const r = await h2Raw(srv, [{ headers: baseHeaders('/large') }, { headers: baseHeaders('/large') }])
    t.equal(r.timedOut, false)
    t.ok(r.streams.every((s) => s.status === 200 && s.body.equals(LARGE)), 'both bodies arrived whole')
  })

  t.test('DATA after END_STREAM: GOAWAY STREAM_CLOSED, the next stream is not sent', async (t) => {
    const r = await h2Raw(srv, [
      { headers: baseHeaders('/closed'), endStream: true, data: [Buffer.from('late')] },
      { headers: baseHeaders('/after') }
    ], { sequential: true })
    t.equal(r.timedOut, false, 'resolved on the GOAWAY')
    t.equal(r.goawayCode, H2_ERROR.STREAM_CLOSED)
    t.equal(r.goawayLastStreamId, 1)
    t.equal(r.streams[1].sent, false, 'stream 3 was never sent')
    t.equal(r.streams[1].status, undefined)
  })

  t.test('GOAWAY NO_ERROR: the stream it kept still completes; awaitClose sees the close', async (t) => {
    const r = await h2Raw(srv, [{ headers: baseHeaders('/bye') }], { awaitClose: true })
    t.equal(r.timedOut, false)
    t.equal(r.goawayCode, H2_ERROR.NO_ERROR)
    t.equal(r.streams[0].status, 200, 'the response arrived')
    t.equal(r.streams[0].json?.path, '/bye')
    t.equal(r.closed, true, 'the server closed the connection')
  })
})
