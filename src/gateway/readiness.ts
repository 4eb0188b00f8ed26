// /readyz: ready only when the NAS answers an authenticated HEAD, the audit
// trail is writable, the revocations can be trusted (a valid denylist, or
// Redis followed), and the certificate (and client CRL) are current. Each
// check says why it fails. It also shows the NAS lockdown check, which fails
// readiness only when upstream.readyWhenExposed is false.
import type { Readiness } from '../admin.js'
import type { AuditWriter, AuditRecord } from '../audit/writer.js'
import type { RevocationSource } from '../auth/revocation.js'
import type { TlsServer } from '../tls/server.js'

export interface ReadinessParts {
  audit: AuditWriter
  /** Writes a record (counted and logged on failure). */
  record: (r: AuditRecord) => Promise<boolean>
  /** The NAS check: 'ok', or why not (src/proxy/upstream.ts checkNas). */
  nas: () => Promise<string>
  revocations: RevocationSource
  tls: () => TlsServer | undefined
  /** Whether client certificates are checked against a CRL (tls.clientAuth with tls.clientCrl). */
  crl: boolean
  /** The NAS lockdown check: shown always, failing readiness only when blocks is set (upstream.readyWhenExposed false). */
  exposure: () => { check: string, blocks: boolean }
}

export function readinessOf (p: ReadinessParts): () => Promise<Readiness> {
  return async () => {
    // A trail that failed is tried again here, with a record of the check:
    // otherwise only a request could clear the failure, and a load balancer
    // that routes by readiness sends none to a gateway it thinks is down.
    if (!p.audit.healthy) await p.record({ event: 'check', time: new Date().toISOString(), reason: 'readiness re-check after an audit failure' })
    // An authenticated HEAD, not a TCP connect: a NAS that refuses the
    // gateway's password answers every download 502 while its port is open.
    const nas = await p.nas()
    const tls = p.tls()
    const checks = {
      nas,
      revocation: p.revocations.loadError ? `failing (${p.revocations.loadError})` : 'ok',
      audit: p.audit.healthy ? 'ok' : `failing${p.audit.startupError ? ` (${p.audit.startupError.code ?? 'error'})` : ''}`,
      certificate: (tls?.expiresAt ?? 0) * 1000 > Date.now() ? 'ok' : 'expired',
      // An expired CRL refuses every client certificate (OpenSSL under
      // require, the gate under optional): not ready until it is re-signed.
      ...(p.crl ? { crl: tls?.clientCrls?.expired() === true ? 'expired' : 'ok' } : {})
    }
    const exposure = p.exposure()
    return { ready: Object.values(checks).every((c) => c === 'ok') && !exposure.blocks, checks: { ...checks, nasLockdown: exposure.check } }
  }
}
