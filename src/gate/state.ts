// What the gate's stages read and write: the request as the gate sees it
// (plain data and two effects, so that a stage can be run without sockets),
// the per-request state, and what the stages share.
import type { IncomingHttpHeaders } from 'node:http'
import type { Identity } from '../auth/identity.js'
import type { FileSystemMode } from '../policy/file-system.js'
import type { PolicyRule } from '../policy/rules.js'
import type { Admission, Ticket } from '../proxy/admission.js'
import type { AuditRecord } from '../audit/writer.js'
import type { SealingSettings } from '../sealing/settings.js'
import type { PeriodKey } from '../sealing/keyring.js'
import type { HoldsNow } from '../retention/hold-view.js'
import type { RetentionRule } from '../retention/rules.js'
import type { Budget, Budgets, Charge, Verdict } from '../budgets/book.js'
import type { OnStoreError } from '../budgets/charger.js'

/** A request as the gate sees it. */
export interface GateRequest {
  id: string
  method: string
  /** The target as sent (path and query). */
  url: string
  headers: IncomingHttpHeaders
  /** Names and values, alternating, as sent. */
  rawHeaders: string[]
  httpVersion: string
  /** HTTP/2 only: false when the headers did not end the stream (a body follows). */
  endAfterHeaders?: boolean
  /** Who the request is for: the token, grant or certificate it carries, checked (throws a catalogued error). */
  authenticate: (path: string) => Promise<Identity>
  /** Resolves when the response may use the connection (a pipelined HTTP/1.1 request waits for the ones before it), or the client left. */
  turn: () => Promise<void>
}

export interface RequestState {
  started: bigint
  /** Who sent it, read when it arrived (an HTTP/2 stream has no socket once it is closed). */
  client: { clientIp: string, peerIp?: string }
  path?: string
  /** The canonical path's segments (the canonical-path stage). */
  segments?: string[]
  extension?: string
  identity?: Identity
  rule?: string
  /** An upload under a rule that lets it replace an existing recording. */
  overwrite?: boolean
  /** The access record is on disk (the last stage passed). */
  accessRecorded?: boolean
  /** The access record is durable and the request goes to the NAS. */
  fetch: boolean
  /** Body bytes handed to the response (queued); once it closed, those delivered (Deliveries.finished). */
  bytes: number
  /** Once the response closed: bytes handed to it whose sending was not confirmed (the client may have had some of them). */
  unconfirmed?: number
  /** The response is over (sent, or the client went away). */
  closed: boolean
  /** Cut by the drain deadline of a shutdown. */
  shutdown?: boolean
  /** Cut because the client took the recording too slowly (limits.minSendRate). */
  tooSlow?: boolean
  /** Body bytes the client had taken when the gateway cut the response. */
  deliveredAtCut?: number
  /** Its NAS connection, within the client's share (released when the response is over). */
  ticket?: Ticket
  /** The refusal's code, for the request's log line. */
  refused?: string
  /** The rule whose scopes the request lacked (policy denials by rule). */
  deniedBy?: string
  upstreamError?: string
  /** A sealed recording failed its authentication (src/sealing): the outcome is integrity-error. */
  integrityError?: boolean
  /** The retention rule that dated the recording, once it was found past its time (or to be dated by the NAS). */
  retentionRule?: string
  /** Dated by the NAS's Last-Modified (the retention stage): the exchange refuses it when it is past keepMs at `now`; holdsUnknown: with 503, as the holds could not be read. */
  retention?: { keepMs: number, now: number, holdsUnknown?: true }
  /** The budget that refused it (the budget stage). */
  budget?: Budget
  /** The ledger it was charged to (src/budgets/store.ts): its bytes are added to that ledger's hour when it ends. */
  charged?: string
  /** Past its retention but held: the cases holding it. */
  held?: string[]
  /** Served sealed (the sealing stage): the NAS's name for it, its period and key. */
  sealed?: { path: string, period: string, keyId: string }
}

/** The settings a request reads afresh, which a config reload replaces whole. */
export interface LiveSettings {
  rules: PolicyRule[]
  extensions: Set<string>
  maxPathLength: number
  maxRanges: number
  /** limits.maxUploadBytes. */
  maxUploadBytes: number
  /** limits.sendTimeoutMs: also how long an upload's body may send nothing. */
  sendTimeoutMs: number
  /** limits.minSendRate: also the pace an upload's body must keep. */
  minSendRate: number
  /** config.retention, compiled. */
  retention: RetentionRule[]
  /** The budgets per subject of each rule that has any (limits.perSubject under the rule's own). */
  budgets: Map<string, Budgets>
  /** limits.onStoreError: what a budgeted request gets while the budgets cannot be asked. */
  budgetStoreError: OnStoreError
}

/** What the stages share: the live settings and the gateway's own parts. */
export interface GateContext {
  live: () => LiveSettings
  fileSystem: FileSystemMode
  admission: Admission
  /** Writes an audit record; false when it could not be written (counted and logged already). */
  record: (r: AuditRecord) => Promise<boolean>
  /** Sealed recordings' settings; undefined when sealing.mode is off. */
  sealing: () => SealingSettings | undefined
  /** The period's key to open its recordings with, or (upload) to seal one to, made on the period's first upload; undefined when it has none. */
  periodKey: (period: string, upload: boolean) => PeriodKey | undefined
  /** The legal holds in force (read when a recording is past its retention). */
  holds: () => Promise<HoldsNow>
  /** The clock retention and budgets are judged by, ms since the epoch (tests set it). */
  now: () => number
  /** Charges a request to its ledger's budgets, or says which it would pass (src/budgets/charger.ts); throws when the budgets cannot be checked and limits.onStoreError is closed. */
  charge: (c: Charge, budgets: Budgets) => Verdict | Promise<Verdict>
}

/**
 * A stage: passes (returns) or throws a catalogued error (src/errors.ts).
 * It may find the client gone (state.closed) after it awaited something:
 * the gate then stops there.
 */
export type Stage = (request: GateRequest, state: RequestState, ctx: GateContext) => void | Promise<void>
