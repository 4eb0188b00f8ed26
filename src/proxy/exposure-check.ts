// The NAS lockdown check: the gateway asks the NAS, without its credentials,
// for what an intruder on the NAS's network would ask for: a directory
// listing (GET and WebDAV PROPFIND of upstream.exposureCheckPaths) and a
// recording (upstream.exposureCheckRecording, else the last one the NAS
// served the gateway), its first byte only. A NAS that should accept only the
// gateway refuses all of them; one that answers is exposed, as the leaked one
// was. What was asked for is reported by kind, never by a recording's name.
import type { Dispatcher } from 'undici'
import { PROPFIND_BODY, looksLikeListing, peek, servesFile, servesFileAfterRedirect } from '../exposure/evidence.js'

/** The user-agent of the check's requests, so that NAS logs tell them apart. */
export const EXPOSURE_USER_AGENT = 'nasguard (exposure check: this request must be refused)'

/** What one anonymous request got: a listing or a recording is an exposure. */
export interface Probe { asked: string, status: number, exposed: boolean }

export type ExposureState =
  | { kind: 'unchecked' }
  | { kind: 'locked', probes: Probe[], recordingAsked: boolean }
  | { kind: 'exposed', probes: Probe[] }
  | { kind: 'failed', error: string }

export interface ExposureParts {
  /** An undici request through the gateway's pool to the NAS (its TLS settings, no credentials added). */
  request: (o: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>
  /** Directories whose listing must be refused. */
  listingPaths: readonly string[]
  /** A recording the NAS must refuse (a canary the operator placed), if set. */
  canary?: string
  /** The NAS's origin (upstream.url): a redirect within it is followed, once. */
  origin: string
  timeoutMs: number
}

/** Drops a body unread (undici's body errors when destroyed before its end: that is expected here). */
function discard (body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {})
  body.destroy()
}

export class ExposureCheck {
  state: ExposureState = { kind: 'unchecked' }
  private lastServed: string | undefined
  private readonly stopping = new AbortController()

  constructor (private readonly p: ExposureParts) {}

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
        error ??= typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : (err as Error).name ?? 'error'
      }
    }
    if (probes.some((p) => p.exposed)) this.state = { kind: 'exposed', probes }
    // Refused, unless a request went unanswered: then it is not known.
    else if (error !== undefined) this.state = { kind: 'failed', error }
    else this.state = { kind: 'locked', probes, recordingAsked: this.p.canary !== undefined || served !== undefined }
    return this.state
  }

  private async ask (method: string, path: string, headers: Record<string, string>, body?: string): Promise<Dispatcher.ResponseData> {
    return await this.p.request({
      method: method as Dispatcher.HttpMethod,
      path,
      headers: { 'user-agent': EXPOSURE_USER_AGENT, 'accept-encoding': 'identity', ...headers },
      ...(body !== undefined ? { body } : {}),
      headersTimeout: this.p.timeoutMs,
      bodyTimeout: this.p.timeoutMs,
      // Bounds the wait for a pool connection too (headersTimeout starts once sent).
      signal: AbortSignal.any([AbortSignal.timeout(this.p.timeoutMs * 2), this.stopping.signal])
    })
  }

  /**
   * A GET, and the GET of where a redirect within the NAS points, once, if
   * `follows` accepts it: a directory redirected to its slash, or a recording
   * to a share link, is answered there (a login page elsewhere is not).
   */
  private async get (path: string, headers: Record<string, string>, follows: (next: URL) => boolean): Promise<{ res: Dispatcher.ResponseData, redirected: boolean }> {
    const res = await this.ask('GET', path, headers)
    const location = res.statusCode >= 300 && res.statusCode < 400 ? res.headers.location : undefined
    if (typeof location !== 'string') return { res, redirected: false }
    let next: URL
    try { next = new URL(location, new URL(path, this.p.origin)) } catch { return { res, redirected: false } }
    if (next.origin !== new URL(this.p.origin).origin || !follows(next)) return { res, redirected: false }
    discard(res.body)
    return { res: await this.ask('GET', next.pathname + next.search, headers), redirected: true }
  }

  private async listing (method: 'GET' | 'PROPFIND', path: string): Promise<Probe> {
    const res = method === 'GET'
      ? (await this.get(path, {}, (next) => next.pathname === (path.endsWith('/') ? path : path + '/'))).res
      : await this.ask('PROPFIND', path, { depth: '1', 'content-type': 'application/xml' }, PROPFIND_BODY)
    const asked = `a listing of ${path} (${method})`
    // Any multistatus answer to PROPFIND lists the collection.
    if (method === 'PROPFIND' && res.statusCode === 207) { discard(res.body); return { asked, status: 207, exposed: true } }
    const ok = res.statusCode >= 200 && res.statusCode < 300
    const text = ok ? await peek(res.body) : ''
    discard(res.body)
    return { asked, status: res.statusCode, exposed: ok && looksLikeListing(String(res.headers['content-type'] ?? ''), text) }
  }

  private async recording (path: string, what: string): Promise<Probe> {
    const { res, redirected } = await this.get(path, { range: 'bytes=0-0' }, () => true)
    // Not read: a NAS that ignores Range would send the whole recording.
    discard(res.body)
    // Where a redirect led, a page answering 200 (a login form) is not the file.
    const exposed = (redirected ? servesFileAfterRedirect : servesFile)(res.statusCode, res.headers)
    return { asked: redirected ? `${what}, through a redirect` : what, status: res.statusCode, exposed }
  }

  /** Cancels a check in flight (the gateway is closing). */
  stop (): void {
    this.stopping.abort()
  }
}

/** What /readyz and the log say about a state: 'ok' only when the NAS refused every request, a recording's among them. */
export function describeExposure (s: ExposureState): string {
  switch (s.kind) {
    case 'unchecked': return 'not checked yet'
    case 'failed': return `check failed (${s.error})`
    // Listings refused, but a NAS that serves files to anyone refuses listings too: not ok until a recording was asked for.
    case 'locked': return s.recordingAsked ? 'ok' : 'listings refused; no recording asked for yet (none served since start): set upstream.exposureCheckRecording to a canary file'
    case 'exposed': return 'exposed: the NAS answered ' + s.probes.filter((p) => p.exposed).map((p) => `${p.asked} with ${p.status}`).join(', ') + ' without credentials; it must accept only the gateway'
  }
}
