// A client CRL past its nextUpdate makes every client certificate be
// refused (OpenSSL under require, the gate under optional). It must show:
// /readyz not ready with crl: expired, nasguard_tls_crl_next_update_timestamp_seconds,
// the shipped alerts; and `nasguard cert crl` re-signs it with the same
// entries, after which the gateway (watcher or SIGHUP reload) is ready and
// accepts the certificates again. Through the built CLI (dist/cli.js) and a
// gateway on real sockets.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AsnConvert } from '@peculiar/asn1-schema'
import { CertificateList } from '@peculiar/asn1-x509'
import { buildCrl, type RevokedEntry } from '../../src/tls/certificates.js'
import { certClient, certInit, certRevoke } from '../../src/tls/cert-commands.js'
import { DEFAULT_POLICY, scrape, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'

const DAY_MS = 24 * 60 * 60 * 1000
const GAUGE = 'nasguard_tls_crl_next_update_timestamp_seconds{crl="client"}'
const POLICY = [{ name: 'machine', path: '/machine/**', certs: ['CN=callcenter-app-1'] }, ...DEFAULT_POLICY]

interface Pki { dir: string, caFile: string, crlFile: string, granted: { cert: Buffer, key: Buffer }, revoked: { cert: Buffer, key: Buffer }, revokedSerial: string }

/**
 * A CA as `cert init` makes it, two clients as `cert client` does, the
 * second revoked by `cert revoke` (the functions behind the commands, called
 * here: the CLI itself is run for what is under test, on a loaded machine
 * each run costs seconds).
 */
function pki (): Pki {
  const work = mkdtempSync(join(tmpdir(), 'nasguard-crl-'))
  const dir = join(work, 'certs')
  const out = join(work, 'clients')
  certInit({ dir, hosts: ['localhost', '127.0.0.1'], days: 397, force: false })
  for (const name of ['callcenter-app-1', 'callcenter-app-2']) certClient({ dir, name, out, days: 365, p12: false, force: false })
  certRevoke({ dir, certFile: join(out, 'callcenter-app-2.crt') })
  const pair = (name: string): { cert: Buffer, key: Buffer } => ({ cert: readFileSync(join(out, `${name}.crt`)), key: readFileSync(join(out, `${name}.key`)) })
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    crlFile: join(dir, 'ca.crl'),
    granted: pair('callcenter-app-1'),
    revoked: pair('callcenter-app-2'),
    revokedSerial: new X509Certificate(readFileSync(join(out, 'callcenter-app-2.crt'))).serialNumber
  }
}

/**
 * Replaces ca.crl with one signed by the same CA, listing the same entries,
 * whose nextUpdate passed a day ago (as if nobody re-signed it for a year).
 * Returns that nextUpdate in seconds.
 */
function expireCrl (p: Pki): number {
  const ca = { certPem: readFileSync(p.caFile, 'utf8'), keyPem: readFileSync(join(p.dir, 'ca.key'), 'utf8') }
  const entries = JSON.parse(readFileSync(join(p.dir, 'revoked.json'), 'utf8')) as RevokedEntry[]
  const signedAt = new Date(Date.now() - 31 * DAY_MS)
  writeFileSync(p.crlFile, buildCrl(ca, entries, 30, signedAt))
  return Math.floor((signedAt.getTime() + 30 * DAY_MS) / 1000)
}

/** thisUpdate, nextUpdate (ms) and the serials (upper-case hex) of a PEM CRL, parsed with @peculiar/asn1-x509. */
function readCrl (file: string): { thisUpdate: number, nextUpdate: number, serials: string[] } {
  const b64 = /-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/.exec(readFileSync(file, 'utf8'))?.[1] ?? ''
  const crl = AsnConvert.parse(Buffer.from(b64.replace(/\s+/g, ''), 'base64'), CertificateList)
  return {
    thisUpdate: crl.tbsCertList.thisUpdate.getTime().getTime(),
    nextUpdate: crl.tbsCertList.nextUpdate?.getTime().getTime() ?? NaN,
    serials: (crl.tbsCertList.revokedCertificates ?? []).map((r) => Buffer.from(r.userCertificate).toString('hex').toUpperCase().replace(/^0+(?=.)/, ''))
  }
}

async function readyz (gw: TestGateway): Promise<{ status: number, checks: Record<string, string> }> {
  const res = await fetch(gw.adminUrl + '/readyz')
  return { status: res.status, checks: ((await res.json()) as { checks: Record<string, string> }).checks }
}

/** GET on a new TLS connection with a client certificate: the status, or the error code of a refused handshake. */
function getWithClient (gw: TestGateway, p: Pki, path: string, client: { cert: Buffer, key: Buffer }): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path, ca: readFileSync(p.caFile), cert: client.cert, key: client.key, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    req.end()
  })
}

const gatewayTls = (p: Pki, clientAuth: 'require' | 'optional', watch = true): Record<string, unknown> =>
  ({ cert: join(p.dir, 'server.crt'), key: join(p.dir, 'server.key'), clientAuth, clientCa: p.caFile, clientCrl: p.crlFile, watch })

t.test('require: an expired CRL shows in /readyz and the gauge; cert crl re-signs it and the watcher brings the gateway back', async (t) => {
  const p = pki()
  const expiredAt = expireCrl(p)
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: gatewayTls(p, 'require'), policy: POLICY })

  const down = await readyz(gw)
  t.equal(down.status, 503, '/readyz: 503 with an expired CRL')
  t.equal(down.checks.crl, 'expired', '/readyz names the CRL')
  t.equal(down.checks.certificate, 'ok', 'the server certificate itself is fine')
  t.equal((await scrape(gw.adminUrl)).get(GAUGE), expiredAt, 'the gauge holds the CRL\'s nextUpdate, in the past')
  t.ok(gw.logs.some((l) => /tls\.clientCrl has expired/.test(l)), 'an error is logged')
  t.not(await getWithClient(gw, p, '/machine/a.wav', p.granted), 200, 'OpenSSL refuses even the granted certificate: why readiness must say so')

  const r = await runCli(['cert', 'crl', '--dir', p.dir])
  const ranAt = Date.now()
  t.equal(r.status, 0, 'cert crl exits 0: ' + r.stderr)
  t.match(r.stdout, /re-signed .*ca\.crl \(it was valid until .*: EXPIRED/, 'it says the old one had expired')
  t.match(r.stdout, /1 revoked certificate\(s\), valid until .* \(365 days\)/, 'and what the new one holds')
  const fresh = readCrl(p.crlFile)
  t.same(fresh.serials, [p.revokedSerial.replace(/^0+(?=.)/, '')], 'the same revoked entry')
  t.ok(fresh.nextUpdate > ranAt + 364 * DAY_MS && fresh.nextUpdate <= ranAt + 365 * DAY_MS, 'nextUpdate 365 days on')
  t.ok(fresh.thisUpdate <= ranAt && fresh.thisUpdate > ranAt - DAY_MS, 'thisUpdate is now')

  const up = await waitFor('/readyz to be ready again', async () => {
    const s = await readyz(gw)
    return s.status === 200 ? s : undefined
  }, { tries: 200, intervalMs: 50 })
  t.equal(up.checks.crl, 'ok', 'crl: ok once the watcher loaded the new CRL')
  t.equal((await scrape(gw.adminUrl)).get(GAUGE), Math.floor(fresh.nextUpdate / 1000), 'the gauge follows')
  t.equal(await getWithClient(gw, p, '/machine/a.wav', p.granted), 200, 'the granted certificate is accepted again')
  t.not(await getWithClient(gw, p, '/machine/a.wav', p.revoked), 200, 'the revoked one is still refused')
})

t.test('optional: the gate refuses certificates under an expired CRL; cert crl and a reload (SIGHUP) bring it back', async (t) => {
  const p = pki()
  const expiredAt = expireCrl(p)
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { tls: gatewayTls(p, 'optional', false), policy: POLICY })

  const down = await readyz(gw)
  t.equal(down.status, 503, '/readyz: not ready')
  t.equal(down.checks.crl, 'expired', 'crl: expired')
  t.equal((await scrape(gw.adminUrl)).get(GAUGE), expiredAt, 'the gauge holds the past nextUpdate')
  t.equal(await getWithClient(gw, p, '/machine/a.wav', p.granted), 401, 'the gate refuses the granted certificate (401)')

  const r = await runCli(['cert', 'crl', '--dir', p.dir, '--days', '7'])
  t.equal(r.status, 0, 'cert crl --days 7: ' + r.stderr)
  const fresh = readCrl(p.crlFile)
  t.ok(fresh.nextUpdate > Date.now() + 6 * DAY_MS && fresh.nextUpdate <= Date.now() + 7 * DAY_MS, '--days 7: nextUpdate a week on')
  t.equal((await readyz(gw)).checks.crl, 'expired', 'tls.watch is off: nothing changes before the reload')

  t.equal(gw.gateway.reloadCertificate(), true, 'the reload (what SIGHUP calls) succeeds')
  const up = await readyz(gw)
  t.equal(up.status, 200, 'ready')
  t.equal(up.checks.crl, 'ok', 'crl: ok')
  t.equal((await scrape(gw.adminUrl)).get(GAUGE), Math.floor(fresh.nextUpdate / 1000), 'the gauge follows the reload')
  t.equal(await getWithClient(gw, p, '/machine/a.wav', p.granted), 200, 'the granted certificate is accepted again')
  t.equal(await getWithClient(gw, p, '/machine/a.wav', p.revoked), 401, 'the revoked one is still refused')
})

t.test('cert crl keeps every revocation, even one missing from revoked.json; refusals', async (t) => {
  const p = pki()
  // revoked.json lost its entry; the signed CRL still lists it.
  writeFileSync(join(p.dir, 'revoked.json'), '[]\n')
  const r = await runCli(['cert', 'crl', '--dir', p.dir])
  t.equal(r.status, 0, r.stderr)
  t.same(readCrl(p.crlFile).serials, [p.revokedSerial.replace(/^0+(?=.)/, '')], 'the entry of the old CRL is kept')
  const list = JSON.parse(readFileSync(join(p.dir, 'revoked.json'), 'utf8')) as RevokedEntry[]
  t.same(list.map((e) => e.serial.toUpperCase().replace(/^0+(?=.)/, '')), [p.revokedSerial.replace(/^0+(?=.)/, '')], 'and written back to revoked.json (a serial may be written with a leading zero)')

  const before = readFileSync(p.crlFile)
  for (const days of ['0', '3651']) {
    const bad = await runCli(['cert', 'crl', '--dir', p.dir, '--days', days])
    t.equal(bad.status, 2, `--days ${days}: a usage error`)
    t.match(bad.stderr, /--days must be a whole number from 1 to 3650/)
  }
  t.ok(readFileSync(p.crlFile).equals(before), 'a refused cert crl leaves ca.crl alone')
  const noCa = await runCli(['cert', 'crl', '--dir', join(p.dir, 'nope')])
  t.equal(noCa.status, 1, 'no CA: exit 1')
  t.match(noCa.stderr, /no CA in/)
})

t.test('without a CRL: no crl check and no gauge value', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const s = await readyz(gw)
  t.equal(s.checks.crl, undefined, 'no crl check')
  t.equal(s.status, 200, 'ready')
  const text = await (await fetch(gw.adminUrl + '/metrics')).text()
  t.match(text, /# TYPE nasguard_tls_crl_next_update_timestamp_seconds gauge/, 'the gauge is declared (the alert rules name it)')
  t.notMatch(text, /^nasguard_tls_crl_next_update_timestamp_seconds[{ ]/m, 'but has no value to alert on')
})

const PROMTOOL = spawnSync('sh', ['-c', 'command -v promtool']).stdout.toString().trim()

t.test('the shipped alerts fire before the CRL expires and once it has (promtool)', { skip: PROMTOOL ? false : 'promtool is not installed here (apt-get install prometheus)' }, async (t) => {
  const rules = readFileSync('deploy/prometheus/alerts.yml', 'utf8')
  const tests = readFileSync('deploy/prometheus/alerts.test.yml', 'utf8')
  for (const name of ['NasguardCrlExpiresSoon', 'NasguardCrlExpired']) {
    t.match(rules, new RegExp(`alert: ${name}\\n\\s+expr: .*nasguard_tls_crl_next_update_timestamp_seconds`), `${name} is a rule on the gauge`)
    t.match(tests, new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${name} has a unit test where it fires`)
  }
  t.notMatch(rules + tests, /nasguard cert init/, 'no alert tells admins to make a new CA')
  t.match(rules, /Renew it \(nasguard cert renew/, 'the certificate alert points at cert renew')
  const unit = spawnSync(PROMTOOL, ['test', 'rules', 'deploy/prometheus/alerts.test.yml'], { encoding: 'utf8' })
  t.equal(unit.status, 0, unit.stdout + unit.stderr)
})
