// The one catalogue of error codes nasguard answers with. Every refusal a
// client can see is built here, so codes stay unique and documented
// (test/errors.test.ts checks both). Bodies are always
// { "error": CODE, "message": ... }.
import createError from '@fastify/error'

export interface ErrorSpec {
  code: string
  status: number
  message: string
  /** Metric label for refusals; bounded, never a path or subject. */
  reason: string
  /** What an operator should know; rendered into the README table. */
  doc: string
  /** Sent as Retry-After, in seconds, with this refusal. */
  retryAfterSec?: number
}

export interface NasguardError extends Error {
  code: string
  statusCode: number
}

/** `new Errors.X(detail?)`: the detail fills the message's %s. */
export type NasguardErrorConstructor = (new (detail?: string) => NasguardError) & { spec: ErrorSpec }

function define (code: string, status: number, message: string, reason: string, doc: string, retryAfterSec?: number): NasguardErrorConstructor {
  const Ctor = createError(code, message, status) as unknown as NasguardErrorConstructor
  Ctor.spec = { code, status, message, reason, doc, ...(retryAfterSec !== undefined ? { retryAfterSec } : {}) }
  return Ctor
}

/** A 405 that names the methods its target takes (its Allow header). */
export function methodNotAllowed (allowed: readonly string[]): NasguardError & { allow: string } {
  return Object.assign(new Errors.MethodNotAllowed(), { allow: allowed.join(', ') })
}

export const Errors = {
  PlaintextOnTlsPort: define('NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT', 400,
    'plain HTTP was sent to the TLS port; use https://', 'plaintext_on_tls_port',
    'A client spoke plain HTTP to the TLS listener. Answered on the raw socket, then the connection is closed.'),
  BadPath: define('NASGUARD_ERR_BAD_PATH', 400,
    'the request path is not canonical: %s', 'bad_path',
    'The path was ambiguous (dot segments, encoded separators, control characters, invalid UTF-8, ...). Never forwarded.'),
  BadRequest: define('NASGUARD_ERR_BAD_REQUEST', 400,
    'the request is malformed: %s', 'bad_request',
    'A request the gateway refuses to forward: a body on GET/HEAD, an Upgrade, ambiguous framing.'),
  HeadersTooLarge: define('NASGUARD_ERR_HEADERS_TOO_LARGE', 431,
    'the request headers are too large', 'headers_too_large',
    'Request headers over 16 KiB (such as an oversized token) or over 128 fields. Audited with method and path; over 128 KiB (HTTP/1.1 parser limit) answered on the socket and audited with the client address only.'),
  ProtocolReset: define('NASGUARD_ERR_PROTOCOL_RESET', 400,
    'the HTTP/2 stream was reset by the protocol layer', 'protocol_reset',
    'An HTTP/2 request that the protocol layer reset before any of it reached the gateway (an upper-case or connection-specific header, a repeated pseudo-header, more than 128 headers). Counted and audited per connection: nothing identifies the request.'),
  RequestTimeout: define('NASGUARD_ERR_REQUEST_TIMEOUT', 408,
    'the request headers did not arrive in time', 'request_timeout',
    'A client sent its request headers slower than limits.headersTimeoutMs (slowloris). Answered on the socket, then the connection is closed.'),
  TokenMissing: define('NASGUARD_ERR_TOKEN_MISSING', 401,
    'a Bearer token is required in the Authorization header', 'token_missing',
    'No Authorization: Bearer header was sent.'),
  TokenExpired: define('NASGUARD_ERR_TOKEN_EXPIRED', 401,
    'the token has expired', 'token_expired',
    "The token's exp is in the past."),
  TokenInvalid: define('NASGUARD_ERR_TOKEN_INVALID', 401,
    'the token is not valid: %s', 'token_invalid',
    'Bad signature, wrong algorithm, malformed token, missing exp or sub, wrong iss/aud, or not yet valid.'),
  GrantInvalid: define('NASGUARD_ERR_GRANT_INVALID', 401,
    'the playback grant is not valid: %s', 'grant_invalid',
    'A grant parameter that is malformed, forged, expired, for another path or address, revoked with its subject, or minted with a token whose JWT key was removed since.'),
  ClientCertInvalid: define('NASGUARD_ERR_CLIENT_CERT_INVALID', 401,
    'the client certificate is not trusted: %s', 'client_cert_invalid',
    'A client certificate was presented but does not verify against tls.clientCa (unknown CA, expired, revoked).'),
  NoRule: define('NASGUARD_ERR_NO_RULE', 403,
    'no policy rule allows this request', 'no_rule',
    'Deny by default: no rule matches this path.'),
  InsufficientScope: define('NASGUARD_ERR_INSUFFICIENT_SCOPE', 403,
    'the token lacks a scope this path requires', 'insufficient_scope',
    'A rule matches the path, but the token holds none of its scopes.'),
  Directory: define('NASGUARD_ERR_DIRECTORY', 403,
    'directory listings are never served', 'directory',
    'The path is directory-shaped (trailing slash, or no file extension).'),
  HiddenPath: define('NASGUARD_ERR_HIDDEN_PATH', 403,
    'hidden files and folders are never served', 'hidden',
    'A path segment starts with a dot (.env, .private, ...).'),
  FileType: define('NASGUARD_ERR_FILE_TYPE', 403,
    'this file type is not served', 'file_type',
    'The file extension is not in files.extensions.'),
  MethodNotAllowed: define('NASGUARD_ERR_METHOD_NOT_ALLOWED', 405,
    'method not allowed', 'method',
    'Only GET and HEAD are served (and PUT uploads, under sealing), and only those a matching rule lists. Allow names the methods the rules on that path take (for a method never served: every method some rule takes; the grants endpoint: POST).'),
  UploadTooLarge: define('NASGUARD_ERR_UPLOAD_TOO_LARGE', 413,
    'the upload is larger than this gateway takes', 'upload_too_large',
    'A PUT whose Content-Length is over limits.maxUploadBytes (the NAS is not asked), or whose body passed it (the upload is cut and nothing is left on the NAS).'),
  UploadType: define('NASGUARD_ERR_UPLOAD_TYPE', 415,
    'the upload is not a recording of its file type: %s', 'upload_type',
    "A PUT whose first bytes do not match its extension's type (RIFF/WAVE for .wav, ID3 or MPEG sync for .mp3, ...), or that is content-encoded. Judged before the NAS is asked."),
  UploadStalled: define('NASGUARD_ERR_UPLOAD_STALLED', 408,
    'the upload came too slowly or stopped', 'upload_stalled',
    'A PUT whose body came slower than limits.minSendRate over a window of limits.sendTimeoutMs, or stopped (a window in which the NAS was the slow side does not count): cut, and nothing is left on the NAS.'),
  UploadPath: define('NASGUARD_ERR_UPLOAD_PATH', 400,
    'an upload needs its date in the path where sealing.periodPattern expects one', 'upload_path',
    "A PUT to a path that does not match sealing.periodPattern: there would be no period's key to seal it to. Nothing is asked of the NAS."),
  UploadReadableNumber: define('NASGUARD_ERR_UPLOAD_READABLE_NUMBER', 400,
    'a directory of this upload would stay readable on the NAS and holds what may be a phone number', 'upload_readable_number',
    'A PUT whose path has what may be a phone number (9 or more digits, as numbers are written; dates and times aside) in a directory that sealing.names.segments leaves readable (only the last segments are sealed). Store the number in the file name, or seal more segments. Nothing is asked of the NAS.'),
  UploadNameTooLong: define('NASGUARD_ERR_UPLOAD_NAME_TOO_LONG', 400,
    'the name of this upload is too long to be sealed', 'upload_name_too_long',
    'A PUT whose sealed name would be longer than the 255 bytes a NAS takes for one name (a sealed segment holds up to about 140 bytes of name). Shorten the name. Nothing is asked of the NAS.'),
  RecordingHeld: define('NASGUARD_ERR_RECORDING_HELD', 409,
    'the recording is under a legal hold and cannot be replaced', 'recording_held',
    'A PUT under a rule with overwrite: true to a path a legal hold in force covers: a hold keeps what is there (a new recording under a held prefix needs a rule without overwrite). Nothing is asked of the NAS.'),
  PeriodKeyMissing: define('NASGUARD_ERR_PERIOD_KEY_MISSING', 503,
    'this period has no key yet, and this gateway makes none', 'period_key_missing',
    'A PUT into a recent period with no key while sealing.makeKeysOnUpload is false (gateways holding copies of one keyring): an operator makes it with nasguard keys new --period P on the keyring the copies come from. Sent with Retry-After; nothing is asked of the NAS.', 60),
  UploadPeriod: define('NASGUARD_ERR_UPLOAD_PERIOD', 400,
    'an upload may start only a recent period, and this one has no key', 'upload_period',
    'A PUT into a period with no key that is neither the current period nor the one before (UTC). An upload makes the key of a new period only then, so that a token cannot fill the keyring with keys for any date: make an older period\'s key with nasguard keys new --period P (then SIGHUP). Nothing is asked of the NAS.'),
  KeyringBusy: define('NASGUARD_ERR_KEYRING_BUSY', 503,
    'the sealing keyring is being rotated or erased; try again shortly', 'keyring_busy',
    "An upload while nasguard keys rotate retires an identity or a period is erased (the keyring's exclusive lock): nothing is sealed to a key about to be destroyed. Sent with Retry-After; nothing is left on the NAS.", 5),
  RecordingExists: define('NASGUARD_ERR_RECORDING_EXISTS', 409,
    'a recording already exists at this path', 'recording_exists',
    "A PUT for a recording the NAS already holds (sealed, or in plaintext under migrate), under a rule without overwrite: true. The recording on the NAS is untouched, and the upload's sealed copy is removed."),
  NotFound: define('NASGUARD_ERR_NOT_FOUND', 404,
    'no such recording', 'not_found',
    'The NAS answered 404; or, under sealing.mode require, the name is too long to have a sealed name (see NASGUARD_ERR_UPLOAD_NAME_TOO_LONG), so the NAS cannot hold it, and it is not asked.'),
  BadRange: define('NASGUARD_ERR_BAD_RANGE', 416,
    'the Range header is refused: %s', 'range_refused',
    'A Range header that is malformed, not in bytes, lists more than limits.maxRanges ranges, or overlaps itself (the CVE-2011-3192 class). Never forwarded.'),
  RangeNotSatisfiable: define('NASGUARD_ERR_RANGE_NOT_SATISFIABLE', 416,
    'the requested range is not satisfiable', 'range',
    'The NAS answered 416 to the Range header.'),
  RecordingErased: define('NASGUARD_ERR_RECORDING_ERASED', 410,
    'this recording was erased: its period\'s key no longer exists', 'recording_erased',
    'sealing.mode migrate or require: the identity of the recording\'s period is gone from the keyring (destroyed, or never made under require). Nothing is asked of the NAS.'),
  RetentionExpired: define('NASGUARD_ERR_RETENTION_EXPIRED', 410,
    'this recording is past its retention period', 'retention_expired',
    "The first retention rule matching the path dates the recording (from the path, or the NAS's Last-Modified) and its keepDays have passed, and no legal hold covers it. Audited and counted (nasguard_retention_expired_total{rule}); dated by the path, the NAS is not asked. Also for grants and uploads of such a path."),
  HoldsUnavailable: define('NASGUARD_ERR_HOLDS_UNAVAILABLE', 503,
    'the legal holds cannot be read; try again shortly', 'holds_unavailable',
    'A recording past its retention (or one dated by Last-Modified), or an upload that may replace one (overwrite: true), while the legal holds document cannot be read or does not verify (Redis down or not initialised, the file edited): whether a hold covers it cannot be told. Sent with Retry-After; nothing is asked of the NAS.', 5),
  QuotaExceeded: define('NASGUARD_ERR_QUOTA_EXCEEDED', 429,
    'a download budget of this identity is spent; try again later', 'quota_exceeded',
    "limits.perSubject (or the rule's perSubject): the subject took its requests per minute, distinct recordings per hour or day, or bytes per hour. Sent with Retry-After (when the budget frees up); audited with the budget hit, counted in nasguard_quota_exceeded_total{rule,budget}. The NAS is not asked.", 60),
  BudgetsUnavailable: define('NASGUARD_ERR_BUDGETS_UNAVAILABLE', 503,
    'the download budgets cannot be checked; try again shortly', 'budgets_unavailable',
    'A request under a budget (limits.perSubject) while the budgets cannot be asked: state.redis down, or, with workers, the primary not answering. Under limits.onStoreError: closed (the default); under open it passes uncounted. Sent with Retry-After; the NAS is not asked.', 5),
  NoPeriod: define('NASGUARD_ERR_NO_PERIOD', 404,
    'no such recording: its path has no date where sealing.periodPattern expects one', 'no_period',
    'sealing.mode require: the path does not match sealing.periodPattern, so no key could open it. Nothing is asked of the NAS.'),
  SealedIntegrity: define('NASGUARD_ERR_SEALED_INTEGRITY', 502,
    'the sealed recording failed its integrity check', 'sealed_integrity',
    'A sealed recording whose header or first chunk does not authenticate: altered, truncated or extended, sealed to another period\'s key, or moved from another path. Nothing of it reaches the client; later in the stream the response is cut instead. Outcome integrity-error.'),
  PlaintextOnNas: define('NASGUARD_ERR_PLAINTEXT_ON_NAS', 403,
    'this recording is not sealed on the NAS, and only sealed recordings are served', 'plaintext_on_nas',
    'sealing.mode require: the NAS holds the recording in plaintext. Refused, logged and counted (nasguard_plaintext_on_nas_total): seal it.'),
  UpstreamListing: define('NASGUARD_ERR_UPSTREAM_LISTING', 502,
    'the NAS answered with something that is not a recording', 'upstream_listing',
    'The NAS sent HTML or another non-audio body (a listing, an error page) or a redirect. Nothing of it reaches the client.'),
  UpstreamUnreachable: define('NASGUARD_ERR_UPSTREAM_UNREACHABLE', 502,
    'the NAS could not be reached', 'upstream_unreachable',
    'Connection refused, reset or DNS failure towards upstream.url.'),
  UpstreamError: define('NASGUARD_ERR_UPSTREAM_ERROR', 502,
    'the NAS answered with an error', 'upstream_error',
    'The NAS answered 5xx, 401/403 (check the upstream credentials) or another unexpected status.'),
  UpstreamTimeout: define('NASGUARD_ERR_UPSTREAM_TIMEOUT', 504,
    'the NAS did not answer in time', 'upstream_timeout',
    'No answer within upstream.timeoutMs (or no connection within connectTimeoutMs), or an answer that came slower than upstream.minRate.'),
  UpstreamBusy: define('NASGUARD_ERR_UPSTREAM_BUSY', 503,
    'every NAS connection is in use; try again shortly', 'upstream_busy',
    'No NAS connection came free within upstream.queueTimeoutMs (upstream.connections are all streaming). Sent with Retry-After; the NAS is not asked.', 2),
  ClientBusy: define('NASGUARD_ERR_CLIENT_BUSY', 429,
    'this client has too many downloads in flight', 'client_busy',
    'The client address already has limits.clientFetches downloads in flight. Sent with Retry-After; the NAS is not asked.', 5),
  RevocationUnavailable: define('NASGUARD_ERR_REVOCATION_UNAVAILABLE', 503,
    'the revocation list cannot be read or is damaged; no token is accepted until it is valid', 'revocation_unavailable',
    'auth.revocation.file cannot be read, or is not a valid denylist (corrupt, torn, truncated, emptied, or deleted after it existed): fail closed, logged, shown in /readyz.'),
  AuditUnavailable: define('NASGUARD_ERR_AUDIT_UNAVAILABLE', 503,
    'the audit trail cannot be written; nothing is served unaudited', 'audit_unavailable',
    'The access record could not be made durable (disk full, permissions, I/O error).'),
  Internal: define('NASGUARD_ERR_INTERNAL', 500,
    'internal error', 'internal',
    'A bug: the request id in the log line ties it to the cause.')
} as const

export type ErrorName = keyof typeof Errors

export function isNasguardError (err: unknown): err is NasguardError {
  return err instanceof Error && typeof (err as NasguardError).code === 'string' &&
    (err as NasguardError).code.startsWith('NASGUARD_ERR_')
}

const byCode = new Map<string, ErrorSpec>(Object.values(Errors).map((E) => [E.spec.code, E.spec]))

export function specFor (code: string): ErrorSpec | undefined {
  return byCode.get(code)
}

/** Body for a refusal: exactly { error, message }. */
export function errorBody (err: NasguardError): { error: string, message: string } {
  return { error: err.code, message: err.message }
}
