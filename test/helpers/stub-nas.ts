// A stub NAS on loopback that counts what reaches it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { READINESS_USER_AGENT } from '../../src/proxy/upstream.js'
import { EXPOSURE_USER_AGENT } from '../../src/proxy/exposure-check.js'
import { toneWav } from '../../src/demo/recordings.js'

export interface Teardown { teardown: (fn: () => unknown) => void }

export interface NasRequest { method: string, url: string, headers: IncomingMessage['headers'] }

export type NasHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface StubNas {
  url: string
  port: number
  server: Server
  /** Every request the gateway forwarded to the NAS, in order (not /readyz's health checks). */
  requests: NasRequest[]
  /** /readyz's health checks (user-agent READINESS_USER_AGENT), apart. */
  checks: NasRequest[]
  /** The lockdown check's anonymous requests (EXPOSURE_USER_AGENT), apart: refused with 401 here, as a locked NAS does, whatever the handler. */
  exposureChecks: NasRequest[]
  /** Replace the behaviour for the next requests. */
  handle: (h: NasHandler) => void
}

export const RECORDING = toneWav(440, 0.5)
export { READINESS_USER_AGENT }

/** Serves RECORDING for any path, with Range support, like a plain file server. */
export const serveRecording: NasHandler = (req, res) => {
  const body = RECORDING
  const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
  const headers: Record<string, string | number> = { 'content-type': 'audio/wav', 'accept-ranges': 'bytes', etag: '"rec-1"', server: 'StubNAS/1.0', 'x-powered-by': 'php', 'set-cookie': 'nas=1' }
  if (range) {
    const start = Number(range[1])
    const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1
    if (start >= body.length) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` })
      res.end()
      return
    }
    res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
    res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1))
    return
  }
  res.writeHead(200, { ...headers, 'content-length': body.length })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/**
 * Listens on a free loopback port and closes in teardown (all connections
 * too); close() may also be called earlier, and more than once.
 */
export async function listenOnLoopback (t: Teardown, server: Server): Promise<{ port: number, close: () => Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })
    return closed
  }
  t.teardown(close)
  return { port, close }
}

/**
 * The lockdown check's anonymous requests (EXPOSURE_USER_AGENT) are answered
 * 401, as a locked NAS does, and kept apart from what the gateway forwarded:
 * true when this was one.
 */
export function refuseExposureCheck (req: IncomingMessage, res: ServerResponse, seen: NasRequest[]): boolean {
  if (req.headers['user-agent'] !== EXPOSURE_USER_AGENT) return false
  seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
  res.writeHead(401, { 'www-authenticate': 'Basic realm="nas"' }).end()
  return true
}

export async function startStubNas (t: Teardown, handler: NasHandler = serveRecording): Promise<StubNas> {
  let current = handler
  const requests: NasRequest[] = []
  const checks: NasRequest[] = []
  const exposureChecks: NasRequest[] = []
  const server = createServer((req, res) => {
    const seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers }
    if (refuseExposureCheck(req, res, exposureChecks)) return
    if (req.headers['user-agent'] === READINESS_USER_AGENT) checks.push(seen)
    else requests.push(seen)
    current(req, res)
  })
  const { port } = await listenOnLoopback(t, server)
  return { url: `http://127.0.0.1:${port}`, port, server, requests, checks, exposureChecks, handle: (h) => { current = h } }
}
