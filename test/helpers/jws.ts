// Hand-made JWS tokens (node:crypto only, so a header can say anything a
// library would refuse to write) and a counting HTTP server on loopback for
// JWK Sets, attacker key servers and the like.
import { constants, createHmac, sign, type KeyLike } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { listenOnLoopback, type Teardown } from './stub-nas.js'

export function b64url (v: string | Buffer): string {
  return Buffer.from(v).toString('base64url')
}

export function nowSec (): number {
  return Math.floor(Date.now() / 1000)
}

/** header.payload, both base64url JSON: the JWS signing input. */
export function signingInput (header: Record<string, unknown>, payload: Record<string, unknown>): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
}

export type SigningKey = KeyLike | Buffer | string

/** The base64url JWS signature of `input` under `alg` (RFC 7518), computed with `key`. */
export function signatureFor (alg: string, key: SigningKey, input: string): string {
  const data = Buffer.from(input)
  const bits = alg.slice(2)
  switch (alg.slice(0, 2)) {
    case 'HS':
      return createHmac(`sha${bits}`, key as string | Buffer).update(data).digest('base64url')
    case 'RS':
      return sign(`sha${bits}`, data, key as KeyLike).toString('base64url')
    case 'PS':
      return sign(`sha${bits}`, data, { key: key as KeyLike, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(bits) / 8 } as never).toString('base64url')
    case 'ES':
      return sign(`sha${bits}`, data, { key: key as KeyLike, dsaEncoding: 'ieee-p1363' } as never).toString('base64url')
    case 'Ed':
      return sign(null, data, key as KeyLike).toString('base64url')
    default:
      throw new Error(`signatureFor: no signer for ${alg}`)
  }
}

/** A compact JWS whose header is exactly `header`, signed per header.alg with `key`. */
export function jws (header: Record<string, unknown>, payload: Record<string, unknown>, key: SigningKey): string {
  const input = signingInput(header, payload)
  return `${input}.${signatureFor(String(header.alg), key, input)}`
}

/** A compact JWS signed as `alg` but carrying `header` as given (the header's alg may say otherwise). */
export function jwsAs (alg: string, header: Record<string, unknown>, payload: Record<string, unknown>, key: SigningKey): string {
  const input = signingInput(header, payload)
  return `${input}.${signatureFor(alg, key, input)}`
}

export interface CountingServer {
  url: string
  server: Server
  /** Every request received, in order (method and url). */
  requests: Array<{ method: string, url: string }>
  handle: (h: (req: IncomingMessage, res: ServerResponse) => void) => void
  close: () => Promise<void>
}

/** A plain HTTP server on 127.0.0.1, port 0, that records every request before answering it. */
export async function startCountingServer (t: Teardown, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<CountingServer> {
  let current = handler
  const requests: Array<{ method: string, url: string }> = []
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '' })
    current(req, res)
  })
  const { port, close } = await listenOnLoopback(t, server)
  return { url: `http://127.0.0.1:${port}`, server, requests, handle: (h) => { current = h }, close }
}

export function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}
