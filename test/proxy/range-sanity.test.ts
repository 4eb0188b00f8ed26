// Range abuse (the CVE-2011-3192 class) is refused before the NAS is asked;
// ordinary player ranges pass.
import t from 'tap'
import { RECORDING, bearer, get, rawTls, startStubNas, startTestGateway, statusOf } from '../helpers/gateway.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

t.test('refused Range headers: 416 NASGUARD_ERR_BAD_RANGE, zero NAS requests', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const many = 'bytes=' + Array.from({ length: 200 }, (_, i) => `${i}-${i}`).join(',')
  const overlapping = 'bytes=' + Array.from({ length: 200 }, () => '0-').join(',')
  const table = ['bytes=0-1,2-3', many, overlapping, 'items=0-1', 'bytes=abc', 'bytes=5-1', 'bytes=-0', 'bytes=', 'bytes=0-1,,2-3', 'bytes=1-2-3', 'bytes= 0 - 1', 'bytes=99999999999999999-']
  for (const range of table) {
    const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range } })
    t.equal(res.status, 416, `${range.slice(0, 40)}: 416`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_BAD_RANGE', range.slice(0, 40))
  }
  const twoHeaders = await rawTls(gw, `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${gw.token()}\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n`)
  t.ok([400, 416].includes(statusOf(twoHeaders.text)), 'two Range headers are refused')
  t.equal(nas.requests.length, 0, 'the NAS saw none of them')
})

t.test('with limits.maxRanges 4: disjoint lists pass, overlapping and suffix mixes do not', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { maxRanges: 4 } })
  for (const range of ['bytes=0-10,5-20', 'bytes=0-,100-200', 'bytes=-5,0-1', 'bytes=0-1,2-3,4-5,6-7,8-9']) {
    const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range } })
    t.equal(res.status, 416, `${range}: refused`)
  }
  t.equal(nas.requests.length, 0)
  await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=0-1,10-20,30-' } })
  t.equal(nas.requests.length, 1, 'a disjoint list reaches the NAS')
  t.equal(nas.requests[0].headers.range, 'bytes=0-1,10-20,30-')
})

t.test('ordinary ranges pass', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const head = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=0-99' } })
  t.equal(head.status, 206)
  t.ok(head.body.equals(RECORDING.subarray(0, 100)))
  const open = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=100-' } })
  t.equal(open.status, 206)
  t.equal(open.body.length, RECORDING.length - 100)
  t.equal(nas.requests.length, 2)
})
