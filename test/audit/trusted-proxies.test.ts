// X-Forwarded-For names the client in the audit record only when the
// connection comes from a configured trusted proxy.
import t from 'tap'
import { bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

t.test('without trusted proxies the header is ignored', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), 'x-forwarded-for': '203.0.113.7' } })
  t.equal(res.status, 200)
  const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.equal(fetch.clientIp, '127.0.0.1', 'the socket peer is the client')
  t.notOk('peerIp' in fetch)
  t.notOk(JSON.stringify(gw.auditRecords()).includes('203.0.113.7'), 'the forged address is recorded nowhere')
})

t.test('from a trusted proxy the forwarded client is recorded, with the proxy as peer', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { trustedProxies: ['127.0.0.1/32'] } })
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), 'x-forwarded-for': '203.0.113.7' } })
  t.equal(res.status, 200)
  const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.equal(fetch.clientIp, '203.0.113.7')
  t.equal(fetch.peerIp, '127.0.0.1')
  t.equal(gw.auditRecords().find((r) => r.event === 'access')?.clientIp, '203.0.113.7')
})
