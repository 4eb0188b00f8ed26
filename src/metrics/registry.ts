// Metric definitions. One registry per gateway instance (tests build many).
// Labels are bounded: method, status class, reason codes from
// src/errors.ts, upstream error kinds. Never a path, a subject or an IP.
import type { RetentionStatus } from '../retention/status.js'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx'

export function statusClass (status: number): StatusClass {
  if (status >= 500) return '5xx'
  if (status >= 400) return '4xx'
  if (status >= 300) return '3xx'
  if (status >= 200) return '2xx'
  return '1xx'
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT'])

/** Methods outside the standard set are folded into OTHER to keep the label bounded. */
export function methodLabel (method: string): string {
  return KNOWN_METHODS.has(method) ? method : 'OTHER'
}

/** Refusal classes for dashboards and alerts: what kind of attack or mistake a reason is. */
export function refusalClass (reason: string): string {
  switch (reason) {
    case 'bad_path': return 'traversal'
    case 'directory': case 'hidden': case 'upstream_listing': return 'listing'
    case 'file_type': return 'file_type'
    case 'range_refused': return 'range'
    case 'plaintext_on_tls_port': return 'plaintext'
    case 'bad_request': case 'headers_too_large': case 'protocol_reset': return 'smuggling'
    case 'token_missing': case 'token_expired': case 'token_invalid': case 'grant_invalid': case 'client_cert_invalid': return 'auth'
    case 'no_rule': case 'insufficient_scope': case 'method': return 'policy'
    case 'audit_unavailable': return 'audit'
    case 'sealed_integrity': case 'plaintext_on_nas': case 'recording_erased': case 'no_period': return 'sealing'
    case 'retention_expired': case 'holds_unavailable': return 'retention'
    case 'upload_too_large': case 'upload_type': case 'upload_path': case 'upload_period': case 'upload_stalled': case 'keyring_busy': case 'recording_exists': return 'upload'
    case 'upstream_busy': case 'client_busy': case 'client_connections': return 'capacity'
    default: return 'other'
  }
}

/** How an upload ended: nasguard_ingests_total{outcome}. */
export const INGEST_OUTCOMES = ['stored', 'exists', 'refused', 'failed', 'aborted'] as const
export type IngestOutcome = typeof INGEST_OUTCOMES[number]

export class GatewayMetrics {
  readonly registry: Registry
  readonly requests: Counter<'method' | 'status_class' | 'rule'>
  readonly bytesSent: Counter
  readonly refusals: Counter<'reason' | 'class'>
  readonly authFailures: Counter<'reason'>
  readonly policyDenials: Counter<'rule'>
  readonly retentionExpired: Counter<'rule'>
  readonly quotaExceeded: Counter<'rule' | 'budget'>
  readonly quotaNear: Gauge
  readonly recordingsCharged: Counter
  readonly budgetStoreErrors: Counter<'outcome'>
  readonly upstreamExposed: Gauge
  readonly exposureChecks: Counter<'result'>
  private budgetNear: () => Promise<number> = async () => 0
  readonly retentionOverdue: Gauge<'what'>
  readonly retentionLastSweep: Gauge
  readonly retentionUndetermined: Gauge
  readonly retentionLastWalk: Gauge
  private retentionStatus: () => RetentionStatus | undefined = () => undefined
  readonly timeToFirstByte: Histogram<'status_class'>
  readonly upstreamLatency: Histogram
  readonly upstreamErrors: Counter<'kind'>
  readonly plaintextOnTls: Counter
  readonly exposedTokens: Counter<'outcome'>
  readonly tlsHandshakeFailures: Counter<'reason'>
  readonly certificateExpiry: Gauge<'cert'>
  readonly tlsReloads: Counter<'result'>
  readonly configReloads: Counter<'result'>
  readonly crlNextUpdate: Gauge<'crl'>
  readonly activeStreams: Gauge
  readonly upstreamInUse: Gauge
  readonly upstreamQueue: Gauge
  readonly slowClients: Counter<'reason'>
  readonly requestDuration: Histogram<'status_class'>
  readonly auditRecords: Counter<'event'>
  readonly auditFailures: Counter<'event'>
  readonly auditBatchSize: Histogram
  readonly auditAvailable: Gauge
  readonly auditSequence: Gauge<'chain'>
  private auditHealthy: () => boolean = () => true
  readonly revocationsTrusted: Gauge
  private revocationsOk: () => boolean = () => true
  private auditChain: { chain: string, sequence: () => number } | undefined
  private upstreamUse = { inUse: () => 0, queued: () => 0 }
  readonly auditWriteSeconds: Histogram
  readonly servedBytes: Counter<'storage'>
  readonly sealedIntegrityFailures: Counter<'where'>
  readonly sealedDecryptSeconds: Histogram
  readonly plaintextOnNas: Counter<'action'>
  readonly ingests: Counter<'outcome'>
  readonly ingestBytes: Counter

  /** Counts a refusal under its reason and class (and as an auth failure when it is one). */
  refuse (reason: string, n = 1): void {
    const cls = refusalClass(reason)
    this.refusals.inc({ reason, class: cls }, n)
    if (cls === 'auth') this.authFailures.inc({ reason }, n)
  }

  /**
   * Exports every known label value at 0 from the start: Prometheus'
   * increase() needs a sample before the first event, or a first attack
   * would never fire an alert.
   */
  initialise (reasons: string[], upstreamKinds: string[], handshakeReasons: string[]): void {
    for (const r of reasons) this.refuse(r, 0)
    for (const k of upstreamKinds) this.upstreamErrors.inc({ kind: k }, 0)
    for (const r of handshakeReasons) this.tlsHandshakeFailures.inc({ reason: r }, 0)
    for (const r of ['stalled', 'too_slow']) this.slowClients.inc({ reason: r }, 0)
    for (const r of ['ok', 'failed']) this.configReloads.inc({ result: r }, 0)
    for (const o of ['refused', 'allowed', 'spend_lost']) this.budgetStoreErrors.inc({ outcome: o }, 0)
    for (const o of ['revoked', 'failed']) this.exposedTokens.inc({ outcome: o }, 0)
    for (const r of ['locked', 'exposed', 'failed']) this.exposureChecks.inc({ result: r }, 0)
    for (const e of ['access', 'fetch', 'refusal', 'grant']) { this.auditRecords.inc({ event: e }, 0); this.auditFailures.inc({ event: e }, 0) }
  }

  /** Where the NAS connection gauges read their values at scrape time. */
  setUpstreamUse (use: { inUse: () => number, queued: () => number }): void {
    this.upstreamUse = use
  }

  /** Where nasguard_quota_subjects_near_limit reads its count at scrape time. */
  setBudgetState (near: () => Promise<number>): void {
    this.budgetNear = near
  }

  /** Where the retention gauges read the last sweep's findings at scrape time (src/retention/status.ts). */
  setRetentionStatus (status: () => RetentionStatus | undefined): void {
    this.retentionStatus = status
  }

  /** Where nasguard_revocations_trusted reads its value at scrape time. */
  setRevocationState (trusted: () => boolean): void {
    this.revocationsOk = trusted
  }

  /** Where nasguard_audit_available and nasguard_audit_sequence read their values at scrape time; chain: `.` or worker-<i>. */
  setAuditState (state: { healthy: () => boolean, chain: string, sequence: () => number }): void {
    this.auditHealthy = state.healthy
    this.auditChain = state
  }

  constructor (opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry = new Registry()]
    const self = this
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'nasguard_' })
      // prom-client names these gauges *_total, which Prometheus reserves for
      // counters (promtool check metrics flags them): leave them out.
      for (const m of ['active_handles_total', 'active_requests_total', 'active_resources_total']) this.registry.removeSingleMetric(`nasguard_nodejs_${m}`)
    }
    this.requests = new Counter({
      name: 'nasguard_http_requests_total',
      help: 'Requests answered on the TLS listener, by method, status class and the policy rule that matched (none when refused before).',
      labelNames: ['method', 'status_class', 'rule'],
      registers
    })
    this.bytesSent = new Counter({
      name: 'nasguard_http_response_body_bytes_total',
      help: 'Recording bytes handed to clients.',
      registers
    })
    this.refusals = new Counter({
      name: 'nasguard_refusals_total',
      help: 'Requests refused by the gateway, by reason code and class (traversal, listing, file_type, range, plaintext, smuggling, auth, policy, audit).',
      labelNames: ['reason', 'class'],
      registers
    })
    this.authFailures = new Counter({
      name: 'nasguard_auth_failures_total',
      help: 'Requests refused with 401, by reason.',
      labelNames: ['reason'],
      registers
    })
    this.policyDenials = new Counter({
      name: 'nasguard_policy_denials_total',
      help: 'Requests refused by policy with 403/405, by the rule that matched the path (none: no rule did).',
      labelNames: ['rule'],
      registers
    })
    this.timeToFirstByte = new Histogram({
      name: 'nasguard_http_time_to_first_byte_seconds',
      help: 'Time from the request to its response headers.',
      labelNames: ['status_class'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers
    })
    this.upstreamLatency = new Histogram({
      name: 'nasguard_upstream_response_seconds',
      help: 'Time from asking the NAS to its response headers.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers
    })
    this.upstreamErrors = new Counter({
      name: 'nasguard_upstream_errors_total',
      help: 'Failures talking to the NAS, by kind.',
      labelNames: ['kind'],
      registers
    })
    this.plaintextOnTls = new Counter({
      name: 'nasguard_tls_plaintext_requests_total',
      help: 'Plain HTTP requests sent to the TLS port (answered 400, never proxied).',
      registers
    })
    this.exposedTokens = new Counter({
      name: 'nasguard_exposed_tokens_total',
      help: 'Bearer tokens that verified, seen in plain HTTP on the TLS port (sent over the network in the clear), by outcome: revoked, or failed (the revocation could not be added: revoke it by hand).',
      labelNames: ['outcome'],
      registers
    })
    this.tlsHandshakeFailures = new Counter({
      name: 'nasguard_tls_handshake_failures_total',
      help: 'TLS handshakes that failed, by reason (protocol_version, no_shared_cipher, client_certificate, malformed, reset, other).',
      labelNames: ['reason'],
      registers
    })
    this.certificateExpiry = new Gauge({
      name: 'nasguard_tls_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the certificate in use, as a Unix timestamp.',
      labelNames: ['cert'],
      // Workers: the earliest expiry any of them serves.
      aggregator: 'min',
      registers
    })
    this.crlNextUpdate = new Gauge({
      name: 'nasguard_tls_crl_next_update_timestamp_seconds',
      help: 'nextUpdate of the client CRL in use (tls.clientCrl; the earliest when it holds several), as a Unix timestamp. Past it every client certificate is refused: re-sign it (nasguard cert crl). Absent without a CRL.',
      labelNames: ['crl'],
      // Workers: the earliest any of them holds.
      aggregator: 'min',
      registers
    })
    this.tlsReloads = new Counter({
      name: 'nasguard_tls_certificate_reloads_total',
      help: 'Certificate reloads, by result (ok, failed: the old certificate stays).',
      labelNames: ['result'],
      registers
    })
    this.configReloads = new Counter({
      name: 'nasguard_config_reloads_total',
      help: 'Config reloads (SIGHUP, or the file changing), by result (ok; failed: the running config stays).',
      labelNames: ['result'],
      registers
    })
    this.activeStreams = new Gauge({
      name: 'nasguard_active_streams',
      help: 'Recording responses currently streaming.',
      registers
    })
    this.upstreamInUse = new Gauge({
      name: 'nasguard_upstream_connections_in_use',
      help: 'NAS connections held by downloads (at most upstream.connections).',
      registers,
      collect () { this.set(self.upstreamUse.inUse()) }
    })
    this.upstreamQueue = new Gauge({
      name: 'nasguard_upstream_queue',
      help: 'Downloads waiting for a NAS connection (each waits at most upstream.queueTimeoutMs, then gets 503).',
      registers,
      collect () { this.set(self.upstreamUse.queued()) }
    })
    this.slowClients = new Counter({
      name: 'nasguard_slow_clients_total',
      help: 'Downloads cut because the client took less than limits.minSendRate over limits.sendTimeoutMs (too_slow), or nothing at all (stalled).',
      labelNames: ['reason'],
      registers
    })
    this.requestDuration = new Histogram({
      name: 'nasguard_http_request_duration_seconds',
      help: 'Time from request to the end of the response.',
      labelNames: ['status_class'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers
    })
    this.auditRecords = new Counter({
      name: 'nasguard_audit_records_total',
      help: 'Audit records written, by event.',
      labelNames: ['event'],
      registers
    })
    this.auditFailures = new Counter({
      name: 'nasguard_audit_failures_total',
      help: 'Audit records that could not be written, by event.',
      labelNames: ['event'],
      registers
    })
    this.auditAvailable = new Gauge({
      name: 'nasguard_audit_available',
      help: '1 when the last audit write succeeded; 0 while recording requests are refused with 503.',
      registers,
      // Workers: 0 when any worker's chain is failing.
      aggregator: 'min',
      collect () { this.set(self.auditHealthy() ? 1 : 0) }
    })
    this.revocationsTrusted = new Gauge({
      name: 'nasguard_revocations_trusted',
      help: '1 while the revocations are followed (a valid denylist, or state.redis connected and loaded); 0 while every token request is refused with 503.',
      registers,
      // Workers: 0 when any worker cannot trust its revocations.
      aggregator: 'min',
      collect () { this.set(self.revocationsOk() ? 1 : 0) }
    })
    this.retentionExpired = new Counter({
      name: 'nasguard_retention_expired_total',
      help: 'Requests refused with 410 because the recording is past its retention, by retention rule.',
      labelNames: ['rule'],
      registers
    })
    this.quotaExceeded = new Counter({
      name: 'nasguard_quota_exceeded_total',
      help: 'Requests refused with 429 because a per-subject budget was spent, by policy rule and budget (requestsPerMinute, recordingsPerHour, recordingsPerDay, bytesPerHour).',
      labelNames: ['rule', 'budget'],
      registers
    })
    this.recordingsCharged = new Counter({
      name: 'nasguard_budget_recordings_total',
      help: 'Distinct recordings charged to a subject\'s budgets (a recording a subject had not taken in the last hour): the rate shows bulk downloading before any budget is spent.',
      registers
    })
    this.quotaNear = new Gauge({
      name: 'nasguard_quota_subjects_near_limit',
      help: 'Subjects at or above 80% of any of their budgets (a count: never who; shared budgets are counted once, so workers report the same count).',
      registers,
      aggregator: 'max',
      async collect () {
        // A store that cannot be asked leaves the last count.
        try { this.set(await self.budgetNear()) } catch {}
      }
    })
    this.budgetStoreErrors = new Counter({
      name: 'nasguard_budget_store_errors_total',
      help: 'Budget checks the store (state.redis; with workers, the primary) could not answer, by outcome: refused (limits.onStoreError closed, 503), allowed (open: passed uncounted), or spend_lost (an ended response\'s bytes not added).',
      labelNames: ['outcome'],
      registers
    })
    this.upstreamExposed = new Gauge({
      name: 'nasguard_upstream_exposed',
      help: '1 when the NAS answered the lockdown check (a listing or a recording asked for without credentials, upstream.exposureCheckSec): anyone who reaches the NAS needs no gateway. 0 when it refused every request, and before the first check (see nasguard_upstream_exposure_checks_total).',
      registers,
      // Workers: exposed when any worker found it so.
      aggregator: 'max'
    })
    this.exposureChecks = new Counter({
      name: 'nasguard_upstream_exposure_checks_total',
      help: 'NAS lockdown checks by result: locked (every request refused), exposed, or failed (the NAS could not be asked; nasguard_upstream_exposed keeps its last value).',
      labelNames: ['result'],
      registers
    })
    this.retentionOverdue = new Gauge({
      name: 'nasguard_retention_overdue',
      help: 'What the last retention sweep found past its retention and still present, without a hold: recordings (plaintext files, as the last sweep that walked the share with --source found them; absent until one did), and periods (sealed periods whose key still exists).',
      labelNames: ['what'],
      registers,
      aggregator: 'max',
      collect () {
        // A series the status no longer backs (no walk recorded, the file gone) is dropped, not kept from an older scrape.
        this.reset()
        const st = self.retentionStatus()
        if (!st) return
        if (st.recordingsTime !== undefined) this.set({ what: 'recordings' }, st.overdueRecordings)
        this.set({ what: 'periods' }, st.overduePeriods)
      }
    })
    this.retentionUndetermined = new Gauge({
      name: 'nasguard_retention_undetermined_periods',
      help: 'Sealed periods the last retention sweep could not judge (state undetermined: a rule dated by Last-Modified or from below a **, or a share it could not read), without a hold, that would be past retention were they dated by the period itself. The sweep never erases them: fix the rules or pass --source.',
      registers,
      aggregator: 'max',
      collect () {
        const st = self.retentionStatus()
        this.set(st?.undeterminedPeriods ?? 0)
      }
    })
    this.retentionLastWalk = new Gauge({
      name: 'nasguard_retention_share_walk_timestamp_seconds',
      help: 'When the last retention sweep that walked the share (--source) finished, seconds since the epoch: nasguard_retention_overdue{what="recordings"} is as old as that. Absent until one did.',
      registers,
      aggregator: 'max',
      collect () {
        this.reset()
        const at = self.retentionStatus()?.recordingsTime
        if (at !== undefined) this.set(at / 1000)
      }
    })
    this.retentionLastSweep = new Gauge({
      name: 'nasguard_retention_last_sweep_timestamp_seconds',
      help: 'When the last retention sweep (a dry run or --apply) finished, seconds since the epoch: its findings are as old as that.',
      registers,
      aggregator: 'max',
      collect () {
        // 0 while no readable status: the stale-sweep alert fires.
        this.set((self.retentionStatus()?.time ?? 0) / 1000)
      }
    })
    this.auditSequence = new Gauge({
      name: 'nasguard_audit_sequence',
      help: 'The sequence number of the newest audit record, per chain. Kept by Prometheus off this host, it only grows: a fall means the trail was rolled back (or a new key started a new chain).',
      labelNames: ['chain'],
      registers,
      collect () {
        const c = self.auditChain
        if (c) this.set({ chain: c.chain }, c.sequence())
      }
    })
    this.auditBatchSize = new Histogram({
      name: 'nasguard_audit_batch_records',
      help: 'Records per audit write (group commit).',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers
    })
    this.auditWriteSeconds = new Histogram({
      name: 'nasguard_audit_write_duration_seconds',
      help: 'Time to write and sync one audit group.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers
    })
    this.servedBytes = new Counter({
      name: 'nasguard_recording_bytes_total',
      help: 'Recording body bytes handed to clients, by how the NAS stores them: sealed (decrypted by the gateway) or plaintext.',
      labelNames: ['storage'],
      registers
    })
    this.sealedIntegrityFailures = new Counter({
      name: 'nasguard_sealed_integrity_failures_total',
      help: 'Sealed recordings that failed authentication: before the first body byte (answered 502) or in the body (the response cut).',
      labelNames: ['where'],
      registers
    })
    this.sealedDecryptSeconds = new Histogram({
      name: 'nasguard_sealed_decrypt_seconds',
      help: 'CPU time spent opening the chunks of one sealed response.',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers
    })
    this.ingests = new Counter({
      name: 'nasguard_ingests_total',
      help: 'Uploads (PUT), by how they ended: stored (sealed on the NAS), exists (409), refused (type, size or path, before the NAS was asked for the body), failed (the NAS or the audit trail failed), aborted (the client left).',
      labelNames: ['outcome'],
      registers
    })
    this.ingestBytes = new Counter({
      name: 'nasguard_ingest_bytes_total',
      help: 'Plaintext bytes of the uploads stored sealed on the NAS.',
      registers
    })
    this.plaintextOnNas = new Counter({
      name: 'nasguard_plaintext_on_nas_total',
      help: 'Requests that found a recording in plaintext on the NAS where a sealed one was looked for: refused (sealing.mode require) or served (migrate). A finding: seal it.',
      labelNames: ['action'],
      registers
    })
    for (const s of ['sealed', 'plaintext']) this.servedBytes.inc({ storage: s }, 0)
    for (const w of ['before_body', 'in_body']) this.sealedIntegrityFailures.inc({ where: w }, 0)
    for (const a of ['refused', 'served']) this.plaintextOnNas.inc({ action: a }, 0)
    for (const o of INGEST_OUTCOMES) this.ingests.inc({ outcome: o }, 0)
  }
}
