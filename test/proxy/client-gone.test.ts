// A client that leaves, or stops reading, releases its NAS request, and the
// audit trail still closes every access with a completion record.
import t from 'tap'
import { request } from 'node:https'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import { bearer, scrape, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)

t.test('a client that leaves before the NAS answers cancels the NAS request', async (t) => {
  let nasSawClose: () => void = () => {}
  const closed = new Promise<void>((resolve) => { nasSawClose = resolve })
  let reached: () => void = () => {}
  const atNas = new Promise<void>((resolve) => { reached = resolve })
  const pending: ServerResponse[] = []
  const nas = await startStubNas(t, (req, res) => {
    // Never answers on its own: only the gateway's cancel ends this request.
    pending.push(res)
    req.socket.once('close', () => nasSawClose())
    reached()
  })
  t.teardown(() => { for (const r of pending) r.destroy() })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 600000 } })
  const req = request({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/slow.wav', headers: bearer(gw.token()), ca: CA, agent: false })
  req.on('error', () => {})
  req.end()
  await atNas
  req.destroy()
  await closed
  t.equal(nas.requests.length, 1, 'the NAS was asked once, then the request was cancelled')
  const fetch = await waitFor('the completion record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.equal(fetch.outcome, 'client-aborted')
  t.equal(fetch.status, 0, 'no status was sent')
})

t.test('a client that stops reading is cut off after limits.sendTimeoutMs, and so is its NAS request', async (t) => {
  let nasSawClose: () => void = () => {}
  const closed = new Promise<void>((resolve) => { nasSawClose = resolve })
  const chunk = Buffer.alloc(64 * 1024, 0x33)
  const nas = await startStubNas(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 512 * 1024 * 1024 })
    const pump = (): void => { while (res.write(chunk)) { /* fill until backpressure */ } }
    res.on('drain', pump)
    res.once('close', () => nasSawClose())
    pump()
  })
  const gw = await startTestGateway(t, nas, { limits: { sendTimeoutMs: 300 } })
  const gotFirst = new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/big.wav', headers: bearer(gw.token()), ca: CA, agent: false }, (res) => {
      res.once('data', () => { res.pause(); resolve() })
    })
    req.on('error', () => {})
    req.on('close', () => reject(new Error('closed before the first byte')))
    req.end()
  })
  await gotFirst
  await closed
  const fetch = await waitFor('the completion record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.equal(fetch.outcome, 'client-too-slow', 'recorded as cut for being too slow')
  t.ok((fetch.bytes as number) < 512 * 1024 * 1024, 'only part of the recording was sent')
  const m = await waitFor('active streams back to 0', async () => ((await scrape(gw.adminUrl)).get('nasguard_active_streams') === 0 ? true : undefined))
  t.ok(m)
})

t.test('every access record gets its completion, even when the connection dies during the fsync', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token()
  // A good request, then on the same connection a request Node cannot frame:
  // the parser error destroys the socket while the first request's access
  // record may still be in flight.
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: CA }, () => {
        s.write(`GET /medicall/a${i}.wav HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n` +
          'GET /medicall/b.wav HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
      })
      s.on('data', () => {})
      s.on('error', () => {})
      s.on('close', () => resolve())
    })
  }
  const records = await waitFor('a completion for every access', () => {
    const rs = gw.auditRecords()
    const access = rs.filter((r) => r.event === 'access').map((r) => r.requestId)
    const done = new Set(rs.filter((r) => r.event === 'fetch').map((r) => r.requestId))
    return access.length === 5 && access.every((id) => done.has(id)) ? rs : undefined
  })
  t.equal(records.filter((r) => r.event === 'access').length, 5)
  const m = await waitFor('active streams back to 0', async () => ((await scrape(gw.adminUrl)).get('nasguard_active_streams') === 0 ? true : undefined))
  t.ok(m)
})
