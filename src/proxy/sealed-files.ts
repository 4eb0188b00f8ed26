// Opening a sealed recording on the NAS: its header is fetched alone (one
// small Range request: the header of a file sealed to one recipient, and
// the payload's nonce, are 248 bytes; a longer header is fetched again, up
// to 4 KiB), opened with the period's identity (during a rotation, with
// whichever of its identities it was sealed to) and checked against the
// plaintext path. What that gives (the payload key, the file's geometry,
// its version) is remembered per sealed path and key, so a player's seeks
// cost one NAS request each: the chunks, asked for on the condition that
// the file is still that version (If-Match).
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { Errors, type NasguardError } from '../errors.js'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'
import { MAX_HEADER_BYTES, SealedIntegrityError } from '../sealing/age.js'
import { openHeaderWithAny, type PeriodKey } from '../sealing/keyring.js'
import { CHUNK, geometry, NONCE_BYTES, openChunk, payloadKey, spanOf, type Geometry } from '../sealing/payload.js'
import { headerValue, judgeAnswer } from './answer.js'
import { peek } from './head-check.js'

/** The header of a file sealed to one recipient (232 bytes), and the payload's nonce. */
const FIRST_PROBE = 232 + NONCE_BYTES

export interface SealedFile {
  /** The NAS's name for it. */
  path: string
  keyId: string
  geometry: Geometry
  /** The payload key: opens every chunk. */
  key: Buffer
  nasEtag?: string
  /** The Last-Modified the client is shown (only an HTTP date: answer.ts). */
  lastModified?: string
  /** The NAS's Last-Modified as it wrote it (trimmed): what its age is judged by, and what goes back to it in If-Unmodified-Since. */
  nasLastModified?: string
  /** The gateway's strong ETag for the plaintext. */
  etag: string
  /** files.checkMagic's verdict on the decrypted head, once known. */
  magic?: boolean
  /** The last chunk opened, flagged last, where the size puts it: the size is authenticated. */
  sizeChecked?: boolean
}

export type Opened =
  | { kind: 'file', file: SealedFile }
  | { kind: 'missing' }
  | { kind: 'refused', err: NasguardError, upstreamKind: string | null }

type Requester = (opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>

/** The conditions under which a later request is answered only for this version of the file. */
export function sameVersion (file: SealedFile): Record<string, string> {
  if (file.nasEtag?.startsWith('"')) return { 'if-match': file.nasEtag }
  if (file.nasLastModified !== undefined) return { 'if-unmodified-since': file.nasLastModified }
  return {}
}

/**
 * The gateway's strong ETag: from the header's MAC, which is authenticated
 * and unique to each sealing of a file (a fresh file key every time), and
 * the file's size. Two recordings, or two sealings of one, never share it,
 * whatever validators the NAS gives.
 */
function clientEtag (keyId: string, sealedSize: number, mac: Buffer): string {
  return '"' + createHash('sha256').update(`${keyId}\0${sealedSize}\0`).update(mac).digest('base64url').slice(0, 27) + '"'
}

export class SealedFiles {
  private readonly files = new Map<string, SealedFile>()

  constructor (private readonly request: Requester, private readonly headers: Record<string, string>, private readonly maxEntries = 10000) {}

  cached (path: string, keyId: string): SealedFile | undefined {
    return this.files.get(`${path}\0${keyId}`)
  }

  forget (file: SealedFile): void {
    this.files.delete(`${file.path}\0${file.keyId}`)
  }

  /**
   * Forgets every file remembered under a key not in `keyIds`: a period
   * erased, an identity retired. Their payload keys must not stay in the
   * cache (and in memory: a core dump, swap) for as long as it would keep
   * them. A download still in flight keeps its own reference and finishes
   * as it began (it is not cut as if the file were tampered with); a file
   * re-sealed by a rotation is opened again, with its new key, when next
   * asked for.
   */
  keepOnly (keyIds: ReadonlySet<string>): void {
    for (const [k, file] of this.files) if (!keyIds.has(file.keyId)) this.files.delete(k)
  }

  /**
   * Fetches and opens the header with one of `identities` (the period's:
   * Keyring.identities); `key`, the period's primary, names the file in the
   * cache and its ETag. Throws SealedIntegrityError for a file that does not
   * open as sealed for `plainPath`.
   */
  async open (path: string, plainPath: string, key: PeriodKey, requestId: string, signal: Dispatcher.RequestOptions['signal'], identities: readonly PeriodKey[] = [key]): Promise<Opened> {
    let want = FIRST_PROBE
    for (;;) {
      const probe = await this.fetchStart(path, want, requestId, signal)
      if (probe.kind !== 'bytes') return probe
      const { data, sealedSize, nasEtag, lastModified, nasLastModified } = probe
      const header = openHeaderWithAny(data, identities, plainPath)?.header
      const needed = header === undefined ? MAX_HEADER_BYTES + NONCE_BYTES : header.length + NONCE_BYTES
      if (header === undefined || data.length < needed) {
        if (want >= Math.min(needed, sealedSize) || data.length >= sealedSize) throw new SealedIntegrityError(sealedSize < needed ? 'truncated before its payload' : 'no complete age header')
        want = Math.min(needed, sealedSize)
        continue
      }
      const g = geometry(header.length, sealedSize)
      if (!g) throw new SealedIntegrityError('its size fits no age payload (truncated or extended)')
      const file: SealedFile = {
        path,
        keyId: key.keyId,
        geometry: g,
        key: payloadKey(header.fileKey, data.subarray(header.length, header.length + NONCE_BYTES)),
        nasEtag,
        lastModified,
        nasLastModified,
        etag: clientEtag(key.keyId, sealedSize, header.mac)
      }
      if (nasEtag !== undefined || nasLastModified !== undefined) {
        if (this.files.size >= this.maxEntries) this.files.delete(this.files.keys().next().value as string)
        this.files.set(`${path}\0${key.keyId}`, file)
      }
      return { kind: 'file', file }
    }
  }

  /** The first `want` bytes of the file, its size and version; or why not. */
  private async fetchStart (path: string, want: number, requestId: string, signal: Dispatcher.RequestOptions['signal']): Promise<Opened | { kind: 'bytes', data: Buffer, sealedSize: number, nasEtag?: string, lastModified?: string, nasLastModified?: string }> {
    const range = `bytes=0-${want - 1}`
    const res = await this.request({ method: 'GET', path, headers: { ...this.headers, 'x-request-id': requestId, range }, signal })
    const body = res.body as unknown as Readable
    body.on('error', () => {})
    try {
      const answer = judgeAnswer(res.statusCode, res.headers, range, true)
      if (answer.kind === 'unsatisfiable') throw new SealedIntegrityError('an empty file')
      if (answer.kind === 'refused') return answer.upstreamKind === null ? { kind: 'missing' } : answer
      if (answer.kind !== 'recording') return { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'other' }
      const total = res.statusCode === 206 ? Number(/\/(\d+)$/.exec(answer.headers['content-range'] ?? '')?.[1]) : answer.declared
      if (!Number.isSafeInteger(total)) return { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'range' }
      const { head } = await peek(body, want)
      return { kind: 'bytes', data: head.subarray(0, want), sealedSize: total, nasEtag: answer.headers.etag, lastModified: answer.headers['last-modified'], nasLastModified: headerValue(res.headers, 'last-modified') }
    } finally {
      body.destroy()
    }
  }

  /**
   * Fetches and opens one chunk, on the condition that the file is still the
   * version whose header was read: 'changed' when it is not. A chunk that
   * does not authenticate throws SealedIntegrityError; a NAS that fails, its
   * refusal.
   */
  async fetchChunk (file: SealedFile, index: number, requestId: string, signal: Dispatcher.RequestOptions['signal']): Promise<Buffer | 'changed'> {
    const span = spanOf(file.geometry, index * CHUNK, index * CHUNK)
    const range = `bytes=${span.start}-${span.end}`
    const length = span.end - span.start + 1
    const res = await this.request({ method: 'GET', path: file.path, headers: { ...this.headers, ...sameVersion(file), 'x-request-id': requestId, range }, signal })
    const body = res.body as unknown as Readable
    body.on('error', () => {})
    try {
      if (res.statusCode === 412) return 'changed'
      const answer = judgeAnswer(res.statusCode, res.headers, range, true)
      // A NAS that fails here is a NAS failure, not a tampered file.
      if (answer.kind === 'refused') throw answer
      if (answer.kind !== 'recording' || answer.start !== span.start) throw { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'range' }
      const { head } = await peek(body, length)
      if (head.length < length) throw { kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'body' }
      const plain = openChunk(file.key, index, index === file.geometry.chunks - 1, head.subarray(0, length))
      if (!plain) throw new SealedIntegrityError(`chunk ${index} does not authenticate`)
      return plain
    } finally {
      body.destroy()
    }
  }

  /** files.checkMagic for a seek: chunk 0 is fetched, opened and judged, once per file version. */
  async judgeMagic (file: SealedFile, extension: string, requestId: string, signal: Dispatcher.RequestOptions['signal']): Promise<boolean | 'changed'> {
    if (file.magic !== undefined) return file.magic
    const chunk0 = await this.fetchChunk(file, 0, requestId, signal)
    return chunk0 === 'changed' ? chunk0 : this.judged(file, extension, chunk0)
  }

  /**
   * Authenticates the file's size, once per file version: the last chunk,
   * flagged last, opens where the size puts it (a truncated or extended
   * file's does not: SealedIntegrityError). Before any answer states the
   * size before it has opened the last chunk: a HEAD, a 416, and every body
   * but one of the last chunk alone (its headers go out with its first chunk).
   */
  async checkSize (file: SealedFile, requestId: string, signal: Dispatcher.RequestOptions['signal']): Promise<'changed' | undefined> {
    if (file.sizeChecked === true) return undefined
    if (await this.fetchChunk(file, file.geometry.chunks - 1, requestId, signal) === 'changed') return 'changed'
    file.sizeChecked = true
    return undefined
  }

  /** Judges the decrypted chunk 0 and remembers the verdict with the file. */
  judged (file: SealedFile, extension: string, chunk0: Buffer): boolean {
    file.magic = magicMatches(extension, chunk0.subarray(0, MAGIC_BYTES), file.geometry.size <= Math.min(MAGIC_BYTES, CHUNK))
    return file.magic
  }
}
