// The NAS as a WebDAV server (RFC 4918), for uploads: what Synology, QNAP,
// TrueNAS and nginx's dav module all speak. An upload is PUT under a
// temporary, hidden name (never served: the gate refuses dot-led names)
// and then MOVEd to its sealed name, so that a recording appears on the NAS
// whole or not at all; MOVE with `Overwrite: F` is the check that no
// recording is replaced, whatever raced it. Collections are made with MKCOL
// where the NAS wants them made (nginx's create_full_put_path, off by
// default, and most NAS boxes do).
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'

/** A status the NAS answered that the upload cannot go on with; kind is a bounded label for the metrics. */
export class DavRefusal extends Error {
  override name = 'DavRefusal'
  constructor (readonly method: string, readonly status: number) {
    super(`the NAS answered ${method} with ${status}`)
  }

  get kind (): string {
    return this.status === 401 || this.status === 403 ? 'auth' : this.status >= 500 ? 'status_5xx' : 'status_4xx'
  }
}

export interface DavParts {
  pool: Dispatcher
  /** The NAS's origin (for MOVE's Destination, an absolute URI). */
  origin: string
  /** The gateway's own request headers: user-agent and credentials. */
  own: Record<string, string>
  timeoutMs: number
}

/** Collections known to exist, so that an upload into a known directory costs no MKCOL; the oldest forgotten first. */
const KNOWN_LIMIT = 1000

export class WebDav {
  private readonly known = new Set<string>()

  constructor (private readonly p: DavParts) {}

  private async ask (method: string, path: string, headers: Record<string, string> = {}, body?: Readable, signal?: AbortSignal): Promise<number> {
    const { statusCode, body: answer } = await this.p.pool.request({
      method,
      path,
      headers: { ...this.p.own, ...headers },
      body,
      signal,
      headersTimeout: this.p.timeoutMs,
      bodyTimeout: this.p.timeoutMs
    })
    // The answer's body says nothing the gateway passes on.
    answer.resume()
    return statusCode
  }

  /** Whether the NAS holds a file at path. */
  async exists (path: string): Promise<boolean> {
    const status = await this.ask('HEAD', path)
    if (status === 404) return false
    if (status >= 200 && status < 300) return true
    throw new DavRefusal('HEAD', status)
  }

  /** A temporary name beside path: hidden, and never a name the gate serves. */
  static tempBeside (path: string): string {
    return `${path.slice(0, path.lastIndexOf('/') + 1)}.nasguard-upload-${randomBytes(12).toString('hex')}.tmp`
  }

  /** Makes path's parent collections that are missing, nearest first: MKCOL answers 409 while its own parent is missing. */
  async makeParents (path: string): Promise<void> {
    const parent = path.slice(0, path.lastIndexOf('/') + 1)
    if (parent === '/' || this.known.has(parent)) return
    let status = await this.ask('MKCOL', parent)
    if (status === 409) {
      await this.makeParents(parent.slice(0, -1))
      status = await this.ask('MKCOL', parent)
    }
    // 201: made; 405: it exists (RFC 4918 §9.3.1).
    if (status !== 201 && status !== 405) throw new DavRefusal('MKCOL', status)
    if (this.known.size >= KNOWN_LIMIT) this.known.delete(this.known.values().next().value as string)
    this.known.add(parent)
  }

  /** Stores body at path; `length` when known (else the body is sent chunked). */
  async put (path: string, body: Readable, length: number | undefined, signal: AbortSignal): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' }
    if (length !== undefined) headers['content-length'] = String(length)
    const status = await this.ask('PUT', path, headers, body, signal)
    if (status !== 201 && status !== 204) throw new DavRefusal('PUT', status)
  }

  /** The size the NAS reports for path (HEAD's Content-Length). */
  async size (path: string): Promise<number | undefined> {
    const { statusCode, headers, body } = await this.p.pool.request({ method: 'HEAD', path, headers: this.p.own, headersTimeout: this.p.timeoutMs, bodyTimeout: this.p.timeoutMs })
    body.resume()
    if (statusCode !== 200) throw new DavRefusal('HEAD', statusCode)
    const length = Number(headers['content-length'])
    return Number.isSafeInteger(length) ? length : undefined
  }

  /** Renames from to to; 'exists' when to exists and overwrite is false (412). */
  async move (from: string, to: string, overwrite: boolean): Promise<'moved' | 'exists'> {
    const status = await this.ask('MOVE', from, { destination: this.p.origin + to, overwrite: overwrite ? 'T' : 'F' })
    if (status === 412) return 'exists'
    if (status !== 201 && status !== 204) throw new DavRefusal('MOVE', status)
    return 'moved'
  }

  /** Removes path; a path that is not there is fine. */
  async remove (path: string): Promise<void> {
    const status = await this.ask('DELETE', path)
    if (status !== 204 && status !== 200 && status !== 404) throw new DavRefusal('DELETE', status)
  }
}
