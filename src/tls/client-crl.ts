// Client certificate revocation under tls.clientAuth: optional, checked by
// the gate instead of OpenSSL. With a CRL loaded, OpenSSL fails the whole
// handshake (a reset, not a verify error the gate could answer 401 to) when
// a certificate from an impostor CA carrying the trusted CA's name fails its
// signature check: the failed check leaves an error behind that the CRL
// step trips on. Under `optional` the handshake must succeed so that the
// request gets its documented 401; OpenSSL then verifies the chain only,
// and this module applies the CRLs as OpenSSL's CRL_CHECK_ALL would: every
// certificate of the chain below the trust anchor needs a valid CRL from
// its issuer that does not list it. (`require` keeps OpenSSL's check: a
// refused handshake is what it promises.)
import { X509Certificate, verify as verifySignature } from 'node:crypto'
import { AsnConvert } from '@peculiar/asn1-schema'
import { CertificateList } from '@peculiar/asn1-x509'

/** Signature algorithms of CRLs (RFC 4055, RFC 5758, RFC 8410): OID -> hash, null for EdDSA. */
const HASHES: Readonly<Record<string, string | null>> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null
}

interface IssuerCrl {
  ca: X509Certificate
  revoked: ReadonlySet<string>
  /** The entries as listed: serial (hex, lower case) and revocation date. */
  entries: ReadonlyArray<{ serial: string, revokedAt: string }>
  thisUpdate: number
  nextUpdate?: number
}

function pemBlocks (pem: Buffer | string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`, 'g')
  return [...String(pem).matchAll(re)].map((m) => Buffer.from(m[1].replace(/\s+/g, ''), 'base64'))
}

/** A serial number as hex without leading zeros, upper case (X509Certificate's form, normalised). */
function serialKey (hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '')
}

function parseCrl (der: Buffer, cas: X509Certificate[]): IssuerCrl {
  const crl = AsnConvert.parse(der, CertificateList)
  const tbs = Buffer.from(AsnConvert.serialize(crl.tbsCertList))
  const oid = crl.signatureAlgorithm.algorithm
  if (!(oid in HASHES)) throw new Error(`a CRL is signed with an unsupported algorithm (${oid})`)
  const signature = Buffer.from(crl.signature)
  const signedBy = (c: X509Certificate): boolean => {
    try {
      return verifySignature(HASHES[oid], tbs, c.publicKey, signature)
    } catch {
      return false // a key of another type
    }
  }
  const ca = cas.find(signedBy)
  if (!ca) throw new Error('a CRL is not signed by any CA in tls.clientCa')
  const time = (t: { getTime: () => Date } | undefined): number | undefined => t === undefined ? undefined : t.getTime().getTime()
  const entries = (crl.tbsCertList.revokedCertificates ?? []).map((r) => ({
    serial: Buffer.from(r.userCertificate).toString('hex').replace(/^(00)+(?=.)/, ''),
    revokedAt: new Date(time(r.revocationDate) ?? 0).toISOString()
  }))
  const revoked = new Set(entries.map((e) => serialKey(e.serial)))
  return { ca, revoked, entries, thisUpdate: time(crl.tbsCertList.thisUpdate) ?? 0, nextUpdate: time(crl.tbsCertList.nextUpdate) }
}

export class ClientCrls {
  private constructor (private readonly crls: IssuerCrl[]) {}

  /** Parses tls.clientCrl and checks each CRL's signature against tls.clientCa; throws with the reason. */
  static load (caPem: Buffer, crlPem: Buffer): ClientCrls {
    const cas = pemBlocks(caPem, 'CERTIFICATE').map((d) => new X509Certificate(d))
    const ders = pemBlocks(crlPem, 'X509 CRL')
    if (ders.length === 0) throw new Error('no PEM CRL (-----BEGIN X509 CRL-----) in tls.clientCrl')
    return new ClientCrls(ders.map((d) => parseCrl(d, cas)))
  }

  /**
   * The earliest nextUpdate of the CRLs (ms since the epoch), or undefined
   * when none has one. Past it, OpenSSL (under require) and check() (under
   * optional) refuse every client certificate the CRL covers.
   */
  get nextUpdate (): number | undefined {
    const times = this.crls.map((c) => c.nextUpdate).filter((n): n is number => n !== undefined)
    return times.length > 0 ? Math.min(...times) : undefined
  }

  /** Whether a CRL is past its nextUpdate. */
  expired (now = Date.now()): boolean {
    const next = this.nextUpdate
    return next !== undefined && next < now
  }

  /** What each CRL says: its issuer, its entries and its validity (cert crl re-signs from it). */
  summaries (): Array<{ issuer: X509Certificate, entries: ReadonlyArray<{ serial: string, revokedAt: string }>, thisUpdate: number, nextUpdate?: number }> {
    return this.crls.map((c) => ({ issuer: c.ca, entries: c.entries, thisUpdate: c.thisUpdate, nextUpdate: c.nextUpdate }))
  }

  /** Whether a CRL lists this serial number (hex), whoever issued it: a grant minted with a certificate keeps only its serial. */
  lists (serial: string): boolean {
    const key = serialKey(serial)
    return this.crls.some((c) => c.revoked.has(key))
  }

  /**
   * Why a verified chain (leaf first, up to its trust anchor) is revoked or
   * cannot be checked, or undefined when every certificate below the anchor
   * passes its issuer's CRL.
   */
  check (chain: readonly X509Certificate[], now = Date.now()): string | undefined {
    for (const cert of chain) {
      if (cert.checkIssued(cert)) continue
      const crl = this.crls.find((c) => cert.checkIssued(c.ca) && cert.verify(c.ca.publicKey))
      if (!crl) return 'no CRL from the certificate\'s issuer'
      if (crl.thisUpdate > now) return 'the CRL is not yet valid'
      if (crl.nextUpdate !== undefined && crl.nextUpdate < now) return 'the CRL has expired'
      if (crl.revoked.has(serialKey(cert.serialNumber))) return 'certificate revoked'
    }
    return undefined
  }
}
