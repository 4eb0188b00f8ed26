// HTTP/2 on the TLS port (ALPN h2), with HTTP/1.1 still served to clients
// that only offer http/1.1. The gate (token, policy, listing guard) and the
// audit trail behave the same on both.
import t from 'tap'
import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync } from 'node:fs'
import { RECORDING, bearer, get, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

function connect (t: { teardown: (fn: () => unknown) => void }, gw: TestGateway): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    t.teardown(() => { if (!session.destroyed) session.destroy() })
    session.once('connect', () => resolve(session))
    session.once('error', reject)
  })
}

interface H2Response { headers: IncomingHttpHeaders, status: number, body: Buffer }

function h2get (session: ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ':path': path, ...headers })
    let response: IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => { response = h })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => resolve({ headers: response, status: Number(response[':status']), body: Buffer.concat(chunks) }))
    stream.on('error', reject)
    stream.end()
  })
}

t.test('HTTP/2: ALPN h2, the gate, streaming, ranges, and the audit trail', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const session = await connect(t, gw)
  t.equal(session.alpnProtocol, 'h2', 'ALPN selected h2')

  const ok = await h2get(session, '/medicall/2024/01/02/call.wav', bearer(gw.token()))
  t.equal(ok.status, 200, 'a valid token: 200')
  t.equal(ok.headers['content-type'], 'audio/wav')
  t.ok(ok.body.equals(RECORDING), `the recording, byte for byte (${ok.body.length} of ${RECORDING.length})`)
  t.match(String(ok.headers['strict-transport-security']), /^max-age=\d+/, 'HSTS on h2 too')
  t.equal(nas.requests.length, 1, 'one request reached the NAS')
  t.equal(nas.requests[0].url, '/medicall/2024/01/02/call.wav')
  const requestId = String(ok.headers['x-request-id'])

  const seen = nas.requests.length
  const noToken = await h2get(session, '/medicall/2024/01/02/call.wav')
  t.equal(noToken.status, 401, 'no token: 401')
  t.match(String(noToken.headers['content-type']), /^application\/json/)
  t.same(Object.keys(JSON.parse(noToken.body.toString())).sort(), ['error', 'message'], 'the JSON error shape')
  t.equal(JSON.parse(noToken.body.toString()).error, 'NASGUARD_ERR_TOKEN_MISSING')
  t.match(String(noToken.headers['www-authenticate']), /^Bearer realm="nasguard"/)

  const dir = await h2get(session, '/medicall/2024/01/02/', bearer(gw.token()))
  t.equal(dir.status, 403, 'a directory: 403')
  t.equal(JSON.parse(dir.body.toString()).error, 'NASGUARD_ERR_DIRECTORY')

  const scope = await h2get(session, '/stockholm/a.wav', bearer(gw.token()))
  t.equal(scope.status, 403, 'a path the token has no scope for: 403')
  t.equal(nas.requests.length, seen, 'none of the refused requests reached the NAS')

  const range = await h2get(session, '/medicall/2024/01/02/call.wav', { ...bearer(gw.token()), range: 'bytes=0-99' })
  t.equal(range.status, 206, 'a Range request: 206')
  t.equal(range.headers['content-range'], `bytes 0-99/${RECORDING.length}`)
  t.ok(range.body.equals(RECORDING.subarray(0, 100)), 'the first 100 bytes')
  t.equal(nas.requests.at(-1)?.headers.range, 'bytes=0-99', 'the range was forwarded')

  const fetch = await waitFor('the completion record of the h2 fetch', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.match(fetch, { outcome: 'complete', status: 200, bytes: ok.body.length, auth: 'jwt', subject: 'alice' }, 'audited as complete with the bytes sent')
  t.equal(fetch.bytes, RECORDING.length)

  t.equal(session.destroyed, false, 'every request above went over the one h2 session')
})

t.test('an HTTP/1.1-only client is still served', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token()

  // Raw HTTP/1.1 over a TLS connection that offers only http/1.1.
  const raw = await new Promise<{ alpn: string | false | null, text: string }>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca), ALPNProtocols: ['http/1.1'] }, () => {
      socket.write(`GET /medicall/a.wav HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`)
    })
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => resolve({ alpn: socket.alpnProtocol, text: Buffer.concat(chunks).toString('latin1') }))
    socket.on('error', reject)
  })
  t.equal(raw.alpn, 'http/1.1', 'ALPN selected http/1.1')
  t.match(raw.text, /^HTTP\/1\.1 200 /, 'an HTTP/1.1 200')
  t.match(raw.text, /\r\ncontent-type: audio\/wav\r\n/i)
  const body = Buffer.from(raw.text.slice(raw.text.indexOf('\r\n\r\n') + 4), 'latin1')
  t.ok(body.equals(RECORDING), 'the recording, byte for byte')

  // And a client that offers no ALPN at all (node:https with agent:false).
  const res = await get(gw, '/medicall/a.wav', { headers: bearer(token) })
  t.equal(res.status, 200, 'node:https without ALPN: 200')
  t.ok(res.body.equals(RECORDING))
  const refused = await get(gw, '/medicall/a.wav')
  t.equal(refused.status, 401, 'and the gate applies: no token, 401')
  t.equal(nas.requests.length, 2)
})
