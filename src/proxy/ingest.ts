// An upload (PUT), sealed on its way in: the client's body goes through
// UploadBody (limits, SHA-256), TypeCheck (the file type, judged before
// the NAS is asked for anything) and SealStream (age, to the period's
// recipient, bound to the path) straight into a WebDAV PUT under a hidden
// temporary name. Only once the NAS holds all of it, at the size the
// sealing implies, and the ingest record (subject, path, bytes, key id,
// the plaintext's SHA-256) is durable, is it moved to its sealed name, with
// Overwrite: F unless the rule allows overwriting. Plaintext never reaches
// the NAS or a disk, memory is a few chunks whatever the size, and an
// upload that fails or whose client leaves leaves nothing on the NAS.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { pipeline } from 'node:stream'
import type { AuditRecord } from '../audit/writer.js'
import { Errors, isNasguardError, type NasguardError } from '../errors.js'
import type { IngestOutcome } from '../metrics/registry.js'
import { sealedSizeOf } from '../sealing/payload.js'
import { SealStream } from '../sealing/seal-stream.js'
import { KeyringBusyError, type PeriodKey } from '../sealing/keyring.js'
import type { SealingSettings } from '../sealing/settings.js'
import { classify } from './nas-failures.js'
import { TypeCheck, UploadBody } from './upload-body.js'
import { DavRefusal, WebDav } from './webdav.js'

export interface IngestParts {
  dav: WebDav
  sealing: () => SealingSettings | undefined
  /** The period's sealing key, read afresh and held (the keyring's shared lock) until release; made for a recent period's first upload; undefined when the period may not be opened. Throws KeyringBusyError. */
  holdSealingKey: (period: string) => { key: PeriodKey, release: () => void } | undefined
  /** limits.maxUploadBytes, and the pace a body must keep: limits.minSendRate over every limits.sendTimeoutMs. Read afresh. */
  limits: () => { maxBytes: number, windowMs: number, minBytesPerSec: number }
  /** Writes an ingest record durably; false when it could not be. */
  record: (request: FastifyRequest, fields: Pick<AuditRecord, 'bytes' | 'keyId' | 'sha256' | 'status' | 'reason'>) => Promise<boolean>
  onUpstreamError: (request: FastifyRequest, kind: string) => void
  /** How it ended, and the plaintext bytes stored. */
  onIngest: (outcome: IngestOutcome, bytes: number) => void
}

const clientLeft = (): Error => Object.assign(new Error('the client went away'), { name: 'AbortError', code: 'NASGUARD_CLIENT_LEFT' })

/** The body's length as the client declared it (checked by the gate), if it did. */
function declaredLength (request: FastifyRequest): number | undefined {
  const length = request.headers['content-length']
  return length === undefined ? undefined : Number(length)
}

/**
 * The body's streams, from the client's request to the sealed bytes the NAS
 * gets: the body is counted and judged first; the sealing transform is
 * joined on once the period's key is known (after the judgement).
 */
function bodyOf (request: FastifyRequest, p: IngestParts): { body: UploadBody, check: TypeCheck, sealing: (recipient: Buffer) => SealStream, failed: Promise<Error> } {
  const body = new UploadBody({ ...p.limits(), declared: declaredLength(request) })
  const check = new TypeCheck(request.ng.extension as string)
  request.raw.pipe(body)
  let report!: (err: Error) => void
  const failed = new Promise<Error>((resolve) => { report = resolve })
  body.once('error', (err) => { report(err); check.destroy(err) })
  check.once('error', report)
  body.pipe(check)
  const sealing = (recipient: Buffer): SealStream => {
    const sealed = new SealStream([recipient], request.ng.path as string)
    pipeline(check, sealed, (err) => { if (err) report(err) })
    return sealed
  }
  return { body, check, sealing, failed }
}

/** Refuses an upload over a recording the NAS holds: sealed, or (migrate) in plaintext. */
async function refuseExisting (dav: WebDav, request: FastifyRequest, s: SealingSettings): Promise<void> {
  const sealedPath = request.ng.sealed?.path as string
  if (await dav.exists(sealedPath)) throw new Errors.RecordingExists()
  if (s.mode === 'migrate' && await dav.exists(request.ng.path as string)) throw new Errors.RecordingExists()
}

export async function ingest (p: IngestParts, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const state = request.ng
  const s = p.sealing()
  if (!state.sealed || !s) { reply.send(new Errors.RecordingErased()); return }
  const sealed = state.sealed
  // The period's key is looked up (or made) once the body is judged: the
  // gate checked that a missing one may be made.
  let release: (() => void) | undefined
  const recipient = (): Buffer => {
    let held: ReturnType<IngestParts['holdSealingKey']>
    try {
      held = p.holdSealingKey(sealed.period)
    } catch (err) {
      throw err instanceof KeyringBusyError ? new Errors.KeyringBusy() : err
    }
    if (!held) throw new Errors.RecordingErased()
    release = held.release
    sealed.keyId = held.key.keyId
    return held.key.identity.publicKey
  }
  const { body, check, sealing, failed } = bodyOf(request, p)
  const abort = new AbortController()
  // The first failure is the one answered: the body's own (a limit, the
  // type, the client leaving) beats what it caused downstream.
  let failure: Error | undefined
  void failed.then((err) => { failure ??= err; abort.abort() })
  // Over HTTP/2 a client may end its body (END_STREAM) and reset the stream
  // at once (Node's stream.close() does): the body looks whole, but nobody
  // waits for the answer. Nothing is stored for a client that left before it.
  let gone = false
  const left = (): void => {
    if (reply.raw.writableFinished) return
    gone = true
    body.destroy(clientLeft())
  }
  const stillThere = (): void => { if (gone) throw clientLeft() }
  reply.raw.once('close', left)
  request.raw.once('aborted', left)
  let temp: string | undefined
  let recorded = false
  try {
    await check.judged
    const sealStream = sealing(recipient())
    if (!state.overwrite) await refuseExisting(p.dav, request, s)
    temp = WebDav.tempBeside(sealed.path)
    await p.dav.makeParents(temp)
    const declared = declaredLength(request)
    await p.dav.put(temp, sealStream, declared === undefined ? undefined : sealedSizeOf(sealStream.headerLength, declared), abort.signal)
    if (failure) throw failure
    stillThere()
    const stored = await p.dav.size(temp)
    if (stored !== sealedSizeOf(sealStream.headerLength, body.bytes)) throw new DavRefusal('PUT (stored size)', 502)
    const fields = { bytes: body.bytes, keyId: sealed.keyId, sha256: body.sha256 }
    if (!await p.record(request, fields)) throw new Errors.AuditUnavailable()
    recorded = true
    stillThere()
    if (await p.dav.move(temp, sealed.path, state.overwrite === true) === 'exists') throw new Errors.RecordingExists()
    temp = undefined
    // Replaced under migrate: a plaintext copy of the old recording would be sealed over the new one later.
    if (state.overwrite === true && s.mode === 'migrate') await p.dav.remove(state.path as string)
    p.onIngest('stored', body.bytes)
    reply.code(201).type('application/json; charset=utf-8').send({ stored: true, ...fields })
  } catch (err) {
    body.destroy()
    const cause = failure ?? err as Error
    // The ingest record said it was about to be stored: the trail says it was not.
    if (recorded && temp) await p.record(request, { status: statusOf(cause), reason: `not stored: ${cause instanceof DavRefusal ? cause.message : (cause as NasguardError).code ?? cause.name}` })
    await answerFailure(p, request, reply, cause, temp)
  } finally {
    release?.()
  }
}

const statusOf = (err: Error): number => isNasguardError(err) ? err.statusCode : 502

type Raw = FastifyReply['raw'] & { stream?: { rstCode?: number } }

/** Whether the client is gone: its connection closed, or its HTTP/2 stream reset. */
function clientGone (reply: FastifyReply): boolean {
  const raw = reply.raw as Raw
  return raw.destroyed || (raw.stream?.rstCode !== undefined && raw.stream.rstCode !== 0)
}

/** The outcome label of a failed upload. */
function outcomeOf (err: Error, clientGone: boolean): IngestOutcome {
  if (clientGone || err.name === 'AbortError') return 'aborted'
  if (isNasguardError(err) && err.code === Errors.RecordingExists.spec.code) return 'exists'
  if (isNasguardError(err) && err.statusCode < 500) return 'refused'
  return 'failed'
}

async function answerFailure (p: IngestParts, request: FastifyRequest, reply: FastifyReply, err: Error, temp: string | undefined): Promise<void> {
  const gone = request.ng.closed || clientGone(reply)
  if (temp) {
    // Whatever the NAS got of it goes; a NAS that cannot delete it now
    // leaves a hidden temporary name that is never served.
    await p.dav.remove(temp).catch((e: Error) => { request.log.warn({ problem: e.message }, 'an upload\'s temporary file could not be removed from the NAS') })
  }
  // Counted once the NAS holds nothing of it (or the removal failed, said above).
  p.onIngest(outcomeOf(err, gone), 0)
  if (gone || reply.sent) return
  // An HTTP/1.1 body that was not read to its end leaves the connection unusable.
  if (request.raw.httpVersion === '1.1' && !request.raw.complete) reply.header('connection', 'close')
  if (err instanceof DavRefusal) {
    p.onUpstreamError(request, err.kind)
    reply.send(new Errors.UpstreamError())
  } else if (isNasguardError(err)) {
    reply.send(err)
  } else if (err.name === 'AbortError') {
    reply.send(new Errors.UpstreamError())
  } else {
    const c = classify(err as NasguardError & { cause?: { code?: string } })
    p.onUpstreamError(request, c.kind)
    reply.send(c.err)
  }
}
