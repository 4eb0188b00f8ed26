// One request over HTTP/1.1 or HTTP/2, on a fresh connection, trusting the
// test CA: for tests that run the same table over both protocols.
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import { testCerts } from './certs.js'
import { get, type Response } from './gateway-client.js'

export type Protocol = 'h1' | 'h2'
export const PROTOCOLS: readonly Protocol[] = ['h1', 'h2']

export function fetchAs (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Response> {
  if (proto === 'h1') return get(gw, path, { headers, method })
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
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
