// A client that starts a TLS handshake and stalls is cut off after
// limits.headersTimeoutMs, like one that sends nothing at all.
import t from 'tap'
import { connect } from 'node:net'
import { startStubNas, startTestGateway } from '../helpers/gateway.js'

function closedByServer (port: number, send: Buffer | null): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => { if (send) s.write(send) })
    s.on('error', () => {})
    s.on('close', () => resolve('closed'))
  })
}

t.test('stalled connections are closed by the server', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { headersTimeoutMs: 300 } })
  // These promises only resolve when the server closes the socket; the
  // test's own timeout would fail them otherwise.
  t.equal(await closedByServer(gw.port, null), 'closed', 'nothing sent')
  t.equal(await closedByServer(gw.port, Buffer.from([0x16])), 'closed', 'one byte of a TLS record, then nothing')
  t.equal(await closedByServer(gw.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])), 'closed', 'a partial ClientHello')
  t.equal(nas.requests.length, 0)
})
