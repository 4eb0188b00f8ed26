// Connections that complete the TLS handshake and then send nothing are
// closed at limits.headersTimeoutMs (HTTP/1.1: Node's headers timeout counts
// from the connection, checked at most a second apart, see tls/server.ts) or
// limits.keepAliveTimeoutMs (HTTP/2: SessionWatch), not held for 27-37 s or
// twelve times the setting; connections that do send a request are left to
// the request and keep-alive timeouts. The client reads what it is sent:
// one that does not never sees the close behind the server's HTTP/2 SETTINGS.
import t from 'tap'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { bearer, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'

const CA = readFileSync(testCerts().ca)
/** Generous, and still far below the old 27-37 s for a 10 s setting, or 12 × the setting (HTTP/2). */
const SLACK_MS = 8000

function open (port: number, alpn: string): Promise<{ socket: TLSSocket, handshakeAt: number, closed: Promise<number>, received: () => string }> {
  return new Promise((resolve, reject) => {
    let text = ''
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: CA, ALPNProtocols: [alpn] }, () => {
      const handshakeAt = Date.now()
      resolve({ socket, handshakeAt, closed, received: () => text })
    })
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())))
    socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
    socket.once('error', reject)
  })
}

for (const [alpn, setting] of [['http/1.1', 'headersTimeoutMs'], ['h2', 'keepAliveTimeoutMs']] as const) {
  t.test(`${alpn}: a connection that sends nothing after its handshake is closed at limits.${setting}`, async (t) => {
    const nas = await startStubNas(t)
    const limits = { headersTimeoutMs: 1500, keepAliveTimeoutMs: 1500 }
    const gw = await startTestGateway(t, nas, { limits })
    const c = await open(gw.port, alpn)
    t.equal(c.socket.alpnProtocol, alpn)
    const closedAt = await Promise.race([c.closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), limits[setting] + SLACK_MS))])
    c.socket.destroy()
    t.not(closedAt, -1, `closed within ${limits[setting] + SLACK_MS} ms`)
    // Never early: the client had the whole setting.
    t.ok(closedAt - c.handshakeAt >= limits[setting] - 50, `not before the setting (${closedAt - c.handshakeAt} ms)`)
    t.comment(`closed ${closedAt - c.handshakeAt} ms after the handshake (setting ${limits[setting]} ms)`)
    t.equal(nas.requests.length, 0)
  })
}

t.test('http/1.1: a connection that was served stays open past headersTimeoutMs, up to the keep-alive timeout', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { headersTimeoutMs: 1000, keepAliveTimeoutMs: 60000 } })
  const c = await open(gw.port, 'http/1.1')
  const ask = (): string => `GET /medicall/a.wav HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${bearer(gw.token()).authorization}\r\n\r\n`
  c.socket.write(ask())
  await new Promise<void>((resolve) => { const check = (): void => { if (/\r\n\r\n/.test(c.received())) resolve(); else setTimeout(check, 20) }; check() })
  t.match(c.received(), /^HTTP\/1\.1 200 /)
  // Well past headersTimeoutMs from the handshake: the connection is kept.
  const kept = await Promise.race([c.closed.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 3000))])
  t.ok(kept, 'still open 3 s later')
  c.socket.write(ask())
  await new Promise<void>((resolve) => { const check = (): void => { if ((c.received().match(/HTTP\/1\.1 200 /g) ?? []).length === 2) resolve(); else setTimeout(check, 20) }; check() })
  t.equal(nas.requests.length, 2, 'the second request on the connection was served')
  c.socket.destroy()
})

t.test('http/1.1: a request that starts late and trickles gets the 408, not a silent close', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { headersTimeoutMs: 1500, keepAliveTimeoutMs: 60000 } })
  const c = await open(gw.port, 'http/1.1')
  // Half the setting in silence, then the first bytes of a request, then nothing more.
  await new Promise((resolve) => setTimeout(resolve, 750))
  c.socket.write('GET /medicall/a.wav HTTP/1.1\r\nHost: loc')
  const closedAt = await Promise.race([c.closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 1500 + SLACK_MS + 3000))])
  t.not(closedAt, -1, 'closed')
  t.match(c.received(), /^HTTP\/1\.1 408 /, 'answered 408')
  t.match(c.received(), /NASGUARD_ERR_REQUEST_TIMEOUT/)
  t.equal(nas.requests.length, 0)
})
