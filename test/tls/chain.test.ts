// Bring-your-own chain: tls.cert holds the leaf followed by its
// intermediate, and the gateway sends both, so a client that trusts only the
// root verifies the connection. With the leaf alone it cannot.
import t, { type Test } from 'tap'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect, type PeerCertificate, type DetailedPeerCertificate } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import forge from 'node-forge'
import { createCa, issueIntermediateCa, issueServerCert, type KeyAndCert } from '../../src/tls/certificates.js'
import { RECORDING, bearer, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'

/**
 * A root CA as an enterprise PKI would have one: no path length limit, so it
 * can sign intermediates. (createCa makes a CA for leaf certificates only.)
 */
function enterpriseRoot (commonName: string): KeyAndCert {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const key = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()) as forge.pki.rsa.PrivateKey
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e)
  cert.serialNumber = '01' + Date.now().toString(16)
  cert.validity.notBefore = new Date(Date.now() - 60 * 1000)
  cert.validity.notAfter = new Date(Date.now() + 3650 * 24 * 3600 * 1000)
  const subject = [{ name: 'commonName', value: commonName }, { name: 'organizationName', value: 'Example Region IT' }]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' }
  ])
  cert.sign(key, forge.md.sha256.create())
  return { keyPem: forge.pki.privateKeyToPem(key), certPem: forge.pki.certificateToPem(cert) }
}

type Outcome = { ok: true, status: number, body: Buffer } | { ok: false, code: string | undefined }

function getTrusting (gw: { port: number }, ca: string[], headers: Record<string, string>): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/a.wav', headers, ca, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ ok: true, status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code }))
    req.end()
  })
}

/** The certificates the server sent, leaf first (not verified: rejectUnauthorized false). */
function servedChain (gw: { port: number }): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', rejectUnauthorized: false }, () => {
      const out: string[] = []
      let c: PeerCertificate | DetailedPeerCertificate | undefined = socket.getPeerCertificate(true)
      while (c && c.fingerprint256 && !out.includes(c.fingerprint256)) {
        out.push(c.fingerprint256)
        c = (c as DetailedPeerCertificate).issuerCertificate
      }
      socket.end()
      resolve(out)
    })
    socket.on('error', reject)
  })
}

const fp = (pem: string): string => new X509Certificate(pem).fingerprint256

async function gatewayServing (t: Test, nas: { url: string }, certPem: string, keyPem: string): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-chain-'))
  writeFileSync(join(dir, 'server.crt'), certPem)
  writeFileSync(join(dir, 'server.key'), keyPem, { mode: 0o600 })
  return startTestGateway(t, nas, { tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key') } })
}

async function checkChain (t: Test, root: KeyAndCert): Promise<void> {
  const intermediate = issueIntermediateCa(root, 'Example Issuing CA 1')
  const leaf = issueServerCert(intermediate, ['localhost', '127.0.0.1'])
  t.ok(new X509Certificate(leaf.certPem).checkIssued(new X509Certificate(intermediate.certPem)), '(the leaf is issued by the intermediate)')
  t.ok(new X509Certificate(intermediate.certPem).checkIssued(new X509Certificate(root.certPem)), '(the intermediate is issued by the root)')
  const nas = await startStubNas(t)

  const chained = await gatewayServing(t, nas, leaf.certPem + intermediate.certPem, leaf.keyPem)
  t.same(await servedChain(chained), [fp(leaf.certPem), fp(intermediate.certPem)], 'the gateway sends the leaf and then the intermediate')
  const ok = await getTrusting(chained, [root.certPem], bearer(chained.token()))
  t.match(ok, { ok: true, status: 200 }, `a client trusting only the root gets 200 (${ok.ok ? ok.status : ok.code})`)
  if (ok.ok) t.ok(ok.body.equals(RECORDING))

  const leafOnly = await gatewayServing(t, nas, leaf.certPem, leaf.keyPem)
  t.same(await servedChain(leafOnly), [fp(leaf.certPem)], 'with the leaf alone, only the leaf is sent')
  const refused = await getTrusting(leafOnly, [root.certPem], bearer(leafOnly.token()))
  t.match(refused, { ok: false, code: /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/ }, 'that client cannot verify the leaf')
  const withIntermediate = await getTrusting(leafOnly, [root.certPem, intermediate.certPem], bearer(leafOnly.token()))
  t.match(withIntermediate, { ok: true, status: 200 }, 'a client that already holds the intermediate can (so only the missing chain was the problem)')
}

t.test('a chain under an enterprise root is served in full', async (t) => {
  await checkChain(t, enterpriseRoot('Example Region Root CA'))
})

t.test('a chain under a root made by createCa (issueIntermediateCa documents this use)', async (t) => {
  // issueIntermediateCa exists "for chains, and for tests of bring-your-own
  // chains": its parent is expected to be a CA from createCa.
  await checkChain(t, createCa('nasguard root CA'))
})
