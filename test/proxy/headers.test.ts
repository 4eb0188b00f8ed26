// Headers cross the gateway through allow-lists in both directions:
// hop-by-hop headers, whatever Connection names, the client's credentials
// and cookies never reach the NAS; the NAS's server banner, cookies and hop
// headers never reach the client; security headers are on every answer.
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RECORDING, bearer, get, startStubNas, startTestGateway, type Response } from '../helpers/gateway.js'

const WAV = '/medicall/2016/01/01/083012_46701234567.wav'
const MP3 = '/medicall/2016/01/01/083012_46701234567.mp3'

function basic (user: string, pass: string): string {
  return 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64')
}

t.test('hop-by-hop, credentials, cookies and forwarding headers never reach the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token()
  const res = await get(gw, WAV, {
    headers: {
      ...bearer(token),
      connection: 'keep-alive, X-Secret-Hop',
      'x-secret-hop': '1',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      'proxy-authorization': 'Basic x',
      cookie: 'a=b',
      'x-forwarded-for': '1.2.3.4'
    }
  })
  t.equal(res.status, 200)
  t.ok(res.body.equals(RECORDING))
  t.equal(nas.requests.length, 1)
  const h = nas.requests[0].headers
  t.equal(h['x-secret-hop'], undefined, 'a header named by Connection is dropped')
  t.equal(h['keep-alive'], undefined, 'Keep-Alive is dropped')
  t.equal(h.te, undefined, 'TE is dropped')
  t.equal(h['proxy-authorization'], undefined, 'Proxy-Authorization is dropped')
  t.equal(h.cookie, undefined, 'Cookie is dropped')
  t.equal(h['x-forwarded-for'], undefined, 'the client X-Forwarded-For is dropped')
  t.equal(h.authorization, undefined, 'no upstream credentials configured: no Authorization at all')
  t.notMatch(String(h.connection ?? ''), /x-secret-hop/i, 'Connection from the client is not passed on')
  const all = JSON.stringify(h)
  t.notOk(all.includes(token), 'the token appears nowhere in what the NAS saw')
  t.notOk(/bearer/i.test(all), 'no Bearer anywhere in what the NAS saw')
  t.notOk(all.includes('1.2.3.4'), 'the spoofed client address is not passed on')
})

t.test('with upstream credentials the NAS sees Basic auth, never the client token', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { username: 'gateway', password: 'nas-pass' } })
  const token = gw.token()
  const res = await get(gw, WAV, { headers: bearer(token) })
  t.equal(res.status, 200)
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].headers.authorization, basic('gateway', 'nas-pass'))
  t.notOk(JSON.stringify(nas.requests[0].headers).includes(token), 'the client token is not forwarded')
})

t.test('upstream.passwordFile is read, its trailing newline ignored', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-secret-'))
  const file = join(dir, 'nas-password')
  writeFileSync(file, 'file-pass\n', { mode: 0o600 })
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { username: 'gateway', passwordFile: file } })
  const res = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.equal(nas.requests[0].headers.authorization, basic('gateway', 'file-pass'))
})

t.test('NAS response headers outside the allow-list never reach the client', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => {
    res.writeHead(200, {
      'content-type': 'audio/wav',
      'content-length': RECORDING.length,
      server: 'StubNAS/1.0',
      'x-powered-by': 'php',
      'set-cookie': 'nas=1',
      connection: 'close, X-Nas-Hop',
      'x-nas-hop': '1',
      etag: '"rec-1"'
    })
    res.end(RECORDING)
  })
  const res = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.ok(res.body.equals(RECORDING))
  t.equal(res.headers.server, undefined, 'Server is dropped')
  t.equal(res.headers['x-powered-by'], undefined, 'X-Powered-By is dropped')
  t.equal(res.headers['set-cookie'], undefined, 'Set-Cookie is dropped')
  t.equal(res.headers['x-nas-hop'], undefined, 'a header named by the NAS Connection is dropped')
  t.notMatch(String(res.headers.connection ?? ''), /x-nas-hop/i, 'the NAS Connection header is not passed on')
  t.equal(res.headers['content-type'], 'audio/wav')
  t.equal(res.headers.etag, '"rec-1"', 'allowed headers still pass')
})

t.test('Content-Type comes from the extension, not from the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': RECORDING.length })
    res.end(RECORDING)
  })
  const mp3 = await get(gw, MP3, { headers: bearer(gw.token()) })
  t.equal(mp3.status, 200)
  t.equal(mp3.headers['content-type'], 'audio/mpeg')

  nas.handle((_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/x-something-else', 'content-length': RECORDING.length })
    res.end(RECORDING)
  })
  const wav = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(wav.status, 200)
  t.equal(wav.headers['content-type'], 'audio/wav')
})

t.test('every answer carries the security headers', async (t) => {
  const securityHeaders = (res: Response, label: string): void => {
    t.match(res.headers['strict-transport-security'], /max-age=\d+/, `${label}: HSTS with max-age`)
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${label}: nosniff`)
    t.equal(res.headers['cache-control'], 'no-store', `${label}: no-store`)
  }
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  const ok = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(ok.status, 200)
  securityHeaders(ok, '200')

  const noToken = await get(gw, WAV)
  t.equal(noToken.status, 401)
  securityHeaders(noToken, '401')

  const wrongScope = await get(gw, WAV, { headers: bearer(gw.token({ scope: 'other' })) })
  t.equal(wrongScope.status, 403)
  securityHeaders(wrongScope, '403')

  nas.handle((_req, res) => { res.writeHead(404, { 'content-type': 'text/html' }); res.end('<h1>nope</h1>') })
  const missing = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(missing.status, 404)
  securityHeaders(missing, '404')

  nas.handle((_req, res) => { res.writeHead(500, { 'content-type': 'text/plain' }); res.end('boom') })
  const broken = await get(gw, WAV, { headers: bearer(gw.token()) })
  t.equal(broken.status, 502)
  securityHeaders(broken, '502')
})
