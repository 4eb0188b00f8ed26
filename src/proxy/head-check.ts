// files.checkMagic for answers that do not start at the file's first byte.
// A player seeking into a file asks for `bytes=N-`; the bytes it gets say
// nothing about what the file is. Before such a range is served, the file's
// head is fetched (`Range: bytes=0-4095`) and judged, once per version of
// the file: the verdict is remembered by path and ETag (and Last-Modified),
// so seeking costs one small NAS request per file version, not per seek.
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { MAGIC_BYTES, magicMatches } from '../policy/magic.js'
import { passedHeaders } from './answer.js'
import { checkPartialAnswer } from './content-range.js'

/** Reads at least n bytes (fewer if the stream ends first); ended says whether it did. */
export function peek (stream: Readable, n: number): Promise<{ head: Buffer, body: Readable, ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let len = 0
    let ended = false
    const done = (): void => {
      stream.off('readable', onReadable)
      stream.off('end', onEnd)
      stream.off('error', reject)
      const head = Buffer.concat(chunks)
      // An ended stream cannot take the bytes back: they get a stream of their own.
      if (ended) resolve({ head, body: Readable.from(head.length > 0 ? [head] : []), ended })
      else {
        if (head.length > 0) stream.unshift(head)
        resolve({ head, body: stream, ended })
      }
    }
    const onEnd = (): void => { ended = true; done() }
    const onReadable = (): void => {
      let c: Buffer | null
      while (len < n && (c = stream.read() as Buffer | null) !== null) { chunks.push(c); len += c.length }
      if (len >= n) done()
    }
    stream.on('readable', onReadable)
    stream.once('end', onEnd)
    stream.once('error', reject)
  })
}

export interface FileVersion { path: string, extension: string, etag?: string, lastModified?: string }

export type HeadVerdict = 'ok' | 'mismatch' | 'changed' | 'unavailable'

export class HeadCheck {
  private readonly verdicts = new Map<string, boolean>()

  /**
   * @param request sends one request to the NAS (the gateway's pool, with its credentials)
   * @param maxEntries verdicts remembered; the oldest goes first
   */
  constructor (private readonly request: (opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>, private readonly headers: Record<string, string>, private readonly maxEntries = 10000) {}

  /** Whether the head of this version of the file matches its type. */
  async judge (file: FileVersion, signal?: Dispatcher.RequestOptions['signal']): Promise<HeadVerdict> {
    const key = file.etag !== undefined || file.lastModified !== undefined ? `${file.path}\0${file.etag ?? ''}\0${file.lastModified ?? ''}` : undefined
    const known = key === undefined ? undefined : this.verdicts.get(key)
    if (known !== undefined) return known ? 'ok' : 'mismatch'
    const verdict = await this.fetchHead(file, signal)
    if (key !== undefined && (verdict === 'ok' || verdict === 'mismatch')) {
      if (this.verdicts.size >= this.maxEntries) this.verdicts.delete(this.verdicts.keys().next().value as string)
      this.verdicts.set(key, verdict === 'ok')
    }
    return verdict
  }

  private async fetchHead (file: FileVersion, signal?: Dispatcher.RequestOptions['signal']): Promise<HeadVerdict> {
    const range = `bytes=0-${MAGIC_BYTES - 1}`
    let res: Dispatcher.ResponseData
    try {
      res = await this.request({ method: 'GET', path: file.path, headers: { ...this.headers, range }, signal })
    } catch {
      return 'unavailable'
    }
    const body = res.body as unknown as Readable
    // Destroying it early (below) makes undici emit an abort: not a failure.
    body.on('error', () => {})
    try {
      const h = res.headers
      // Another version of the file than the one whose range was answered (its validators as the answer passed them).
      const version = passedHeaders(h)
      if ((file.etag !== undefined && version.etag !== file.etag) || (file.lastModified !== undefined && version['last-modified'] !== file.lastModified)) return 'changed'
      let whole: boolean
      if (res.statusCode === 200) whole = true
      else if (res.statusCode === 206) {
        const answer = checkPartialAnswer(range, h['content-range'], h['content-length'])
        if (!answer.ok || answer.span.start !== 0) return 'unavailable'
        whole = answer.span.end + 1 === answer.span.total
      } else return 'unavailable'
      const { head, ended } = await peek(body, MAGIC_BYTES)
      return magicMatches(file.extension, head, ended && whole) ? 'ok' : 'mismatch'
    } catch {
      return 'unavailable'
    } finally {
      body.destroy()
    }
  }
}
