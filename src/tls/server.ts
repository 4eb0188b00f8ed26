// The public TLS server: HTTP/2 with HTTP/1.1 fallback (ALPN h2, http/1.1),
// the plaintext sniffer in front, optional client certificates, and
// certificate reload without a restart: new handshakes get the new
// certificate, connections already open keep theirs.
import { X509Certificate, createHmac, createPrivateKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse, type Http2Session, type SecureServerOptions } from 'node:http2'
import { METHODS, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import type { Config } from '../config/schema.js'
import { installFrontDoor } from './front-door.js'
import { TrustedProxies } from './proxy-protocol.js'
import { watchFiles } from '../files/watch.js'
import { ConnectionCaps } from './connection-caps.js'
import { processShare } from '../config/derived.js'
import { tlsProfileOptions } from './profiles.js'
import { ClientCrls } from './client-crl.js'
import { SessionWatch } from './h2-sessions.js'
import { rawAnswer } from './raw-answer.js'

export interface CertificateMaterial {
  cert: Buffer
  key: Buffer
  /** notAfter of the leaf, seconds since the epoch. */
  expiresAt: number
  fingerprint256: string
}

/**
 * Reads and checks a certificate and key pair: both parse, the key belongs
 * to the leaf, and the leaf is currently valid. Throws with the reason.
 */
/** The curves TLS clients take for a server certificate (RFC 8446 §4.2.7; browsers do P-256 and P-384). */
const SERVER_CURVES = ['prime256v1', 'secp384r1', 'secp521r1']

/** What is wrong with a server certificate's key for its clients (undefined: nothing): RSA under 2048 bits (OpenSSL's default security level refuses it), a curve TLS clients do not take, any other type. */
function weakKey (key: KeyObject): string | undefined {
  const d = key.asymmetricKeyDetails ?? {}
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return (d.modulusLength ?? 0) < 2048 ? `an RSA key of ${d.modulusLength ?? 0} bits (at least 2048)` : undefined
    case 'ec':
      return SERVER_CURVES.includes(d.namedCurve ?? '') ? undefined : `a key on the curve ${d.namedCurve ?? 'unknown'} (P-256, P-384 or P-521)`
    default:
      // Ed25519, Ed448 and RSA-PSS-only keys too: browsers (the call-center players) do not take them in a server certificate.
      return `an ${key.asymmetricKeyType ?? 'unknown'} key (browsers take RSA of 2048 bits or more, or ECDSA)`
  }
}

export function loadCertificate (certFile: string, keyFile: string, now = Date.now()): CertificateMaterial {
  const cert = readFileSync(certFile)
  const key = readFileSync(keyFile)
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(cert)
  } catch (err) {
    throw new Error(`${certFile} is not a PEM certificate (${(err as Error).message})`)
  }
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    throw new Error(`${keyFile} is not a PEM private key (${(err as Error).message})`)
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new Error(`${keyFile} does not belong to the certificate in ${certFile}`)
  const weak = weakKey(leaf.publicKey)
  if (weak) throw new Error(`the certificate in ${certFile} has ${weak}: clients refuse it (OpenSSL: "key too weak") or cannot use it; make a new one (nasguard cert renew --key-type ecdsa, or your CA)`)
  const notBefore = Date.parse(leaf.validFrom)
  const notAfter = Date.parse(leaf.validTo)
  if (now < notBefore) throw new Error(`the certificate in ${certFile} is not valid before ${leaf.validFrom}`)
  if (now > notAfter) throw new Error(`the certificate in ${certFile} expired on ${leaf.validTo}`)
  return { cert, key, expiresAt: Math.floor(notAfter / 1000), fingerprint256: leaf.fingerprint256 }
}

/**
 * Request header limits the gate enforces (431 with the request in hand):
 * bytes of names and values together, and fields. The HTTP/1.1 parser is
 * let past them (more bytes, one more field) so that the gate sees what
 * went over: Node drops fields past maxHeadersCount without a word. Over
 * HTTP/2, Node resets a stream with more than 128 fields itself.
 */
export const HEADER_LIMITS = { bytes: 16 * 1024, fields: 128 } as const

export interface TlsServerHooks {
  /** A plaintext request and its head; resolves true when it carried a token that is now revoked (src/tls/front-door.ts). */
  onPlaintext: (socket: Socket, head: Buffer) => boolean | Promise<boolean>
  /** A connection closed at accept: its address holds limits.clientConnections already. */
  onClientConnectionsRefused: (socket: Socket) => void
  /**
   * listen.proxyProtocol: a trusted proxy's connection closed before TLS
   * because its PROXY header was missing, malformed or late; the socket's
   * peer is the proxy.
   */
  onProxyHeaderRefused?: (problem: string, socket: Socket) => void
  onHandshakeFailure: (reason: string, socket: Socket) => void
  onCertificate: (material: CertificateMaterial) => void
  onReloadFailure: (err: Error) => void
  /**
   * The client CRLs (tls.clientCrl) in use, at start and after each reload:
   * their earliest nextUpdate in seconds since the epoch, or undefined when
   * none is configured or none has one.
   */
  onClientCrl?: (nextUpdate: number | undefined) => void
  /** HTTP/2 streams of one connection reset by the protocol layer before the gateway saw them. */
  onProtocolResets: (count: number, remoteAddress: string | undefined) => void
  /**
   * A request whose method never reaches the app: CONNECT (HTTP/1.1 or
   * HTTP/2), or over HTTP/2 a method name outside Node's list (HTTP/1.1's
   * parser refuses those itself, and the app's router has no route for
   * them). Returns the refusal to send (status, body, extra headers).
   */
  onUnroutedMethod: (request: { method: string, url?: string, headers: IncomingHttpHeaders, remoteAddress?: string }) => { status: number, body: { error: string, message: string }, headers: Record<string, string> }
  /** A secret shared by all workers, from which their session ticket keys are derived, so a ticket from one resumes on another. */
  ticketKeys?: Buffer
}

export interface TlsServer {
  server: Http2SecureServer
  /** notAfter of the certificate in use (seconds). */
  readonly expiresAt: number
  /** Re-reads tls.cert and tls.key; keeps the current pair if the new one is broken. */
  reload: () => boolean
  /** The client CRLs as the gate applies them (under optional OpenSSL verifies the chain only). */
  readonly clientCrls: ClientCrls | undefined
  /** Sends GOAWAY to every HTTP/2 session so close() can finish; streams in flight complete. */
  closeSessions: () => void
  /**
   * Destroys every TLS connection still open (the end of a drain): an HTTP/2
   * session whose client stopped reading never finishes closing by itself,
   * its last frames unwritten, and the server's close() would wait for it.
   */
  destroyConnections: () => void
  stopWatching: () => void
}

/** A bounded label for a failed handshake. */
export function handshakeFailureReason (err: NodeJS.ErrnoException): string {
  const code = err.code ?? ''
  if (/VERSION|PROTOCOL/.test(code)) return 'protocol_version'
  if (/CIPHER|NO_SHARED/.test(code)) return 'no_shared_cipher'
  if (/CERT|CERTIFICATE|PEER_DID_NOT_RETURN/.test(code)) return 'client_certificate'
  if (/ECONNRESET|EPIPE|ETIMEDOUT/.test(code) || /socket hang up/i.test(err.message)) return 'reset'
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|RECORD/.test(code)) return 'malformed'
  return 'other'
}

// The methods the app routes (Fastify's router takes every name of Node's
// list, and the gate refuses all but GET, HEAD and PUT in the app's words).
const ROUTED_METHODS = new Set(METHODS.filter((m) => m !== 'CONNECT'))

/** Refuses a request the app never sees (see onUnroutedMethod), on Node's HTTP/2 compatibility response. */
function answerUnrouted (hooks: TlsServerHooks, req: { method: string, url?: string, headers: IncomingHttpHeaders, socket?: Socket | null }, res: Http2ServerResponse): void {
  const answer = hooks.onUnroutedMethod({ method: req.method, url: req.url, headers: req.headers, remoteAddress: req.socket?.remoteAddress })
  res.writeHead(answer.status, { 'content-type': 'application/json; charset=utf-8', ...answer.headers })
  res.end(JSON.stringify(answer.body))
}

export function createTlsServer (config: Readonly<Config>, handler: (req: Http2ServerRequest, res: Http2ServerResponse) => void, hooks: TlsServerHooks): TlsServer {
  const t = config.tls
  const initial = loadCertificate(t.cert, t.key)
  let expiresAt = initial.expiresAt
  hooks.onCertificate(initial)
  // Client CA and CRL are read again on every reload, so a new revocation
  // list (nasguard cert revoke) takes effect without a restart. Under
  // optional the CRL is applied by the gate (src/tls/client-crl.ts says why);
  // under require OpenSSL applies it at the handshake, and the gate holds it
  // too, for grants minted with a certificate revoked since.
  interface Trust { ca?: Buffer, crl?: Buffer, crls?: ClientCrls }
  const clientTrust = (): Trust => {
    const ca = t.clientAuth !== 'off' && t.clientCa ? readFileSync(t.clientCa) : undefined
    const crl = t.clientAuth !== 'off' && t.clientCrl ? readFileSync(t.clientCrl) : undefined
    return { ca, crl, crls: ca && crl ? ClientCrls.load(ca, crl) : undefined }
  }
  const openSslTrust = (trust: Trust): Pick<SecureServerOptions, 'ca' | 'crl'> => ({
    ...(trust.ca ? { ca: trust.ca } : {}),
    ...(trust.crl && t.clientAuth === 'require' ? { crl: trust.crl } : {})
  })
  const base: SecureServerOptions = {
    ...tlsProfileOptions(t.profile),
    allowHTTP1: true,
    // A client that starts a handshake and stalls is cut off as fast as one
    // that sends nothing.
    handshakeTimeout: config.limits.headersTimeoutMs,
    ALPNProtocols: ['h2', 'http/1.1'],
    requestCert: t.clientAuth !== 'off',
    // optional: the handshake succeeds without a certificate, and the
    // request is then judged on its token; a certificate that is sent but
    // does not verify is refused by the gate.
    rejectUnauthorized: t.clientAuth === 'require',
    settings: { maxConcurrentStreams: 100 }
  }
  // Shared ticket keys (workers) are derived from the files in use, so that
  // every worker arrives at the same keys and a reload (a new certificate,
  // CA or CRL: a revoked client certificate) makes every earlier ticket
  // useless, as Node's own fresh keys per context do for one process: a
  // resumed session is not checked against the CRL again.
  const tickets = (m: CertificateMaterial, trust: Trust): Pick<SecureServerOptions, 'ticketKeys'> => {
    if (!hooks.ticketKeys) return {}
    const h = createHmac('sha512', hooks.ticketKeys).update(m.cert).update('\0').update(m.key)
    for (const part of [trust.ca, trust.crl]) h.update('\0').update(part === undefined ? '' : Buffer.isBuffer(part) ? part : String(part))
    return { ticketKeys: h.digest().subarray(0, 48) }
  }
  const crlNextUpdate = (crls: ClientCrls | undefined): number | undefined => {
    const next = crls?.nextUpdate
    return next === undefined ? undefined : Math.floor(next / 1000)
  }
  const initialTrust = clientTrust()
  let clientCrls = initialTrust.crls
  hooks.onClientCrl?.(crlNextUpdate(clientCrls))
  const server = createSecureServer({ ...base, ...openSslTrust(initialTrust), ...tickets(initial, initialTrust), cert: initial.cert, key: initial.key }, (req, res) => {
    if (ROUTED_METHODS.has(req.method)) handler(req, res)
    else answerUnrouted(hooks, req, res)
  })

  // HTTP/1.1 on this server: slow clients are cut off, and headers up to
  // 128 KiB are parsed so that the gate refuses those over 16 KiB with the
  // request in hand (431, audited with its path) instead of Node's parser
  // refusing them blind.
  const h1 = server as unknown as { headersTimeout: number, requestTimeout: number, keepAliveTimeout: number, maxHeaderSize: number, maxHeadersCount: number, connectionsCheckingInterval: number }
  h1.maxHeaderSize = 128 * 1024
  h1.maxHeadersCount = HEADER_LIMITS.fields + 1
  h1.headersTimeout = config.limits.headersTimeoutMs
  // Node checks those timeouts every connectionsCheckingInterval (30 s by
  // default, read when the server starts listening): a 10 s setting fired
  // at 26-37 s. Checked often enough that they fire within a second of it.
  h1.connectionsCheckingInterval = Math.max(50, Math.min(1000, Math.floor(config.limits.headersTimeoutMs / 4)))
  // No deadline of Node's for a whole request: an upload's body may take as
  // long as it keeps its pace (src/proxy/upload-body.ts); any other body must
  // arrive within 3 x headersTimeoutMs (src/gateway/gate-hook.ts), and a
  // refusal closes the connection its unread body came on
  // (src/gateway/records.ts).
  h1.requestTimeout = 0
  h1.keepAliveTimeout = config.limits.keepAliveTimeoutMs

  const sessions = new SessionWatch({ onProtocolResets: hooks.onProtocolResets }, config.limits.keepAliveTimeoutMs)
  const connections = new Set<TLSSocket>()
  server.on('secureConnection', (socket: TLSSocket) => {
    connections.add(socket)
    socket.once('close', () => connections.delete(socket))
  })
  server.on('session', (session: Http2Session) => { sessions.add(session) })

  // CONNECT never reaches the app (Node emits it apart): refused here, in
  // the app's words. HTTP/1.1 gives the socket; HTTP/2 a request and response.
  server.on('connect', (req: { url?: string, headers: IncomingHttpHeaders, socket?: Socket }, second: Duplex | Http2ServerResponse) => {
    if ('writeHead' in second) {
      answerUnrouted(hooks, { method: 'CONNECT', url: req.url, headers: req.headers, socket: req.socket }, second)
      return
    }
    const answer = hooks.onUnroutedMethod({ method: 'CONNECT', url: req.url, headers: req.headers, remoteAddress: req.socket?.remoteAddress })
    second.on('error', () => {})
    second.end(rawAnswer(answer.status, answer.body, answer.headers))
    setTimeout(() => second.destroy(), 2000).unref()
  })

  const caps = new ConnectionCaps(processShare(config, config.limits.clientConnections))
  installFrontDoor(server, {
    firstByteTimeoutMs: config.limits.headersTimeoutMs,
    onPlaintext: hooks.onPlaintext,
    admit: (socket) => caps.take(socket),
    onRefused: hooks.onClientConnectionsRefused,
    ...(config.listen.proxyProtocol
      ? { proxyProtocol: { trusted: new TrustedProxies(config.listen.proxyProtocol.trustedProxies), maxPending: processShare(config, config.limits.clientConnections), onRefused: (problem, socket) => hooks.onProxyHeaderRefused?.(problem, socket) } }
      : {})
  })
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    // A client certificate that fails verification under `require` is not a
    // handshake error in OpenSSL's eyes: Node destroys the socket afterwards,
    // and the error seen here is a reset.
    const reason = t.clientAuth !== 'off' && socket.authorizationError ? 'client_certificate' : handshakeFailureReason(err)
    hooks.onHandshakeFailure(reason, socket)
  })

  const reload = (): boolean => {
    let next: CertificateMaterial
    let trust: Trust
    try {
      next = loadCertificate(t.cert, t.key)
      trust = clientTrust()
      server.setSecureContext({ ...base, ...openSslTrust(trust), ...tickets(next, trust), cert: next.cert, key: next.key })
    } catch (err) {
      hooks.onReloadFailure(err as Error)
      return false
    }
    expiresAt = next.expiresAt
    clientCrls = trust.crls
    hooks.onCertificate(next)
    hooks.onClientCrl?.(crlNextUpdate(clientCrls))
    return true
  }

  // Writers update cert and key one after the other: one reload for both.
  const files = [t.cert, t.key, ...(t.clientAuth !== 'off' ? [t.clientCa, t.clientCrl] : [])].filter((f): f is string => !!f)
  const stopWatching = t.watch ? watchFiles(files, () => { reload() }) : () => {}

  return {
    server,
    get expiresAt () { return expiresAt },
    get clientCrls () { return clientCrls },
    reload,
    closeSessions: () => { sessions.retireAll() },
    destroyConnections: () => { for (const c of [...connections]) c.destroy() },
    stopWatching
  }
}
