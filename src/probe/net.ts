// The probe's two ways to talk to a target: a TLS handshake with chosen
// versions and ciphers (node:tls, certificates not enforced: they are judged,
// not trusted), and one HTTP/1.1 exchange over TLS or plain TCP (undici),
// reading at most 64 KiB of the body.
import { isIP } from 'node:net'
import { connect, type DetailedPeerCertificate, type SecureVersion } from 'node:tls'
import { Agent, request, type Dispatcher } from 'undici'
import { peek } from '../exposure/evidence.js'

export interface Target {
  url: URL
  host: string
  port: number
  /** SNI and the name the certificate must carry (none for an IP address). */
  servername: string | undefined
  tls: boolean
}

export function targetOf (text: string): Target {
  const url = new URL(text)
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`${text}: only https:// and http:// URLs can be probed`)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80
  return { url, host, port, servername: isIP(host) === 0 ? host : undefined, tls: url.protocol === 'https:' }
}

export interface NetOptions {
  timeoutMs: number
  /** The whole probe of a URL ends when this fires: every exchange and handshake still going is cut. */
  deadline?: AbortSignal
  /** CA certificates to trust instead of the system's (PEM). */
  ca?: Buffer
  /** Talk HTTP over TLS 1.0–1.1 and old ciphers too (a server that speaks nothing newer). */
  legacyTls?: boolean
}

/** What an old server may need: every version from TLS 1.0, every cipher, OpenSSL's security level 0. */
export const LEGACY_OFFER = { minVersion: 'TLSv1', maxVersion: 'TLSv1.3', ciphers: 'ALL:@SECLEVEL=0' } as const

export interface Handshake {
  ok: true
  protocol: string
  cipher: string
  cert: DetailedPeerCertificate | undefined
  authorized: boolean
  authorizationError: string | undefined
}

export type HandshakeResult = Handshake | { ok: false, error: string }

/** One TLS handshake, closed at once. OpenSSL's security level 0 lets old versions and ciphers be offered at all. */
export async function handshake (t: Target, o: NetOptions, offer: { minVersion?: SecureVersion, maxVersion?: SecureVersion, ciphers?: string } = {}): Promise<HandshakeResult> {
  return await new Promise((resolve) => {
    const socket = connect({
      host: t.host,
      port: t.port,
      ...(t.servername !== undefined ? { servername: t.servername } : {}),
      rejectUnauthorized: false,
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
      minVersion: offer.minVersion ?? 'TLSv1.2',
      maxVersion: offer.maxVersion ?? 'TLSv1.3',
      ciphers: offer.ciphers ?? 'DEFAULT',
      ALPNProtocols: ['http/1.1']
    })
    const done = (r: HandshakeResult): void => {
      clearTimeout(timer)
      o.deadline?.removeEventListener('abort', cut)
      socket.destroy()
      resolve(r)
    }
    const timer = setTimeout(() => { done({ ok: false, error: 'timeout' }) }, o.timeoutMs)
    function cut (): void { done({ ok: false, error: 'deadline' }) }
    if (o.deadline?.aborted === true) cut()
    else o.deadline?.addEventListener('abort', cut, { once: true })
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate(true)
      done({
        ok: true,
        protocol: socket.getProtocol() ?? '',
        cipher: socket.getCipher()?.standardName ?? socket.getCipher()?.name ?? '',
        cert: cert !== null && Object.keys(cert).length > 0 ? cert : undefined,
        authorized: socket.authorized,
        authorizationError: socket.authorizationError === undefined ? undefined : String(socket.authorizationError)
      })
    })
    socket.once('error', (err: NodeJS.ErrnoException) => { done({ ok: false, error: err.code ?? err.message }) })
  })
}

export interface Exchange {
  status: number
  headers: Record<string, string>
  body: string
}

export type ExchangeResult = Exchange | { error: string }

/** One request without credentials; over TLS when tls is set (certificates not enforced), else plain HTTP to the same port. */
export async function exchange (t: Target, o: NetOptions, tls: boolean, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<ExchangeResult> {
  const agent = new Agent({
    connect: {
      rejectUnauthorized: false,
      timeout: o.timeoutMs,
      ...(o.legacyTls === true ? LEGACY_OFFER : {}),
      ...(t.servername !== undefined ? { servername: t.servername } : {}),
      ...(o.ca !== undefined ? { ca: o.ca } : {})
    }
  })
  const origin = `${tls ? 'https' : 'http'}://${t.url.host}`
  try {
    const res = await request(origin + path, {
      dispatcher: agent,
      method: method as Dispatcher.HttpMethod,
      headers: { 'user-agent': 'nasguard-probe', ...headers },
      ...(body !== undefined ? { body } : {}),
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
      // A server that trickles its answer does not hold the probe longer than this.
      signal: o.deadline !== undefined ? AbortSignal.any([AbortSignal.timeout(o.timeoutMs * 3), o.deadline]) : AbortSignal.timeout(o.timeoutMs * 3)
    })
    const text = await peek(res.body as AsyncIterable<Buffer>, true)
    const out: Record<string, string> = {}
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v
    return { status: res.statusCode, headers: out, body: text }
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? (err as Error).message }
  } finally {
    void agent.destroy().catch(() => {})
  }
}

export const answered = (r: ExchangeResult): r is Exchange => 'status' in r
