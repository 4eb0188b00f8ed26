// listen.proxyProtocol (src/tls/front-door.ts, proxy-protocol.ts): behind a
// load balancer that passes TLS through, a trusted proxy's PROXY header
// names the client, and that client is the peer for the audit record and
// the per-client connection cap and grants' bindIp, over HTTP/1.1 and
// HTTP/2. A header from an
// untrusted address is not believed (plaintext 400), and a trusted proxy's
// connection without a valid header is closed before TLS, counted, logged
// and audited: no request reaches the NAS.
import t, { type Test } from 'tap'
import { connect as netConnect, createServer, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import { bearer, scrape, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, type Protocol } from '../helpers/protocols.js'
import { waitFor, within } from '../helpers/wait.js'

async function until (what: string, cond: () => boolean): Promise<void> {
  await waitFor(what, () => cond() ? true : undefined, SLOW)
}
import { V2_SIGNATURE } from '../../src/tls/proxy-protocol.js'
import { GrantSigner } from '../../src/auth/grants.js'

const CA = readFileSync(testCerts().ca)
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const PROXY = '127.0.0.1'
const SLOW = { tries: 400, intervalMs: 50 }

/** A v2 PROXY header (TCP over IPv4) naming `client`; command 0 is LOCAL. */
function header (client: string, command = 1, family = 0x11): Buffer {
  const block = Buffer.alloc(12)
  Buffer.from(client.split('.').map(Number)).copy(block, 0)
  Buffer.from([127, 0, 0, 1]).copy(block, 4)
  block.writeUInt16BE(40000, 8)
  block.writeUInt16BE(443, 10)
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20 | command, family, 0, 12]), block])
}

/** A TCP connection to the gateway from `localAddress`. */
function raw (t: Test, gw: { port: number }, localAddress = PROXY): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port: gw.port, localAddress })
    t.teardown(() => { s.destroy() })
    s.setNoDelay(true)
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

/** Writes the chunks one after another, each in its own TCP segment as far as the test can make it. */
async function writeApart (s: Socket, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) {
    await new Promise<void>((resolve) => s.write(c, () => resolve()))
    await new Promise((resolve) => setTimeout(resolve, 30))
  }
}

type Tls = { ok: true, socket: TLSSocket } | { ok: false }

/** TLS over an already-open socket: ok once the handshake completes, not ok if it closes first. */
function tlsOver (t: Test, s: Socket, proto: Protocol): Promise<Tls> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ socket: s, servername: 'localhost', ca: CA, ALPNProtocols: [proto === 'h2' ? 'h2' : 'http/1.1'] })
    t.teardown(() => { socket.destroy() })
    let settled = false
    socket.on('error', () => {})
    socket.once('secureConnect', () => { settled = true; resolve({ ok: true, socket }) })
    socket.once('close', () => { if (!settled) resolve({ ok: false }) })
  })
}

/** One GET over an established TLS socket (with a bearer token unless `token` is empty); resolves with the status. */
function getOver (socket: TLSSocket, proto: Protocol, token: string, path = PATH): Promise<number> {
  const auth = token === '' ? {} : bearer(token)
  if (proto === 'h2') {
    return new Promise((resolve, reject) => {
      const session = http2Connect('https://localhost', { createConnection: () => socket })
      session.on('error', reject)
      const stream = session.request({ ':method': 'GET', ':path': path, ...auth })
      let status = 0
      stream.on('response', (h) => { status = Number(h[':status']) })
      stream.resume()
      stream.on('end', () => { session.close(); resolve(status) })
      stream.on('error', reject)
      stream.end()
    })
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'))?.[1] ?? 0)))
    socket.on('error', reject)
    const authLine = token === '' ? '' : `authorization: Bearer ${token}\r\n`
    socket.write(`GET ${path} HTTP/1.1\r\nhost: localhost\r\n${authLine}connection: close\r\n\r\n`)
  })
}

/** Everything the gateway sends until it closes. */
function readAll (s: Socket): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('error', () => {})
    s.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
  })
}

function closed (s: Socket): Promise<void> {
  return new Promise((resolve) => { if (s.destroyed) resolve(); else s.once('close', () => resolve()) })
}

function records (gw: TestGateway, reason: string): Array<Record<string, unknown>> {
  return gw.auditRecords().filter((r) => r.reason === reason)
}

async function refusals (gw: TestGateway, reason: string): Promise<number> {
  for (const [k, v] of await scrape(gw.adminUrl)) if (k.startsWith('nasguard_refusals_total{') && k.includes(`reason="${reason}"`)) return v
  return 0
}

t.test('the proxied client is the peer: audit clientIp and the per-client connection cap, h1 and h2', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { proxyProtocol: { trustedProxies: [PROXY] } }, limits: { clientConnections: 2 } })
  for (const proto of PROTOCOLS) {
    const client = proto === 'h1' ? '203.0.113.7' : '203.0.113.8'
    const s = await raw(t, gw)
    s.write(header(client))
    const conn = await tlsOver(t, s, proto)
    if (!conn.ok) throw new Error('handshake after a valid PROXY header failed')
    t.equal(await getOver(conn.socket, proto, gw.token()), 200, `${proto}: served`)
    await until(`an access record for ${client}`, () => gw.auditRecords().some((r) => r.event === 'access' && r.clientIp === client))
    const access = gw.auditRecords().filter((r) => r.event === 'access' && r.path === PATH)
    t.equal(access.at(-1)?.clientIp, client, `${proto}: the audit record names the proxied client, not the proxy`)
    t.notOk(gw.logs.some((l) => l.includes(client) && l.includes(`"remoteAddress":"${PROXY}"`)), `${proto}: no log line names the proxy for it`)

    // limits.clientConnections: 2, counted per proxied client. All of
    // these come from the proxy's one address.
    const held: TLSSocket[] = []
    for (const other of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
      const h = await raw(t, gw)
      h.write(header(other))
      const c = await tlsOver(t, h, proto)
      t.ok(c.ok, `${proto}: ${other} is served (three clients behind one proxy, cap 2 each)`)
      if (c.ok) held.push(c.socket)
    }
    const same: Tls[] = []
    for (let i = 0; i < 3; i++) {
      const h = await raw(t, gw)
      h.write(header('192.0.2.50'))
      same.push(await tlsOver(t, h, proto))
    }
    t.same(same.map((c) => c.ok), [true, true, false], `${proto}: the third connection of one proxied client is closed at accept`)
    for (const c of held) c.destroy()
    for (const c of same) if (c.ok) c.socket.destroy()
  }
  // One refusal per protocol: in one record, or in two when the tally's second turned between them.
  const counted = (): number => records(gw, 'client_connections').reduce((n, r) => n + Number(r.count), 0)
  await until('the client_connections refusal records', () => counted() >= PROTOCOLS.length)
  t.equal(counted(), PROTOCOLS.length, 'the records count the refused connections, one per protocol')
  t.same([...new Set(records(gw, 'client_connections').map((r) => r.clientIp))], ['192.0.2.50'], 'the refused connections are audited under the proxied client')
  t.equal(nas.requests.length, 2, 'the two GETs, nothing else, reached the NAS')
})

t.test('connections still waiting for their header are capped per trusted address (the per-client cap cannot apply yet)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { proxyProtocol: { trustedProxies: [PROXY] } }, limits: { clientConnections: 2, headersTimeoutMs: 60000 } })
  const half = header('203.0.113.7').subarray(0, 10)
  const waiting = [await raw(t, gw), await raw(t, gw)]
  for (const s of waiting) await writeApart(s, [half])
  const third = await raw(t, gw)
  await within('the third half-open connection to be closed at accept', closed(third))
  await until('a pending refusal in the log', () => gw.logs.some((l) => l.includes('"problem":"pending"')))
  await until('its refusal record', () => records(gw, 'proxy_header').length > 0)
  t.match(records(gw, 'proxy_header').at(-1), { clientIp: PROXY, count: 1 }, 'audited (summed per second) under the proxy')
  // A waiting connection that completes its header frees its place.
  await writeApart(waiting[0], [header('203.0.113.7').subarray(10)])
  const conn = await tlsOver(t, waiting[0], 'h1')
  t.ok(conn.ok, 'the completed one is served')
  const fourth = await raw(t, gw)
  fourth.write(header('203.0.113.8'))
  const served = await tlsOver(t, fourth, 'h2')
  t.ok(served.ok, 'and a new connection takes the freed place')
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')
})

t.test('grants bound to the client address (auth.grants.bindIp) follow the proxied client, h1 and h2', async (t) => {
  const secret = 'proxied-grants-secret-'.padEnd(48, 'z')
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { proxyProtocol: { trustedProxies: [PROXY] } }, authExtra: { grants: { secret, ttlSec: 300, bindIp: true } } })
  const now = Math.floor(Date.now() / 1000)
  const grant = new GrantSigner(secret).sign({ p: PATH, s: 'alice', r: 'recordings', i: now - 5, e: now + 120, g: ['recordings:read'], a: '203.0.113.7' })
  for (const proto of PROTOCOLS) {
    for (const [client, status] of [['203.0.113.7', 200], ['203.0.113.8', 401]] as const) {
      const seen = nas.requests.length
      const s = await raw(t, gw)
      s.write(header(client))
      const conn = await tlsOver(t, s, proto)
      if (!conn.ok) throw new Error('handshake after a valid PROXY header failed')
      t.equal(await getOver(conn.socket, proto, '', `${PATH}?grant=${grant}`), status, `${proto}: a grant bound to 203.0.113.7, used by proxied ${client}: ${status}`)
      if (status !== 200) t.equal(nas.requests.length, seen, `${proto}: the NAS was not asked`)
    }
  }
})

t.test('a LOCAL header (health checks) keeps the proxy\'s own address', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { proxyProtocol: { trustedProxies: [PROXY] } } })
  const s = await raw(t, gw)
  // LOCAL, AF_UNSPEC, no addresses: what a proxy sends for its own connections.
  s.write(Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0, 0])]))
  const conn = await tlsOver(t, s, 'h1')
  if (!conn.ok) throw new Error('handshake after a LOCAL header failed')
  t.equal(await getOver(conn.socket, 'h1', gw.token()), 200)
  await until('an access record', () => gw.auditRecords().some((r) => r.event === 'access'))
  t.equal(gw.auditRecords().find((r) => r.event === 'access')?.clientIp, PROXY)
})

t.test('attacks and robustness: each row\'s outcome, and the NAS asked nothing it should not be', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { listen: { proxyProtocol: { trustedProxies: [PROXY] } }, limits: { headersTimeoutMs: 3000 } })

  await t.test('a PROXY header from an untrusted address is not believed: plaintext 400, audited under the real peer', async (t) => {
    const s = await raw(t, gw, '127.0.0.3')
    const answer = readAll(s)
    // Were it believed, the gateway would wait for a ClientHello after it.
    s.write(header('203.0.113.66'))
    t.match(await answer, /^HTTP\/1\.1 400 [^]*NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT/, 'the plaintext answer')
    await until('a plaintext refusal record', () => records(gw, 'NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT').length > 0)
    t.same(records(gw, 'NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT').map((r) => r.clientIp), ['127.0.0.3'])
    t.notOk(gw.auditRecords().some((r) => r.clientIp === '203.0.113.66'), 'the claimed client appears nowhere')
  })

  const refusedRows: Array<[string, (s: Socket) => Promise<void>, string]> = [
    ['no header from the trusted proxy (a ClientHello first)', async () => {}, 'missing'],
    ['a v2 header with a bad signature', async (s) => { const h = header('203.0.113.7'); h[11] = 0x0b; s.write(h) }, 'missing'],
    ['a v2 header with version 1', async (s) => { const h = header('203.0.113.7'); h[12] = 0x11; s.write(h) }, 'version'],
    ['a truncated v2 header, then the end of the stream', async (s) => { s.end(header('203.0.113.7').subarray(0, 20)) }, 'truncated'],
    ['a v2 header that stops (the header timeout)', async (s) => { s.write(header('203.0.113.7').subarray(0, 20)) }, 'timeout'],
    ['a v2 length of 65535', async (s) => { const h = header('203.0.113.7'); h.writeUInt16BE(0xffff, 14); s.write(h) }, 'length'],
    ['a v2 length too short for IPv4 addresses', async (s) => { const h = header('203.0.113.7'); h.writeUInt16BE(4, 14); s.write(h.subarray(0, 20)) }, 'length'],
    ['v2 PROXY for AF_UNIX', async (s) => { s.write(Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x31, 0, 216]), Buffer.alloc(216)])) }, 'family'],
    ['v2 PROXY for AF_UNSPEC', async (s) => { s.write(Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x00, 0, 0])])) }, 'family'],
    ['a v1 line with a bad address', async (s) => { s.write('PROXY TCP4 203.0.113.300 127.0.0.1 1 443\r\n') }, 'malformed'],
    // isIPv6 accepts this zone id; it once crashed the process in a hand-written expander.
    ['a v1 IPv6 address with a zone id', async (s) => { s.write('PROXY TCP6 fe80::1%a:b:c:d:e:f:0:1:2 ::1 1 2\r\n') }, 'malformed']
  ]
  for (const [name, send, problem] of refusedRows) {
    await t.test(name, async (t) => {
      const before = { nas: nas.requests.length, refused: await refusals(gw, 'proxy_header'), records: records(gw, 'proxy_header').length }
      const s = await raw(t, gw)
      await send(s)
      // A client that goes on with TLS (where the stream is still open)
      // gets no handshake. (After a header cut short, a ClientHello would
      // be read as the rest of it: the stalled row sends nothing more.)
      if (!s.writableEnded && problem !== 'timeout') t.notOk((await tlsOver(t, s, 'h1')).ok, 'no TLS handshake')
      await within('the gateway to close the connection', closed(s))
      await until('a new proxy_header refusal record', () => records(gw, 'proxy_header').length > before.records)
      t.equal(await refusals(gw, 'proxy_header'), before.refused + 1, 'counted: nasguard_refusals_total{reason="proxy_header"}')
      t.match(records(gw, 'proxy_header').at(-1), { event: 'refusal', clientIp: PROXY, status: 0 }, 'audited under the proxy')
      t.ok(gw.logs.some((l) => l.includes(`"problem":"${problem}"`)), `logged with problem ${problem}`)
      t.equal(nas.requests.length, before.nas, 'nothing reached the NAS')
    })
  }

  await t.test('robustness: a header split over several TCP writes still works', async (t) => {
    const accesses = (): Array<Record<string, unknown>> => gw.auditRecords().filter((r) => r.event === 'access')
    const before = accesses().length
    const s = await raw(t, gw)
    const h = header('203.0.113.9')
    await writeApart(s, [h.subarray(0, 5), h.subarray(5, 14), h.subarray(14, 27), h.subarray(27)])
    const c = await tlsOver(t, s, 'h2')
    if (!c.ok) throw new Error('handshake after a split header failed')
    t.equal(await getOver(c.socket, 'h2', gw.token()), 200)
    await until('its access record', () => accesses().length > before)
    t.equal(accesses().at(-1)?.clientIp, '203.0.113.9', 'audited under 203.0.113.9')
  })

  await t.test('robustness: a header and the ClientHello in one write (as HAProxy often sends them): the gateway answers with TLS', async (t) => {
    // A real ClientHello, caught on a local listener that never answers.
    const hello = await new Promise<Buffer>((resolve, reject) => {
      const sink = createServer((c) => { c.once('data', (d: Buffer) => { resolve(d); c.destroy(); sink.close() }) })
      sink.listen(0, '127.0.0.1', () => {
        const client = tlsConnect({ host: '127.0.0.1', port: (sink.address() as { port: number }).port, servername: 'localhost', ca: CA })
        client.on('error', () => {})
        t.teardown(() => { client.destroy() })
      })
      sink.on('error', reject)
    })
    const s = await raw(t, gw)
    const first = new Promise<Buffer>((resolve) => s.once('data', resolve))
    s.write(Buffer.concat([header('203.0.113.11'), hello]))
    const answer = await within('the gateway\'s first bytes', first)
    t.equal(answer[0], 0x16, 'a TLS handshake record (the ServerHello), not a 400 or a close')
  })

  await t.test('garbage after a valid header (plain HTTP): the plaintext 400, audited under the proxied client', async (t) => {
    const before = nas.requests.length
    const s = await raw(t, gw)
    const answer = readAll(s)
    s.write(Buffer.concat([header('203.0.113.10'), Buffer.from(`GET ${PATH} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${gw.token()}\r\n\r\n`)]))
    t.match(await answer, /^HTTP\/1\.1 400 [^]*NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT/)
    await until('a plaintext refusal record for 203.0.113.10', () => records(gw, 'NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT').some((r) => r.clientIp === '203.0.113.10'))
    t.equal(nas.requests.length, before, 'nothing reached the NAS')
  })
})
