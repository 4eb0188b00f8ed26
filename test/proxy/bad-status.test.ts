// A NAS answering a status HTTP does not define: a clean 502, one answer,
// and nothing of the request (its path, its query) in the app log.
import t from 'tap'
import { createServer } from 'node:net'
import { bearer, get, startTestGateway } from '../helpers/gateway.js'

t.test('NAS status 600: 502, and the log holds no path or query', async (t) => {
  const nas = createServer((s) => {
    s.on('data', () => { s.end('HTTP/1.1 600 Weird\r\nContent-Type: audio/wav\r\nContent-Length: 4\r\n\r\nRIFF') })
    s.on('error', () => {})
  })
  await new Promise<void>((resolve) => nas.listen(0, '127.0.0.1', resolve))
  t.teardown(() => nas.close())
  const gw = await startTestGateway(t, { url: `http://127.0.0.1:${(nas.address() as { port: number }).port}` })
  const res = await get(gw, '/medicall/2016/01/01/0800_46701234567.wav?grant=SECRETGRANT', { headers: bearer(gw.token()) })
  t.equal(res.status, 502)
  t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_ERROR')
  const ok = await get(gw, '/medicall/x.wav', { headers: bearer(gw.token()) })
  t.equal(ok.status, 502, 'the gateway keeps answering')
  const logs = gw.logs.join('\n')
  t.notMatch(logs, /46701234567/, 'no recording name in the log')
  t.notMatch(logs, /SECRETGRANT/, 'no query in the log')
  t.notMatch(logs, /already sent/i, 'answered exactly once')
})
