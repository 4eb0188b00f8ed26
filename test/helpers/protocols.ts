// One request over HTTP/1.1 or HTTP/2, on a fresh connection, trusting the
// test CA: for tests that run the same table over both protocols; and a
// keep-alive client per protocol, for tests that send thousands.
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { readFileSync } from 'node:fs'
import { testCerts } from './certs.js'
import { get, post, type RequestOpts, type Response } from './gateway-client.js'

export type Protocol = 'h1' | 'h2'
export const PROTOCOLS: readonly Protocol[] = ['h1', 'h2']

export function fetchAs (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string> = {}, method = 'GET', clientCert?: RequestOpts['clientCert']): Promise<Response> {
  if (proto === 'h1') return get(gw, path, { headers, method, clientCert })
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca), ...(clientCert ? { cert: clientCert.certPem, key: clientCert.keyPem } : {}) })
    session.on('error', reject)
    const stream = session.request({ ':method': method, ':path': path, ...headers })
    const chunks: Buffer[] = []
    let status = 0
    let responseHeaders: Response['headers'] = {}
    stream.on('response', (h) => {
      status = Number(h[':status'])
      responseHeaders = Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith(':'))) as Response['headers']
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { session.close(); resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks) }) })
    stream.on('error', (err) => { session.destroy(); reject(err) })
    stream.end()
  })
}

/** A POST on a fresh connection; an object body is sent as JSON (application/json), a string as it is (give its content-type). */
export function postAs (proto: Protocol, gw: { port: number }, path: string, body: string | object, headers: Record<string, string> = {}): Promise<Response> {
  if (proto === 'h1') return post(gw, path, body, headers)
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    session.on('error', reject)
    const payload = typeof body === 'string' ? body : JSON.stringify(body)
    const type = typeof body === 'string' ? {} : { 'content-type': 'application/json' }
    const stream = session.request({ ':method': 'POST', ':path': path, ...type, 'content-length': String(Buffer.byteLength(payload)), ...headers })
    const chunks: Buffer[] = []
    let status = 0
    let h: Response['headers'] = {}
    stream.on('response', (r) => { status = Number(r[':status']); h = Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith(':'))) as Response['headers'] })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { session.close(); resolve({ status, headers: h, body: Buffer.concat(chunks) }) })
    stream.on('error', (err) => { session.destroy(); reject(err) })
    stream.end(payload)
  })
}

export interface KeepAliveClient {
  send: (path: string, headers?: Record<string, string>, method?: string) => Promise<Response>
  close: () => void
}

/**
 * One keep-alive client per protocol: a few HTTP/1.1 connections reused
 * (an Agent), or one HTTP/2 session for every stream. A fresh TLS
 * handshake per request would make a thousand-recording walk slow.
 */
export function keepAliveClient (t: { teardown: (fn: () => void) => void }, proto: Protocol, gw: { port: number }): KeepAliveClient {
  const ca = readFileSync(testCerts().ca)
  let c: KeepAliveClient
  if (proto === 'h1') {
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 8, ca })
    c = {
      send: (path, headers = {}, method = 'GET') => new Promise((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path, method, headers, agent }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (b: Buffer) => chunks.push(b))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
          res.on('error', reject)
        })
        req.on('error', reject)
        req.end()
      }),
      close: () => agent.destroy()
    }
  } else {
    let session: ClientHttp2Session | undefined
    const open = (): ClientHttp2Session => {
      if (session && !session.closed && !session.destroyed) return session
      session = http2Connect(`https://localhost:${gw.port}`, { ca })
      session.on('error', () => {})
      return session
    }
    c = {
      send: (path, headers = {}, method = 'GET') => new Promise((resolve, reject) => {
        const stream = open().request({ ':method': method, ':path': path, ...headers })
        const chunks: Buffer[] = []
        let status = 0
        let h: Response['headers'] = {}
        stream.on('response', (rh) => {
          status = Number(rh[':status'])
          h = Object.fromEntries(Object.entries(rh).filter(([k]) => !k.startsWith(':'))) as Response['headers']
        })
        stream.on('data', (b: Buffer) => chunks.push(b))
        stream.on('end', () => resolve({ status, headers: h, body: Buffer.concat(chunks) }))
        stream.on('error', reject)
        stream.end()
      }),
      close: () => session?.close()
    }
  }
  t.teardown(c.close)
  return c
}
