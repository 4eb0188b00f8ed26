// The TLS profiles, checked with real handshakes: intermediate is TLS 1.2
// (AEAD, forward-secret suites only) and 1.3; modern is 1.3 only. Refusals
// come from the server (its handshake-failure counter moves), not from a
// client that refused to offer the old protocol.
import t, { type Test } from 'tap'
import { connect, type ConnectionOptions } from 'node:tls'
import { readFileSync } from 'node:fs'
import { scrape, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'

type Handshake =
  | { ok: true, protocol: string | null, cipher: string }
  | { ok: false, code: string | undefined, message: string }

function handshake (gw: { port: number, ca?: string }, opts: ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(gw.ca ?? testCerts().ca), ...opts }, () => {
      const result: Handshake = { ok: true, protocol: socket.getProtocol(), cipher: socket.getCipher().name }
      socket.end()
      resolve(result)
    })
    socket.on('error', (err: NodeJS.ErrnoException) => { socket.destroy(); resolve({ ok: false, code: err.code, message: err.message }) })
  })
}

const FAILURES = 'nasguard_tls_handshake_failures_total'

/**
 * The server counts a failed handshake when its side of the socket errors,
 * which may be just after the client saw the alert: poll (bounded) until the
 * counter reaches `want` past `base`, then return what it is.
 */
/** Handshake failures over all reasons. */
async function failures (gw: TestGateway): Promise<number> {
  let sum = 0
  for (const [k, v] of await scrape(gw.adminUrl)) if (k.startsWith(FAILURES)) sum += v
  return sum
}

async function failuresAfter (gw: TestGateway, base: number, want: number): Promise<number> {
  let v = await failures(gw)
  for (let i = 0; i < 50 && v - base < want; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    v = await failures(gw)
  }
  return v - base
}

/** The server refused: the client got an alert from the server, and the server counted a failure. */
async function assertServerRefuses (t: Test, gw: TestGateway & { ca?: string }, opts: ConnectionOptions, label: string): Promise<void> {
  const base = await failures(gw)
  const r = await handshake(gw, opts)
  t.equal(r.ok, false, `${label}: handshake refused`)
  if (!r.ok) t.match(r.code ?? '', /^ERR_SSL_(TLSV1_ALERT|SSLV3_ALERT)/, `${label}: the refusal is an alert from the server (${r.code})`)
  t.equal(await failuresAfter(gw, base, 1), 1, `${label}: the server counted one handshake failure`)
}

// The same rules with either key `cert init` makes: an ECDHE suite of the
// key's kind connects, and static RSA (no forward secrecy) never does.
for (const keyType of ['ecdsa', 'rsa'] as const) {
  t.test(`intermediate profile (default), ${keyType} server key`, async (t) => {
    const nas = await startStubNas(t)
    const certs = testCerts(keyType)
    const gw = { ...await startTestGateway(t, nas, { tls: { cert: certs.cert, key: certs.key } }), ca: certs.ca }
    const kind = keyType === 'ecdsa' ? 'ECDSA' : 'RSA'

    // Node's client will not offer TLS 1.1 at its default security level;
    // SECLEVEL=0 makes it offer, so the refusal is the server's.
    await assertServerRefuses(t, gw, { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, 'TLS 1.1')
    await assertServerRefuses(t, gw, { minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, 'TLS 1.0')

    const aead = await handshake(gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `ECDHE-${kind}-AES128-GCM-SHA256` })
    t.match(aead, { ok: true, protocol: 'TLSv1.2', cipher: `ECDHE-${kind}-AES128-GCM-SHA256` }, 'TLS 1.2 with an AEAD ECDHE suite connects')

    const chacha = await handshake(gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `ECDHE-${kind}-CHACHA20-POLY1305` })
    t.match(chacha, { ok: true, protocol: 'TLSv1.2', cipher: `ECDHE-${kind}-CHACHA20-POLY1305` }, 'TLS 1.2 with ChaCha20-Poly1305 connects')

    await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `ECDHE-${kind}-AES128-SHA256` }, `TLS 1.2 CBC suite ECDHE-${kind}-AES128-SHA256`)
    await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA' }, 'TLS 1.2 static-RSA CBC suite AES128-SHA')
    await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256' }, 'TLS 1.2 static-RSA AEAD suite (no forward secrecy)')

    const tls13 = await handshake(gw, { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })
    t.match(tls13, { ok: true, protocol: 'TLSv1.3' }, 'TLS 1.3 connects')

    const negotiated = await handshake(gw, {})
    t.match(negotiated, { ok: true, protocol: 'TLSv1.3' }, 'a default client negotiates TLS 1.3')
  })
}

t.test('modern profile: TLS 1.3 only', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: { profile: 'modern' } })

  await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' }, 'TLS 1.2 (AEAD suite)')
  await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }, 'TLS 1.2 (any suite)')

  const tls13 = await handshake(gw, { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })
  t.match(tls13, { ok: true, protocol: 'TLSv1.3' }, 'TLS 1.3 connects')
})

t.test('successful handshakes are not counted as failures', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const base = await failures(gw)
  for (let i = 0; i < 3; i++) {
    const r = await handshake(gw, {})
    t.equal(r.ok, true, `handshake ${i + 1}`)
  }
  // A failure is then provoked and counted: once it shows, the successes
  // above, which came first, would have shown too.
  await assertServerRefuses(t, gw, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA' }, 'a refused handshake')
  t.equal(await failures(gw) - base, 1, 'only the refused handshake was counted')
})
