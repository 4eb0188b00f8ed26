// The config schema. Every key's default and caveat is documented here, once;
// the README and deploy/nasguard.example.yaml follow it. Unknown keys are
// errors (a typo must not silently fall back to a default).
import { Type, type Static } from '@sinclair/typebox'
import { HMAC_ALGORITHMS, PUBLIC_KEY_ALGORITHMS } from '../auth/algorithms.js'

const strict = { additionalProperties: false } as const

const AlgorithmList = Type.Array(Type.Union([...HMAC_ALGORITHMS, ...PUBLIC_KEY_ALGORITHMS].map((a) => Type.Literal(a))), { minItems: 1, uniqueItems: true })

/**
 * Per-subject budgets (limits.perSubject, and a policy rule's own). What a
 * subject took is counted once, across every rule; each rule sets the
 * limits its own requests are checked against.
 */
export const BudgetsSchema = Type.Object({
  /** Requests in any 60 s. */
  requestsPerMinute: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000000 })),
  /** Distinct recordings (GET) in any hour: a player's many Range requests for one recording count once. */
  recordingsPerHour: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000000 })),
  /** Distinct recordings in any 24 h. */
  recordingsPerDay: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000000 })),
  /** Bytes sent in any hour, counted as responses end: downloads in flight may pass it by what they carry. At most 2^50 (1 PiB): every count stays exact across workers and in Redis. */
  bytesPerHour: Type.Optional(Type.Integer({ minimum: 1, maximum: 1125899906842624 }))
}, { additionalProperties: false })

export const PolicyRuleSchema = Type.Object({
  /** Shown in the audit record and the metrics label; keep it short and stable. */
  name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' }),
  /** A path glob: `*` is one segment (or part of it), `**` is any number of segments. */
  path: Type.String({ minLength: 1, maxLength: 1024, pattern: '^/' }),
  /** Methods this rule allows. Default GET and HEAD. PUT uploads a recording, sealed on its way to the NAS over WebDAV (needs sealing.mode migrate or require; give it a write scope of its own, such as recordings:write). */
  methods: Type.Array(Type.Union([Type.Literal('GET'), Type.Literal('HEAD'), Type.Literal('PUT')]), { minItems: 1, uniqueItems: true, default: ['GET', 'HEAD'] }),
  /** With PUT: an upload may replace a recording that exists. Default false: 409, and the recording on the NAS stays. */
  overwrite: Type.Optional(Type.Boolean()),
  /** The token needs any one of these scopes. */
  scopes: Type.Optional(Type.Array(Type.String({ minLength: 1, pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$' }), { minItems: 1 })),
  /** Or a verified client certificate whose subject is one of these, as `CN=name` (needs tls.clientAuth). */
  certs: Type.Optional(Type.Array(Type.String({ pattern: '^CN=[^,/]{1,64}$' }), { minItems: 1 })),
  /** Budgets of this rule's requests, each over limits.perSubject's. */
  perSubject: Type.Optional(BudgetsSchema)
}, strict)

export const ConfigSchema = Type.Object({
  listen: Type.Object({
    /** Address of the public TLS listener. Default 0.0.0.0. */
    host: Type.String({ default: '0.0.0.0', minLength: 1 }),
    /** Default 8443. */
    port: Type.Integer({ default: 8443, minimum: 0, maximum: 65535 }),
    /** Proxies (IPs or CIDRs) whose X-Forwarded-For names the client. Default none: the socket peer is the client. */
    trustedProxies: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
    /**
     * PROXY protocol (HAProxy `send-proxy-v2`; v1 text too) from a load balancer
     * that passes TLS through: a connection from one of trustedProxies (IPs or
     * CIDRs) must start with a PROXY header, and the client it names is the
     * peer for everything (audit clientIp, per-client limits, grants' bindIp,
     * logs). A connection from any other address is served as if this were
     * off. Default absent: off, the socket peer is the client.
     */
    proxyProtocol: Type.Optional(Type.Object({
      trustedProxies: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })
    }, strict))
  }, { ...strict, default: {} }),
  tls: Type.Object({
    /** PEM certificate, optionally followed by its intermediates. */
    cert: Type.String({ minLength: 1 }),
    /** PEM private key; should be mode 0600. */
    key: Type.String({ minLength: 1 }),
    /** intermediate: TLS 1.2 + 1.3 with Mozilla's intermediate AEAD ciphers (default). modern: TLS 1.3 only. */
    profile: Type.Union([Type.Literal('intermediate'), Type.Literal('modern')], { default: 'intermediate' }),
    /** Strict-Transport-Security max-age in seconds. Default two years. */
    hstsMaxAge: Type.Integer({ default: 63072000, minimum: 0 }),
    /** Client certificates. off (default) | optional: asked for, and a rule's `certs` can grant with one | require: no handshake without a valid one. */
    clientAuth: Type.Union([Type.Literal('off'), Type.Literal('optional'), Type.Literal('require')], { default: 'off' }),
    /** PEM CA(s) that client certificates must chain to. Required unless clientAuth is off. */
    clientCa: Type.Optional(Type.String({ minLength: 1 })),
    /** PEM CRL(s) of that CA: a revoked client certificate is refused. */
    clientCrl: Type.Optional(Type.String({ minLength: 1 })),
    /** Reload when cert, key, CA or CRL files change (SIGHUP always reloads). Turn off where file events don't arrive (some network file systems). Default true. */
    watch: Type.Boolean({ default: true })
  }, strict),
  upstream: Type.Object({
    /** The NAS origin, http:// or https://, no path. */
    url: Type.String({ minLength: 1 }),
    /** Basic-auth user the gateway presents to the NAS. */
    username: Type.Optional(Type.String({ minLength: 1 })),
    /** Basic-auth password, inline. Prefer passwordFile. */
    password: Type.Optional(Type.String({ minLength: 1 })),
    /** File holding the Basic-auth password (trailing newline ignored). */
    passwordFile: Type.Optional(Type.String({ minLength: 1 })),
    /** Time allowed for the NAS's response headers, and between body chunks. Default 30000. */
    timeoutMs: Type.Integer({ default: 30000, minimum: 1, maximum: 600000 }),
    /** Bytes a second of body the NAS must send, over any window of timeoutMs in which the gateway waits on it (from the moment a GET or HEAD is sent, the window restarting once at its final answer); 0 bounds only each gap. Default 1024. */
    minRate: Type.Integer({ default: 1024, minimum: 0, maximum: 1073741824 }),
    /** Time allowed to open a connection to the NAS. Default 5000. */
    connectTimeoutMs: Type.Integer({ default: 5000, minimum: 1, maximum: 600000 }),
    /**
     * NAS connections the gateway may hold for downloads (with workers, each
     * takes its share, rounded up): every download in flight holds one, so
     * this caps concurrent players; more wait in line. Default 128: a small
     * NAS resets connections it cannot serve, a queue does not.
     */
    connections: Type.Integer({ default: 128, minimum: 1, maximum: 16384 }),
    /** What /readyz asks the NAS for (HEAD, with the gateway's credentials): any answer but a 401 or a 5xx is ready. Default "/". */
    healthPath: Type.String({ default: '/', pattern: '^/' }),
    /**
     * The lockdown check: every this many seconds (and at start) the gateway
     * asks the NAS without credentials for a listing and a recording, which
     * it must refuse. 0 turns it off. Default 300.
     */
    exposureCheckSec: Type.Integer({ default: 300, minimum: 0, maximum: 86400 }),
    /** Directories whose listing the check asks for (GET and PROPFIND). Default ["/"]. */
    exposureCheckPaths: Type.Array(Type.String({ pattern: '^/', maxLength: 1024 }), { default: ['/'], minItems: 1, maxItems: 16 }),
    /** A recording the check asks for (a canary placed on the NAS); default: the last one the NAS served the gateway. */
    exposureCheckRecording: Type.Optional(Type.String({ pattern: '^/', maxLength: 1024 })),
    /** Whether /readyz stays ready (200) while the NAS answers the check: false makes an exposed NAS take the gateway out of service. Default true. */
    readyWhenExposed: Type.Boolean({ default: true }),
    /** How long a download may wait for a free NAS connection before it gets 503 with Retry-After, ms. Default 3000. */
    queueTimeoutMs: Type.Integer({ default: 3000, minimum: 1, maximum: 600000 }),
    /** HTTP/1.1 requests in flight per NAS connection. Default 1 (no pipelining: a slow stream would hold up the ones queued behind it). */
    pipelining: Type.Integer({ default: 1, minimum: 1, maximum: 16 }),
    /** For an https NAS: a CA file to trust instead of the system store. */
    caFile: Type.Optional(Type.String({ minLength: 1 })),
    /**
     * How the NAS resolves names. folding (default): like SMB/NTFS shares and
     * most NAS boxes (case-insensitive, trailing dots and spaces ignored, 8.3
     * short names, `:stream` suffixes): such names are refused and rules and
     * claims match by case folding. posix: names are exact bytes; only for a
     * NAS known to be case-sensitive and literal.
     */
    fileSystem: Type.Union([Type.Literal('folding'), Type.Literal('posix')], { default: 'folding' })
  }, strict),
  auth: Type.Object({
    jwt: Type.Object({
      /** Inline HMAC secret (at least as long as the hash: 32 bytes for HS256). Prefer secretFile. */
      secret: Type.Optional(Type.String({ minLength: 1 })),
      /** File holding the HMAC secret. */
      secretFile: Type.Optional(Type.String({ minLength: 1 })),
      /** PEM public key for RS*, PS*, ES* or EdDSA tokens. */
      publicKeyFile: Type.Optional(Type.String({ minLength: 1 })),
      /** PEM private key, used only by `nasguard token issue`; the gateway never reads it. */
      privateKeyFile: Type.Optional(Type.String({ minLength: 1 })),
      /** Algorithms pinned to the key above. Default HS256 with a secret; required with a public key. */
      algorithms: Type.Optional(AlgorithmList),
      /** More keys, each pinned to its algorithms; tokens pick one by `kid`. */
      keys: Type.Optional(Type.Array(Type.Object({
        kid: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
        algorithms: AlgorithmList,
        secret: Type.Optional(Type.String({ minLength: 1 })),
        secretFile: Type.Optional(Type.String({ minLength: 1 })),
        publicKeyFile: Type.Optional(Type.String({ minLength: 1 }))
      }, strict), { minItems: 1 })),
      /** Keys published by your identity provider as a JWK Set. */
      jwks: Type.Optional(Type.Object({
        /** https:// URL of the JWK Set (http:// only for loopback). */
        url: Type.String({ minLength: 1 }),
        /** Algorithms accepted from this set (pinned: a key's own `alg` must be one of them too). */
        algorithms: Type.Array(Type.Union(PUBLIC_KEY_ALGORITHMS.map((a) => Type.Literal(a))), { minItems: 1, uniqueItems: true }),
        /** How long a fetched set is used before it is fetched again, seconds. Default 600. */
        cacheTtlSec: Type.Integer({ default: 600, minimum: 10, maximum: 86400 }),
        /** A token with an unknown kid refetches the set at most this often, seconds. Default 30. */
        minRefreshIntervalSec: Type.Integer({ default: 30, minimum: 1, maximum: 3600 }),
        /** Fetch timeout, ms. Default 5000. */
        timeoutMs: Type.Integer({ default: 5000, minimum: 100, maximum: 60000 })
      }, strict)),
      /** Required `iss` value, when set. */
      issuer: Type.Optional(Type.String({ minLength: 1 })),
      /** Required `aud` value, when set. */
      audience: Type.Optional(Type.String({ minLength: 1 })),
      /** Clock skew allowed on exp/nbf, seconds. Default 30. */
      clockToleranceSec: Type.Integer({ default: 30, minimum: 0, maximum: 300 }),
      /** Longest token lifetime accepted (exp minus iat, or minus now), seconds. Default 86400. Also how long revocations are kept. */
      maxLifetimeSec: Type.Integer({ default: 86400, minimum: 60, maximum: 31 * 86400 }),
      /** Verified tokens remembered (exact token string -> claims), so a client's next request skips the signature check. 0: off. Default 10000. Revocation is still checked on every request. */
      cacheSize: Type.Integer({ default: 10000, minimum: 0, maximum: 1000000 }),
      /** How long a verified token is remembered at most (never past its exp). A key removed from a JWK Set stops working for cached tokens after this. Default 60. */
      cacheTtlSec: Type.Integer({ default: 60, minimum: 1, maximum: 3600 })
    }, strict),
    revocation: Type.Object({
      /** The denylist `nasguard token revoke` writes. Default: revoked.jsonl in audit.dir. */
      file: Type.Optional(Type.String({ minLength: 1 })),
      /** How often the gateway looks for new entries, ms. Default 250. */
      pollMs: Type.Integer({ default: 250, minimum: 50, maximum: 1000 }),
      /** A bearer token that verifies, seen in plain HTTP on the TLS port, crossed the network in the clear: revoke it at once (its jti; without one, its subject's tokens issued up to it). Default true. */
      revokeExposed: Type.Boolean({ default: true })
    }, { ...strict, default: {} }),
    grants: Type.Object({
      /** HMAC key for playback grants (>= 32 bytes), kept apart from the JWT keys. Default: random per start (grants then die with the process). */
      secret: Type.Optional(Type.String({ minLength: 32 })),
      secretFile: Type.Optional(Type.String({ minLength: 1 })),
      /** Lifetime of a grant, seconds. Default 300. */
      ttlSec: Type.Integer({ default: 300, minimum: 10, maximum: 3600 }),
      /** Bind each grant to the client IP that asked for it. Default false (mobile clients change address). */
      bindIp: Type.Boolean({ default: false })
    }, { ...strict, default: {} })
  }, strict),
  policy: Type.Array(PolicyRuleSchema, { minItems: 1 }),
  files: Type.Object({
    /** Extensions served; anything else is refused before the NAS is asked. Default .wav, .mp3. */
    extensions: Type.Array(Type.String({ pattern: '^\\.[a-z0-9]{1,10}$' }), { minItems: 1, uniqueItems: true, default: ['.wav', '.mp3'] }),
    /** Check the first bytes of each answer against the type (RIFF/WAVE, ID3 or MPEG sync, OggS, ...); cut the stream before any byte is sent when they differ. Default false. */
    checkMagic: Type.Boolean({ default: false })
  }, { ...strict, default: {} }),
  sealing: Type.Object({
    /** off: recordings are plaintext on the NAS (as before). migrate: the sealed name is asked for first, then the plaintext one. require: only sealed recordings are served; a plaintext one on the NAS is refused and counted. Default off. */
    mode: Type.Union([Type.Literal('off'), Type.Literal('migrate'), Type.Literal('require')], { default: 'off' }),
    /** Directory of the period identities (<period>.key, age-keygen format) and the name key (names.key); 0700, files 0600, off the NAS. Needed unless mode is off. */
    keyring: Type.Optional(Type.String({ minLength: 1 })),
    /** Where a recording's date is in its path: {yyyy}, {mm} and optionally {dd} as whole segments, then ** (e.g. /medicall/{yyyy}/{mm}/**). Needed unless mode is off. */
    periodPattern: Type.Optional(Type.String({ minLength: 1 })),
    /** One identity per month (default), day or year. */
    period: Type.Union([Type.Literal('month'), Type.Literal('day'), Type.Literal('year')], { default: 'month' }),
    names: Type.Object({
      /** How many trailing path segments are encrypted (1: the file name). Default 1. */
      segments: Type.Integer({ default: 1, minimum: 1, maximum: 8 })
    }, { ...strict, default: {} }),
    /** Whether a recent period's first upload makes its key (default true). Set false where gateways hold copies of one keyring (pods, hosts): each copy would make its own identity for the period, and lose the recordings sealed to it when that copy goes. Then make each period's key ahead (nasguard keys new --period P) on the keyring the copies come from; an upload into a recent period without one is 503. */
    makeKeysOnUpload: Type.Boolean({ default: true }),
    /** Directories holding copies of the keyring (a backup volume, another host's keyring, mounted): an erasure (retention sweep --apply) destroys the period's identity in each of them too, and fails loudly while one is unreachable. */
    keyBackups: Type.Array(Type.String({ minLength: 1 }), { default: [], uniqueItems: true })
  }, { ...strict, default: {} }),
  /**
   * Retention: the first rule whose path matches a recording says how long
   * it is kept. {yyyy}, {mm} and {dd} (whole segments) read its date from
   * the path; a rule without them dates it by the NAS's Last-Modified. Past
   * its time a recording is refused (410) unless a legal hold covers it, and
   * `nasguard retention sweep --apply` erases it. No rule: kept as long as
   * the NAS keeps it.
   */
  retention: Type.Array(Type.Object({
    /** Names the rule in metrics and reports. Default: retention[<index>]. */
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' })),
    /** A glob as policy rules take it, with {yyyy}, {mm} and {dd} as whole segments for the date (e.g. /medicall/{yyyy}/{mm}/{dd}/**). */
    path: Type.String({ minLength: 1, maxLength: 1024, pattern: '^/' }),
    /** Days kept after the recording's date ends (its day, month or year, UTC), or after its Last-Modified. */
    keepDays: Type.Integer({ minimum: 0, maximum: 36500 })
  }, strict), { default: [] }),
  audit: Type.Object({
    /** Directory of the audit trail; created 0700, files 0600. */
    dir: Type.String({ minLength: 1 }),
    /** strict: fsync before the response starts (default). batched: fsync at most every batchMs (a crash can lose that window). */
    durability: Type.Union([Type.Literal('strict'), Type.Literal('batched')], { default: 'strict' }),
    /** With durability: batched, the longest a record waits for fsync. Default 100. */
    batchMs: Type.Integer({ default: 100, minimum: 1, maximum: 10000 }),
    /** HMAC key of the chain (made on first start if missing). Default: audit.key beside the audit directory. Keep it out of reach of whoever can write the trail. */
    keyFile: Type.Optional(Type.String({ minLength: 1 })),
    /** Names this gateway in every record. Default: the host name. */
    instance: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._-]+$' })),
    /** Rotate audit.jsonl past this size, bytes (and at each UTC day). Default 64 MiB. */
    rotateBytes: Type.Integer({ default: 64 * 1024 * 1024, minimum: 4096 })
  }, strict),
  admin: Type.Object({
    /** Serve /metrics and /healthz. Default true. */
    enabled: Type.Boolean({ default: true }),
    /** Default 127.0.0.1: keep it off the public network. */
    host: Type.String({ default: '127.0.0.1', minLength: 1 }),
    /** Default 9464. */
    port: Type.Integer({ default: 9464, minimum: 0, maximum: 65535 }),
    /** Require `Authorization: Bearer <token>` on /metrics and /readyz (file holding the token, >= 16 bytes). */
    tokenFile: Type.Optional(Type.String({ minLength: 1 })),
    /** Or Basic auth on /metrics and /readyz. /healthz stays open either way (it says nothing). */
    basicAuth: Type.Optional(Type.Object({ username: Type.String({ minLength: 1 }), passwordFile: Type.String({ minLength: 1 }) }, strict))
  }, { ...strict, default: {} }),
  log: Type.Object({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' })
  }, { ...strict, default: {} }),
  state: Type.Object({
    /**
     * Shared state of several gateways: revocations now (a persisted set,
     * loaded at start, and pub/sub, so a revocation reaches every gateway at
     * once). Without it each gateway uses the files under audit.dir.
     */
    redis: Type.Optional(Type.Object({
      /** redis://host:port[/db] or rediss:// (TLS). No password in the URL: use passwordFile. */
      url: Type.String({ minLength: 1 }),
      /** ACL user, when Redis has users. */
      username: Type.Optional(Type.String({ minLength: 1 })),
      /** File holding the Redis password (trailing newline ignored). */
      passwordFile: Type.Optional(Type.String({ minLength: 1 })),
      /** With rediss://: a CA file to trust instead of the system store. */
      caFile: Type.Optional(Type.String({ minLength: 1 })),
      /** Prefix of every key and channel, so that several deployments can share one Redis. Default "nasguard:". */
      keyPrefix: Type.String({ default: 'nasguard:', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9:_.-]+$' }),
      /** Time allowed to connect, and for each command, ms. Default 2000. */
      timeoutMs: Type.Integer({ default: 2000, minimum: 100, maximum: 60000 })
    }, strict)),
    /** The legal holds file (HMAC-sealed with a key derived from the audit key), when state.redis is not set. Default: <audit.dir>/legal-holds.json. */
    holdsFile: Type.Optional(Type.String({ minLength: 1 }))
  }, { ...strict, default: {} }),
  /** Worker processes (node:cluster) sharing the listener: a number, or "auto" for one per core. Default 1 (one process). */
  workers: Type.Union([Type.Integer({ minimum: 1, maximum: 64 }), Type.Literal('auto')], { default: 1 }),
  limits: Type.Object({
    /** Longest request path accepted, in bytes. Default 1024. */
    maxPathLength: Type.Integer({ default: 1024, minimum: 16, maximum: 8192 }),
    /** Time a client has to send its request headers, ms. Default 10000. */
    headersTimeoutMs: Type.Integer({ default: 10000, minimum: 100, maximum: 120000 }),
    /** Idle keep-alive connections are closed after this, ms. Default 5000. */
    keepAliveTimeoutMs: Type.Integer({ default: 5000, minimum: 100, maximum: 120000 }),
    /** Largest recording an upload (PUT) may carry, bytes: a larger Content-Length is refused before the NAS is asked, a body without one is cut when it passes this. Default 1 GiB. */
    maxUploadBytes: Type.Integer({ default: 1073741824, minimum: 1, maximum: 68719476736 }),
    /** Byte ranges accepted in one Range header. Default 1 (players ask for one). */
    maxRanges: Type.Integer({ default: 1, minimum: 1, maximum: 16 }),
    /** On SIGTERM/SIGINT, how long downloads in flight may go on before they are cut (completion records say `shutdown`), ms. Default 10000. */
    drainTimeoutMs: Type.Integer({ default: 10000, minimum: 0, maximum: 600000 }),
    /** A client that takes nothing of a recording for this long, while bytes wait for it, is cut off (its NAS request too); also the window of minSendRate, ms. Default 60000. */
    sendTimeoutMs: Type.Integer({ default: 60000, minimum: 100, maximum: 3600000 }),
    /** A client that takes fewer bytes a second than this, over any window of sendTimeoutMs, is cut off too; 0 cuts only clients that take nothing. Default 1024. */
    minSendRate: Type.Integer({ default: 1024, minimum: 0, maximum: 1073741824 }),
    /** Connections one client address may hold open (with workers, each takes its share); more are closed at accept. Default 256. */
    clientConnections: Type.Integer({ default: 256, minimum: 1, maximum: 1000000 }),
    /** Downloads one client address may have in flight (with workers, each takes its share); more get 429 with Retry-After. Default 64. */
    clientFetches: Type.Integer({ default: 64, minimum: 1, maximum: 1000000 }),
    /** Budgets per subject (a token's sub; a grant counts against who minted it): over one, 429 NASGUARD_ERR_QUOTA_EXCEEDED. Default: none. */
    perSubject: Type.Optional(BudgetsSchema),
    /** When the budgets cannot be asked (state.redis down; with workers, the primary not answering): closed refuses budgeted requests with 503 NASGUARD_ERR_BUDGETS_UNAVAILABLE, open lets them through uncounted (counted in nasguard_budget_store_errors_total). Default closed. */
    onStoreError: Type.Union([Type.Literal('open'), Type.Literal('closed')], { default: 'closed' })
  }, { ...strict, default: {} })
}, strict)

export type Config = Static<typeof ConfigSchema>
export type PolicyRuleConfig = Static<typeof PolicyRuleSchema>
