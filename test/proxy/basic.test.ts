import t from 'tap'
import { RECORDING, bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'

t.test('a valid token gets the recording, streamed from the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, '/medicall/2016/01/01/083012_46701234567.wav', { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.equal(res.headers['content-type'], 'audio/wav')
  t.ok(res.body.equals(RECORDING), 'body is byte-identical')
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].url, '/medicall/2016/01/01/083012_46701234567.wav')
})
