// `nasguard cert renew`: a new server certificate from the CA already in
// --dir, so that nothing that trusts the CA (browsers, machine clients) and
// no client certificate it issued notices; a running gateway serves it
// without a restart. And `cert init --force` no longer replaces the CA by
// accident: that takes --new-ca. Run through the built CLI (dist/cli.js,
// `npm run build` first) against a gateway on real sockets.
import t from 'tap'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_POLICY, scrape, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { runCli } from '../helpers/process.js'
import { certClient, certInit } from '../../src/tls/cert-commands.js'
import { waitFor } from '../helpers/wait.js'

const DAY_MS = 24 * 60 * 60 * 1000
const POLICY = [{ name: 'machine', path: '/machine/**', certs: ['CN=callcenter-app-1'] }, ...DEFAULT_POLICY]

const tmp = (prefix: string): string => mkdtempSync(join(tmpdir(), prefix))
const x509 = (file: string): X509Certificate => new X509Certificate(readFileSync(file))
const mode = (file: string): number => statSync(file).mode & 0o777

/** Every file of the directory with its bytes. */
function snapshot (dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]))
}

/** The fingerprint of the server certificate a new TLS connection is shown, trusting only `ca`. */
function peerFingerprint (port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] }, () => {
      const fp = socket.getPeerCertificate().fingerprint256
      socket.end()
      resolve(fp)
    })
    socket.on('error', reject)
  })
}

/** GET on a new TLS connection trusting only `ca`, with a client certificate: the status, or the error code. */
function getWithClient (port: number, path: string, ca: Buffer, client: { cert: Buffer, key: Buffer }): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port, path, ca, cert: client.cert, key: client.key, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    req.end()
  })
}

t.test('cert renew keeps the CA: old clients and client certificates work, the running gateway serves the new certificate', async (t) => {
  const work = tmp('nasguard-renew-')
  const dir = join(work, 'certs')
  const clients = join(work, 'clients')
  // Set up with the functions behind cert init and cert client (each CLI run
  // costs seconds on a loaded machine); what is under test runs the CLI.
  certInit({ dir, hosts: ['localhost', '127.0.0.1'], days: 30, force: false })
  certClient({ dir, name: 'callcenter-app-1', out: clients, days: 365, p12: false, force: false })
  const clientPair = { cert: readFileSync(join(clients, 'callcenter-app-1.crt')), key: readFileSync(join(clients, 'callcenter-app-1.key')) }

  // What a client had before the renewal: the CA certificate, and its own certificate.
  const trustedCa = readFileSync(join(dir, 'ca.crt'))
  const caKeyBefore = readFileSync(join(dir, 'ca.key'))
  const oldServer = x509(join(dir, 'server.crt'))

  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, {
    tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), clientAuth: 'require', clientCa: join(dir, 'ca.crt'), clientCrl: join(dir, 'ca.crl') },
    policy: POLICY
  })
  t.equal(await peerFingerprint(gw.port, trustedCa), oldServer.fingerprint256, 'before: the gateway serves the first certificate')
  t.equal(await getWithClient(gw.port, '/machine/a.wav', trustedCa, clientPair), 200, 'before: the client certificate opens its rule')

  const r = await runCli(['cert', 'renew', '--dir', dir])
  t.equal(r.status, 0, 'cert renew exits 0: ' + r.stderr)
  t.match(r.stdout, /new certificate and key for localhost, 127\.0\.0\.1, valid 397 days/, 'it says what it made')
  t.match(r.stdout, /signed by the CA in .*ca\.crt \(unchanged/, 'and that the CA is kept')
  t.match(r.stdout, /replaced: the certificate valid until/, 'and what it replaced')

  t.ok(readFileSync(join(dir, 'ca.crt')).equals(trustedCa), 'ca.crt is unchanged')
  t.ok(readFileSync(join(dir, 'ca.key')).equals(caKeyBefore), 'ca.key is unchanged')
  const newServer = x509(join(dir, 'server.crt'))
  t.not(newServer.fingerprint256, oldServer.fingerprint256, 'server.crt is a new certificate')
  t.not(newServer.serialNumber, oldServer.serialNumber, 'with a new serial')
  t.ok(newServer.verify(new X509Certificate(trustedCa).publicKey), 'signed by the same CA key')
  t.ok(newServer.checkIssued(new X509Certificate(trustedCa)), 'naming the same CA as issuer')
  t.equal(newServer.subject, oldServer.subject, 'same subject')
  t.equal(newServer.subjectAltName, oldServer.subjectAltName, 'same names (DNS and IP)')
  t.ok(Date.parse(newServer.validTo) > Date.parse(oldServer.validTo) + 300 * DAY_MS, 'valid for --days (397 by default), not the 30 of the first one')
  t.ok(newServer.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'server.key')))), 'server.key belongs to the new certificate')
  t.equal(mode(join(dir, 'server.key')), 0o600, 'server.key is 0600')
  t.same(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left behind')

  // The running gateway's watcher loads the new pair: no restart.
  const served = await waitFor('the gateway to serve the renewed certificate', async () => {
    const fp = await peerFingerprint(gw.port, trustedCa)
    return fp === newServer.fingerprint256 ? fp : undefined
  }, { tries: 200, intervalMs: 50 })
  t.equal(served, newServer.fingerprint256, 'a client trusting the old ca.crt accepts the renewed certificate')
  t.equal(await getWithClient(gw.port, '/machine/a.wav', trustedCa, clientPair), 200, 'the client certificate issued before the renewal still opens its rule')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_tls_certificate_expiry_timestamp_seconds{cert="server"}'), Math.floor(Date.parse(newServer.validTo) / 1000), 'the expiry gauge shows the renewed certificate')
})

t.test('cert renew: --host and --days, the CRL distribution point kept, refusals', async (t) => {
  const work = tmp('nasguard-renew-')
  const dir = join(work, 'certs')
  certInit({ dir, hosts: ['nas-gw.example.se', '::1'], days: 397, force: false, crlUrl: 'http://pki.lan/nasguard.crl' })
  const ca = x509(join(dir, 'ca.crt'))

  const same = await runCli(['cert', 'renew', '--dir', dir, '--days', '90'])
  t.equal(same.status, 0, same.stderr)
  const renewed = x509(join(dir, 'server.crt'))
  t.equal(renewed.checkHost('nas-gw.example.se'), 'nas-gw.example.se', 'the DNS name carried over')
  t.equal(renewed.checkIP('::1'), '::1', 'the IPv6 address carried over')
  t.match(same.stdout, /for nas-gw\.example\.se, ::1,/, 'named as they were given')
  const days = (Date.parse(renewed.validTo) - Date.now()) / DAY_MS
  t.ok(days > 89 && days <= 90, `--days 90 (${days.toFixed(2)})`)
  t.ok(renewed.raw.includes(Buffer.from('http://pki.lan/nasguard.crl')), 'the CRL distribution point carried over')

  const other = await runCli(['cert', 'renew', '--dir', dir, '--host', 'nas-gw2.example.se', '--host', '10.0.0.7'])
  t.equal(other.status, 0, other.stderr)
  const moved = x509(join(dir, 'server.crt'))
  t.match(moved.subject, /^CN=nas-gw2\.example\.se$/m, '--host: the first name is the CN')
  t.equal(moved.checkIP('10.0.0.7'), '10.0.0.7', '--host: the IP')
  t.equal(moved.checkHost('nas-gw.example.se'), undefined, '--host replaces the names')
  t.ok(moved.verify(ca.publicKey), 'still the same CA')

  const before = snapshot(dir)
  const tooLong = await runCli(['cert', 'renew', '--dir', dir, '--days', '398'])
  t.equal(tooLong.status, 2, '--days 398 is a usage error')
  t.match(tooLong.stderr, /--days must be a whole number from 1 to 397/)
  const badHost = await runCli(['cert', 'renew', '--dir', dir, '--host', 'not a host'])
  t.equal(badHost.status, 2, 'a bad --host is a usage error')
  t.match(badHost.stderr, /neither a DNS name nor an IP address/)
  const after = snapshot(dir)
  for (const [f, bytes] of before) t.ok(bytes.equals(after.get(f) as Buffer), `a refused renew leaves ${f} alone`)

  const noCa = await runCli(['cert', 'renew', '--dir', join(work, 'empty')])
  t.equal(noCa.status, 1, 'no CA: exit 1')
  t.match(noCa.stderr, /no CA in .*empty: run nasguard cert init first/)
  t.notOk(existsSync(join(work, 'empty', 'server.crt')), 'nothing written without a CA')
})

/** A certificate's key as OpenSSL reads it: type and size or curve. */
function keyOf (file: string): string {
  const k = x509(file).publicKey
  return `${k.asymmetricKeyType ?? '?'} ${k.asymmetricKeyDetails?.namedCurve ?? k.asymmetricKeyDetails?.modulusLength ?? '?'}`
}

t.test('the server key: ECDSA P-256 by default, RSA on request, and renew keeps what the certificate has', async (t) => {
  const work = tmp('nasguard-renew-')
  const ecDir = join(work, 'ec')
  const init = await runCli(['cert', 'init', '--host', 'localhost', '--dir', ecDir])
  t.equal(init.status, 0, init.stderr)
  t.equal(keyOf(join(ecDir, 'server.crt')), 'ec prime256v1', 'cert init: an ECDSA P-256 server key')
  t.equal(createPrivateKey(readFileSync(join(ecDir, 'server.key'))).asymmetricKeyType, 'ec', 'server.key is the EC key')
  t.match(init.stdout, /key: +ECDSA P-256/, 'cert init shows the key')
  t.equal(keyOf(join(ecDir, 'ca.crt')), 'rsa 2048', 'the CA stays RSA-2048')
  t.ok(x509(join(ecDir, 'server.crt')).checkPrivateKey(createPrivateKey(readFileSync(join(ecDir, 'server.key')))), 'the key is the certificate\'s')

  const rsaDir = join(work, 'rsa')
  const rsa = await runCli(['cert', 'init', '--host', 'localhost', '--dir', rsaDir, '--key-type', 'rsa'])
  t.equal(rsa.status, 0, rsa.stderr)
  t.equal(keyOf(join(rsaDir, 'server.crt')), 'rsa 2048', '--key-type rsa: an RSA-2048 server key')
  const kept = await runCli(['cert', 'renew', '--dir', rsaDir])
  t.equal(kept.status, 0, kept.stderr)
  t.equal(keyOf(join(rsaDir, 'server.crt')), 'rsa 2048', 'renew keeps an RSA certificate RSA')
  const switched = await runCli(['cert', 'renew', '--dir', rsaDir, '--key-type', 'ecdsa'])
  t.equal(switched.status, 0, switched.stderr)
  t.equal(keyOf(join(rsaDir, 'server.crt')), 'ec prime256v1', 'renew --key-type ecdsa switches it')
  t.ok(x509(join(rsaDir, 'server.crt')).checkPrivateKey(createPrivateKey(readFileSync(join(rsaDir, 'server.key')))), 'with its new key')
  const ecKept = await runCli(['cert', 'renew', '--dir', ecDir])
  t.equal(ecKept.status, 0, ecKept.stderr)
  t.equal(keyOf(join(ecDir, 'server.crt')), 'ec prime256v1', 'renew keeps an ECDSA certificate ECDSA')

  const before = snapshot(ecDir)
  for (const args of [['cert', 'init', '--host', 'localhost', '--dir', join(work, 'bad'), '--key-type', 'dsa'], ['cert', 'renew', '--dir', ecDir, '--key-type', 'RSA4096']]) {
    const bad = await runCli(args)
    t.equal(bad.status, 2, `${args[1]} --key-type ${args[args.length - 1]}: a usage error`)
    t.match(bad.stderr, /--key-type "[^"]+" is not one of ecdsa, rsa/, 'naming the option and the choices')
  }
  t.notOk(existsSync(join(work, 'bad')), 'nothing made for a bad --key-type')
  const badCrl = await runCli(['cert', 'init', '--host', 'localhost', '--dir', join(work, 'badcrl'), '--crl-url', 'ftp://pki.lan/ca.crl'])
  t.equal(badCrl.status, 2, 'init --crl-url ftp://…: a usage error')
  t.match(badCrl.stderr, /--crl-url: not an http\(s\) URL: ftp:\/\/pki\.lan\/ca\.crl/, 'naming the option')
  t.notOk(existsSync(join(work, 'badcrl', 'ca.key')), 'and no CA left behind to block the next init')
  const after = snapshot(ecDir)
  for (const [f, bytes] of before) t.ok(bytes.equals(after.get(f) as Buffer), `a refused renew leaves ${f} alone`)
})

/** openssl, quietly: the certificates nasguard did not make. */
function openssl (args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' })
}

t.test('cert renew with what an operator may have put in the directory', async (t) => {
  const work = tmp('nasguard-renew-')
  const fresh = (name: string): string => {
    const dir = join(work, name)
    certInit({ dir, hosts: ['gw.example.test'], days: 397, force: false })
    return dir
  }

  // A server.crt nothing can read: with --host and --crl-url it is renewed all the same.
  const garbled = fresh('garbled')
  writeFileSync(join(garbled, 'server.crt'), 'not a certificate\n')
  const recovered = await runCli(['cert', 'renew', '--dir', garbled, '--host', 'gw.example.test', '--crl-url', 'http://pki.lan/a.crl'])
  t.equal(recovered.status, 0, `an unreadable server.crt is replaced when --host and --crl-url are given: ${recovered.stderr}`)
  t.equal(keyOf(join(garbled, 'server.crt')), 'ec prime256v1', 'with an ECDSA key')
  t.match(recovered.stdout, /replaced: a .*server\.crt OpenSSL could not read/, 'and it says what it replaced')
  const stuck = await runCli(['cert', 'renew', '--dir', fresh('garbled-no-host')])
  t.equal(stuck.status, 0, 'a readable one needs nothing')
  writeFileSync(join(work, 'garbled-no-host', 'server.crt'), 'not a certificate\n')
  const noHost = await runCli(['cert', 'renew', '--dir', join(work, 'garbled-no-host')])
  t.equal(noHost.status, 1, 'an unreadable server.crt without --host: exit 1')
  t.match(noHost.stderr, /give the names with --host and any CRL distribution point with --crl-url/, 'saying what to give')

  // Keys of other sizes nasguard makes are renewed as they are; a key of a type it does not make becomes P-256, and it says so.
  const others: Array<{ name: string, newkey: string[], want: string, note?: RegExp }> = [
    { name: 'ECDSA P-384', newkey: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp384r1'], want: 'ec secp384r1' },
    { name: 'RSA 3072', newkey: ['-newkey', 'rsa:3072'], want: 'rsa 3072' },
    { name: 'Ed25519', newkey: ['-newkey', 'ed25519'], want: 'ec prime256v1', note: /note: +the key is now ECDSA P-256, not ED25519 as before/ }
  ]
  for (const o of others) {
    const dir = fresh(o.name.replace(/\W+/g, '-'))
    openssl(['req', '-x509', ...o.newkey, '-nodes', '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.crt'), '-days', '30', '-subj', '/CN=gw.example.test', '-addext', 'subjectAltName=DNS:gw.example.test'])
    const r = await runCli(['cert', 'renew', '--dir', dir])
    t.equal(r.status, 0, `${o.name}: ${r.stderr}`)
    t.equal(keyOf(join(dir, 'server.crt')), o.want, `${o.name}: renewed as ${o.want}`)
    if (o.note) t.match(r.stdout, o.note, `${o.name}: the change of key is said`)
    else t.notMatch(r.stdout, /note: +the key is now/, `${o.name}: no change of key to report`)
    t.ok(x509(join(dir, 'server.crt')).checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'server.key')))), `${o.name}: the new key is the certificate's`)
  }

  // CAs nasguard cannot sign with, or whose names forge would re-encode: refused, nothing written.
  const cas: Array<{ name: string, make: (dir: string) => void, says: RegExp }> = [
    { name: 'an EC CA', make: (dir) => { openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=EC CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']) }, says: /the CA's key is ECDSA P-256: a CA that signs nasguard's certificates has an RSA key/ },
    { name: 'an encrypted CA key', make: (dir) => { openssl(['pkey', '-in', join(dir, 'ca.key'), '-aes256', '-passout', 'pass:secret', '-out', join(dir, 'ca.key.enc')]); renameSync(join(dir, 'ca.key.enc'), join(dir, 'ca.key')) }, says: /ca\.key is not a private key nasguard can read \(an encrypted key cannot be used\)/ },
    { name: 'a CA with a UTF-8 name', make: (dir) => { openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-utf8', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=Ümlaut CA/O=Ä', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']) }, says: /does not chain to it/ }
  ]
  for (const c of cas) {
    const dir = fresh(c.name.replace(/\W+/g, '-'))
    c.make(dir)
    const before = snapshot(dir)
    const r = await runCli(['cert', 'renew', '--dir', dir])
    t.equal(r.status, 1, `${c.name}: exit 1`)
    t.match(r.stderr, c.says, `${c.name}: says why`)
    t.notMatch(r.stderr, /\n\s+at /, `${c.name}: no stack trace`)
    const after = snapshot(dir)
    for (const [f, bytes] of before) t.ok(bytes.equals(after.get(f) as Buffer), `${c.name}: ${f} untouched`)
  }
})

t.test('cert init --force refuses to replace the CA without --new-ca', async (t) => {
  const work = tmp('nasguard-renew-')
  const dir = join(work, 'certs')
  certInit({ dir, hosts: ['localhost'], days: 397, force: false })
  const before = snapshot(dir)

  const forced = await runCli(['cert', 'init', '--host', 'localhost', '--dir', dir, '--force'])
  t.equal(forced.status, 1, 'init --force over an existing CA exits 1')
  t.match(forced.stderr, /refusing to replace the CA/, 'it refuses')
  t.match(forced.stderr, /invalidates every client certificate/, 'and says why')
  t.match(forced.stderr, /nasguard cert renew/, 'and points at cert renew')
  t.match(forced.stderr, /--new-ca/, 'and at --new-ca')
  t.notMatch(forced.stderr, /\n\s+at /, 'no stack trace')
  const after = snapshot(dir)
  t.same([...after.keys()].sort(), [...before.keys()].sort(), 'no file added or removed')
  for (const [f, bytes] of before) t.ok(bytes.equals(after.get(f) as Buffer), `${f} unchanged`)

  const replaced = await runCli(['cert', 'init', '--host', 'localhost', '--dir', dir, '--force', '--new-ca'])
  t.equal(replaced.status, 0, 'init --force --new-ca exits 0: ' + replaced.stderr)
  t.match(replaced.stdout, /a NEW CA/, 'it says the CA is new')
  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key']) t.notOk(readFileSync(join(dir, f)).equals(before.get(f) as Buffer), `--new-ca replaced ${f}`)
  t.equal(mode(join(dir, 'ca.key')), 0o600, 'the new ca.key is 0600')
  t.ok(x509(join(dir, 'server.crt')).verify(x509(join(dir, 'ca.crt')).publicKey), 'the server certificate is signed by the new CA')
})
