// The TLS side, judged against Mozilla's intermediate profile (the one
// nasguard serves, src/tls/profiles.ts): protocol versions, TLS 1.2 ciphers
// one by one, and the certificate (trust, name, dates, key size). The local
// OpenSSL can only offer what it still has: RC4, 3DES, EXPORT and NULL suites
// are gone from Node 20's, so a server that still takes them is not caught
// here (testssl.sh catches it).
import { X509Certificate } from 'node:crypto'
import { checkServerIdentity, getCiphers, type DetailedPeerCertificate, type SecureVersion } from 'node:tls'
import { MOZILLA_INTERMEDIATE_TLS12 } from '../tls/profiles.js'
import { finding, type Finding } from './findings.js'
import { handshake, type Handshake, type NetOptions, type Target } from './net.js'

const OLD_VERSIONS: SecureVersion[] = ['TLSv1', 'TLSv1.1']
const ANY = 'ALL:@SECLEVEL=0'

export async function versions (t: Target, o: NetOptions): Promise<Finding[]> {
  const old: string[] = []
  for (const v of OLD_VERSIONS) {
    const r = await handshake(t, o, { minVersion: v, maxVersion: v, ciphers: ANY })
    if (r.ok) old.push(v)
  }
  const tls13 = await handshake(t, o, { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })
  const tls12 = await handshake(t, o, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: ANY })
  const out: Finding[] = []
  if (!tls12.ok && !tls13.ok) out.push(finding('HIGH', 'tls', 'tls-obsolete-only', `only ${old.join(' and ') || 'obsolete TLS'} is spoken: no TLS 1.2 or 1.3, so what protects the traffic is broken`, 'upgrade it, or put nasguard in front with TLS 1.2 and 1.3'))
  if (old.length > 0) out.push(finding('MEDIUM', 'tls', 'tls-old-versions', `accepts ${old.join(' and ')}, which Mozilla's intermediate profile drops`, 'accept TLS 1.2 and 1.3 only (nasguard: tls.profile intermediate or modern)'))
  if (!tls13.ok && tls12.ok) out.push(finding('LOW', 'tls', 'tls13-missing', 'TLS 1.3 is not offered', 'enable TLS 1.3'))
  return out
}

/** The TLS 1.2 ciphers the local OpenSSL can offer (PSK and SRP need credentials, so are left out). */
function offerable (): string[] {
  return getCiphers().filter((c) => !c.startsWith('tls_') && !/psk|srp/.test(c)).map((c) => c.toUpperCase())
}

/** Weak beyond "not in the profile": no forward secrecy, or not AEAD. */
const weakness = (c: string): string => !/^(ECDHE|DHE)-/.test(c) ? 'no forward secrecy' : /GCM|CHACHA20|CCM/.test(c) ? 'outside the profile' : 'CBC mode'

export async function ciphers (t: Target, o: NetOptions): Promise<Finding[]> {
  const allowed = new Set<string>(MOZILLA_INTERMEDIATE_TLS12)
  const candidates = offerable()
  const accepted: string[] = []
  // A few handshakes at a time: a remote target is not flooded, a local one is quick.
  for (let i = 0; i < candidates.length; i += 8) {
    const batch = candidates.slice(i, i + 8)
    const results = await Promise.all(batch.map(async (c) => await handshake(t, o, { minVersion: 'TLSv1', maxVersion: 'TLSv1.2', ciphers: `${c}:@SECLEVEL=0` })))
    results.forEach((r, j) => { if (r.ok) accepted.push(batch[j]) })
  }
  const outside = accepted.filter((c) => !allowed.has(c))
  if (outside.length === 0) return accepted.length > 0 ? [finding('INFO', 'tls', 'tls12-ciphers', `TLS 1.2 ciphers all in Mozilla's intermediate profile: ${accepted.join(', ')}`)] : []
  return [finding('MEDIUM', 'tls', 'tls-weak-ciphers', `TLS ciphers outside Mozilla's intermediate profile: ${outside.map((c) => `${c} (${weakness(c)})`).join(', ')}`, 'offer only ECDHE (or DHE) with AES-GCM or ChaCha20-Poly1305 (nasguard: tls.profile intermediate)')]
}

const DAY_MS = 86400_000

function keyFinding (cert: DetailedPeerCertificate): Finding[] {
  const details = new X509Certificate(cert.raw).publicKey.asymmetricKeyDetails
  const bits = details?.modulusLength
  if (bits !== undefined && bits < 2048) return [finding('HIGH', 'certificate', 'certificate-weak-key', `the certificate's RSA key has ${bits} bits`, 'issue a new certificate with an ECDSA P-256 or an RSA 2048+ key')]
  return []
}

/** Dates: expired or not yet valid is HIGH; expiring soon only when under a third of its lifetime is left (a 12-hour ACME certificate is fine). */
function dateFindings (cert: DetailedPeerCertificate, now: number): Finding[] {
  const from = Date.parse(cert.valid_from)
  const to = Date.parse(cert.valid_to)
  if (Number.isNaN(from) || Number.isNaN(to)) return [finding('HIGH', 'certificate', 'certificate-dates-invalid', `the certificate's dates do not parse (${JSON.stringify(cert.valid_from)} to ${JSON.stringify(cert.valid_to)}): clients refuse it`, 'issue a new certificate')]
  if (now > to) return [finding('HIGH', 'certificate', 'certificate-expired', `the certificate expired on ${new Date(to).toISOString()}`, 'renew it (nasguard cert renew, or your ACME client), and alert on nasguard_certificate_expiry_seconds')]
  if (now < from) return [finding('HIGH', 'certificate', 'certificate-not-yet-valid', `the certificate is valid only from ${new Date(from).toISOString()}`, 'check the clock of the host that issued it, and reissue')]
  const left = to - now
  const days = Math.floor(left / DAY_MS)
  // A certificate that lives a week or less (ACME short-lived ones) is renewed in its last hours: only its last hour is late.
  if (to - from <= 7 * DAY_MS) return [left < 3600_000 ? finding('MEDIUM', 'certificate', 'certificate-expiring', `the short-lived certificate expires within the hour, at ${new Date(to).toISOString()}`, 'check that its renewal runs') : finding('INFO', 'certificate', 'certificate-dates', `a short-lived certificate, valid until ${new Date(to).toISOString()}`)]
  if (left < (to - from) / 3 && left < 7 * DAY_MS) return [finding('MEDIUM', 'certificate', 'certificate-expiring', `the certificate expires in ${days} day(s), on ${new Date(to).toISOString()}`, 'renew it now')]
  if (left < (to - from) / 3 && left < 30 * DAY_MS) return [finding('LOW', 'certificate', 'certificate-expiring-soon', `the certificate expires in ${days} days, on ${new Date(to).toISOString()}`, 'renew it within the week')]
  return [finding('INFO', 'certificate', 'certificate-dates', `the certificate is valid until ${new Date(to).toISOString()} (${days} days)`)]
}

export function certificate (t: Target, h: Handshake, trustedCa: boolean, now = Date.now()): Finding[] {
  const cert = h.cert
  if (cert === undefined) return [finding('HIGH', 'certificate', 'certificate-missing', 'the server sent no certificate', 'configure a certificate')]
  const out: Finding[] = []
  // An expired or not yet valid one is judged by its dates below, not twice.
  if (!h.authorized && h.authorizationError !== 'CERT_HAS_EXPIRED' && h.authorizationError !== 'CERT_NOT_YET_VALID') {
    out.push(finding('MEDIUM', 'certificate', 'certificate-untrusted', `the certificate does not chain to a trusted CA (${h.authorizationError ?? 'unknown'})${trustedCa ? ' of --ca' : ''}`, trustedCa ? 'serve the full chain to the CA given' : 'use a certificate from a CA the clients trust; for a private CA, probe with --ca FILE'))
  }
  const name = t.servername ?? t.host
  const mismatch = checkServerIdentity(name, cert)
  if (mismatch !== undefined) out.push(finding('HIGH', 'certificate', 'certificate-name-mismatch', `the certificate is not for ${name} (${mismatch.message.slice(0, 160)})`, `issue it with ${name} among its subject alternative names`))
  out.push(...dateFindings(cert, now), ...keyFinding(cert))
  return out
}
