// limits.clientConnections (src/tls/connection-caps.ts, front-door.ts): one
// client address may hold that many connections open; the next is closed at
// accept, before any TLS (no handshake), counted in
// nasguard_refusals_total{reason="client_connections"} and summed into one
// audit refusal record (with a count) per second per address. Other
// addresses are not affected, and a closed connection gives its place back.
import t, { type Test } from 'tap'
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { request as httpsRequest } from 'node:https'
import { readFileSync } from 'node:fs'
import { RECORDING, bearer, requestOptions, scrape, startStubNas, startTestGateway, testCerts, type Response, type TestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const SLOW = { tries: 400, intervalMs: 50 }
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
/** Connections refused in the first part of the test: a 4th, a 5th and a burst of 4. */
const REFUSED = 6

type Attempt = { ok: true, socket: TLSSocket } | { ok: false, error?: string }

/**
 * A TLS connection from `localAddress`: resolves with the socket once the
 * handshake is complete, or with ok: false when the connection closed (or
 * failed) before it was.
 */
function open (t: Test, gw: { port: number }, localAddress = '127.0.0.1', alpn?: string[]): Promise<Attempt> {
  return new Promise((resolve) => {
    let settled = false
    // localAddress goes to the TCP connect (Node's types leave it out of ConnectionOptions).
    const options: ConnectionOptions & { localAddress: string } = { host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: CA, localAddress, ...(alpn ? { ALPNProtocols: alpn } : {}) }
    const socket = tlsConnect(options)
    t.teardown(() => { socket.destroy() })
    socket.once('secureConnect', () => {
      if (settled) return
      settled = true
      resolve({ ok: true, socket })
    })
    let error: string | undefined
    socket.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
    socket.once('close', () => {
      if (settled) return
      settled = true
      resolve({ ok: false, error })
    })
  })
}

async function refusedConnections (gw: TestGateway): Promise<number> {
  const metrics = await scrape(gw.adminUrl)
  for (const [k, v] of metrics) {
    if (k.startsWith('nasguard_refusals_total{') && k.includes('reason="client_connections"') && k.includes('class="capacity"')) return v
  }
  return 0
}

function connectionRefusalRecords (gw: TestGateway, address: string): Array<Record<string, unknown>> {
  return gw.auditRecords().filter((r) => r.event === 'refusal' && r.reason === 'client_connections' && r.clientIp === address)
}

/** One GET over a fresh HTTPS/1.1 connection from `localAddress`. */
function getFrom (gw: { port: number }, path: string, headers: Record<string, string>, localAddress: string): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ ...requestOptions(gw, path, { headers }), localAddress }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** The gateway's count of open connections (refused ones included until they are gone). */
function serverConnections (gw: TestGateway): Promise<number> {
  return new Promise((resolve, reject) => {
    gw.gateway.app.server.getConnections((err, n) => { if (err) reject(err); else resolve(n) })
  })
}

t.test('limits.clientConnections: connections over an address\'s cap are closed before the handshake, counted and audited; other addresses and freed places are served', async (t) => {
  const nas = await startStubNas(t)
  // Held idle connections must outlive the test: an HTTP/1.1 connection with
  // no request is closed after headersTimeoutMs, an HTTP/2 session without a
  // stream after keepAliveTimeoutMs.
  const gw = await startTestGateway(t, nas, { limits: { clientConnections: 3, headersTimeoutMs: 60000, keepAliveTimeoutMs: 60000, drainTimeoutMs: 500 } })
  t.equal(await refusedConnections(gw), 0, 'the refusal counter is exported at 0 from the start')

  // Three connections from 127.0.0.1, handshakes complete (HTTP/1.1 and HTTP/2 alike).
  const held: TLSSocket[] = []
  for (const alpn of [['http/1.1'], ['h2'], undefined]) {
    const a = await open(t, gw, '127.0.0.1', alpn)
    t.ok(a.ok, `connection ${held.length + 1} of 3 from 127.0.0.1 completes its handshake`)
    if (a.ok) held.push(a.socket)
  }

  // Over the cap: closed at accept, no handshake.
  const fourth = await open(t, gw)
  t.notOk(fourth.ok, `a 4th connection from 127.0.0.1 is closed before the handshake (${fourth.ok ? 'it completed' : fourth.error ?? 'closed'})`)
  const fifth = await open(t, gw, '127.0.0.1', ['h2'])
  t.notOk(fifth.ok, 'and so is a 5th, offering h2')
  // A burst: each is refused, and they are audited together.
  const burst = await Promise.all([1, 2, 3, 4].map(async () => await open(t, gw)))
  t.ok(burst.every((a) => !a.ok), 'a burst of 4 more is refused too')
  t.equal(await refusedConnections(gw), REFUSED, 'nasguard_refusals_total{reason="client_connections",class="capacity"} counts each refused connection')
  for (const s of held) t.notOk(s.destroyed, 'the connections within the cap are still open')

  // Another address has its own share, and can download.
  const other = await open(t, gw, '127.0.0.2')
  t.ok(other.ok, 'a connection from 127.0.0.2 completes its handshake')
  const res = await getFrom(gw, PATH, bearer(gw.token()), '127.0.0.2')
  t.equal(res.status, 200, 'and 127.0.0.2 can download')
  t.ok(res.body.equals(RECORDING), 'the whole recording')
  t.equal(nas.requests.length, 1, 'the NAS was asked once, for that download')
  if (other.ok) other.socket.destroy()

  // The refusals of 127.0.0.1 are audited, summed, within about a second.
  const records = await waitFor('an audit refusal record for the refused connections', () => {
    const rs = connectionRefusalRecords(gw, '127.0.0.1')
    return rs.reduce((n, r) => n + Number(r.count), 0) >= REFUSED ? rs : undefined
  }, SLOW)
  // Summed per second: one record, or two if the refusals straddled a report.
  t.ok(records.length >= 1 && records.length <= 2, `one record a second, not one per connection (${records.length} records)`)
  t.equal(records.reduce((n, r) => n + Number(r.count), 0), REFUSED, `the records count the ${REFUSED} refused connections`)
  t.match(records[0], { event: 'refusal', reason: 'client_connections', status: 0, clientIp: '127.0.0.1' })
  t.equal(connectionRefusalRecords(gw, '127.0.0.2').length, 0, 'nothing refused from 127.0.0.2')
  t.ok(gw.logs.some((l) => l.includes('connections over limits.clientConnections closed at accept')), 'a warning was logged')

  // Closing one of the three gives its place back.
  const open127 = await serverConnections(gw)
  held[0].destroy()
  await waitFor('the gateway to see the connection close', async () => ((await serverConnections(gw)) < open127 ? true : undefined), SLOW)
  let again: Attempt = { ok: false }
  let tries = 0
  // The place is given back when the server-side socket has closed; a try
  // that lands just before that is refused, so a few are allowed.
  while (!again.ok && tries < 10) {
    tries++
    again = await open(t, gw)
    if (!again.ok) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.ok(again.ok, `after one of the three closed, a new connection from 127.0.0.1 completes its handshake (try ${tries})`)
  const refusedNow = await refusedConnections(gw)
  t.equal(refusedNow, REFUSED + tries - 1, 'only the refused tries were counted')

  // With its place taken again, 127.0.0.1 is at its cap once more.
  const over = await open(t, gw)
  t.notOk(over.ok, 'a further connection from 127.0.0.1 is refused again')
  t.equal(await refusedConnections(gw), refusedNow + 1)
  for (const s of held.slice(1)) t.notOk(s.destroyed, 'the held connections were never closed by the gateway')

  // Every refused connection ends up in some audit record's count.
  await waitFor('every refused connection audited', () => {
    const n = connectionRefusalRecords(gw, '127.0.0.1').reduce((m, r) => m + Number(r.count), 0)
    return n === refusedNow + 1 ? true : undefined
  }, SLOW)
  t.pass('the audit counts match the metric')
  for (const s of held) s.destroy()
  if (again.ok) again.socket.destroy()
})
