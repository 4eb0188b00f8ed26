// `nasguard cert ...`: a local CA for the gateway and its machine clients,
// on node-forge. Files in the CA directory (default certs/):
//   ca.crt ca.key       the CA (key 0600)
//   server.crt/.key     the gateway's certificate (key 0600)
//   ca.crl              the CA's revocation list (for tls.clientCrl)
//   revoked.json        what ca.crl is built from
import { X509Certificate } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import {
  MAX_SERVER_CERT_DAYS, buildCrl, certPaths, createCa, describeCertificates, issueClientCert,
  issueServerCert, toPkcs12, writeKeyFile, type KeyAndCert, type RevokedEntry
} from './certificates.js'

export class CertCommandError extends Error {
  override name = 'CertCommandError'
}

const EXPIRY_WARNING_DAYS = 30

function readCa (dir: string): KeyAndCert {
  const p = certPaths(dir)
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) throw new CertCommandError(`no CA in ${dir}: run nasguard cert init first`)
  return { certPem: readFileSync(p.caCert, 'utf8'), keyPem: readFileSync(p.caKey, 'utf8') }
}

function refuseOverwrite (files: string[], force: boolean): void {
  const present = files.filter((f) => existsSync(f))
  if (present.length > 0 && !force) throw new CertCommandError(`refusing to overwrite ${present.join(', ')} (use --force)`)
}

function writeCrl (dir: string, ca: KeyAndCert, revoked: RevokedEntry[]): string {
  const file = join(dir, 'ca.crl')
  writeFileSync(file, buildCrl(ca, revoked), { mode: 0o644 })
  writeFileSync(join(dir, 'revoked.json'), JSON.stringify(revoked, null, 2) + '\n', { mode: 0o644 })
  return file
}

export function certInit (opts: { dir: string, hosts: string[], days: number, force: boolean, crlUrl?: string }): string {
  if (opts.hosts.length === 0) throw new CertCommandError('cert init needs at least one --host')
  if (opts.days < 1 || opts.days > MAX_SERVER_CERT_DAYS) throw new CertCommandError(`--days must be 1 to ${MAX_SERVER_CERT_DAYS}`)
  for (const h of opts.hosts) {
    if (!isIP(h) && !/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(h)) {
      throw new CertCommandError(`--host ${JSON.stringify(h)} is neither a DNS name nor an IP address`)
    }
  }
  const p = certPaths(opts.dir)
  refuseOverwrite([p.caCert, p.caKey, p.serverCert, p.serverKey], opts.force)
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 })
  const ca = createCa('nasguard local CA')
  writeKeyFile(p.caKey, ca.keyPem)
  writeFileSync(p.caCert, ca.certPem, { mode: 0o644 })
  let server: KeyAndCert
  try {
    server = issueServerCert(ca, opts.hosts, opts.days, { crlUrl: opts.crlUrl })
  } catch (err) {
    throw new CertCommandError((err as Error).message)
  }
  writeKeyFile(p.serverKey, server.keyPem)
  writeFileSync(p.serverCert, server.certPem, { mode: 0o644 })
  const crl = writeCrl(opts.dir, ca, [])
  return [
    `CA:          ${p.caCert} (key ${p.caKey}, 0600)`,
    `server:      ${p.serverCert} (key ${p.serverKey}, 0600), valid ${opts.days} days`,
    `revocations: ${crl}`,
    '',
    showCertificate(p.serverCert)
  ].join('\n')
}

export function certClient (opts: { dir: string, name: string, out: string, days: number, p12: boolean, password?: string, force: boolean, crlUrl?: string }): string {
  const ca = readCa(opts.dir)
  if (opts.p12 && !opts.password) throw new CertCommandError('--p12 needs --password-file')
  const crt = join(opts.out, `${opts.name}.crt`)
  const key = join(opts.out, `${opts.name}.key`)
  const p12 = join(opts.out, `${opts.name}.p12`)
  refuseOverwrite(opts.p12 ? [crt, key, p12] : [crt, key], opts.force)
  let client
  try {
    client = issueClientCert(ca, opts.name, opts.days, { crlUrl: opts.crlUrl })
  } catch (err) {
    throw new CertCommandError((err as Error).message)
  }
  mkdirSync(opts.out, { recursive: true, mode: 0o700 })
  writeKeyFile(key, client.keyPem)
  writeFileSync(crt, client.certPem, { mode: 0o644 })
  const lines = [`client certificate: ${crt} (key ${key}, 0600), subject CN=${opts.name}, serial ${client.serial}`]
  if (opts.p12 && opts.password) {
    writeFileSync(p12, toPkcs12(client, ca.certPem, opts.password, opts.name), { mode: 0o600 })
    chmodSync(p12, 0o600)
    lines.push(`PKCS#12 bundle:     ${p12} (0600, AES-256)`)
  }
  lines.push(`grant it with a policy rule entry:  certs: [CN=${opts.name}]`)
  return lines.join('\n')
}

export function certRevoke (opts: { dir: string, certFile?: string, serial?: string }): string {
  const ca = readCa(opts.dir)
  let serial = opts.serial?.toLowerCase()
  if (opts.certFile) serial = new X509Certificate(readFileSync(opts.certFile)).serialNumber.toLowerCase()
  if (!serial || !/^[0-9a-f]+$/.test(serial)) throw new CertCommandError('cert revoke needs --cert FILE or --serial HEX')
  const listFile = join(opts.dir, 'revoked.json')
  const revoked: RevokedEntry[] = existsSync(listFile) ? JSON.parse(readFileSync(listFile, 'utf8')) as RevokedEntry[] : []
  if (!revoked.some((r) => r.serial === serial)) revoked.push({ serial, revokedAt: new Date().toISOString() })
  const crl = writeCrl(opts.dir, ca, revoked)
  return `revoked serial ${serial}; ${crl} now lists ${revoked.length} certificate(s). A gateway with tls.clientCrl pointing at it reloads it by itself.`
}

export function showCertificate (file: string, now = Date.now()): string {
  let summaries
  try {
    summaries = describeCertificates(readFileSync(file, 'utf8'), now)
  } catch (err) {
    throw new CertCommandError(`${file}: ${(err as Error).message}`)
  }
  return summaries.map((s, i) => {
    const lines = [
      `${i === 0 ? file : `  chain[${i}]`}`,
      `  subject:     ${s.subject}`,
      `  issuer:      ${s.issuer}`,
      ...(s.dns.length ? [`  DNS names:   ${s.dns.join(', ')}`] : []),
      ...(s.ips.length ? [`  IP addresses: ${s.ips.join(', ')}`] : []),
      `  valid:       ${s.notBefore} to ${s.notAfter} (${s.daysLeft} days left)`,
      `  serial:      ${s.serial}${s.isCa ? ' (CA)' : ''}`,
      `  SHA-256:     ${s.fingerprint256}`
    ]
    if (s.daysLeft < 0) lines.push('  EXPIRED')
    else if (s.daysLeft < EXPIRY_WARNING_DAYS) lines.push(`  WARNING: expires in ${s.daysLeft} days`)
    return lines.join('\n')
  }).join('\n')
}

/** Whether any certificate in the file is outside its validity (expired, or not yet valid): `cert show` then exits 1. */
export function certificateOutOfDate (file: string, now = Date.now()): boolean {
  return describeCertificates(readFileSync(file, 'utf8'), now).some((s) => Date.parse(s.notAfter) < now || Date.parse(s.notBefore) > now)
}
