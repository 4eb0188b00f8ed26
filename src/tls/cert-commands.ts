// `nasguard cert ...`: a local CA for the gateway and its machine clients,
// on node-forge. Files in the CA directory (default certs/):
//   ca.crt ca.key       the CA (key 0600)
//   server.crt/.key     the gateway's certificate (key 0600)
//   ca.crl              the CA's revocation list (for tls.clientCrl)
//   revoked.json        what ca.crl is built from
// What a running gateway reads (server.crt/.key, ca.crl) is replaced
// atomically (temporary file, then rename), so its watcher never loads half
// a file; the CA itself is never replaced but by `cert init --force --new-ca`.
import { makeDir } from '../files/ownership.js'
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import {
  MAX_SERVER_CERT_DAYS, SERVER_KEY_TYPES, buildCrl, certPaths, createCa, crlUrls, describeCertificates, issueClientCert,
  crlUrlProblem, issueServerCert, keyDescription, replaceFiles, serverKey, serverNames, toPkcs12, writeKeyFile, type KeyAndCert, type RevokedEntry,
  type ServerKeyType
} from './certificates.js'
import { ClientCrls } from './client-crl.js'

export class CertCommandError extends Error {
  override name = 'CertCommandError'
}

/** A bad option value or a missing option: a usage error (exit 2). */
export class CertUsageError extends CertCommandError {}

const EXPIRY_WARNING_DAYS = 30
const DAY_MS = 24 * 60 * 60 * 1000
/** Default lifetime of ca.crl: past its nextUpdate every client certificate is refused. */
export const CRL_DAYS = 365
const MAX_CRL_DAYS = 3650
const MAX_CLIENT_CERT_DAYS = 3650

function readCa (dir: string): KeyAndCert {
  const p = certPaths(dir)
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) throw new CertCommandError(`no CA in ${dir}: run nasguard cert init first`)
  return { certPem: readFileSync(p.caCert, 'utf8'), keyPem: readFileSync(p.caKey, 'utf8') }
}

function refuseOverwrite (files: string[], force: boolean): void {
  const present = files.filter((f) => existsSync(f))
  if (present.length > 0 && !force) throw new CertCommandError(`refusing to overwrite ${present.join(', ')} (use --force)`)
}

/** Writes ca.crl (atomically: a gateway may be watching it) and revoked.json; returns the CRL's path and nextUpdate. */
function writeCrl (dir: string, ca: KeyAndCert, revoked: RevokedEntry[], days = CRL_DAYS, now = new Date()): { file: string, nextUpdate: Date } {
  const file = join(dir, 'ca.crl')
  replaceFiles([
    { file: join(dir, 'revoked.json'), data: JSON.stringify(revoked, null, 2) + '\n', mode: 0o644 },
    { file, data: buildCrl(ca, revoked, days, now), mode: 0o644 }
  ])
  // UTCTime holds whole seconds.
  return { file, nextUpdate: new Date(Math.floor((now.getTime() + days * DAY_MS) / 1000) * 1000) }
}

/** --days: a whole number of days up to `max` (a server certificate's 397, a client certificate's or a CRL's 3650). */
function checkDays (days: number, max: number): void {
  if (!Number.isInteger(days) || days < 1 || days > max) throw new CertUsageError(`--days must be a whole number from 1 to ${max}`)
}

function checkHosts (hosts: string[]): void {
  for (const h of hosts) {
    if (!isIP(h) && !/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(h)) {
      throw new CertUsageError(`--host ${JSON.stringify(h)} is neither a DNS name nor an IP address`)
    }
  }
}

/** --key-type: ecdsa or rsa. */
function checkKeyType (keyType: string | undefined): ServerKeyType | undefined {
  if (keyType === undefined || (SERVER_KEY_TYPES as readonly string[]).includes(keyType)) return keyType as ServerKeyType | undefined
  throw new CertUsageError(`--key-type ${JSON.stringify(keyType)} is not one of ${SERVER_KEY_TYPES.join(', ')}`)
}

export function certInit (opts: { dir: string, hosts: string[], days: number, force: boolean, newCa?: boolean, crlUrl?: string, keyType?: string }): string {
  if (opts.hosts.length === 0) throw new CertUsageError('cert init needs at least one --host')
  checkDays(opts.days, MAX_SERVER_CERT_DAYS)
  checkHosts(opts.hosts)
  const keyType = checkKeyType(opts.keyType)
  // Before anything is written: a CA made for a server certificate that is then refused would stay behind.
  const crlProblem = opts.crlUrl === undefined ? undefined : crlUrlProblem(opts.crlUrl)
  if (crlProblem) throw new CertUsageError(`--crl-url: ${crlProblem}`)
  const p = certPaths(opts.dir)
  refuseOverwrite([p.caCert, p.caKey, p.serverCert, p.serverKey], opts.force)
  const caFiles = [p.caCert, p.caKey].filter((f) => existsSync(f))
  if (caFiles.length > 0 && !opts.newCa) {
    throw new CertCommandError(
      `refusing to replace the CA (${caFiles.join(', ')}): a new CA invalidates every client certificate it issued, ` +
      'and every client that trusts ca.crt would refuse the gateway. To renew the server certificate under the same CA, ' +
      `run nasguard cert renew --dir ${opts.dir}; to replace the CA anyway, add --new-ca`)
  }
  makeDir(opts.dir)
  const ca = createCa('nasguard local CA')
  writeKeyFile(p.caKey, ca.keyPem)
  writeFileSync(p.caCert, ca.certPem, { mode: 0o644 })
  let server: KeyAndCert
  try {
    server = issueServerCert(ca, opts.hosts, opts.days, { crlUrl: opts.crlUrl, keyType })
  } catch (err) {
    throw new CertCommandError((err as Error).message)
  }
  writeKeyFile(p.serverKey, server.keyPem)
  writeFileSync(p.serverCert, server.certPem, { mode: 0o644 })
  const crl = writeCrl(opts.dir, ca, [])
  return [
    `CA:          ${p.caCert} (key ${p.caKey}, 0600)${caFiles.length > 0 ? ', a NEW CA: clients must trust it, and client certificates of the old one are no longer accepted' : ''}`,
    `server:      ${p.serverCert} (key ${p.serverKey}, 0600), valid ${opts.days} days`,
    `revocations: ${crl.file}, valid until ${crl.nextUpdate.toISOString()} (refresh it with nasguard cert crl)`,
    '',
    showCertificate(p.serverCert)
  ].join('\n')
}

export function certClient (opts: { dir: string, name: string, out: string, days: number, p12: boolean, password?: string, force: boolean, crlUrl?: string }): string {
  checkDays(opts.days, MAX_CLIENT_CERT_DAYS)
  if (opts.p12 && !opts.password) throw new CertUsageError('--p12 needs --password-file')
  const ca = readCa(opts.dir)
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
  makeDir(opts.out)
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

/** The certificate in a PEM file; a file that holds none is a usage error naming it. */
function certificateIn (file: string): X509Certificate {
  const pem = readFileSync(file)
  try {
    return new X509Certificate(pem)
  } catch {
    throw new CertUsageError(`--cert ${file}: not a PEM certificate`)
  }
}

export function certRevoke (opts: { dir: string, certFile?: string, serial?: string }): string {
  if (!opts.certFile && !opts.serial) throw new CertUsageError('cert revoke needs --cert FILE or --serial HEX')
  const ca = readCa(opts.dir)
  let serial = opts.serial?.toLowerCase()
  if (opts.certFile) serial = certificateIn(opts.certFile).serialNumber.toLowerCase()
  if (!serial || !/^[0-9a-f]+$/.test(serial)) throw new CertUsageError('cert revoke needs --cert FILE or --serial HEX')
  const { revoked } = revocations(opts.dir, ca)
  const wanted = serial.replace(/^0+(?=.)/, '')
  if (!revoked.some((r) => r.serial.toLowerCase().replace(/^0+(?=.)/, '') === wanted)) revoked.push({ serial, revokedAt: new Date().toISOString() })
  const crl = writeCrl(opts.dir, ca, revoked)
  return `revoked serial ${serial}; ${crl.file} now lists ${revoked.length} certificate(s), valid until ${crl.nextUpdate.toISOString()}. A gateway with tls.clientCrl pointing at it reloads it by itself.`
}

/**
 * The revocations of the CA in `dir`: revoked.json, and whatever the
 * current ca.crl lists besides (a revocation is never dropped because
 * revoked.json was lost or edited), with the current CRL's nextUpdate.
 */
function revocations (dir: string, ca: KeyAndCert): { revoked: RevokedEntry[], previous?: { nextUpdate?: number } } {
  const listFile = join(dir, 'revoked.json')
  const crlFile = join(dir, 'ca.crl')
  let revoked: RevokedEntry[] = []
  if (existsSync(listFile)) {
    try {
      revoked = JSON.parse(readFileSync(listFile, 'utf8')) as RevokedEntry[]
      if (!Array.isArray(revoked) || !revoked.every((r) => typeof r?.serial === 'string' && /^[0-9a-f]+$/i.test(r.serial) && !Number.isNaN(Date.parse(r.revokedAt)))) throw new Error('not a list of { serial, revokedAt }')
    } catch (err) {
      throw new CertCommandError(`${listFile}: ${(err as Error).message}`)
    }
  }
  if (!existsSync(crlFile)) return { revoked }
  let crls
  try {
    crls = ClientCrls.load(Buffer.from(ca.certPem), readFileSync(crlFile)).summaries()
  } catch (err) {
    throw new CertCommandError(`${crlFile}: ${(err as Error).message}; move it aside to rebuild it from ${listFile} alone`)
  }
  const key = (serial: string): string => serial.toLowerCase().replace(/^0+(?=.)/, '')
  const known = new Set(revoked.map((r) => key(r.serial)))
  for (const e of crls.flatMap((c) => c.entries)) {
    if (known.has(key(e.serial))) continue
    known.add(key(e.serial))
    revoked.push({ serial: e.serial, revokedAt: e.revokedAt })
  }
  const next = crls.map((c) => c.nextUpdate).filter((n): n is number => n !== undefined)
  return { revoked, previous: { nextUpdate: next.length > 0 ? Math.min(...next) : undefined } }
}

/** The CA's private key; a key OpenSSL cannot read (an encrypted one, say) is named. */
function readCaKey (file: string, pem: string): KeyObject {
  try {
    return createPrivateKey(pem)
  } catch (err) {
    throw new Error(`${file} is not a private key nasguard can read (an encrypted key cannot be used): ${(err as Error).message}`)
  }
}

/** The certificate in a PEM text, or undefined for none or one OpenSSL cannot read. */
function readable (pem: string | undefined): X509Certificate | undefined {
  if (pem === undefined) return undefined
  try {
    return new X509Certificate(pem)
  } catch {
    return undefined
  }
}

/**
 * A new server certificate (and key) for the same names, or --host, signed
 * by the CA already in the directory: clients that trust ca.crt accept it,
 * and client certificates issued by the CA stay valid. The pair replaces
 * server.crt and server.key atomically, so a running gateway's watcher
 * picks it up whole.
 */
export function certRenew (opts: { dir: string, hosts: string[], days: number, crlUrl?: string, keyType?: string }): string {
  checkDays(opts.days, MAX_SERVER_CERT_DAYS)
  let keyType = checkKeyType(opts.keyType)
  let kept: ReturnType<typeof serverKey>
  const ca = readCa(opts.dir)
  const p = certPaths(opts.dir)
  const current = existsSync(p.serverCert) ? readFileSync(p.serverCert, 'utf8') : undefined
  let hosts = opts.hosts
  let crlUrl = opts.crlUrl
  if (current !== undefined) {
    try {
      if (hosts.length === 0) hosts = serverNames(current)
      crlUrl ??= crlUrls(current)[0]
    } catch (err) {
      throw new CertCommandError(`${p.serverCert}: ${(err as Error).message} (give the names with --host${crlUrl === undefined ? ' and any CRL distribution point with --crl-url' : ''})`)
    }
    // An RSA certificate stays RSA (chosen for clients without ECDSA), of its size, unless --key-type says otherwise.
    kept = serverKey(current)
    keyType ??= kept?.type
  }
  if (hosts.length === 0) throw new CertCommandError(current === undefined ? `no ${p.serverCert}: give the names with --host` : `${p.serverCert} names no DNS name or IP address: give them with --host`)
  checkHosts(hosts)
  const caCert = new X509Certificate(ca.certPem)
  let server: KeyAndCert
  try {
    if (!caCert.checkPrivateKey(readCaKey(p.caKey, ca.keyPem))) throw new Error(`${p.caKey} does not belong to ${p.caCert}`)
    server = issueServerCert(ca, hosts, opts.days, { crlUrl, keyType, keySize: kept?.type === keyType ? kept?.size : undefined })
  } catch (err) {
    throw new CertCommandError((err as Error).message)
  }
  replaceFiles([
    { file: p.serverKey, data: server.keyPem, mode: 0o600 },
    { file: p.serverCert, data: server.certPem, mode: 0o644 }
  ])
  const previous = readable(current)
  const lines = [
    `server:   ${p.serverCert} (key ${p.serverKey}, 0600): a new certificate and key for ${hosts.join(', ')}, valid ${opts.days} days`,
    `signed by the CA in ${p.caCert} (unchanged: clients that trust it accept the new certificate, and client certificates it issued stay valid)`
  ]
  if (current !== undefined && !previous) lines.push(`replaced: a ${p.serverCert} OpenSSL could not read`)
  if (previous) {
    lines.push(`replaced: the certificate valid until ${new Date(previous.validTo).toISOString()} (SHA-256 ${previous.fingerprint256})`)
    if (!previous.checkIssued(caCert) || !previous.verify(caCert.publicKey)) lines.push(`note:     the replaced certificate was issued by ${previous.issuer.replace(/\n/g, ', ')}, not by this CA: clients must trust ${p.caCert}`)
  }
  const newLeaf = new X509Certificate(server.certPem)
  if (previous && keyDescription(previous) !== keyDescription(newLeaf)) lines.push(`note:     the key is now ${keyDescription(newLeaf)}, not ${keyDescription(previous)} as before${opts.keyType === undefined ? ' (nasguard makes ECDSA P-256 or P-384 and RSA 2048, 3072 or 4096 keys; --key-type picks the type)' : ''}`)
  if (crlUrl) lines.push(`CRL distribution point: ${crlUrl}`)
  if (Date.parse(caCert.validTo) < Date.parse(newLeaf.validTo)) lines.push(`WARNING:  the CA expires on ${new Date(caCert.validTo).toISOString()}, before this certificate; clients will refuse it from then on`)
  lines.push('A gateway whose tls.cert and tls.key are these files reloads them by itself (tls.watch), or on SIGHUP.', '', showCertificate(p.serverCert))
  return lines.join('\n')
}

/**
 * Re-signs ca.crl with the entries it already has (revoked.json, and any
 * the current ca.crl lists besides) and a fresh thisUpdate/nextUpdate:
 * past its nextUpdate a CRL makes every client certificate be refused.
 */
export function certCrl (opts: { dir: string, days: number }): string {
  checkDays(opts.days, MAX_CRL_DAYS)
  const ca = readCa(opts.dir)
  const { revoked, previous } = revocations(opts.dir, ca)
  const now = new Date()
  const crl = writeCrl(opts.dir, ca, revoked, opts.days, now)
  const was = previous?.nextUpdate === undefined
    ? ''
    : ` (it was valid until ${new Date(previous.nextUpdate).toISOString()}${previous.nextUpdate < now.getTime() ? ': EXPIRED, every client certificate was being refused' : ''})`
  return [
    `re-signed ${crl.file}${was}: ${revoked.length} revoked certificate(s), valid until ${crl.nextUpdate.toISOString()} (${opts.days} days).`,
    'A gateway with tls.clientCrl pointing at it reloads it by itself. Run this again before then (nasguard_tls_crl_next_update_timestamp_seconds shows when).'
  ].join('\n')
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
      `  key:         ${s.key}`,
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
