// Client certificates (tls.clientAuth) as an identity for policy rules with
// `certs: ['CN=name']`: require refuses the handshake without a valid one,
// optional judges a request by its certificate or its token and refuses a
// certificate that does not verify, off refuses such rules at config load.
// A new CRL takes effect on reload, without a restart.
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { connect as http2Connect } from 'node:http2'
import { tmpdir } from 'node:os'
import type { TLSSocket } from 'node:tls'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { buildCrl, createCa, issueClientCert, type KeyAndCert } from '../../src/tls/certificates.js'
import { DEFAULT_POLICY, RECORDING, SECRET, bearer, scrape, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'
import { fetchAs } from '../helpers/protocols.js'

const POLICY = [
  { name: 'machine', path: '/machine/**', certs: ['CN=callcenter-app-1'] },
  ...DEFAULT_POLICY
]

// One client CA with three clients (the granted one, another one the rule
// does not name, a revoked one), and an unknown CA with a client of the same
// name.
const clientCa = createCa('nasguard client CA')
const app1 = issueClientCert(clientCa, 'callcenter-app-1')
const app2 = issueClientCert(clientCa, 'callcenter-app-2')
const revoked = issueClientCert(clientCa, 'callcenter-app-1')
const unknownCa = createCa('some other CA')
const impostor = issueClientCert(unknownCa, 'callcenter-app-1')

const dir = mkdtempSync(join(tmpdir(), 'nasguard-mtls-'))
const caFile = join(dir, 'client-ca.crt')
const crlFile = join(dir, 'client-ca.crl')
writeFileSync(caFile, clientCa.certPem)
writeFileSync(crlFile, buildCrl(clientCa, [{ serial: revoked.serial, revokedAt: new Date().toISOString() }]))

type Outcome =
  | { ok: true, status: number, headers: Record<string, unknown>, body: Buffer }
  | { ok: false, code: string | undefined, message: string }

/** One HTTPS/1.1 request on a new TLS connection, with a client certificate when given. */
function request (gw: { port: number }, path: string, opts: { client?: KeyAndCert, headers?: Record<string, string> } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      servername: 'localhost',
      port: gw.port,
      path,
      headers: opts.headers,
      ca: readFileSync(testCerts().ca),
      agent: false,
      ...(opts.client ? { cert: opts.client.certPem, key: opts.client.keyPem } : {})
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ ok: true, status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code, message: err.message }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code, message: err.message }))
    req.end()
  })
}

function json (o: Outcome): Record<string, unknown> {
  return o.ok ? JSON.parse(o.body.toString()) as Record<string, unknown> : {}
}

const CLIENT_CERT_FAILURES = 'nasguard_tls_handshake_failures_total{reason="client_certificate"}'

async function metric (gw: TestGateway, key: string): Promise<number> {
  return (await scrape(gw.adminUrl)).get(key) ?? 0
}

/** Waits (bounded) until the server has counted `n` more client-certificate handshake failures than `base`. */
async function clientCertFailuresAfter (gw: TestGateway, base: number, n: number): Promise<number> {
  await waitFor(`${n} client_certificate handshake failure(s)`, async () => (await metric(gw, CLIENT_CERT_FAILURES)) - base >= n ? true : undefined)
  return (await metric(gw, CLIENT_CERT_FAILURES)) - base
}

t.test('clientAuth: require', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'require', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })

  let base = await metric(gw, CLIENT_CERT_FAILURES)
  const none = await request(gw, '/medicall/a.wav', { headers: bearer(gw.token()) })
  t.equal(none.ok, false, `no client certificate: refused (${!none.ok ? none.code : ''}), even with a valid token`)
  t.equal(await clientCertFailuresAfter(gw, base, 1), 1, 'counted as a client_certificate handshake failure')

  const unknown = await request(gw, '/machine/a.wav', { client: impostor })
  t.equal(unknown.ok, false, `a certificate from an unknown CA: refused (${!unknown.ok ? unknown.code : ''})`)
  const rev = await request(gw, '/machine/a.wav', { client: revoked })
  t.equal(rev.ok, false, `a revoked certificate: refused (${!rev.ok ? rev.code : ''})`)
  const revToken = await request(gw, '/medicall/a.wav', { client: revoked, headers: bearer(gw.token()) })
  t.equal(revToken.ok, false, 'a revoked certificate next to a valid token: refused')
  t.equal(nas.requests.length, 0, 'nothing refused at the handshake reached the NAS')
  t.notOk(gw.auditRecords().some((r) => r.event === 'access'), 'no access record for a refused handshake')

  const ok = await request(gw, '/machine/a.wav', { client: app1 })
  t.match(ok, { ok: true, status: 200 }, 'the granted certificate without a token gets the recording')
  if (ok.ok) t.ok(ok.body.equals(RECORDING), 'the recording, byte for byte')
  t.equal(nas.requests.length, 1, 'one request reached the NAS')
  t.equal(nas.requests[0]?.url, '/machine/a.wav')
  const access = gw.auditRecords().filter((r) => r.event === 'access')
  t.equal(access.length, 1, 'one access record')
  t.match(access[0], { path: '/machine/a.wav', auth: 'mtls', subject: 'CN=callcenter-app-1', rule: 'machine' }, 'the access record names the certificate')
  t.equal(access[0]?.jti, undefined, 'no jti for a certificate')

  const scoped = await request(gw, '/medicall/2024/01/02/a.wav', { client: app1 })
  t.match(scoped, { ok: true, status: 403 }, 'the certificate does not open a path whose rule needs a scope')
  t.equal(json(scoped).error, 'NASGUARD_ERR_INSUFFICIENT_SCOPE')

  const other = await request(gw, '/machine/a.wav', { client: app2 })
  t.match(other, { ok: true, status: 403 }, 'a valid certificate with a CN the rule does not name is refused')
  t.equal(nas.requests.length, 1, 'the refused requests did not reach the NAS')

  const both = await request(gw, '/medicall/2024/01/02/a.wav', { client: app1, headers: bearer(gw.token()) })
  t.match(both, { ok: true, status: 200 }, 'certificate plus a valid token: the token opens its scoped path')
})

t.test('clientAuth: require counts refused certificates as client_certificate handshake failures', async (t) => {
  // An operator watching nasguard_tls_handshake_failures_total{reason} must
  // see an unknown-CA or revoked certificate as a certificate problem, not
  // as a network reset.
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'require', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })
  for (const [label, client] of [['unknown CA', impostor], ['revoked', revoked]] as const) {
    const base = await metric(gw, CLIENT_CERT_FAILURES)
    const r = await request(gw, '/machine/a.wav', { client })
    t.equal(r.ok, false, `${label}: refused`)
    let counted = 0
    try {
      counted = await clientCertFailuresAfter(gw, base, 1)
    } catch {
      const byReason = [...await scrape(gw.adminUrl)].filter(([k]) => k.startsWith('nasguard_tls_handshake_failures_total'))
      t.comment(`${label}: handshake failures by reason: ${JSON.stringify(byReason)}`)
    }
    t.equal(counted, 1, `${label}: counted under reason="client_certificate"`)
  }
})

t.test('clientAuth: optional', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })

  const tokenOnly = await request(gw, '/medicall/a.wav', { headers: bearer(gw.token()) })
  t.match(tokenOnly, { ok: true, status: 200 }, 'no certificate, a valid token: 200')
  t.equal(nas.requests.length, 1)

  const nothing = await request(gw, '/medicall/a.wav')
  t.match(nothing, { ok: true, status: 401 }, 'no certificate, no token: 401')
  t.equal(json(nothing).error, 'NASGUARD_ERR_TOKEN_MISSING')

  const noCertMachine = await request(gw, '/machine/a.wav', { headers: bearer(gw.token()) })
  t.match(noCertMachine, { ok: true, status: 403 }, 'a token does not open the certificate-only rule')

  const cert = await request(gw, '/machine/a.wav', { client: app1 })
  t.match(cert, { ok: true, status: 200 }, 'the granted certificate: 200 on /machine')
  if (cert.ok) t.ok(cert.body.equals(RECORDING))
  t.match(gw.auditRecords().filter((r) => r.event === 'access').at(-1), { path: '/machine/a.wav', auth: 'mtls', subject: 'CN=callcenter-app-1' })
  t.equal(nas.requests.length, 2)

  const seen = nas.requests.length
  const unknown = await request(gw, '/medicall/a.wav', { client: impostor, headers: bearer(gw.token()) })
  t.match(unknown, { ok: true, status: 401 }, 'a certificate from an unknown CA: 401 even with a valid token')
  t.equal(json(unknown).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')
  if (unknown.ok) t.match(String(unknown.headers['www-authenticate']), /^Bearer realm="nasguard"/)

  const unknownMachine = await request(gw, '/machine/a.wav', { client: impostor })
  t.match(unknownMachine, { ok: true, status: 401 }, 'an impostor with the granted CN: 401')
  t.equal(json(unknownMachine).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')

  const rev = await request(gw, '/machine/a.wav', { client: revoked })
  t.match(rev, { ok: true, status: 401 }, 'a revoked certificate: 401')
  t.equal(json(rev).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')
  t.match(String(json(rev).message), /revoked/i, 'the message says why')

  const revToken = await request(gw, '/medicall/a.wav', { client: revoked, headers: bearer(gw.token()) })
  t.match(revToken, { ok: true, status: 401 }, 'a revoked certificate next to a valid token: 401')
  t.equal(json(revToken).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')
  t.equal(nas.requests.length, seen, 'no refused certificate reached the NAS')

  // Refusal records are appended after the answer: wait (bounded) for them.
  const refusals = await waitFor('four refusal records', () => {
    const r = gw.auditRecords().filter((r) => r.event === 'refusal' && r.reason === 'NASGUARD_ERR_CLIENT_CERT_INVALID')
    return r.length >= 4 ? r : undefined
  })
  t.equal(refusals.length, 4, 'each refusal is audited')
  t.ok(refusals.every((r) => r.status === 401))
})

t.test('clientAuth: optional, over HTTP/2', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })
  const h2get = (client: KeyAndCert): Promise<{ status: number, body: Buffer }> => new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca), cert: client.certPem, key: client.keyPem })
    session.on('error', reject)
    const stream = session.request({ ':path': '/machine/a.wav' })
    let status = 0
    const chunks: Buffer[] = []
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { session.close(); resolve({ status, body: Buffer.concat(chunks) }) })
    stream.on('error', reject)
    stream.end()
  })
  const ok = await h2get(app1)
  t.equal(ok.status, 200, 'the granted certificate over h2: 200')
  t.ok(ok.body.equals(RECORDING))
  const bad = await h2get(impostor)
  t.equal(bad.status, 401, 'an unknown-CA certificate over h2: 401')
  t.equal(JSON.parse(bad.body.toString()).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')
  t.equal(nas.requests.length, 1)
})

t.test('clientAuth: off refuses rules with certs at config load', async (t) => {
  const certs = testCerts()
  const object = (tls: Record<string, unknown>): unknown => ({
    tls: { cert: certs.cert, key: certs.key, ...tls },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: SECRET } },
    policy: [...DEFAULT_POLICY, { name: 'machine', path: '/machine/**', certs: ['CN=callcenter-app-1'] }],
    audit: { dir: join(dir, 'audit') }
  })
  for (const tls of [{}, { clientAuth: 'off' }]) {
    let err: unknown
    try {
      loadConfig({ object: object(tls) })
    } catch (e) {
      err = e
    }
    t.ok(err instanceof ConfigError, `${JSON.stringify(tls)}: a ConfigError`)
    const problems = (err as ConfigError | undefined)?.problems ?? []
    t.ok(problems.some((p) => p.key === 'policy[2].certs'), `${JSON.stringify(tls)}: names policy[2].certs (${problems.map((p) => p.key).join(', ')})`)
    t.match((err as Error | undefined)?.message, /policy\[2\]\.certs: client certificates are off/)
  }
  const cfg = loadConfig({ object: object({ clientAuth: 'optional', clientCa: caFile }) })
  t.same(cfg.policy[2].certs, ['CN=callcenter-app-1'], 'the same rule loads with clientAuth: optional')
  t.throws(() => loadConfig({ object: object({ clientAuth: 'require' }) }), /tls\.clientCa: is required with clientAuth: require/, 'require without a client CA is refused')
})

t.test('a new CRL takes effect on reload, without a restart', async (t) => {
  const nas = await startStubNas(t)
  const ca = createCa('reloaded client CA')
  const client = issueClientCert(ca, 'callcenter-app-1')
  const d = mkdtempSync(join(tmpdir(), 'nasguard-mtls-reload-'))
  const caF = join(d, 'ca.crt')
  const crlF = join(d, 'ca.crl')
  writeFileSync(caF, ca.certPem)
  writeFileSync(crlF, buildCrl(ca, []))
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caF, clientCrl: crlF }, policy: POLICY })

  t.match(await request(gw, '/machine/a.wav', { client }), { ok: true, status: 200 }, 'before the revocation: 200')

  writeFileSync(crlF, buildCrl(ca, [{ serial: client.serial, revokedAt: new Date().toISOString() }]))
  t.equal(gw.gateway.reloadCertificate(), true, 'reload accepted')
  const after = await request(gw, '/machine/a.wav', { client })
  t.match(after, { ok: true, status: 401 }, 'a new connection with the now revoked certificate: 401')
  t.equal(json(after).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID')
  t.equal(nas.requests.length, 1, 'the revoked certificate did not reach the NAS')

  const other = issueClientCert(ca, 'callcenter-app-1')
  t.match(await request(gw, '/machine/a.wav', { client: other }), { ok: true, status: 200 }, 'a new certificate from the same CA still works')
})

t.test('a TLS session from before the revocation cannot be resumed after the reload', async (t) => {
  // A resumed session carries the old verification result: if it survived
  // the reload, the revoked certificate would still be accepted.
  const nas = await startStubNas(t)
  const ca = createCa('resumed client CA')
  const client = issueClientCert(ca, 'callcenter-app-1')
  const d = mkdtempSync(join(tmpdir(), 'nasguard-mtls-resume-'))
  const caF = join(d, 'ca.crt')
  const crlF = join(d, 'ca.crl')
  writeFileSync(caF, ca.certPem)
  writeFileSync(crlF, buildCrl(ca, []))
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caF, clientCrl: crlF }, policy: POLICY })

  let session: Buffer | undefined
  const get = (resume: boolean): Promise<{ status: number, reused: boolean }> => new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/machine/a.wav', agent: false,
      ca: readFileSync(testCerts().ca), cert: client.certPem, key: client.keyPem,
      ...(resume && session ? { session } : {})
    }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: (res.socket as TLSSocket).isSessionReused() }))
    })
    req.on('socket', (s) => { s.on('session', (b: Buffer) => { session = b }) })
    req.on('error', reject)
    req.end()
  })

  t.match(await get(false), { status: 200, reused: false }, 'a full handshake: 200')
  t.ok(session, 'the server issued a session ticket')
  t.match(await get(true), { status: 200, reused: true }, 'the session resumes before the revocation (resumption works at all)')

  writeFileSync(crlF, buildCrl(ca, [{ serial: client.serial, revokedAt: new Date().toISOString() }]))
  t.equal(gw.gateway.reloadCertificate(), true)
  t.match(await get(true), { status: 401, reused: false }, 'after the reload the old session is not resumed, and the certificate is refused')
})

t.test('the file watcher picks up a new CRL by itself', async (t) => {
  const nas = await startStubNas(t)
  const ca = createCa('watched client CA')
  const client = issueClientCert(ca, 'callcenter-app-1')
  const d = mkdtempSync(join(tmpdir(), 'nasguard-mtls-watch-'))
  const caF = join(d, 'ca.crt')
  const crlF = join(d, 'ca.crl')
  writeFileSync(caF, ca.certPem)
  writeFileSync(crlF, buildCrl(ca, []))
  const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caF, clientCrl: crlF }, policy: POLICY })
  t.match(await request(gw, '/machine/a.wav', { client }), { ok: true, status: 200 }, 'before the revocation: 200')

  writeFileSync(crlF, buildCrl(ca, [{ serial: client.serial, revokedAt: new Date().toISOString() }]))
  const status = await waitFor('the revocation to take effect', async () => {
    const r = await request(gw, '/machine/a.wav', { client })
    return r.ok && r.status === 401 ? r.status : undefined
  }, { tries: 100, intervalMs: 50 })
  t.equal(status, 401, 'refused once the watcher reloaded the CRL')
})

t.test('clientAuth: optional with a CRL: every bad certificate gets its 401 over HTTP/1.1 and HTTP/2, never a reset', async (t) => {
  // An impostor CA with the trusted CA's very name: with a CRL loaded,
  // OpenSSL failed the whole handshake on its certificates (a TCP reset
  // instead of the documented 401). The gate applies the CRL now.
  const sameNameCa = createCa('nasguard client CA')
  const lookalike = issueClientCert(sameNameCa, 'callcenter-app-1')
  const h2request = (gw: { port: number }, path: string, client: KeyAndCert, headers: Record<string, string> = {}): Promise<Outcome> => new Promise((resolve) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca), cert: client.certPem, key: client.keyPem })
    const fail = (err: NodeJS.ErrnoException): void => { session.destroy(); resolve({ ok: false, code: err.code, message: err.message }) }
    session.on('error', fail)
    const stream = session.request({ ':path': path, ...headers })
    let status = 0
    let responseHeaders: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => { status = Number(h[':status']); responseHeaders = { ...h } })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      session.close()
      // A stream that ends without response headers: the connection went away (a refused handshake under TLS 1.3).
      if (status === 0) resolve({ ok: false, code: 'NO_RESPONSE', message: 'the stream ended without a response' })
      else resolve({ ok: true, status, headers: responseHeaders, body: Buffer.concat(chunks) })
    })
    stream.on('error', fail)
    stream.end()
  })
  const send = (proto: 'h1' | 'h2', gw: { port: number }, path: string, client: KeyAndCert, headers: Record<string, string> = {}): Promise<Outcome> =>
    proto === 'h1' ? request(gw, path, { client, headers }) : h2request(gw, path, client, headers)

  t.test('an impostor CA with the trusted CA\'s name, a revoked certificate: 401, with and without a token', async (t) => {
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })
    const table: Array<{ what: string, client: KeyAndCert, path: string, token: boolean, message?: RegExp }> = [
      { what: 'same-name impostor CA', client: lookalike, path: '/machine/a.wav', token: false },
      { what: 'same-name impostor CA, with a valid token', client: lookalike, path: '/medicall/a.wav', token: true },
      { what: 'unknown CA', client: impostor, path: '/machine/a.wav', token: false },
      { what: 'revoked', client: revoked, path: '/machine/a.wav', token: false, message: /certificate revoked/ },
      { what: 'revoked, with a valid token', client: revoked, path: '/medicall/a.wav', token: true, message: /certificate revoked/ }
    ]
    for (const proto of ['h1', 'h2'] as const) {
      for (const row of table) {
        const label = `${proto} ${row.what}`
        const r = await send(proto, gw, row.path, row.client, row.token ? bearer(gw.token()) : {})
        t.match(r, { ok: true, status: 401 }, `${label}: 401 (${r.ok ? r.status : `${r.code ?? ''} ${r.message}`})`)
        t.equal(json(r).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID', `${label}: NASGUARD_ERR_CLIENT_CERT_INVALID`)
        if (row.message) t.match(String(json(r).message), row.message, `${label}: the message says why`)
      }
    }
    t.equal(nas.requests.length, 0, 'no refused certificate reached the NAS')

    for (const proto of ['h1', 'h2'] as const) {
      const ok = await send(proto, gw, '/machine/a.wav', app1)
      t.match(ok, { ok: true, status: 200 }, `${proto} control: the valid certificate gets 200 on its rule`)
      if (ok.ok) t.ok(ok.body.equals(RECORDING), `${proto}: the recording`)
    }
    t.equal(nas.requests.length, 2)
  })

  t.test('an expired CRL: a valid certificate is refused 401', async (t) => {
    const nas = await startStubNas(t)
    const ca = createCa('expired-CRL client CA')
    const client = issueClientCert(ca, 'callcenter-app-1')
    const d = mkdtempSync(join(tmpdir(), 'nasguard-mtls-expired-crl-'))
    const caF = join(d, 'ca.crt')
    const crlF = join(d, 'ca.crl')
    writeFileSync(caF, ca.certPem)
    // Issued 30 days ago, valid for 1 day: its nextUpdate is 29 days past.
    writeFileSync(crlF, buildCrl(ca, [], 1, new Date(Date.now() - 30 * 24 * 3600 * 1000)))
    const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'optional', clientCa: caF, clientCrl: crlF }, policy: POLICY })
    for (const proto of ['h1', 'h2'] as const) {
      for (const [path, token] of [['/machine/a.wav', false], ['/medicall/a.wav', true]] as const) {
        const label = `${proto} ${path}${token ? ' with a token' : ''}`
        const r = await send(proto, gw, path, client, token ? bearer(gw.token()) : {})
        t.match(r, { ok: true, status: 401 }, `${label}: 401 (${r.ok ? r.status : `${r.code ?? ''} ${r.message}`})`)
        t.equal(json(r).error, 'NASGUARD_ERR_CLIENT_CERT_INVALID', `${label}: NASGUARD_ERR_CLIENT_CERT_INVALID`)
        t.match(String(json(r).message), /CRL has expired/, `${label}: the message says why`)
      }
    }
    t.equal(nas.requests.length, 0, 'nothing reached the NAS')

    // Control: the same CA with a current CRL.
    writeFileSync(crlF, buildCrl(ca, []))
    t.equal(gw.gateway.reloadCertificate(), true, 'reload accepted')
    t.match(await send('h1', gw, '/machine/a.wav', client), { ok: true, status: 200 }, 'control: with a current CRL the certificate gets 200')
  })

  t.test('clientAuth: require: a revoked certificate is still refused at the handshake (h1 and h2)', async (t) => {
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas, { tls: { clientAuth: 'require', clientCa: caFile, clientCrl: crlFile }, policy: POLICY })
    for (const proto of ['h1', 'h2'] as const) {
      for (const [what, client] of [['revoked', revoked], ['same-name impostor CA', lookalike]] as const) {
        const r = await send(proto, gw, '/machine/a.wav', client, bearer(gw.token()))
        t.equal(r.ok, false, `${proto} ${what}: no response, the handshake was refused (${r.ok ? r.status : r.code})`)
      }
    }
    t.equal(nas.requests.length, 0)
    t.match(await send('h2', gw, '/machine/a.wav', app1), { ok: true, status: 200 }, 'control: the valid certificate over h2')
  })
})

/** POST /_nasguard/grants with a client certificate and no token: a grant minted on the certificate. */
function mintWithCertificate (gw: { port: number }, path: string, client: KeyAndCert): Promise<{ status: number, body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify({ path })
    const req = httpsRequest({
      host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/_nasguard/grants', method: 'POST', agent: false,
      ca: readFileSync(testCerts().ca), cert: client.certPem, key: client.keyPem,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }))
    })
    req.on('error', reject)
    req.end(payload)
  })
}

t.test('a grant minted with a client certificate dies when the certificate is revoked (optional and require, h1 and h2)', async (t) => {
  for (const mode of ['optional', 'require'] as const) {
    const d = mkdtempSync(join(tmpdir(), 'nasguard-mtls-grant-'))
    const ca = join(d, 'ca.crt')
    const crl = join(d, 'ca.crl')
    const holder = issueClientCert(clientCa, 'callcenter-app-1')
    writeFileSync(ca, clientCa.certPem)
    writeFileSync(crl, buildCrl(clientCa, []))
    const nas = await startStubNas(t)
    const gw = await startTestGateway(t, nas, { tls: { clientAuth: mode, clientCa: ca, clientCrl: crl, watch: false }, policy: POLICY })
    const minted = await mintWithCertificate(gw, '/machine/a.wav', holder)
    t.equal(minted.status, 201, `${mode}: a grant is minted on the certificate`)
    const url = String(minted.body.url)
    // Under require every connection needs a valid certificate: another one carries the grant.
    const carrier = mode === 'require' ? { client: app2 } : {}
    const before = await request(gw, url, carrier)
    t.match(before, { ok: true, status: 200 }, `${mode}: the grant works`)
    writeFileSync(crl, buildCrl(clientCa, [{ serial: holder.serial, revokedAt: new Date().toISOString() }]))
    t.equal(gw.gateway.reloadCertificate(), true, `${mode}: the new CRL is loaded`)
    const served = nas.requests.length
    const h1 = await request(gw, url, carrier)
    t.match(h1, { ok: true, status: 401 }, `${mode} h1: the grant is refused once its certificate is revoked`)
    t.equal(json(h1).error, 'NASGUARD_ERR_GRANT_INVALID', `${mode} h1: GRANT_INVALID`)
    if (mode === 'optional') {
      const h2 = await fetchAs('h2', gw, url)
      t.equal(h2.status, 401, `${mode} h2: refused too`)
    }
    t.equal(nas.requests.length, served, `${mode}: the NAS was not asked`)
  }
})
