// X-Forwarded-For names the client in the audit record only when the
// connection comes from a configured trusted proxy.
import t from 'tap'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
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

t.test('a forwarded value that is not an IP address is not believed, over HTTP/1.1 and HTTP/2', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { trustedProxies: ['127.0.0.1/32'] } })
  const forged = ['not-an-ip<script>', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2ln', '203.0.113.7 ' + 'x'.repeat(500)]
  for (const proto of PROTOCOLS) {
    for (const value of forged) {
      const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), 'x-forwarded-for': value })
      t.equal(res.status, 200, `${proto}: served`)
      const id = res.headers['x-request-id']
      const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id))
      t.equal(fetch.clientIp, '127.0.0.1', `${proto} ${value.slice(0, 20)}: the peer stands for the client`)
      t.notOk('peerIp' in fetch, `${proto}: no second address`)
    }
  }
  const trail = JSON.stringify(gw.auditRecords())
  t.notOk(trail.includes('<script>') || trail.includes('eyJzdWIi'), 'the forged values are recorded nowhere')
})

t.test('a client outside the trusted proxies is its own address, IPv4 and IPv6 ranges kept apart, over HTTP/1.1 and HTTP/2', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { trustedProxies: ['10.0.0.0/8', 'fd00::/16', '::1'] } })
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), 'x-forwarded-for': '203.0.113.7' })
    t.equal(res.status, 200)
    const id = res.headers['x-request-id']
    const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id))
    t.equal(fetch.clientIp, '127.0.0.1', `${proto}: 127.0.0.1 is in no trusted range, so its X-Forwarded-For is not believed`)
  }
})

t.test('several hops: each trusted hop is passed over, the first untrusted one is the client', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { trustedProxies: ['127.0.0.1', '10.0.0.0/8'] } })
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), 'x-forwarded-for': '198.51.100.9, 203.0.113.7, 10.1.2.3' })
    const id = res.headers['x-request-id']
    const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id))
    t.equal(fetch.clientIp, '203.0.113.7', `${proto}: 10.1.2.3 is a trusted hop; 203.0.113.7 is the client (what it says came before is its own claim)`)
  }
})
