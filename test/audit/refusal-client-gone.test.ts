// A client that sends a request it may not make and hangs up at once is
// still refused, and the refusal is audited: probing paths and leaving
// before the answer must not go unrecorded (the gate judges a client that
// left; it only takes nothing for it). Over HTTP/1.1 and HTTP/2.
import t from 'tap'
import { connect as h2connect } from 'node:http2'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync } from 'node:fs'
import { startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'
import { Errors } from '../../src/errors.js'

const DENIED = '/stockholm/2016/01/01/083012_46701234567.wav'

/** Sends a GET and leaves at once, before any answer. */
function sendAndLeave (proto: Protocol, port: number, token: string): void {
  const ca = readFileSync(testCerts().ca)
  if (proto === 'h1') {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] }, () => {
      s.end(`GET ${DENIED} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`)
      s.destroy()
    })
    s.on('error', () => {})
    return
  }
  // Once connected, HEADERS and then RST_STREAM go out back to back.
  const session = h2connect(`https://localhost:${port}`, { ca, host: '127.0.0.1' } as never, () => {
    const req = session.request({ ':path': DENIED, authorization: `Bearer ${token}` })
    req.on('error', () => {})
    req.close()
    session.close()
  })
  session.on('error', () => {})
}

for (const proto of PROTOCOLS) {
  t.test(`${proto}: a denied request whose client left at once is audited as refused; the NAS is not asked`, async (t) => {
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas)
    const token = gw.token({ sub: 'prober', scope: 'recordings:read' })
    for (let i = 0; i < 5; i++) sendAndLeave(proto, gw.port, token)
    // Each attempt that reached the gateway is refused and recorded (one
    // that the connection's end beat to the server never became a request).
    const refused = await waitFor('refusal records', async () => {
      // Over HTTP/2 a stream reset before Node hands it over is refused by
      // the front door (counted per connection); one that got in is refused
      // by the gate for its missing scope.
      const r = gw.auditRecords().filter((x) => x.event === 'refusal' && ((x.path === DENIED && x.reason === Errors.InsufficientScope.spec.code) || x.reason === Errors.ProtocolReset.spec.code))
      return r.length >= 1 ? r : undefined
    })
    t.ok(refused.length >= 1, `${refused.length} refusal(s) recorded`)
    t.equal(gw.auditRecords().filter((x) => x.event === 'access').length, 0, 'no access record')
    t.equal(nas.requests.length, 0, 'the NAS got zero requests')
  })
}
