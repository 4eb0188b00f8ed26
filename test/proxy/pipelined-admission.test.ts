// Pipelined HTTP/1.1 requests and the NAS pool (issue 13). A pipelined
// request waits for the responses before it; it must take no NAS connection
// (nor a place in its client's share) until its response owns the
// connection, because only that response is watched by SendWatch: a queued
// one has no socket to fall behind on. Otherwise one connection read a
// little above limits.minSendRate holds limits.clientFetches NAS
// connections at a fraction of that rate each, and a few such connections
// hold the whole pool.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { bearer, requestOptions, scrape, startTestGateway, testCerts, type Teardown, type TestGateway } from '../helpers/gateway.js'
import { bigNas } from '../helpers/big-nas.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const MB = 1024 * 1024
/** Generous bounds for what follows within seconds when the gateway works. */
const WAIT = { tries: 300, intervalMs: 100 } // 30 s

const MIN_SEND_RATE = 32 * 1024
/** Each pipelining connection is read at this rate: well above minSendRate, so its head response is never cut. */
const READ_RATE = 16 * MIN_SEND_RATE
const PIPELINED = 4
const POOL = 8

const IN_USE = 'nasguard_upstream_connections_in_use'
const ACTIVE = 'nasguard_active_streams'


interface Pipeliner { socket: TLSSocket, got: () => number, started: number }

/** One TLS connection from `localAddress` with PIPELINED GETs written at once, read at READ_RATE (the socket paused whenever it is ahead). */
function pipeliner (t: Teardown, gw: TestGateway, localAddress: string): Pipeliner {
  let got = 0
  let resume: NodeJS.Timeout | undefined
  const started = Date.now()
  const token = gw.token()
  // localAddress reaches net.connect (tls.ConnectionOptions does not declare it).
  const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: CA, ALPNProtocols: ['http/1.1'], localAddress } as ConnectionOptions, () => {
    let out = ''
    for (let i = 0; i < PIPELINED; i++) out += `GET /medicall/pipelined-${i}.wav HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`
    socket.write(out)
  })
  socket.on('error', () => {})
  socket.on('data', (c: Buffer) => {
    got += c.length
    const ahead = got - READ_RATE * (Date.now() - started) / 1000
    if (ahead > 0 && resume === undefined) {
      socket.pause()
      resume = setTimeout(() => { resume = undefined; socket.resume() }, Math.ceil(ahead / READ_RATE * 1000))
    }
  })
  socket.on('close', () => clearTimeout(resume))
  t.teardown(() => socket.destroy())
  return { socket, got: () => got, started }
}

/** The response status of a download from `localAddress`; the body is not wanted (the response is destroyed). */
function statusFrom (gw: TestGateway, path: string, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ ...requestOptions(gw, path, { headers: bearer(gw.token()) }), localAddress }, (res) => {
      resolve(res.statusCode ?? 0)
      res.destroy()
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('pipelined requests on slowly read connections take no NAS connection while they wait', async (t) => {
  const nas = await bigNas(t)
  const gw = await startTestGateway(t, nas, {
    upstream: { connections: POOL, queueTimeoutMs: 1000, timeoutMs: 2000 },
    limits: { sendTimeoutMs: 4000, minSendRate: MIN_SEND_RATE, clientFetches: PIPELINED }
  })
  // Two addresses, one connection each, PIPELINED GETs each: 8 requests, a pool of 8.
  const conns = ['127.0.0.2', '127.0.0.3'].map((address) => pipeliner(t, gw, address))

  // Once each has read 2 MB, the kernel's buffers are full and the reading is throttled.
  await waitFor('both connections to read 2 MB', () => conns.every((c) => c.got() >= 2 * MB) ? true : undefined, WAIT)
  const atLoad = await scrape(gw.adminUrl)
  t.comment(`in use ${String(atLoad.get(IN_USE))} of ${POOL}, NAS requests open ${nas.open.size}, read ${conns.map((c) => c.got()).join(' + ')} bytes`)
  t.ok((atLoad.get(IN_USE) ?? NaN) <= conns.length, 'at most one NAS connection per pipelining connection')
  t.ok(nas.open.size <= conns.length, 'at most one NAS request open per pipelining connection')
  t.ok(nas.requests.filter((r) => r.url.includes('/pipelined-')).length <= conns.length, 'the queued requests never reached the NAS')

  t.equal(await statusFrom(gw, '/medicall/other-address.wav', '127.0.0.9'), 200, 'a client from another address is served')

  const after = await scrape(gw.adminUrl)
  t.ok((after.get(IN_USE) ?? NaN) <= conns.length + 1, 'the pipelining connections still hold at most one NAS connection each')
  const secs = (Date.now() - Math.min(...conns.map((c) => c.started))) / 1000
  t.comment(`each connection read ~${Math.round(conns.reduce((n, c) => n + c.got(), 0) / conns.length / secs)} B/s (minSendRate ${MIN_SEND_RATE})`)

  // The clients leave: every NAS connection and stream is released.
  for (const c of conns) c.socket.destroy()
  await waitFor('NAS connections, active streams and NAS requests back to 0', async () => {
    const m = await scrape(gw.adminUrl)
    return m.get(IN_USE) === 0 && m.get(ACTIVE) === 0 && nas.open.size === 0 ? true : undefined
  }, WAIT)
  t.pass('NAS connections, active streams and NAS requests back to 0 once the clients left')
})
