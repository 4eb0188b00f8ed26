// One download of a sealed recording. The request is answered in plaintext
// terms (answer-plan.ts), and the NAS is asked for only the chunks that hold
// the bytes to send. Each chunk is gathered whole in one buffer, opened
// (authenticated) and only then is any of its plaintext written: no byte
// that failed, or has not yet passed, its check ever reaches the client.
// A failure before the first byte is a 502; after it, the response is cut.
// What is held per download is one sealed chunk (64 KiB + 16), whatever the
// file's size; the NAS connection is paused while the response is full.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import { Errors, type NasguardError } from '../errors.js'
import { contentTypeFor } from '../policy/file-types.js'
import { SealedIntegrityError } from '../sealing/age.js'
import { planAnswer } from '../sealing/answer-plan.js'
import { CHUNK, openChunk, SEALED_CHUNK, spanOf, type Span } from '../sealing/payload.js'
import type { SealingSettings } from '../sealing/settings.js'
import { judgeAnswer } from './answer.js'
import { lastModifiedRefusal } from '../gate/retention.js'
import { checkPartialAnswer } from './content-range.js'
import { classify, UpstreamSignal, type UpstreamHooks } from './nas-failures.js'
import { dropRawHeaders } from './raw-headers.js'
import { sameVersion, type SealedFile, type SealedFiles } from './sealed-files.js'

export interface SealedHooks {
  /** A sealed recording failed its authentication: before_body (answered 502) or in_body (the response cut). */
  onIntegrityError: (request: FastifyRequest, where: 'before_body' | 'in_body', reason: string) => void
  /** The recording is in plaintext on the NAS: refused (require), or served as such (migrate). */
  onPlaintextOnNas: (request: FastifyRequest, served: boolean) => void
  onDecrypted: (seconds: number) => void
}

export interface SealedParts {
  pool: Dispatcher
  files: SealedFiles
  /** The gateway's own NAS request headers (credentials, user agent). */
  own: Record<string, string>
  hooks: UpstreamHooks & SealedHooks
  checkMagic: boolean
  ownHeaders: (request: FastifyRequest, reply: FastifyReply) => Record<string, unknown>
  sealing: () => SealingSettings | undefined
  /** The plaintext exchange (sealing.mode migrate, when no sealed file is there). */
  plaintext: (request: FastifyRequest, reply: FastifyReply) => void
}

type Raw = FastifyReply['raw'] & { stream?: { rstCode?: number } }

function clientGone (reply: FastifyReply): boolean {
  const raw = reply.raw as Raw
  return raw.destroyed || (raw.stream?.rstCode !== undefined && raw.stream.rstCode !== 0)
}

/** The file changed on the NAS between its header and its chunks: asked again from its header. */
class Stale extends Error {}

const RESETS = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

/** The response headers of a sealed recording, in plaintext terms. */
function headersOf (p: SealedParts, request: FastifyRequest, reply: FastifyReply, file: SealedFile, start: number, end: number, partial: boolean): Record<string, unknown> {
  const headers = p.ownHeaders(request, reply)
  headers['content-type'] = contentTypeFor(p.hooks.target(request).extension)
  headers['content-length'] = String(end - start + 1)
  headers['accept-ranges'] = 'bytes'
  headers.etag = file.etag
  if (file.lastModified !== undefined) headers['last-modified'] = file.lastModified
  if (partial) headers['content-range'] = `bytes ${start}-${end}/${file.geometry.size}`
  return headers
}

/** Streams the chunks of one span, opening each before any of it is written. */
class ChunkStream implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private readonly buffer = Buffer.allocUnsafe(SEALED_CHUNK)
  private filled = 0
  private index: number
  private over = false
  private headWritten = false
  private draining = false
  private decryptNs = 0n
  private received = 0
  private readonly asked = process.hrtime.bigint()

  constructor (
    private readonly p: SealedParts,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly file: SealedFile,
    private readonly span: Span,
    private readonly body: { status: 200 | 206, start: number, end: number },
    private readonly settle: (err?: unknown) => void
  ) {
    this.index = span.firstChunk
  }

  cancel (): void {
    if (this.over) return
    this.finish()
    this.controller?.abort(Object.assign(new Error('the client went away'), { name: 'AbortError' }))
    if (!this.reply.sent) { this.reply.hijack(); if (!(this.reply.raw as Raw).destroyed) this.reply.raw.end() }
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.over) controller.abort(new Error('cancelled'))
  }

  onResponseStart (controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    dropRawHeaders(controller)
    if (status < 200 || this.over) return
    this.p.hooks.onUpstreamResponse(this.request, Number(process.hrtime.bigint() - this.asked) / 1e9, status, this.file.path)
    const range = `bytes=${this.span.start}-${this.span.end}`
    if (status === 412) { this.fail(new Stale()); return }
    const answer = judgeAnswer(status, headers, range, true)
    if (answer.kind === 'refused') { this.fail(answer); return }
    const partial = status === 206 ? checkPartialAnswer(range, headers['content-range'], headers['content-length']) : undefined
    if (!partial?.ok || partial.span.start !== this.span.start || partial.span.end !== this.span.end) {
      this.fail({ kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'range' })
    }
  }

  /** The sealed size of chunk i. */
  private sizeOf (i: number): number {
    const g = this.file.geometry
    if (i < g.chunks - 1) return SEALED_CHUNK
    return g.sealedSize - (this.span.start + (i - this.span.firstChunk) * SEALED_CHUNK)
  }

  onResponseData (_controller: Dispatcher.DispatchController, data: Buffer): void {
    if (this.over) return
    this.received += data.length
    let at = 0
    while (at < data.length && !this.over) {
      const want = this.sizeOf(this.index)
      const n = Math.min(want - this.filled, data.length - at)
      data.copy(this.buffer, this.filled, at, at + n)
      this.filled += n
      at += n
      if (this.filled === want) this.chunk(want)
    }
  }

  /** Opens the gathered chunk and writes its part of the answer. */
  private chunk (length: number): void {
    const t = process.hrtime.bigint()
    const last = this.index === this.file.geometry.chunks - 1
    const plain = openChunk(this.file.key, this.index, last, this.buffer.subarray(0, length))
    this.decryptNs += process.hrtime.bigint() - t
    if (!plain) { this.fail(new SealedIntegrityError(`chunk ${this.index} does not authenticate`)); return }
    if (last) this.file.sizeChecked = true
    if (this.index === 0 && this.p.checkMagic && this.request.method === 'GET' && this.file.magic === undefined) {
      if (!this.p.files.judged(this.file, this.p.hooks.target(this.request).extension, plain)) { this.fail({ kind: 'refused', err: new Errors.UpstreamListing(), upstreamKind: 'magic' }); return }
    }
    const base = this.index * CHUNK
    const from = Math.max(0, this.body.start - base)
    const to = Math.min(plain.length, this.body.end - base + 1)
    this.index++
    this.filled = 0
    if (to > from) this.write(plain.subarray(from, to))
    if (this.index > this.span.lastChunk) this.done()
  }

  private write (bytes: Buffer): void {
    if (!this.headWritten) {
      this.headWritten = true
      const { status, start, end } = this.body
      this.reply.code(status)
      const headers = headersOf(this.p, this.request, this.reply, this.file, start, end, status === 206)
      this.reply.hijack()
      this.reply.raw.writeHead(status, headers as never)
    }
    this.p.hooks.onBody(this.request, bytes.length)
    if (!this.reply.raw.write(bytes) && !this.draining) {
      this.draining = true
      this.controller?.pause()
      this.reply.raw.once('drain', () => {
        this.draining = false
        if (!this.over) this.controller?.resume()
      })
    }
  }

  /**
   * Every chunk of the span was opened and written. The NAS's answer may
   * still be paused behind a full response: it is resumed, so that undici
   * reads its end and the connection goes back to the pool (left paused, it
   * would sit there until a timeout, holding a NAS connection).
   */
  private done (): void {
    if (!this.headWritten) this.write(Buffer.alloc(0))
    this.finish()
    if (this.draining) { this.draining = false; this.controller?.resume() }
    this.reply.raw.end()
    this.settle()
  }

  onResponseEnd (): void {
    if (this.over) return
    // The NAS ended the body before the span's last chunk.
    this.fail({ kind: 'refused', err: new Errors.UpstreamError(), upstreamKind: 'body' })
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.over) return
    this.fail(err)
  }

  private finish (): void {
    this.over = true
    if (this.decryptNs > 0n) this.p.hooks.onDecrypted(Number(this.decryptNs) / 1e9)
  }

  /** Before the first byte the caller answers; after it the response is cut. */
  private fail (err: unknown): void {
    if (this.over) return
    this.finish()
    this.controller?.abort(Object.assign(new Error('stopped by the gateway'), { name: 'AbortError' }))
    if (!this.headWritten) { this.settle(err); return }
    if (err instanceof SealedIntegrityError) {
      this.p.files.forget(this.file)
      this.p.hooks.onIntegrityError(this.request, 'in_body', err.reason)
    }
    else this.p.hooks.onUpstreamError(this.request, (err as { upstreamKind?: string }).upstreamKind ?? (err instanceof Error ? classify(err as NasguardError & { cause?: { code?: string } }).kind : 'body'))
    this.p.hooks.cut(this.request, this.reply)
    this.settle()
  }
}

/** Answers a sealed recording. A client that leaves cancels the NAS request. */
export function fetchSealed (p: SealedParts, request: FastifyRequest, reply: FastifyReply): void {
  const signal = new UpstreamSignal()
  let stream: ChunkStream | undefined
  const gone = (): void => { signal.abort(); stream?.cancel() }
  const h2 = (request.raw as { stream?: NodeJS.EventEmitter }).stream
  if (h2) h2.once('close', gone)
  else reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone() })
  const attempt = async (n: number): Promise<void> => {
    try {
      await answer(p, request, reply, signal, n, (s) => { stream = s })
    } catch (err) {
      if (signal.aborted || clientGone(reply)) { abandon(reply); return }
      const retry = err instanceof Stale || (n === 0 && RESETS.has((err as { code?: string }).code ?? ''))
      if (retry && n === 0) { await attempt(1); return }
      refuse(p, request, reply, err)
    }
  }
  attempt(0).catch((e: unknown) => {
    request.log.error({ err: { type: (e as Error)?.name, stack: (e as Error)?.stack } }, 'unexpected error in the sealed exchange')
    if (!reply.sent) reply.send(new Errors.Internal())
  })
}

/** The client left before its response was ended: it is ended anyway, so that its 'close' comes. */
function abandon (reply: FastifyReply): void {
  if (reply.sent) return
  reply.hijack()
  if (!(reply.raw as Raw).destroyed) reply.raw.end()
}

function refuse (p: SealedParts, request: FastifyRequest, reply: FastifyReply, err: unknown): void {
  if (err instanceof SealedIntegrityError) {
    p.hooks.onIntegrityError(request, 'before_body', err.reason)
    reply.send(new Errors.SealedIntegrity())
    return
  }
  if (err instanceof Stale) {
    // Changed twice while it was read: the NAS is being written to.
    p.hooks.onUpstreamError(request, 'other')
    reply.send(new Errors.UpstreamError())
    return
  }
  const refused = err as { kind?: string, err?: NasguardError, upstreamKind?: string | null }
  if (refused.kind === 'refused' && refused.err) {
    if (refused.upstreamKind) p.hooks.onUpstreamError(request, refused.upstreamKind)
    reply.send(refused.err)
    return
  }
  const { err: e, kind } = classify(err as NasguardError & { cause?: { code?: string } })
  p.hooks.onUpstreamError(request, kind)
  reply.send(e)
}

async function answer (p: SealedParts, request: FastifyRequest, reply: FastifyReply, signal: UpstreamSignal, attempt: number, started: (s: ChunkStream) => void): Promise<void> {
  const sealed = request.ng.sealed as NonNullable<typeof request.ng.sealed>
  const key = p.sealing()?.keyring.key(sealed.period)
  // The keyring was reloaded since the gate passed, without this period's key.
  if (!key || key.keyId !== sealed.keyId) throw { kind: 'refused', err: new Errors.RecordingErased(), upstreamKind: null }
  let file = request.method === 'HEAD' || attempt > 0 ? undefined : p.files.cached(sealed.path, key.keyId)
  const cached = file !== undefined
  if (!file) {
    const opened = await p.files.open(sealed.path, request.ng.path as string, key, request.id, signal, p.sealing()?.keyring.identities(sealed.period))
    if (opened.kind === 'missing') { await notSealed(p, request, reply, signal); return }
    if (opened.kind === 'refused') throw opened
    file = opened.file
  }
  if (signal.aborted) throw new Error('gone')
  const expired = lastModifiedRefusal(request.ng, file.nasLastModified)
  if (expired) throw { kind: 'refused', err: expired, upstreamKind: null }
  const plan = planAnswer({ size: file.geometry.size, etag: file.etag, lastModified: file.lastModified }, request.headers)
  // A 304 or 416 would be answered without asking the NAS again: from a
  // remembered header it could be about a version no longer there. (A body
  // is safe: its chunks are asked for with If-Match.)
  if (cached && plan.kind !== 'body') throw new Stale()
  if (plan.kind === 'not-modified') {
    reply.code(304).headers({ etag: file.etag, ...(file.lastModified ? { 'last-modified': file.lastModified } : {}) }).send()
    return
  }
  const span = plan.kind === 'body' ? spanOf(file.geometry, plan.start, plan.end) : undefined
  // The size an answer states is authenticated before it is stated: the
  // headers go out with the span's first chunk, so unless that chunk is the
  // last one (opened, flagged last, before the headers), the last chunk is opened first.
  if (request.method === 'HEAD' || span === undefined || span.firstChunk < file.geometry.chunks - 1) await checkSize(p, request, file, cached, signal)
  if (plan.kind === 'unsatisfiable' || span === undefined) {
    reply.header('content-range', `bytes */${file.geometry.size}`).send(new Errors.RangeNotSatisfiable())
    return
  }
  if (request.method === 'HEAD') {
    reply.hijack()
    reply.raw.writeHead(plan.status, headersOf(p, request, reply, file, plan.start, plan.end, plan.status === 206) as never)
    reply.raw.end()
    return
  }
  if (p.checkMagic && span.firstChunk > 0 && file.magic === undefined) {
    const verdict = await p.files.judgeMagic(file, p.hooks.target(request).extension, request.id, signal)
    if (verdict === 'changed') { p.files.forget(file); throw new Stale() }
    if (!verdict) throw { kind: 'refused', err: new Errors.UpstreamListing(), upstreamKind: 'magic' }
  }
  if (p.checkMagic && file.magic === false) throw { kind: 'refused', err: new Errors.UpstreamListing(), upstreamKind: 'magic' }
  await new Promise<void>((resolve, reject) => {
    const s = new ChunkStream(p, request, reply, file, span, plan, (err) => {
      if (err === undefined) { resolve(); return }
      if (file !== undefined) p.files.forget(file)
      // A remembered header that no longer fits the file (a NAS that
      // ignores If-Match): asked again from the header, once.
      reject(err instanceof SealedIntegrityError && cached ? new Stale() : err)
    })
    started(s)
    p.pool.dispatch({ method: 'GET', path: file.path, headers: { ...p.own, ...sameVersion(file), 'x-request-id': request.id, range: `bytes=${span.start}-${span.end}` } }, s)
  })
}

/**
 * The file's size, authenticated (SealedFiles.checkSize). A remembered
 * header that no longer fits the file (a NAS that ignores If-Match) is
 * asked again from the header, once, as a chunk that fails would be.
 */
async function checkSize (p: SealedParts, request: FastifyRequest, file: SealedFile, cached: boolean, signal: UpstreamSignal): Promise<void> {
  let changed: 'changed' | undefined
  try {
    changed = await p.files.checkSize(file, request.id, signal)
  } catch (err) {
    if (err instanceof SealedIntegrityError && cached) changed = 'changed'
    else throw err
  }
  if (changed) { p.files.forget(file); throw new Stale() }
  if (signal.aborted) throw new Error('gone')
}

/**
 * No sealed file under the recording's sealed name. migrate: the plaintext
 * one is served, as before. require: if the NAS has it in plaintext, that is
 * refused and counted (a finding); else it does not exist.
 */
async function notSealed (p: SealedParts, request: FastifyRequest, reply: FastifyReply, signal: UpstreamSignal): Promise<void> {
  if (p.sealing()?.mode !== 'require') {
    // Counted (not yet sealed, or its sealed file removed), and served
    // unauthenticated as before: what migrate means.
    request.ng.sealed = undefined
    p.hooks.onPlaintextOnNas(request, true)
    p.plaintext(request, reply)
    return
  }
  const res = await p.pool.request({ method: 'HEAD', path: request.ng.path as string, headers: { ...p.own, 'x-request-id': request.id }, signal })
  res.body.on('error', () => {})
  res.body.destroy()
  if (res.statusCode >= 200 && res.statusCode < 300) {
    p.hooks.onPlaintextOnNas(request, false)
    reply.send(new Errors.PlaintextOnNas())
    return
  }
  reply.send(new Errors.NotFound())
}
