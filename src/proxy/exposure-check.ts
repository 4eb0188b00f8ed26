// The NAS lockdown check: the gateway asks the NAS, without its credentials,
// for what an intruder on the NAS's network would ask for: a directory
// listing (GET and WebDAV PROPFIND of upstream.exposureCheckPaths) and a
// recording (upstream.exposureCheckRecording, else the last one the NAS
// served the gateway), its first byte only. A NAS that should accept only the
// gateway refuses all of them; one that answers is exposed, as the leaked one
// was. What was asked for is reported by kind, never by a recording's name.
import type { Dispatcher } from 'undici'

/** The user-agent of the check's requests, so that NAS logs tell them apart. */
export const EXPOSURE_USER_AGENT = 'nasguard (exposure check: this request must be refused)'

/** What one anonymous request got: a listing or a recording is an exposure. */
export interface Probe { asked: string, status: number, exposed: boolean }

export type ExposureState =
  | { kind: 'unchecked' }
  | { kind: 'locked', probes: Probe[], time: number }
  | { kind: 'exposed', probes: Probe[], time: number }
  | { kind: 'failed', error: string, time: number }

export interface ExposureParts {
  /** An undici request through the gateway's pool to the NAS (its TLS settings, no credentials added). */
  request: (o: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>
  /** Directories whose listing must be refused. */
  listingPaths: readonly string[]
  /** A recording the NAS must refuse (a canary the operator placed), if set. */
  canary?: string
  timeoutMs: number
  now?: () => number
}

const BODY_PEEK = 64 * 1024
const PROPFIND = '<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'

/** Whether a body a directory answered with lists what it holds (HTML links, "Index of", JSON entries, a DAV multistatus). */
export function looksLikeListing (contentType: string, body: string): boolean {
  if (/<(?:[a-z]+:)?multistatus\b/i.test(body)) return true
  if (/\bIndex of\b/i.test(body) || /<a\s[^>]*href\s*=/i.test(body)) return true
  if (/json/i.test(contentType)) return /^\s*[[{]/.test(body) && body.trim().length > 2
  return false
}

async function peek (body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of body as AsyncIterable<Buffer>) {
    chunks.push(c)
    n += c.length
    if (n >= BODY_PEEK) break
  }
  return Buffer.concat(chunks).subarray(0, BODY_PEEK).toString('utf8')
}

export class ExposureCheck {
  state: ExposureState = { kind: 'unchecked' }
  private lastServed: string | undefined
  private readonly now: () => number

  constructor (private readonly p: ExposureParts) {
    this.now = p.now ?? Date.now
  }

  /** The NAS served the gateway this recording (a 2xx): the next check asks for it anonymously. */
  served (nasPath: string): void {
    this.lastServed = nasPath
  }

  /** One check: every request in turn, then the verdict (also kept in state). */
  async run (): Promise<ExposureState> {
    const asks: Array<() => Promise<Probe>> = []
    for (const path of this.p.listingPaths) asks.push(async () => await this.listing('GET', path), async () => await this.listing('PROPFIND', path))
    const served = this.lastServed
    if (served !== undefined && served.lastIndexOf('/') > 0) {
      const dir = served.slice(0, served.lastIndexOf('/') + 1)
      if (!this.p.listingPaths.includes(dir)) asks.push(async () => ({ ...await this.listing('GET', dir), asked: 'a listing of the last served recording\'s directory (GET)' }))
    }
    if (this.p.canary !== undefined) asks.push(async () => await this.recording(this.p.canary as string, 'the canary recording (upstream.exposureCheckRecording)'))
    else if (served !== undefined) asks.push(async () => await this.recording(served, 'the last recording the NAS served the gateway'))
    const probes: Probe[] = []
    let error: string | undefined
    for (const ask of asks) {
      try {
        probes.push(await ask())
      } catch (err) {
        error ??= (err as { code?: string }).code ?? (err as Error).name ?? 'error'
      }
    }
    const time = this.now()
    if (probes.some((p) => p.exposed)) this.state = { kind: 'exposed', probes, time }
    // Refused, unless a request went unanswered: then it is not known.
    else if (error !== undefined) this.state = { kind: 'failed', error, time }
    else this.state = { kind: 'locked', probes, time }
    return this.state
  }

  private async ask (method: string, path: string, headers: Record<string, string>, body?: string): Promise<Dispatcher.ResponseData> {
    return await this.p.request({
      method: method as Dispatcher.HttpMethod,
      path,
      headers: { 'user-agent': EXPOSURE_USER_AGENT, ...headers },
      ...(body !== undefined ? { body } : {}),
      headersTimeout: this.p.timeoutMs,
      bodyTimeout: this.p.timeoutMs
    })
  }

  private async listing (method: 'GET' | 'PROPFIND', path: string): Promise<Probe> {
    const res = method === 'GET'
      ? await this.ask('GET', path, {})
      : await this.ask('PROPFIND', path, { depth: '1', 'content-type': 'application/xml' }, PROPFIND)
    const ok = res.statusCode >= 200 && res.statusCode < 300
    const text = ok ? await peek(res.body) : ''
    if (!ok) res.body.resume()
    const type = String(res.headers['content-type'] ?? '')
    return { asked: `a listing of ${path} (${method})`, status: res.statusCode, exposed: ok && looksLikeListing(type, text) }
  }

  private async recording (path: string, what: string): Promise<Probe> {
    const res = await this.ask('GET', path, { range: 'bytes=0-0' })
    res.body.resume()
    return { asked: what, status: res.statusCode, exposed: res.statusCode === 200 || res.statusCode === 206 }
  }
}

/** What /readyz and the log say about a state: 'ok' only when the NAS refused every request. */
export function describeExposure (s: ExposureState): string {
  switch (s.kind) {
    case 'unchecked': return 'not checked yet'
    case 'failed': return `check failed (${s.error})`
    case 'locked': return 'ok'
    case 'exposed': return 'exposed: the NAS answered ' + s.probes.filter((p) => p.exposed).map((p) => `${p.asked} with ${p.status}`).join(', ') + ' without credentials; it must accept only the gateway'
  }
}
