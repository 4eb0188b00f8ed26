// Helpers for tests that speak raw HTTP/1.1 over TLS (test/security):
// reading a raw response, waiting for an audit record, and checking that a
// connection is closed after a refusal.
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { testCerts } from './certs.js'

export interface RawResponse {
  status: number
  /** Lower-cased header names; repeated headers joined with ', '. */
  headers: Record<string, string>
  body: string
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: Record<string, unknown> | undefined
}

/** Parses the first response in `text` (as rawTls/rawPlain return it). */
export function parseRaw (text: string): RawResponse {
  const headEnd = text.indexOf('\r\n\r\n')
  const head = headEnd === -1 ? text : text.slice(0, headEnd)
  const lines = head.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
  const headers: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':')
    if (i <= 0) continue
    const name = line.slice(0, i).trim().toLowerCase()
    const value = line.slice(i + 1).trim()
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
  }
  let body = headEnd === -1 ? '' : text.slice(headEnd + 4)
  const cl = headers['content-length']
  if (cl !== undefined && /^\d+$/.test(cl)) body = body.slice(0, Number(cl))
  let json: Record<string, unknown> | undefined
  try {
    const v = JSON.parse(body) as unknown
    if (v && typeof v === 'object' && !Array.isArray(v)) json = v as Record<string, unknown>
  } catch {
    json = undefined
  }
  return { status: m ? Number(m[1]) : 0, headers, body, json }
}

/**
 * Status codes of the responses in a raw byte stream, read one after the
 * other by their Content-Length (a response body may be binary, so status
 * lines are not searched for).
 */
export function statuses (text: string): number[] {
  const out: number[] = []
  let pos = 0
  while (pos < text.length) {
    const m = /^HTTP\/1\.[01] (\d{3}) /.exec(text.slice(pos, pos + 16))
    if (m === null) break
    out.push(Number(m[1]))
    const end = responseEnd(text, pos)
    if (end === -1) break
    pos = end
  }
  return out
}

/**
 * Polls `probe` until it returns something other than undefined (an audit
 * line is appended after the response is sent). Throws when it never does.
 */
export async function poll<T> (what: string, probe: () => T | undefined, tries = 150, intervalMs = 20): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const v = probe()
    if (v !== undefined) return v
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  throw new Error(`gave up waiting for ${what}`)
}

function responseEnd (text: string, from: number): number {
  const headEnd = text.indexOf('\r\n\r\n', from)
  if (headEnd === -1) return -1
  const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(from, headEnd))
  if (m === null) return -1
  const end = headEnd + 4 + Number(m[1])
  return text.length >= end ? end : -1
}

export interface CloseProbe {
  /** Everything the server sent. */
  text: string
  /** The server closed the connection instead of answering the follow-up. */
  closed: boolean
  /** Status codes of the responses the server sent on the connection, in order. */
  statuses: number[]
}

/**
 * Sends `payload` over TLS, waits for the first complete response, then sends
 * `followUp` (a well-formed request) on the same connection. Resolves when
 * the server closes the connection or answers the follow-up, whichever comes
 * first: so a server that keeps a connection open after a refusal is seen
 * answering the follow-up, with no timer involved.
 */
export function refuseThenProbe (gw: { port: number }, payload: string | Buffer, followUp: string): Promise<CloseProbe> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca) }, () => { socket.write(payload) })
    let text = ''
    let sentFollowUp = false
    let firstEnd = -1
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      socket.destroy()
      resolve({ text, closed, statuses: statuses(text) })
    }
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (firstEnd === -1) firstEnd = responseEnd(text, 0)
      if (firstEnd !== -1 && !sentFollowUp) {
        sentFollowUp = true
        // The server may already be gone: a failed write is a close.
        socket.write(followUp, () => {})
      }
      if (firstEnd !== -1 && responseEnd(text, firstEnd) !== -1) finish(false)
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (done) return
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') { finish(true); return }
      done = true
      reject(err)
    })
  })
}
