// Closing the gateway (SIGTERM goes through the same close) lets a stream in
// flight finish, refuses new connections, and leaves a complete audit trail.
import t from 'tap'
import { request } from 'node:https'
import { connect } from 'node:net'
import { readFileSync } from 'node:fs'
import { bearer, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'

t.test('a stream in flight finishes while the gateway closes', async (t) => {
  let finishStream: () => void = () => {}
  const rest = Buffer.alloc(256 * 1024, 0x22)
  const first = Buffer.alloc(1024, 0x11)
  const nas = await startStubNas(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': first.length + rest.length })
    res.write(first)
    finishStream = () => res.end(rest)
  })
  const gw = await startTestGateway(t, nas)
  let closed: Promise<void> | undefined
  const body = await new Promise<Buffer>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/long.wav', headers: bearer(gw.token()), ca: readFileSync(testCerts().ca), agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.once('data', () => {
        // The first bytes are here: start closing, then let the NAS finish.
        closed = gw.gateway.close()
        setImmediate(finishStream)
      })
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve(Buffer.concat(chunks)))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(body.length, first.length + rest.length, 'the whole recording arrived')
  await closed
  const refused = await new Promise<string>((resolve) => {
    const s = connect({ host: '127.0.0.1', port: gw.port })
    s.on('connect', () => { s.destroy(); resolve('connected') })
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
  })
  t.equal(refused, 'ECONNREFUSED', 'no new connections after close')
  const fetch = gw.auditRecords().find((r) => r.event === 'fetch')
  t.match(fetch, { outcome: 'complete', bytes: first.length + rest.length, status: 200 }, 'the completion record was flushed before close returned')
})
