// Range, HEAD and conditional requests pass through the gateway the way a
// plain file server would answer them, and the NAS sees the same request.
import t from 'tap'
import { RECORDING, bearer, get, serveRecording, startStubNas, startTestGateway } from '../helpers/gateway.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

t.test('Range: bytes=0-99 gets 206 with the first 100 bytes', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=0-99' } })
  t.equal(res.status, 206)
  t.equal(res.headers['content-range'], `bytes 0-99/${RECORDING.length}`, 'content-range is passed on')
  t.equal(res.headers['content-length'], '100')
  t.equal(res.headers['content-type'], 'audio/wav')
  t.ok(res.body.equals(RECORDING.subarray(0, 100)), 'body is the first 100 bytes')
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].headers.range, 'bytes=0-99', 'the NAS saw the same Range header')
})

t.test('an open-ended range from the middle gets the tail', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const start = RECORDING.length - 10
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: `bytes=${start}-` } })
  t.equal(res.status, 206)
  t.equal(res.headers['content-range'], `bytes ${start}-${RECORDING.length - 1}/${RECORDING.length}`)
  t.ok(res.body.equals(RECORDING.subarray(start)), 'body is the last 10 bytes')
})

t.test('a range past the end gets 416 in the gateway error shape', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: `bytes=${RECORDING.length + 10}-` } })
  t.equal(res.status, 416)
  t.match(res.headers['content-type'], /^application\/json/)
  const body = JSON.parse(res.body.toString()) as { error: string, message: string }
  t.equal(body.error, 'NASGUARD_ERR_RANGE_NOT_SATISFIABLE')
  t.type(body.message, 'string')
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].headers.range, `bytes=${RECORDING.length + 10}-`)
})

t.test('HEAD gets 200, the length and no body; the NAS sees HEAD', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { method: 'HEAD', headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.equal(res.headers['content-length'], String(RECORDING.length), 'content-length is the recording length')
  t.equal(res.headers['content-type'], 'audio/wav')
  t.equal(res.body.length, 0, 'no body')
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].method, 'HEAD', 'the NAS saw HEAD')
})

t.test('conditional request headers are forwarded; a 304 passes through', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  nas.handle((req, res) => {
    if (req.headers['if-none-match'] === '"rec-1"') {
      res.writeHead(304, { etag: '"rec-1"' })
      res.end()
      return
    }
    serveRecording(req, res)
  })
  const first = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(first.status, 200)
  t.equal(first.headers.etag, '"rec-1"', 'the etag reaches the client')

  const res = await get(gw, PATH, {
    headers: { ...bearer(gw.token()), 'if-none-match': '"rec-1"', 'if-modified-since': 'Fri, 01 Jan 2016 08:30:12 GMT' }
  })
  t.equal(res.status, 304)
  t.equal(res.body.length, 0)
  t.equal(nas.requests.length, 2)
  t.equal(nas.requests[1].headers['if-none-match'], '"rec-1"', 'If-None-Match forwarded')
  t.equal(nas.requests[1].headers['if-modified-since'], 'Fri, 01 Jan 2016 08:30:12 GMT', 'If-Modified-Since forwarded')
})

t.test('If-Range is forwarded with the Range it guards', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=0-9', 'if-range': '"rec-1"' } })
  t.equal(res.status, 206)
  t.equal(nas.requests[0].headers['if-range'], '"rec-1"')
  t.equal(nas.requests[0].headers.range, 'bytes=0-9')
})
