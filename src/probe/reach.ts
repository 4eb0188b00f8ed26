// First: what speaks at the address. TLS, plain HTTP, or both on one port.
// The 2019 NAS answered plain HTTP on 443; nginx answers plain HTTP on a TLS
// port with a redirect that invites the client to go on (its 497); a TLS
// port should refuse it (nasguard answers 400, and revokes a token sent so).
import { finding, type Finding } from './findings.js'
import { LEGACY_OFFER, answered, exchange, handshake, type ExchangeResult, type HandshakeResult, type NetOptions, type Target } from './net.js'

export interface Reach {
  /** The default handshake (TLS 1.2–1.3, the local OpenSSL's defaults), or else one with everything offered. */
  tls: HandshakeResult | undefined
  /** Only the handshake with TLS 1.0–1.1 and old ciphers offered succeeded. */
  legacy: boolean
  /** GET / in plain HTTP to the port. */
  plain: ExchangeResult
  /** How the HTTP checks talk to the target: TLS when it works, else plain HTTP, else nothing answers. */
  transport: 'tls' | 'plain' | undefined
}

export async function reach (t: Target, o: NetOptions): Promise<{ reach: Reach, findings: Finding[] }> {
  let tls = t.tls ? await handshake(t, o) : undefined
  let legacy = false
  // An old NAS may speak only TLS 1.0: asked again with everything offered before it is judged not to speak TLS.
  if (tls?.ok === false) {
    const old = await handshake(t, o, LEGACY_OFFER)
    if (old.ok) { tls = old; legacy = true }
  }
  const plain = await exchange(t, o, false, 'GET', '/')
  const transport = tls?.ok === true ? 'tls' : answered(plain) ? 'plain' : undefined
  return { reach: { tls, plain, transport, legacy }, findings: judge(t, tls, plain) }
}

function judge (t: Target, tls: HandshakeResult | undefined, plain: ExchangeResult): Finding[] {
  const where = `${t.host}:${t.port}`
  if (!answered(plain) && tls?.ok !== true) {
    return [finding('INFO', 'reach', 'unreachable', `nothing answers at ${where} from here (${tls?.ok === false ? `TLS: ${tls.error}; ` : ''}HTTP: ${plain.error})`)]
  }
  if (!t.tls) {
    return [finding('HIGH', 'plaintext', 'no-tls', `${where} is served over plain HTTP: every token and recording crosses the network in the clear`, 'serve it over TLS only (https://), and close the plain port')]
  }
  if (tls?.ok !== true) {
    return [finding('HIGH', 'plaintext', 'plaintext-on-tls-port', `${where} speaks plain HTTP (${(plain as { status: number }).status}), not TLS: the 2019 NAS's shape`, 'put TLS on this port (or nasguard in front), and let nothing plain answer on it')]
  }
  if (!answered(plain)) return [finding('INFO', 'plaintext', 'plaintext-refused', `plain HTTP to the TLS port gets no HTTP answer (${plain.error})`)]
  if (plain.status >= 200 && plain.status < 300) {
    return [finding('HIGH', 'plaintext', 'plaintext-served', `plain HTTP to the TLS port is answered ${plain.status} with content: the same service is reachable in the clear`, 'refuse plain HTTP on the TLS port: answer 400 and close')]
  }
  if (plain.status >= 300 && plain.status < 400) {
    return [finding('MEDIUM', 'plaintext', 'plaintext-redirect', `plain HTTP to the TLS port is redirected (${plain.status} to ${plain.headers.location ?? '?'}): the request, token and all, already crossed in the clear, and the client is invited to go on`, 'refuse plain HTTP on the TLS port (400) rather than redirect, so that clients with http:// URLs fail and get fixed')]
  }
  return [finding('INFO', 'plaintext', 'plaintext-refused', `plain HTTP to the TLS port is refused (${plain.status})`)]
}
