// Certificate reload without a restart (gateway.reloadCertificate(), which
// SIGHUP calls, and the directory watcher): new handshakes get the new
// certificate, a stream already open finishes on the old one, and a broken
// pair (wrong key, unparsable, expired) is refused while the old one stays.
import t, { type Test } from 'tap'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { copyFileSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import forge from 'node-forge'
import { createCa, issueServerCert, type KeyAndCert } from '../../src/tls/certificates.js'
import { bearer, scrape, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const EXPIRY = 'nasguard_tls_certificate_expiry_timestamp_seconds{cert="server"}'
const RELOAD_OK = 'nasguard_tls_certificate_reloads_total{result="ok"}'
const RELOAD_FAILED = 'nasguard_tls_certificate_reloads_total{result="failed"}'

// One CA the clients trust; the gateway's old and new certificates both come from it.
const ca = createCa('nasguard reload test CA')
const HOSTS = ['localhost', '127.0.0.1']

/** A server certificate from `issuer` that expired yesterday (issueServerCert cannot make one). */
function expiredServerCert (issuer: KeyAndCert): KeyAndCert {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const key = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()) as forge.pki.rsa.PrivateKey
  const caCert = forge.pki.certificateFromPem(issuer.certPem)
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e)
  cert.serialNumber = '01' + Date.now().toString(16)
  cert.validity.notBefore = new Date(Date.now() - 30 * 24 * 3600 * 1000)
  cert.validity.notAfter = new Date(Date.now() - 24 * 3600 * 1000)
  cert.setSubject([{ name: 'commonName', value: 'localhost' }])
  cert.setIssuer(caCert.subject.attributes)
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }
  ])
  cert.sign(forge.pki.privateKeyFromPem(issuer.keyPem) as forge.pki.rsa.PrivateKey, forge.md.sha256.create())
  return { keyPem: forge.pki.privateKeyToPem(key), certPem: forge.pki.certificateToPem(cert) }
}

const fingerprint = (pem: string | Buffer): string => new X509Certificate(pem).fingerprint256
const expiresAt = (pem: string | Buffer): number => Math.floor(Date.parse(new X509Certificate(pem).validTo) / 1000)

interface Setup { gw: TestGateway, certFile: string, keyFile: string, dir: string }

/** A gateway whose tls.cert and tls.key live in a directory of the test's own, holding `initial`. */
async function gatewayWithCertDir (t: Test, nas: { url: string }, initial: KeyAndCert): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-'))
  const certFile = join(dir, 'server.crt')
  const keyFile = join(dir, 'server.key')
  writeFileSync(certFile, initial.certPem)
  writeFileSync(keyFile, initial.keyPem, { mode: 0o600 })
  const gw = await startTestGateway(t, nas, { tls: { cert: certFile, key: keyFile } })
  return { gw, certFile, keyFile, dir }
}

/** The fingerprint of the certificate a new TLS connection is shown. */
function peerFingerprint (port: number, trust: string | Buffer = ca.certPem): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: trust, ALPNProtocols: ['http/1.1'] }, () => {
      const fp = socket.getPeerCertificate().fingerprint256
      socket.end()
      resolve(fp)
    })
    socket.on('error', reject)
  })
}

function get (port: number, path: string, headers: Record<string, string>): Promise<{ status: number, body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port, path, headers, ca: ca.certPem, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

async function metric (gw: TestGateway, key: string): Promise<number> {
  return (await scrape(gw.adminUrl)).get(key) ?? 0
}

t.test('reload while a stream is open: the stream finishes, new handshakes get the new certificate', async (t) => {
  const first = Buffer.alloc(1024, 0x11)
  const rest = Buffer.alloc(256 * 1024, 0x22)
  let releaseRest: () => void = () => {}
  const nas = await startStubNas(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': first.length + rest.length })
    res.write(first)
    releaseRest = () => res.end(rest)
  })
  const oldPair = issueServerCert(ca, HOSTS)
  const newPair = issueServerCert(ca, HOSTS, 100)
  const { gw, certFile, keyFile } = await gatewayWithCertDir(t, nas, oldPair)
  t.equal(await peerFingerprint(gw.port), fingerprint(oldPair.certPem), 'the gateway starts on the old certificate')
  t.equal(await metric(gw, EXPIRY), expiresAt(oldPair.certPem), 'the expiry gauge shows the old certificate')
  const okBefore = await metric(gw, RELOAD_OK)

  let reloaded: boolean | undefined
  let streamPeer = ''
  const body = await new Promise<Buffer>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/long.wav', headers: bearer(gw.token()), ca: ca.certPem, agent: false }, (res) => {
      streamPeer = (res.socket as TLSSocket).getPeerCertificate().fingerprint256
      const chunks: Buffer[] = []
      res.once('data', () => {
        // The first bytes are here and the NAS holds the rest: replace the pair and reload.
        writeFileSync(certFile, newPair.certPem)
        writeFileSync(keyFile, newPair.keyPem)
        reloaded = gw.gateway.reloadCertificate()
        setImmediate(releaseRest)
      })
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve(Buffer.concat(chunks)))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(reloaded, true, 'reloadCertificate() accepted the new pair')
  t.equal(body.length, first.length + rest.length, 'the stream open during the reload arrived in full')
  t.ok(body.subarray(0, first.length).equals(first) && body.subarray(first.length).equals(rest), 'byte for byte')
  t.equal(streamPeer, fingerprint(oldPair.certPem), 'that connection was on the old certificate')

  const now = await peerFingerprint(gw.port)
  t.equal(now, fingerprint(newPair.certPem), 'a new connection sees the new certificate')
  t.not(now, fingerprint(oldPair.certPem), 'and not the old one')
  t.not(expiresAt(newPair.certPem), expiresAt(oldPair.certPem), '(the two notAfter differ)')
  t.equal(await metric(gw, EXPIRY), expiresAt(newPair.certPem), 'the expiry gauge shows the new notAfter')
  const okAfter = await metric(gw, RELOAD_OK)
  t.ok(okAfter > okBefore, `reloads_total{result="ok"} increased (${okBefore} -> ${okAfter})`)

  const fetch = await waitFor('the completion record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.match(fetch, { outcome: 'complete', bytes: first.length + rest.length, status: 200 }, 'audited as complete')
})

t.test('a copy of the shared test pair in a directory of its own reloads', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-reload-copy-'))
  const certFile = join(dir, 'server.crt')
  const keyFile = join(dir, 'server.key')
  copyFileSync(testCerts().cert, certFile)
  copyFileSync(testCerts().key, keyFile)
  const gw = await startTestGateway(t, nas, { tls: { cert: certFile, key: keyFile } })
  const shared = readFileSync(testCerts().cert)
  t.equal(gw.gateway.reloadCertificate(), true, 'reloading an unchanged pair succeeds')
  t.equal(await peerFingerprint(gw.port, readFileSync(testCerts().ca)), fingerprint(shared))
  t.equal(await metric(gw, EXPIRY), expiresAt(shared), 'the expiry gauge shows the certificate in use')
})

t.test('a broken pair is refused and the old certificate stays', async (t) => {
  const nas = await startStubNas(t)
  const good = issueServerCert(ca, HOSTS)
  const { gw, certFile, keyFile } = await gatewayWithCertDir(t, nas, good)
  const goodFp = fingerprint(good.certPem)
  const other = issueServerCert(ca, HOSTS, 30)
  const expired = expiredServerCert(ca)
  t.ok(Date.parse(new X509Certificate(expired.certPem).validTo) < Date.now(), '(the expired certificate is expired)')
  t.ok(new X509Certificate(expired.certPem).verify(new X509Certificate(ca.certPem).publicKey), '(and otherwise genuine: signed by the trusted CA)')

  const cases: Array<[string, () => void]> = [
    ['a key that does not belong to the certificate', () => {
      writeFileSync(certFile, good.certPem)
      writeFileSync(keyFile, other.keyPem)
    }],
    ['a new certificate with the old key', () => {
      writeFileSync(certFile, other.certPem)
      writeFileSync(keyFile, good.keyPem)
    }],
    ['an unparsable certificate file', () => {
      writeFileSync(certFile, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n')
      writeFileSync(keyFile, good.keyPem)
    }],
    ['an empty key file', () => {
      writeFileSync(certFile, good.certPem)
      writeFileSync(keyFile, '')
    }],
    ['an expired certificate with its own key', () => {
      writeFileSync(certFile, expired.certPem)
      writeFileSync(keyFile, expired.keyPem)
    }]
  ]
  for (const [label, breakIt] of cases) {
    const failedBefore = await metric(gw, RELOAD_FAILED)
    breakIt()
    t.equal(gw.gateway.reloadCertificate(), false, `${label}: reloadCertificate() returns false`)
    const failedAfter = await metric(gw, RELOAD_FAILED)
    t.ok(failedAfter > failedBefore, `${label}: reloads_total{result="failed"} increased (${failedBefore} -> ${failedAfter})`)
    t.equal(await peerFingerprint(gw.port), goodFp, `${label}: a new connection still gets the old certificate`)
    t.equal(await metric(gw, EXPIRY), expiresAt(good.certPem), `${label}: the expiry gauge still shows the old certificate`)
    const r = await get(gw.port, '/medicall/a.wav', bearer(gw.token()))
    t.equal(r.status, 200, `${label}: the gateway still serves`)
  }
  t.ok(gw.logs.some((l) => /certificate reload refused/.test(l) && /expired/.test(l)), 'the refusal is logged with its reason')

  // Once a good pair is back, the reload goes through.
  writeFileSync(certFile, other.certPem)
  writeFileSync(keyFile, other.keyPem)
  t.equal(gw.gateway.reloadCertificate(), true, 'a good pair afterwards is accepted')
  t.equal(await peerFingerprint(gw.port), fingerprint(other.certPem), 'and served')
})

t.test('the watcher reloads when the files are replaced (rename over), without a reload call', async (t) => {
  const nas = await startStubNas(t)
  const oldPair = issueServerCert(ca, HOSTS)
  const newPair = issueServerCert(ca, HOSTS, 60)
  const { gw, certFile, keyFile, dir } = await gatewayWithCertDir(t, nas, oldPair)
  t.equal(await peerFingerprint(gw.port), fingerprint(oldPair.certPem), 'starts on the old certificate')

  // As certbot & co do: write new files next to the old ones, then rename over.
  writeFileSync(join(dir, '.server.crt.tmp'), newPair.certPem)
  writeFileSync(join(dir, '.server.key.tmp'), newPair.keyPem, { mode: 0o600 })
  renameSync(join(dir, '.server.crt.tmp'), certFile)
  renameSync(join(dir, '.server.key.tmp'), keyFile)

  const seen = await waitFor('a new connection to see the new certificate', async () => {
    const fp = await peerFingerprint(gw.port)
    return fp === fingerprint(newPair.certPem) ? fp : undefined
  }, { tries: 200, intervalMs: 25 })
  t.equal(seen, fingerprint(newPair.certPem), 'the new certificate is served')
  t.equal(await metric(gw, EXPIRY), expiresAt(newPair.certPem), 'the expiry gauge follows')
  t.equal((await get(gw.port, '/medicall/a.wav', bearer(gw.token()))).status, 200, 'and the gateway serves on it')
})
