// A client that goes away mid-recording cancels the NAS request: the
// gateway does not keep pulling a recording nobody will receive.
import t from 'tap'
import { request as httpsRequest } from 'node:https'
import { readFileSync } from 'node:fs'
import { RECORDING, bearer, get, scrape, serveRecording, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const CHUNK = Buffer.alloc(64 * 1024, 0x55)

t.test('client abort cancels the upstream request; audit says aborted', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)

  // The NAS streams forever, 64 KB at a time, until its response closes.
  const nasClosed = new Promise<{ finished: boolean }>((resolve) => {
    nas.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav' })
      const timer = setInterval(() => res.write(CHUNK), 20)
      res.write(CHUNK)
      res.once('close', () => {
        clearInterval(timer)
        resolve({ finished: res.writableFinished })
      })
    })
  })

  const client = await new Promise<{ status: number, requestId: string, firstChunk: number }>((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      servername: 'localhost',
      port: gw.port,
      path: PATH,
      headers: bearer(gw.token()),
      ca: readFileSync(testCerts().ca),
      agent: false
    }, (res) => {
      res.once('data', (chunk: Buffer) => {
        resolve({ status: res.statusCode ?? 0, requestId: String(res.headers['x-request-id']), firstChunk: chunk.length })
        req.destroy()
      })
    })
    req.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'ECONNRESET') reject(err) })
    req.end()
  })
  t.equal(client.status, 200)
  t.ok(client.firstChunk > 0, 'the client got the start of the body')

  const closed = await nasClosed
  t.equal(closed.finished, false, 'the NAS response was cut off, not finished')
  t.equal(nas.requests.length, 1)

  const fetch = await waitFor('the fetch audit record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === client.requestId))
  t.equal(fetch.outcome, 'client-aborted')
  t.equal(fetch.status, 200)
  t.type(fetch.bytes, 'number')

  // Nothing emits when the gauge moves: poll the scrape a bounded number of times.
  let m = await scrape(gw.adminUrl)
  for (let i = 0; i < 50 && m.get('nasguard_active_streams') !== 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    m = await scrape(gw.adminUrl)
  }
  t.equal(m.get('nasguard_active_streams'), 0, 'nasguard_active_streams is back to 0')
  t.equal(m.get('nasguard_upstream_errors_total{kind="body"}') ?? 0, 0, 'a client abort is not counted as a NAS failure')
})

t.test('an aborted stream does not break the next request', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const nasClosed = new Promise<void>((resolve) => {
    nas.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/wav' })
      const timer = setInterval(() => res.write(CHUNK), 20)
      res.write(CHUNK)
      res.once('close', () => { clearInterval(timer); resolve() })
    })
  })
  await new Promise<void>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: PATH, headers: bearer(gw.token()), ca: readFileSync(testCerts().ca), agent: false }, (res) => {
      res.once('data', () => { req.destroy(); resolve() })
    })
    req.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'ECONNRESET') reject(err) })
    req.end()
  })
  await nasClosed

  nas.handle(serveRecording)
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.ok(res.body.equals(RECORDING))
})
