// `nasguard cert init|client|show|revoke`, run as an operator would: the
// built CLI (dist/cli.js, `npm run build` first) in a child process, in a
// temporary directory. What it writes is checked with node:crypto, node-forge
// and, when it is on PATH, openssl.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import forge from 'node-forge'
import { createCa, issueServerCert } from '../../src/tls/certificates.js'

const CLI = resolve('dist/cli.js')
const DAY_MS = 24 * 60 * 60 * 1000
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2'

interface Run { status: number | null, stdout: string, stderr: string }

function cli (args: string[], cwd: string): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, env: { PATH: process.env.PATH }, encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function openssl (args: string[]): Run | null {
  const r = spawnSync('openssl', args, { encoding: 'utf8' })
  if (r.error) return null // not on PATH
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const HAVE_OPENSSL = openssl(['version']) !== null

function mode (file: string): number {
  return statSync(file).mode & 0o777
}

function x509 (file: string): X509Certificate {
  return new X509Certificate(readFileSync(file))
}

/** Every file of the directory with its bytes. */
function snapshot (dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]))
}

/** The serials a PEM CRL lists, as lowercase hex without leading zeros (parsed with forge's ASN.1). */
function crlSerials (pem: string): string[] {
  const der = forge.pem.decode(pem)[0].body
  const crl = forge.asn1.fromDer(der)
  const tbs = (crl.value as forge.asn1.Asn1[])[0].value as forge.asn1.Asn1[]
  // version, signature, issuer, thisUpdate, nextUpdate, [revokedCertificates]
  const revoked = tbs.find((n, i) => i >= 5 && n.type === forge.asn1.Type.SEQUENCE)
  if (!revoked) return []
  return (revoked.value as forge.asn1.Asn1[]).map((entry) => {
    const serial = (entry.value as forge.asn1.Asn1[])[0].value as string
    return normSerial(forge.util.bytesToHex(serial))
  })
}

function normSerial (hex: string): string {
  return hex.replace(/:/g, '').toLowerCase().replace(/^0+(?=.)/, '')
}

const tmp = (prefix: string): string => mkdtempSync(join(tmpdir(), prefix))

t.test('cert init: a CA, a server certificate for the names and IPs, a CRL; refuses to overwrite', async (t) => {
  const work = tmp('nasguard-certcli-')
  const dir = join(work, 'certs')
  const ranAt = Date.now()
  const r = cli(['cert', 'init', '--host', 'nas-gw.example.se', '--host', '10.0.0.5', '--dir', dir], work)
  const doneAt = Date.now()
  t.equal(r.status, 0, 'cert init exits 0: ' + r.stderr)

  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key', 'ca.crl']) t.ok(existsSync(join(dir, f)), `${f} written`)
  t.equal(mode(join(dir, 'ca.key')), 0o600, 'ca.key is 0600')
  t.equal(mode(join(dir, 'server.key')), 0o600, 'server.key is 0600')

  const ca = x509(join(dir, 'ca.crt'))
  const server = x509(join(dir, 'server.crt'))
  t.equal(ca.ca, true, 'ca.crt is a CA certificate')
  t.equal(server.ca, false, 'server.crt is not a CA')
  const san = server.subjectAltName ?? ''
  t.match(san, /(^|, )DNS:nas-gw\.example\.se(,|$)/, 'DNS SAN nas-gw.example.se')
  t.match(san, /(^|, )IP Address:10\.0\.0\.5(,|$)/, 'IP SAN 10.0.0.5')
  t.equal(server.checkIP('10.0.0.5'), '10.0.0.5', 'checkIP(10.0.0.5) matches')
  t.equal(server.checkHost('nas-gw.example.se'), 'nas-gw.example.se', 'checkHost(nas-gw.example.se) matches')
  t.equal(server.checkHost('other.example.se'), undefined, 'another name does not match')
  t.equal(server.checkIP('10.0.0.6'), undefined, 'another IP does not match')

  // notAfter is at most 397 days after issuance; notBefore is backdated a
  // few minutes for clock skew, so notBefore..notAfter stays within the
  // CA/Browser Forum's 398 days.
  const notAfter = Date.parse(server.validTo)
  t.ok(notAfter <= doneAt + 397 * DAY_MS, `notAfter at most 397 days after issuance (${((notAfter - ranAt) / DAY_MS).toFixed(3)})`)
  t.ok(notAfter >= ranAt + 396 * DAY_MS, 'the default is the 397-day maximum, not a shorter one')
  t.ok(notAfter - Date.parse(server.validFrom) <= 398 * DAY_MS, 'notBefore..notAfter within 398 days')
  t.ok(Date.parse(server.validFrom) <= ranAt, 'valid from issuance')

  t.ok(server.checkIssued(ca), 'server.crt names the CA as issuer')
  t.ok(server.verify(ca.publicKey), 'server.crt is signed by the CA key')
  t.ok(ca.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'ca.key')))), 'ca.key belongs to ca.crt')
  t.ok(server.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'server.key')))), 'server.key belongs to server.crt')
  t.same(crlSerials(readFileSync(join(dir, 'ca.crl'), 'utf8')), [], 'the new CRL lists nothing')

  // A second init must not destroy the CA (every client certificate hangs off it).
  const before = snapshot(dir)
  const again = cli(['cert', 'init', '--host', 'nas-gw.example.se', '--dir', dir], work)
  t.equal(again.status, 1, 'a second init without --force exits 1')
  t.match(again.stderr, /refusing to overwrite/)
  t.notMatch(again.stderr, /\n\s+at /, 'no stack trace')
  const after = snapshot(dir)
  t.same([...after.keys()].sort(), [...before.keys()].sort(), 'no file added or removed')
  for (const [f, bytes] of before) t.ok(bytes.equals(after.get(f) as Buffer), `${f} unchanged`)

  const forced = cli(['cert', 'init', '--host', 'nas-gw.example.se', '--dir', dir, '--force', '--new-ca'], work)
  t.equal(forced.status, 0, 'init --force exits 0: ' + forced.stderr)
  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key']) {
    t.notOk(readFileSync(join(dir, f)).equals(before.get(f) as Buffer), `--force replaced ${f}`)
  }
  t.equal(mode(join(dir, 'ca.key')), 0o600, 'the replaced ca.key is 0600')
  t.equal(mode(join(dir, 'server.key')), 0o600, 'the replaced server.key is 0600')
  const newServer = x509(join(dir, 'server.crt'))
  t.ok(newServer.verify(x509(join(dir, 'ca.crt')).publicKey), 'the new server certificate is signed by the new CA')
  t.equal(newServer.checkIP('10.0.0.5'), undefined, 'the replacement has only the hosts asked for this time')

  const tooLongDir = join(work, 'too-long')
  const tooLong = cli(['cert', 'init', '--host', 'nas-gw.example.se', '--days', '398', '--dir', tooLongDir], work)
  t.equal(tooLong.status, 2, '--days 398 is a usage error')
  t.match(tooLong.stderr, /--days must be a whole number from 1 to 397/)
  t.notOk(existsSync(join(tooLongDir, 'server.crt')), 'no certificate written for --days 398')

  const maxDir = join(work, 'max')
  const max = cli(['cert', 'init', '--host', 'nas-gw.example.se', '--days', '397', '--dir', maxDir], work)
  t.equal(max.status, 0, '--days 397 is accepted: ' + max.stderr)
})

t.test('cert client: certificate, key and PKCS#12 for a machine client', async (t) => {
  const work = tmp('nasguard-certcli-')
  const dir = join(work, 'certs')
  const out = join(work, 'clients')
  t.equal(cli(['cert', 'init', '--host', 'localhost', '--dir', dir], work).status, 0)
  const pwFile = join(work, 'p12.pass')
  const password = 'correct horse battery staple'
  writeFileSync(pwFile, password + '\n')

  const r = cli(['cert', 'client', '--name', 'callcenter-app-1', '--out', out, '--dir', dir, '--p12', '--password-file', pwFile], work)
  t.equal(r.status, 0, 'cert client exits 0: ' + r.stderr)
  const crtFile = join(out, 'callcenter-app-1.crt')
  const keyFile = join(out, 'callcenter-app-1.key')
  const p12File = join(out, 'callcenter-app-1.p12')
  for (const f of [crtFile, keyFile, p12File]) t.ok(existsSync(f), `${f} written`)
  t.equal(mode(keyFile), 0o600, 'the client key is 0600')
  t.equal(mode(p12File), 0o600, 'the PKCS#12 bundle is 0600')

  const crt = x509(crtFile)
  const ca = x509(join(dir, 'ca.crt'))
  t.match(crt.subject, /^CN=callcenter-app-1$/m, 'subject CN=callcenter-app-1')
  t.ok(crt.keyUsage?.includes(CLIENT_AUTH_OID), `extKeyUsage has clientAuth (${crt.keyUsage?.join(',')})`)
  t.notOk(crt.keyUsage?.includes('1.3.6.1.5.5.7.3.1'), 'not a server certificate')
  t.equal(crt.ca, false, 'not a CA')
  t.ok(crt.verify(ca.publicKey), 'signed by the CA')
  t.ok(crt.checkPrivateKey(createPrivateKey(readFileSync(keyFile))), 'the key file belongs to the certificate')

  // PKCS#12 round trip through node-forge.
  const p12Der = readFileSync(p12File).toString('binary')
  const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(p12Der), password)
  const keyBags = p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag })[forge.pki.oids.pkcs8ShroudedKeyBag] ?? []
  const certBags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag] ?? []
  t.equal(keyBags.length, 1, 'one (encrypted) key bag')
  t.ok(certBags.length >= 1, `certificate bags (${certBags.length})`)
  const bagFingerprints = certBags.map((b) => new X509Certificate(forge.pki.certificateToPem(b.cert as forge.pki.Certificate)).fingerprint256)
  t.ok(bagFingerprints.includes(crt.fingerprint256), 'the bundle holds the client certificate, identical to the .crt')
  t.ok(bagFingerprints.includes(ca.fingerprint256), 'the bundle holds the CA certificate')
  const bagKey = keyBags[0].key as forge.pki.rsa.PrivateKey
  t.ok(bagKey, 'the key bag decrypts to a private key')
  const certModulus = Buffer.from((crt.publicKey.export({ format: 'jwk' }) as { n: string }).n, 'base64url').toString('hex').replace(/^0+/, '')
  t.equal(bagKey.n.toString(16), certModulus, 'the bundled key matches the certificate (same modulus n)')
  const leafBag = certBags.find((b) => new X509Certificate(forge.pki.certificateToPem(b.cert as forge.pki.Certificate)).fingerprint256 === crt.fingerprint256)
  t.equal((leafBag?.cert?.publicKey as forge.pki.rsa.PublicKey | undefined)?.n.toString(16), bagKey.n.toString(16), 'the key bag and the leaf bag share n')
  t.throws(() => forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(p12Der), 'wrong password'), 'a wrong password throws')

  // Without --force, an existing client is not overwritten.
  const crtBefore = readFileSync(crtFile)
  const again = cli(['cert', 'client', '--name', 'callcenter-app-1', '--out', out, '--dir', dir], work)
  t.equal(again.status, 1, 'a second client with the same name exits 1')
  t.match(again.stderr, /refusing to overwrite/)
  t.ok(readFileSync(crtFile).equals(crtBefore), 'the client certificate is unchanged')
})

t.test('cert show: names, issuer, validity, fingerprint; a warning near expiry', async (t) => {
  const work = tmp('nasguard-certcli-')
  const dir = join(work, 'certs')
  t.equal(cli(['cert', 'init', '--host', 'nas-gw.example.se', '--host', '10.0.0.5', '--dir', dir], work).status, 0)
  const file = join(dir, 'server.crt')
  const x = x509(file)
  const r = cli(['cert', 'show', file], work)
  t.equal(r.status, 0, 'cert show exits 0: ' + r.stderr)
  t.match(r.stdout, /subject: +CN=nas-gw\.example\.se/)
  t.match(r.stdout, /issuer: +CN=nasguard local CA, O=nasguard local CA/)
  t.match(r.stdout, /DNS names: +nas-gw\.example\.se\n/)
  t.match(r.stdout, /IP addresses: +10\.0\.0\.5\n/)
  t.ok(r.stdout.includes(`${new Date(x.validFrom).toISOString()} to ${new Date(x.validTo).toISOString()}`), 'validity from notBefore to notAfter')
  t.match(r.stdout, /\((39[67]) days left\)/, 'days left')
  t.ok(r.stdout.includes(`SHA-256:     ${x.fingerprint256}`), 'the SHA-256 fingerprint, as node:crypto computes it')
  t.notMatch(r.stdout, /WARNING|EXPIRED/, 'no warning for a fresh certificate')

  const ca = createCa('short-lived test CA')
  const soon = issueServerCert(ca, ['localhost'], 10)
  const soonFile = join(work, 'soon.crt')
  writeFileSync(soonFile, soon.certPem)
  const s = cli(['cert', 'show', soonFile], work)
  t.equal(s.status, 0, s.stderr)
  t.match(s.stdout, /WARNING: expires in 9 days/, 'a certificate with 10 days left (9 whole) is flagged')
  t.ok(s.stdout.includes(new X509Certificate(soon.certPem).fingerprint256), 'its own fingerprint')

  const missing = cli(['cert', 'show', join(work, 'nope.crt')], work)
  t.equal(missing.status, 1, 'a missing file exits 1')
})

t.test('cert revoke: the CRL lists the serial; openssl refuses the revoked client only', async (t) => {
  const work = tmp('nasguard-certcli-')
  const dir = join(work, 'certs')
  const out = join(work, 'clients')
  t.equal(cli(['cert', 'init', '--host', 'localhost', '--dir', dir], work).status, 0)
  t.equal(cli(['cert', 'client', '--name', 'callcenter-app-1', '--out', out, '--dir', dir], work).status, 0)
  t.equal(cli(['cert', 'client', '--name', 'callcenter-app-2', '--out', out, '--dir', dir], work).status, 0)
  const revokedCrt = join(out, 'callcenter-app-1.crt')
  const keptCrt = join(out, 'callcenter-app-2.crt')
  const crlFile = join(dir, 'ca.crl')
  const caFile = join(dir, 'ca.crt')
  const serial = normSerial(x509(revokedCrt).serialNumber)
  const keptSerial = normSerial(x509(keptCrt).serialNumber)

  const crlBefore = readFileSync(crlFile)
  const r = cli(['cert', 'revoke', '--cert', revokedCrt, '--dir', dir], work)
  t.equal(r.status, 0, 'cert revoke exits 0: ' + r.stderr)
  t.notOk(readFileSync(crlFile).equals(crlBefore), 'ca.crl was rewritten')

  const listed = crlSerials(readFileSync(crlFile, 'utf8'))
  t.same(listed, [serial], 'the CRL (parsed with forge ASN.1) lists exactly the revoked serial')
  t.notOk(listed.includes(keptSerial), 'the other client is not listed')

  if (!HAVE_OPENSSL) {
    t.comment('openssl is not on PATH: the CRL signature and openssl verify -crl_check were not checked')
    return
  }
  const text = openssl(['crl', '-in', crlFile, '-noout', '-text'])
  t.equal(text?.status, 0, 'openssl parses the CRL: ' + text?.stderr)
  const opensslSerials = [...(text?.stdout ?? '').matchAll(/Serial Number: *([0-9A-Fa-f]+)/g)].map((m) => normSerial(m[1]))
  t.same(opensslSerials, [serial], 'openssl crl -text lists the revoked serial')

  const signed = openssl(['crl', '-in', crlFile, '-noout', '-CAfile', caFile])
  t.equal(signed?.status, 0, 'the CRL signature verifies against the CA: ' + signed?.stderr)

  const bad = openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', caFile, revokedCrt])
  t.not(bad?.status, 0, 'openssl verify -crl_check refuses the revoked client')
  t.match((bad?.stdout ?? '') + (bad?.stderr ?? ''), /certificate revoked/)
  const good = openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', caFile, keptCrt])
  t.equal(good?.status, 0, 'openssl verify -crl_check accepts the unrevoked client: ' + (good?.stdout ?? '') + (good?.stderr ?? ''))

  // Revoking the same certificate again keeps one entry.
  t.equal(cli(['cert', 'revoke', '--cert', revokedCrt, '--dir', dir], work).status, 0)
  t.same(crlSerials(readFileSync(crlFile, 'utf8')), [serial], 'revoking twice lists the serial once')
})
