// Writing a request's audit records, and answering a refusal. Nothing is
// dropped silently: a record that cannot be written is counted and logged
// (at most once a second), and the caller decides whether that refuses the
// request. A record nobody waits for (a completion, a refusal) is kept and
// written again, every RETRY_MS and at close, until the trail takes it.
import { isIP } from 'node:net'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { AuditRecord, AuditWriter } from '../audit/writer.js'
import { boundRecord, redactTokens } from '../audit/record-bounds.js'
import { Errors, errorBody, specFor, type NasguardError } from '../errors.js'
import { requestFields } from '../gate/record-fields.js'
import type { RequestState } from '../gate/state.js'
import { LogThrottle } from '../logging.js'
import type { GatewayMetrics } from '../metrics/registry.js'

/**
 * The client address for the audit record: request.ip (which is the
 * X-Forwarded-For client only when the socket peer is a trusted proxy), and
 * the peer itself when the two differ. A forwarded value that is not an IP
 * address is not believed: the peer stands for the client.
 */
export function clientOf (request: FastifyRequest): { clientIp: string, peerIp?: string } {
  const peer = request.socket?.remoteAddress
  const ip = isIP(request.ip) !== 0 ? request.ip : peer ?? ''
  return peer && peer !== ip ? { clientIp: ip, peerIp: peer } : { clientIp: ip }
}

function wwwAuthenticate (err: NasguardError, required?: string[]): string | undefined {
  if (err.statusCode === 401) {
    const desc = err.message.replace(/["\\]/g, '')
    return `Bearer realm="nasguard", error="invalid_token", error_description="${desc}"`
  }
  if (err.code === Errors.InsufficientScope.spec.code || err.code === Errors.NoRule.spec.code) {
    return `Bearer realm="nasguard", error="insufficient_scope"${required ? `, scope="${required.join(' ')}"` : ''}`
  }
  return undefined
}

/** How often records that could not be written are tried again. */
const RETRY_MS = 1000
/** Records kept for a later try; past this many the oldest go, each said in the log. */
const MAX_LATE = 10000

export class Records {
  private readonly failures = new LogThrottle()
  private readonly dropped = new LogThrottle()
  /** Records that could not be written and nobody waits for: written again later, in order. */
  private late: AuditRecord[] = []
  private retry: NodeJS.Timeout | undefined
  /** The try in progress, which close() waits for. */
  private trying: Promise<void> = Promise.resolve()
  private closed = false

  constructor (private readonly audit: AuditWriter, private readonly metrics: GatewayMetrics, private readonly log: () => FastifyBaseLogger) {}

  /**
   * Writes a record and counts it; false when it could not be written
   * (counted and logged: once a record, not once a try).
   */
  async write (record: AuditRecord, logger: FastifyBaseLogger = this.log(), retry = false): Promise<boolean> {
    try {
      await this.audit.append(record)
      this.metrics.auditRecords.inc({ event: record.event })
      return true
    } catch (err) {
      if (retry) return false
      this.metrics.auditFailures.inc({ event: record.event })
      this.failures.line((repeated) => {
        // A request's logger carries its reqId already (one key twice is not JSON every reader takes).
        const id = logger === this.log() ? { reqId: record.requestId } : {}
        logger.error({ ...id, event: record.event, code: (err as NodeJS.ErrnoException).code, reason: (err as Error).message, ...(repeated > 0 ? { repeated } : {}) }, 'audit record could not be written')
      })
      return false
    }
  }

  /** What every audit record of a request says about it (src/gate/record-fields.ts). */
  fields (request: FastifyRequest): Omit<AuditRecord, 'event' | 'time'> {
    const state = request.ng as RequestState | null
    return requestFields(request, state ?? { started: 0n, client: clientOf(request), fetch: false, bytes: 0, closed: false })
  }

  /** Writes a record nobody waits for; one the trail does not take now is kept and tried again. */
  keep (record: AuditRecord, logger?: FastifyBaseLogger): void {
    void this.write(record, logger).then((ok) => { if (!ok) this.later(record) })
  }

  private later (record: AuditRecord): void {
    // Kept at the size the trail would take it (a client's 60 KB path is cut to its bound).
    let bounded: AuditRecord
    try {
      bounded = boundRecord(record)
    } catch (err) {
      this.lost(record, `it is malformed (${(err as Error).message})`)
      return
    }
    if (this.closed) {
      this.lost(bounded, 'the gateway has closed its trail')
      return
    }
    this.late.push(bounded)
    this.withinBound()
    this.schedule()
  }

  /** Past MAX_LATE kept, the oldest go, each said. */
  private withinBound (): void {
    while (this.late.length > MAX_LATE) this.lost(this.late.shift() as AuditRecord, `the trail has taken none of the ${MAX_LATE} records kept for it, and the oldest goes`)
  }

  private lost (record: AuditRecord, why: string): void {
    this.dropped.line((repeated) => {
      this.log().error({ reqId: record.requestId, event: record.event, ...(repeated > 0 ? { repeated } : {}) }, `audit record lost: ${why}`)
    })
  }

  private schedule (): void {
    this.retry ??= setTimeout(() => {
      this.retry = undefined
      this.trying = this.trying.then(async () => { await this.writeLate() })
    }, RETRY_MS).unref()
  }

  /**
   * Tries the kept records again, all at once (the writer keeps their order
   * and groups them into few writes); what the trail still does not take is
   * kept, in order.
   */
  private async writeLate (): Promise<void> {
    const batch = this.late
    this.late = []
    if (batch.length === 0) return
    const written = await Promise.all(batch.map(async (r) => await this.write(r, undefined, true)))
    const still = batch.filter((_, i) => !written[i])
    this.late = [...still, ...this.late]
    this.withinBound()
    const n = batch.length - still.length
    if (n > 0) this.log().warn({ records: n, stillKept: this.late.length }, 'audit records written late: the trail takes records again')
    if (this.late.length > 0 && !this.closed) this.schedule()
  }

  /** At close: the try in progress, then one more; what is left is lost, and said. */
  async close (): Promise<void> {
    clearTimeout(this.retry)
    this.retry = undefined
    this.closed = true
    await this.trying
    await this.writeLate()
    for (const r of this.late) this.lost(r, 'the trail did not take it before the gateway closed')
    if (this.late.length > 0) this.log().error({ records: this.late.length }, 'audit records lost at close: the trail did not take them')
    this.late = []
  }

  refusal (r: Omit<AuditRecord, 'event' | 'time'>): void {
    this.keep({ event: 'refusal', time: new Date().toISOString(), ...r })
  }

  /** The completion record of a fetch whose access record is on disk. */
  completion (request: FastifyRequest, status: number, outcome: NonNullable<AuditRecord['outcome']>, durationMs: number): void {
    // A refusal judged on the NAS's answer (retention by Last-Modified, a listing) names its code, apart from the NAS's own status.
    const reason = request.ng.refused
    this.keep({ event: 'fetch', time: new Date().toISOString(), ...this.fields(request), status, bytes: request.ng.bytes, ...(request.ng.unconfirmed ? { unconfirmedBytes: request.ng.unconfirmed } : {}), durationMs, outcome, ...(reason ? { reason } : {}) }, request.log)
  }

  /** Answers a refusal: counted, audited (unless the fetch's own records say it), with its challenge and headers. */
  refuse (request: FastifyRequest, reply: FastifyReply, err: NasguardError, required?: string[]): void {
    const spec = specFor(err.code)
    const state = request.ng as RequestState | null
    if (state) state.refused = err.code
    // Judged on the NAS's answer, after the access record: counted here too.
    const afterAccess = err.code === Errors.UpstreamListing.spec.code || err.code === Errors.RetentionExpired.spec.code || err.code === Errors.HoldsUnavailable.spec.code
    if (!state?.fetch || afterAccess) {
      this.metrics.refuse(spec?.reason ?? 'other')
      if (err.code === Errors.RetentionExpired.spec.code) this.metrics.retentionExpired.inc({ rule: state?.retentionRule ?? 'none' })
      if (state?.budget !== undefined) this.metrics.quotaExceeded.inc({ rule: state.rule ?? 'none', budget: state.budget })
      if (spec?.reason === 'no_rule' || spec?.reason === 'insufficient_scope' || spec?.reason === 'method') this.metrics.policyDenials.inc({ rule: state?.deniedBy ?? 'none' })
    }
    if (!state?.fetch) {
      const fields = this.fields(request)
      this.refusal({ ...fields, path: fields.path === undefined ? undefined : redactTokens(fields.path), range: undefined, auth: undefined, status: err.statusCode, reason: err.code, ...(state?.budget !== undefined ? { budget: state.budget } : {}) })
    }
    const challenge = wwwAuthenticate(err, required)
    if (challenge) reply.header('www-authenticate', challenge)
    // A refusal may know better when to come back (a budget frees up at a time of its own).
    const retryAfter = (err as { retryAfterSec?: number }).retryAfterSec ?? spec?.retryAfterSec
    if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter))
    // A body not read to its end (a refused upload) would hold the connection: it closes after this answer.
    if (request.raw.httpVersion === '1.1' && !request.raw.complete) reply.header('connection', 'close')
    if (err.statusCode === 405) reply.header('allow', (err as { allow?: string }).allow ?? 'GET, HEAD')
    reply.code(err.statusCode).type('application/json; charset=utf-8').send(errorBody(err))
  }
}
