// A client of the test gateway over real sockets: HTTPS requests on fresh
// connections trusting the test CA, raw bytes over TLS or TCP, a metrics scrape.
import type { IncomingMessage } from 'node:http'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { readFileSync } from 'node:fs'
import { testCerts } from './certs.js'

/** The HS256 secret the test gateways verify tokens with. */
export const SECRET = 'test-secret-that-is-at-least-32-bytes-long!'

export interface Response { status: number, headers: IncomingMessage['headers'], body: Buffer }

export interface RequestOpts {
  headers?: Record<string, string>
  method?: string
  /** A client certificate (PEM) to present. */
  clientCert?: { certPem: string, keyPem: string }
}

/** Options for one HTTPS request over a fresh TLS connection, trusting the test CA. */
export function requestOptions (gw: { port: number }, path: string, opts: RequestOpts = {}): RequestOptions {
  return {
    host: '127.0.0.1',
    servername: 'localhost',
    port: gw.port,
    path,
    method: opts.method ?? 'GET',
    headers: opts.headers,
    ca: readFileSync(testCerts().ca),
    ...(opts.clientCert ? { cert: opts.clientCert.certPem, key: opts.clientCert.keyPem } : {}),
    agent: false
  }
}

/** One HTTPS request over a fresh TLS connection, trusting the test CA. */
export function get (gw: { port: number }, path: string, opts: RequestOpts = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions(gw, path, opts), (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** One HTTPS/1.1 POST on a fresh connection: an object body goes as JSON, a string as it is. */
export function post (gw: { port: number }, path: string, body: string | object | undefined, headers: Record<string, string> = {}): Promise<Response> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  const h: Record<string, string> = { ...(typeof body === 'object' ? { 'content-type': 'application/json' } : {}), ...headers }
  if (payload !== undefined) h['content-length'] = String(Buffer.byteLength(payload))
  return new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions(gw, path, { method: 'POST', headers: h }), (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(payload)
  })
}

export function bearer (token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` }
}

/**
 * Writes raw bytes over TLS (no client-side URL or header normalisation) and
 * returns everything the server sent until it closed the connection or the
 * first response was complete.
 */
export function rawTls (gw: { port: number }, payload: string | Buffer, opts: { untilClose?: boolean } = {}): Promise<{ text: string, closed: boolean }> {
  return new Promise((resolve, reject) => {
    const tlsOpts: ConnectionOptions = { host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca) }
    const socket = tlsConnect(tlsOpts, () => { socket.write(payload) })
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      socket.destroy()
      resolve({ text, closed })
    }
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (!opts.untilClose && responseComplete(text)) finish(false)
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err) => { if (!done) { done = true; reject(err) } })
  })
}

/** Plain TCP to the TLS port, as the leaked NAS's clients did. */
export function rawPlain (gw: { port: number }, payload: string): Promise<{ text: string, closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: gw.port }, () => { socket.write(payload) })
    let text = ''
    socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
    socket.on('close', () => resolve({ text, closed: true }))
    socket.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET') resolve({ text, closed: true }); else reject(err) })
  })
}

function responseComplete (text: string): boolean {
  const headEnd = text.indexOf('\r\n\r\n')
  if (headEnd === -1) return false
  const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headEnd))
  return m !== null && text.length - headEnd - 4 >= Number(m[1])
}

export function statusOf (text: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  return m ? Number(m[1]) : 0
}

/** Parses a Prometheus text exposition into { 'name{labels}': value }. */
export async function scrape (adminUrl: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await fetch(adminUrl + '/metrics', { headers })
  const text = await res.text()
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}
