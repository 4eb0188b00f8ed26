// One upload (PUT) over HTTP/1.1 or HTTP/2 on a fresh connection, trusting
// the test CA; the body is a buffer or a stream (sent as it comes).
import { request as httpsRequest } from 'node:https'
import { connect as http2Connect, constants } from 'node:http2'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { requestOptions, testCerts, type Response } from './gateway.js'
import type { Protocol } from './protocols.js'

/** `signal` aborts the upload as a crashing client would: the connection (HTTP/1.1) or the stream (HTTP/2, RST_STREAM CANCEL) goes. */
export function putAs (proto: Protocol, gw: { port: number }, path: string, headers: Record<string, string>, body: Buffer | Readable, signal?: AbortSignal): Promise<Response> {
  const source = Buffer.isBuffer(body) ? Readable.from([body]) : body
  const h = Buffer.isBuffer(body) ? { 'content-length': String(body.length), ...headers } : headers
  return new Promise((resolve, reject) => {
    const done = (status: number, responseHeaders: Response['headers'], chunks: Buffer[]): void => resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks) })
    if (proto === 'h1') {
      const req = httpsRequest(requestOptions(gw, path, { method: 'PUT', headers: h }), (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => done(res.statusCode ?? 0, res.headers, chunks))
        res.on('error', reject)
      })
      req.on('error', reject)
      signal?.addEventListener('abort', () => { source.unpipe(req); req.destroy(new Error('aborted by the test')) })
      source.pipe(req)
      return
    }
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
    session.on('error', reject)
    const stream = session.request({ ':method': 'PUT', ':path': path, ...h })
    const chunks: Buffer[] = []
    let status = 0
    let responseHeaders: Response['headers'] = {}
    stream.on('response', (rh) => {
      status = Number(rh[':status'])
      responseHeaders = Object.fromEntries(Object.entries(rh).filter(([k]) => !k.startsWith(':'))) as Response['headers']
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { session.close(); if (signal?.aborted) reject(new Error('aborted by the test')); else done(status, responseHeaders, chunks) })
    stream.on('error', (err) => { session.destroy(); reject(err) })
    stream.on('close', () => { if (signal?.aborted) { session.destroy(); reject(new Error('aborted by the test')) } })
    signal?.addEventListener('abort', () => { source.unpipe(stream); stream.close(constants.NGHTTP2_CANCEL) })
    source.pipe(stream)
  })
}
