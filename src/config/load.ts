// Loading: YAML file, then NASGUARD_* environment overrides, then schema
// validation with defaults, then the checks a schema cannot express. The
// result is frozen. Every failure names the key (and the env variable when
// that is where the value came from) and says what is wrong.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ErrorObject, ValidateFunction } from 'ajv'
import { HMAC_ALGORITHMS } from '../auth/algorithms.js'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import type { Config } from './schema.js'
import { CONFIG_AJV_OPTIONS } from './ajv-options.js'
import { isKnownExtension } from '../policy/file-types.js'
import { readSecretFile } from './secrets.js'
import { compileGlob } from '../policy/rules.js'
import { compileRetention } from '../retention/rules.js'
import { foldName } from '../policy/file-system.js'
import { trustListProblems } from '../tls/proxy-protocol.js'

export interface ConfigProblem { key: string, reason: string }

export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  constructor (problems: ConfigProblem[]) {
    super(problems.map((p) => `config error at ${p.key}: ${p.reason}`).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
type JsonObject = { [k: string]: Json }

const ENV_PREFIX = 'NASGUARD_'

/** listen.port -> NASGUARD_LISTEN_PORT; auth.jwt.secretFile -> NASGUARD_AUTH_JWT_SECRET_FILE */
export function envName (path: string[]): string {
  return ENV_PREFIX + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_')
}

interface SchemaNode { type?: string, anyOf?: unknown[], properties?: Record<string, SchemaNode> }

interface Validation {
  /** The schema as JSON (the env keys are derived from it). */
  schema: SchemaNode
  hmacAlgorithms: readonly string[]
  validator: () => ValidateFunction
}

/**
 * The build compiles the schema into dist/config/config-validator.js (Ajv
 * standalone code, scripts/precompile-config-validator.mjs): loading a config
 * from dist then imports neither TypeBox nor Ajv's compiler and compiles
 * nothing, about 0.5 s of CPU less per CLI process. From src (the tests)
 * there is none: the schema is compiled at first use, with the same options
 * (test/config/precompiled-validator.test.ts checks that both agree).
 */
async function validation (): Promise<Validation> {
  const precompiled = new URL('./config-validator.js', import.meta.url)
  if (existsSync(fileURLToPath(precompiled))) {
    const m = await import(precompiled.href) as { validate: ValidateFunction, schema: SchemaNode, hmacAlgorithms: string[] }
    return { schema: m.schema, hmacAlgorithms: m.hmacAlgorithms, validator: () => m.validate }
  }
  const [{ ConfigSchema }, { Ajv }] = await Promise.all([import('./schema.js'), import('ajv')])
  let compiled: ValidateFunction | undefined
  return {
    schema: ConfigSchema as unknown as SchemaNode,
    hmacAlgorithms: HMAC_ALGORITHMS,
    validator: () => { compiled ??= new Ajv(CONFIG_AJV_OPTIONS).compile(ConfigSchema); return compiled }
  }
}

const { schema, hmacAlgorithms, validator } = await validation()

interface EnvKey { path: string[], type: string }

/** Every settable key, derived from the schema so the env names can't drift. */
function envKeys (node: SchemaNode, path: string[] = []): EnvKey[] {
  if (node.type === 'object' && node.properties) {
    return Object.entries(node.properties).flatMap(([k, v]) => envKeys(v, [...path, k]))
  }
  // A union (e.g. workers: 2 | "auto"): a number when it reads as one.
  return [{ path, type: node.type ?? (node.anyOf ? 'union' : 'string') }]
}

const ENV_KEYS = envKeys(schema)

function parseEnvValue (name: string, key: string, type: string, raw: string): Json {
  switch (type) {
    case 'integer':
    case 'number':
      if (!/^-?\d+(\.\d+)?$/.test(raw.trim())) throw new ConfigError([{ key, reason: `${name} must be a number, got ${JSON.stringify(raw)}` }])
      return Number(raw)
    case 'boolean':
      if (raw !== 'true' && raw !== 'false') throw new ConfigError([{ key, reason: `${name} must be true or false, got ${JSON.stringify(raw)}` }])
      return raw === 'true'
    case 'array':
    case 'object':
      try {
        return JSON.parse(raw) as Json
      } catch {
        if (type === 'array' && !raw.trim().startsWith('[')) return raw.split(',').map((s) => s.trim()).filter(Boolean)
        throw new ConfigError([{ key, reason: `${name} must be JSON` }])
      }
    case 'union':
      return /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw
    default:
      return raw
  }
}

function applyEnv (raw: JsonObject, env: NodeJS.ProcessEnv): void {
  for (const { path, type } of ENV_KEYS) {
    const name = envName(path)
    const value = env[name]
    if (value === undefined) continue
    let node: JsonObject = raw
    for (const seg of path.slice(0, -1)) {
      const next = node[seg]
      if (next === undefined || next === null || typeof next !== 'object' || Array.isArray(next)) node[seg] = {}
      node = node[seg] as JsonObject
    }
    node[path[path.length - 1]] = parseEnvValue(name, path.join('.'), type, value)
  }
  const known = new Set(ENV_KEYS.map((k) => envName(k.path)))
  const unknown = Object.keys(env).filter((k) => k.startsWith(ENV_PREFIX) && !known.has(k) && k !== 'NASGUARD_CONFIG')
  if (unknown.length > 0) {
    throw new ConfigError(unknown.map((k) => ({ key: k, reason: 'unknown environment variable (no such config key)' })))
  }
}

export interface EnvOverride {
  /** The config key, dotted (policy, upstream.url). */
  key: string
  /** The variable that sets it. */
  name: string
  /** The file sets the key too: the environment wins, and edits to the file's value do nothing. */
  shadows: boolean
}

/** The keys the environment sets (NASGUARD_*), each with its variable, and whether it overrides a value the file gives (names only: never a value). */
export function envOverrides (env: NodeJS.ProcessEnv, file?: string): EnvOverride[] {
  let raw: unknown = {}
  try {
    if (file) raw = parseYaml(readFileSync(file, 'utf8')) ?? {}
  } catch {
    // loadConfig said what is wrong with the file.
  }
  const inFile = (path: string[]): boolean => path.reduce<unknown>((node, seg) => (node !== null && typeof node === 'object' && !Array.isArray(node) ? (node as JsonObject)[seg] : undefined), raw) !== undefined
  return ENV_KEYS.filter((k) => env[envName(k.path)] !== undefined).map((k) => ({ key: k.path.join('.'), name: envName(k.path), shadows: inFile(k.path) }))
}

/** What to tell an operator about envOverrides: a warning per key the environment takes from the file, a note for the rest. */
export function envOverrideLines (overrides: readonly EnvOverride[]): string[] {
  const shadowing = overrides.filter((o) => o.shadows).map((o) => `warning: config at ${o.key}: ${o.name} in the environment overrides the file's value (edit or unset ${o.name}; changing the file does nothing)`)
  const rest = overrides.filter((o) => !o.shadows)
  return rest.length === 0 ? shadowing : [...shadowing, `note: from the environment: ${rest.map((o) => `${o.key} (${o.name})`).join(', ')}`]
}

function keyOf (err: ErrorObject): string {
  const segs = err.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
  if (err.keyword === 'required') segs.push((err.params as { missingProperty: string }).missingProperty)
  if (err.keyword === 'additionalProperties') segs.push((err.params as { additionalProperty: string }).additionalProperty)
  let out = ''
  for (const s of segs) out += /^\d+$/.test(s) ? `[${s}]` : (out ? '.' : '') + s
  return out || '(root)'
}

function reasonOf (err: ErrorObject): string {
  switch (err.keyword) {
    case 'required': return 'is required'
    case 'additionalProperties': return 'unknown key (check the spelling)'
    case 'enum': return `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`
    case 'anyOf': {
      const branches = Array.isArray(err.schema) ? err.schema as Array<{ const?: unknown, type?: string, minimum?: number, maximum?: number }> : []
      // Each branch said in words: a literal, or a number range (workers: 1..64 or "auto").
      const options = branches.map((o) => o.const !== undefined ? String(o.const) : o.type === 'integer' ? `an integer from ${o.minimum ?? '-∞'} to ${o.maximum ?? '∞'}` : undefined).filter((v) => v !== undefined)
      return options.length > 0 ? `must be ${branches.some((o) => o.const === undefined) ? 'either' : 'one of:'} ${options.join(options.length === 2 && branches.some((o) => o.const === undefined) ? ' or ' : ', ')} (got ${JSON.stringify(err.data)})` : 'is not one of the allowed values'
    }
    case 'pattern': return `has an invalid format (must match ${(err.params as { pattern: string }).pattern})`
    default: return err.message ?? 'is invalid'
  }
}

function schemaProblems (errors: ErrorObject[]): ConfigProblem[] {
  // A union of literals reports one error per branch; keep the anyOf summary
  // and drop the per-branch noise, and report each key once.
  const anyOfPaths = new Set(errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath))
  const seen = new Set<string>()
  const out: ConfigProblem[] = []
  for (const e of errors) {
    if (e.keyword !== 'anyOf' && anyOfPaths.has(e.instancePath)) continue
    const p = { key: keyOf(e), reason: reasonOf(e) }
    const id = p.key + '\0' + p.reason
    if (!seen.has(id)) { seen.add(id); out.push(p) }
  }
  return out
}

const FILE_KEYS: Array<[string, (c: Config) => string | undefined, (c: Config, v: string) => void]> = [
  ['tls.cert', (c) => c.tls.cert, (c, v) => { c.tls.cert = v }],
  ['tls.key', (c) => c.tls.key, (c, v) => { c.tls.key = v }],
  ['tls.clientCa', (c) => c.tls.clientCa, (c, v) => { c.tls.clientCa = v }],
  ['tls.clientCrl', (c) => c.tls.clientCrl, (c, v) => { c.tls.clientCrl = v }],
  ['upstream.passwordFile', (c) => c.upstream.passwordFile, (c, v) => { c.upstream.passwordFile = v }],
  ['upstream.caFile', (c) => c.upstream.caFile, (c, v) => { c.upstream.caFile = v }],
  ['auth.jwt.secretFile', (c) => c.auth.jwt.secretFile, (c, v) => { c.auth.jwt.secretFile = v }],
  ['auth.jwt.publicKeyFile', (c) => c.auth.jwt.publicKeyFile, (c, v) => { c.auth.jwt.publicKeyFile = v }],
  ['auth.jwt.privateKeyFile', (c) => c.auth.jwt.privateKeyFile, (c, v) => { c.auth.jwt.privateKeyFile = v }],
  ['auth.grants.secretFile', (c) => c.auth.grants.secretFile, (c, v) => { c.auth.grants.secretFile = v }],
  ['auth.revocation.file', (c) => c.auth.revocation.file, (c, v) => { c.auth.revocation.file = v }],
  ['audit.keyFile', (c) => c.audit.keyFile, (c, v) => { c.audit.keyFile = v }],
  ['state.redis.passwordFile', (c) => c.state.redis?.passwordFile, (c, v) => { if (c.state.redis) c.state.redis.passwordFile = v }],
  ['state.redis.caFile', (c) => c.state.redis?.caFile, (c, v) => { if (c.state.redis) c.state.redis.caFile = v }],
  ['admin.tokenFile', (c) => c.admin.tokenFile, (c, v) => { c.admin.tokenFile = v }],
  ['admin.basicAuth.passwordFile', (c) => c.admin.basicAuth?.passwordFile, (c, v) => { if (c.admin.basicAuth) c.admin.basicAuth.passwordFile = v }],
  ['audit.dir', (c) => c.audit.dir, (c, v) => { c.audit.dir = v }]
]

/** Files named inside auth.jwt.keys[]: [key, get, set] like FILE_KEYS. */
function keyListFiles (c: Config): typeof FILE_KEYS {
  return (c.auth.jwt.keys ?? []).flatMap((k, i) => (['secretFile', 'publicKeyFile'] as const).map((f): (typeof FILE_KEYS)[number] =>
    [`auth.jwt.keys[${i}].${f}`, () => k[f], (_c, v) => { k[f] = v }]))
}

/** Paths that are written, not read, at start (they may not exist yet). */
const WRITTEN_FILES = new Set(['audit.dir', 'auth.revocation.file', 'audit.keyFile'])

const MIN_HMAC_BYTES: Record<string, number> = { HS256: 32, HS384: 48, HS512: 64 }

function algorithmProblems (key: string, hmac: boolean, algorithms: readonly string[]): ConfigProblem[] {
  const out: ConfigProblem[] = []
  for (const alg of algorithms) {
    const isHmac = hmacAlgorithms.includes(alg)
    if (hmac && !isHmac) out.push({ key: `${key}.algorithms`, reason: `${alg} needs a public key, but an HMAC secret is configured` })
    if (!hmac && isHmac) out.push({ key: `${key}.algorithms`, reason: `${alg} is an HMAC algorithm, but a public key is configured (key confusion)` })
  }
  return out
}

function secretLengthProblems (key: string, secret: string, algorithms: readonly string[]): ConfigProblem[] {
  const out: ConfigProblem[] = []
  for (const alg of algorithms) {
    const min = MIN_HMAC_BYTES[alg]
    if (min && Buffer.byteLength(secret) < min) out.push({ key, reason: `an ${alg} secret must be at least ${min} bytes (got ${Buffer.byteLength(secret)})` })
  }
  return out
}

function redisProblems (r: Config['state']['redis']): ConfigProblem[] {
  if (!r) return []
  let u: URL
  try { u = new URL(r.url) } catch { return [{ key: 'state.redis.url', reason: `is not a URL: use redis://host:port or rediss://host:port` }] }
  const problems: ConfigProblem[] = []
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') problems.push({ key: 'state.redis.url', reason: 'must be redis:// or rediss:// (TLS)' })
  if (u.username || u.password) problems.push({ key: 'state.redis.url', reason: 'must not carry credentials; use state.redis.username and state.redis.passwordFile' })
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d{1,2}$/.test(u.pathname)) problems.push({ key: 'state.redis.url', reason: 'the path may only be a database number (redis://host:6379/0)' })
  if (r.caFile !== undefined && u.protocol !== 'rediss:') problems.push({ key: 'state.redis.caFile', reason: 'is only used with rediss:// (TLS)' })
  return problems
}

function semanticProblems (c: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  let url: URL | undefined
  try {
    url = new URL(c.upstream.url)
  } catch {
    problems.push({ key: 'upstream.url', reason: `is not a URL: ${JSON.stringify(c.upstream.url)}` })
  }
  if (url) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') problems.push({ key: 'upstream.url', reason: 'must be http:// or https://' })
    if (url.pathname !== '/' || url.search || url.hash) problems.push({ key: 'upstream.url', reason: 'must be an origin only (no path, query or fragment): paths reach the NAS exactly as authorized' })
    if (url.username || url.password) problems.push({ key: 'upstream.url', reason: 'must not carry credentials; use upstream.username and upstream.passwordFile' })
  }
  problems.push(...trustListProblems(c.listen.trustedProxies, 'listen.trustedProxies'))
  if (c.listen.proxyProtocol) problems.push(...trustListProblems(c.listen.proxyProtocol.trustedProxies, 'listen.proxyProtocol.trustedProxies'))
  // Behind a TCP proxy no HTTP proxy can add X-Forwarded-For: it would come from the client.
  if (c.listen.proxyProtocol && c.listen.trustedProxies.length > 0) problems.push({ key: 'listen.trustedProxies', reason: 'must be empty with listen.proxyProtocol: TLS passes through the proxy, so an X-Forwarded-For header can only come from the client' })
  if (c.upstream.password && c.upstream.passwordFile) problems.push({ key: 'upstream.password', reason: 'set password or passwordFile, not both' })
  if ((c.upstream.password || c.upstream.passwordFile) && !c.upstream.username) problems.push({ key: 'upstream.username', reason: 'is required when a password is set' })

  const jwt = c.auth.jwt
  const top = (['secret', 'secretFile', 'publicKeyFile'] as const).filter((k) => jwt[k] !== undefined)
  if (top.length > 1) problems.push({ key: 'auth.jwt', reason: `set one of secret, secretFile or publicKeyFile, not several (found ${top.join(', ')})` })
  if (top.length === 0 && !jwt.keys && !jwt.jwks) problems.push({ key: 'auth.jwt', reason: 'no verification key: set secret, secretFile or publicKeyFile, keys, or jwks' })
  if (top.length === 0 && jwt.algorithms) problems.push({ key: 'auth.jwt.algorithms', reason: 'pins the top-level key, and there is none' })
  if (top.length === 1) {
    if (!jwt.algorithms) {
      if (top[0] !== 'publicKeyFile') jwt.algorithms = ['HS256']
      else problems.push({ key: 'auth.jwt.algorithms', reason: 'is required with publicKeyFile: pin the algorithm(s) your issuer signs with' })
    }
    problems.push(...algorithmProblems('auth.jwt', top[0] !== 'publicKeyFile', jwt.algorithms ?? []))
  }
  jwt.keys?.forEach((k, i) => {
    const src = (['secret', 'secretFile', 'publicKeyFile'] as const).filter((f) => k[f] !== undefined)
    if (src.length !== 1) problems.push({ key: `auth.jwt.keys[${i}]`, reason: `set exactly one of secret, secretFile or publicKeyFile (found ${src.length === 0 ? 'none' : src.join(', ')})` })
    else problems.push(...algorithmProblems(`auth.jwt.keys[${i}]`, src[0] !== 'publicKeyFile', k.algorithms))
  })
  const kids = (jwt.keys ?? []).map((k) => k.kid).filter((k) => k !== undefined)
  if (new Set(kids).size !== kids.length) problems.push({ key: 'auth.jwt.keys', reason: 'two keys share a kid' })
  if (jwt.jwks) {
    let u: URL | undefined
    try { u = new URL(jwt.jwks.url) } catch { problems.push({ key: 'auth.jwt.jwks.url', reason: 'is not a URL' }) }
    if (u && u.protocol !== 'https:' && !(u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname))) {
      problems.push({ key: 'auth.jwt.jwks.url', reason: 'must be https:// (http:// only on loopback): keys fetched in clear could be swapped' })
    }
  }
  if (c.admin.tokenFile !== undefined && c.admin.basicAuth !== undefined) problems.push({ key: 'admin', reason: 'set tokenFile or basicAuth, not both' })
  if (c.auth.grants.secret !== undefined && c.auth.grants.secretFile !== undefined) problems.push({ key: 'auth.grants', reason: 'set secret or secretFile, not both' })
  problems.push(...redisProblems(c.state.redis))
  if (c.state.redis && c.auth.revocation.file !== undefined) problems.push({ key: 'auth.revocation.file', reason: 'is not read when state.redis is set (revocations live in Redis): remove it, after `nasguard state init` has imported its entries' })

  if (c.tls.clientAuth !== 'off' && !c.tls.clientCa) problems.push({ key: 'tls.clientCa', reason: `is required with clientAuth: ${c.tls.clientAuth}` })
  c.policy.forEach((rule, i) => {
    if (!rule.scopes && !rule.certs) problems.push({ key: `policy[${i}]`, reason: 'needs scopes, certs, or both' })
    if (rule.certs && c.tls.clientAuth === 'off') problems.push({ key: `policy[${i}].certs`, reason: 'client certificates are off (set tls.clientAuth)' })
    try {
      compileGlob(rule.path)
    } catch (err) {
      problems.push({ key: `policy[${i}].path`, reason: (err as Error).message })
    }
  })
  problems.push(...retentionProblems(c))
  const names = new Set<string>()
  const trees = new Map<string, number>()
  c.policy.forEach((rule, i) => {
    if (names.has(rule.name)) problems.push({ key: `policy[${i}].name`, reason: `duplicate rule name ${JSON.stringify(rule.name)}` })
    names.add(rule.name)
    // On a folding NAS two spellings of one path are one tree: rules that
    // differ only in case would judge the same files two ways.
    const j = trees.get(foldName(rule.path))
    if (c.upstream.fileSystem === 'folding' && j !== undefined && c.policy[j].path !== rule.path) {
      problems.push({ key: `policy[${i}].path`, reason: `names the same tree as policy[${j}].path (${JSON.stringify(c.policy[j].path)}) on a NAS that folds case (upstream.fileSystem: folding)` })
    }
    trees.set(foldName(rule.path), i)
  })
  c.files.extensions.forEach((ext, i) => {
    if (!isKnownExtension(ext)) problems.push({ key: `files.extensions[${i}]`, reason: `${ext} is not a known recording type` })
  })
  return problems
}

/** The key types (and EC curves) each public-key algorithm verifies with. */
const KEY_TYPES: Record<string, (k: KeyObject) => boolean> = {
  RS: (k) => k.asymmetricKeyType === 'rsa',
  PS: (k) => k.asymmetricKeyType === 'rsa' || k.asymmetricKeyType === 'rsa-pss',
  ES256: (k) => k.asymmetricKeyDetails?.namedCurve === 'prime256v1',
  ES384: (k) => k.asymmetricKeyDetails?.namedCurve === 'secp384r1',
  ES512: (k) => k.asymmetricKeyDetails?.namedCurve === 'secp521r1',
  EdDSA: (k) => k.asymmetricKeyType === 'ed25519' || k.asymmetricKeyType === 'ed448'
}

/**
 * A JWT public key file must hold a public key (or a certificate) of a
 * type its algorithms verify with: else every token of the key would be
 * refused (the verifier takes no private key, and no key of another type),
 * and a reload would take it.
 */
function publicKeyProblems (key: string, file: string, algorithms: readonly string[]): ConfigProblem[] {
  const pem = readFileSync(file, 'utf8')
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) return [{ key, reason: `${file} holds a private key: give the public key (the issuer keeps the private one)` }]
  let k: KeyObject
  try {
    k = createPublicKey(pem)
  } catch (err) {
    return [{ key, reason: `${file} is not a PEM public key or certificate (${(err as Error).message})` }]
  }
  return algorithms.filter((a) => !(KEY_TYPES[a] ?? KEY_TYPES[a.slice(0, 2)])?.(k)).map((a) => ({ key, reason: `${file} holds ${describeKey(k)}, which ${a} does not verify with` }))
}

function describeKey (k: KeyObject): string {
  const d = k.asymmetricKeyDetails
  return d?.namedCurve !== undefined ? `an EC key on ${d.namedCurve}` : `an ${k.asymmetricKeyType ?? 'unknown'} key`
}

/** Reads each file the config names, so `config check` catches a missing key file too. */
function fileProblems (c: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [key, get] of [...FILE_KEYS, ...keyListFiles(c)]) {
    const file = get(c)
    if (!file || WRITTEN_FILES.has(key)) continue
    try {
      readFileSync(file)
    } catch (err) {
      problems.push({ key, reason: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
    }
  }
  const unreadable = new Set(problems.map((p) => p.key))
  const secretOf = (key: string, k: { secret?: string, secretFile?: string }): string | undefined =>
    k.secret ?? (k.secretFile !== undefined && !unreadable.has(`${key}.secretFile`) ? readSecretFile(k.secretFile) : undefined)
  const jwt = c.auth.jwt
  const top = secretOf('auth.jwt', jwt)
  if (top !== undefined) problems.push(...secretLengthProblems(jwt.secret !== undefined ? 'auth.jwt.secret' : 'auth.jwt.secretFile', top, jwt.algorithms ?? []))
  jwt.keys?.forEach((k, i) => {
    const s = secretOf(`auth.jwt.keys[${i}]`, k)
    if (s !== undefined) problems.push(...secretLengthProblems(`auth.jwt.keys[${i}].${k.secret !== undefined ? 'secret' : 'secretFile'}`, s, k.algorithms))
  })
  for (const [key, file, algs] of [['auth.jwt.publicKeyFile', jwt.publicKeyFile, jwt.algorithms ?? []], ...(jwt.keys ?? []).map((k, i) => [`auth.jwt.keys[${i}].publicKeyFile`, k.publicKeyFile, k.algorithms])] as Array<[string, string | undefined, readonly string[]]>) {
    if (file !== undefined && !unreadable.has(key)) problems.push(...publicKeyProblems(key, file, algs))
  }
  const grantSecret = secretOf('auth.grants', c.auth.grants)
  if (grantSecret !== undefined && Buffer.byteLength(grantSecret) < 32) problems.push({ key: c.auth.grants.secret !== undefined ? 'auth.grants.secret' : 'auth.grants.secretFile', reason: 'a grant key must be at least 32 bytes' })
  return problems
}

export { readSecretFile }

export interface LoadOptions {
  /** YAML file; relative paths inside it are resolved against its directory. */
  file?: string
  /** Used instead of a file (tests, demo). Relative paths resolve against baseDir. */
  object?: unknown
  baseDir?: string
  env?: NodeJS.ProcessEnv
}

export function loadConfig (opts: LoadOptions): Readonly<Config> {
  let raw: JsonObject = {}
  let baseDir = opts.baseDir ?? process.cwd()
  if (opts.file) {
    let text: string
    try {
      text = readFileSync(opts.file, 'utf8')
    } catch (err) {
      throw new ConfigError([{ key: '(file)', reason: `cannot read ${opts.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }])
    }
    try {
      raw = (parseYaml(text) ?? {}) as JsonObject
    } catch (err) {
      const where = err instanceof YAMLParseError && err.linePos ? ` line ${err.linePos[0].line}` : ''
      throw new ConfigError([{ key: '(file)', reason: `${opts.file}${where} is not valid YAML: ${(err as Error).message.split('\n')[0]}` }])
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError([{ key: '(root)', reason: 'must be a YAML mapping' }])
    baseDir = dirname(resolve(opts.file))
  } else if (opts.object !== undefined) {
    raw = structuredClone(opts.object) as JsonObject
  }
  applyEnv(raw, opts.env ?? {})
  const validate = validator()
  if (!validate(raw)) throw new ConfigError(schemaProblems(validate.errors ?? []))
  const config = raw as unknown as Config
  for (const [, get, set] of [...FILE_KEYS, ...keyListFiles(config)]) {
    const v = get(config)
    if (v !== undefined && !isAbsolute(v)) set(config, resolve(baseDir, v))
  }
  const problems = semanticProblems(config)
  if (problems.length === 0) problems.push(...fileProblems(config))
  if (problems.length > 0) throw new ConfigError(problems)
  return deepFreeze(config)
}

function deepFreeze<T> (o: T): Readonly<T> {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v)
    Object.freeze(o)
  }
  return o
}

/** config.retention's rules: each compiles (naming the rule's key), names are unique, and a dated rule's path can date what the sealing keys divide. */
function retentionProblems (c: Readonly<Config>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  c.retention.forEach((r, i) => {
    try {
      compileRetention([r])
    } catch (err) {
      problems.push({ key: `retention[${i}].path`, reason: (err as Error).message.replace(/^retention\[0\]\.path: /, '') })
    }
    if (r.name !== undefined && c.retention.findIndex((o) => o.name === r.name) !== i) problems.push({ key: `retention[${i}].name`, reason: `duplicate rule name ${JSON.stringify(r.name)}` })
  })
  c.sealing.keyBackups.forEach((d, i) => {
    if (c.sealing.keyring !== undefined && resolve(d) === resolve(c.sealing.keyring)) problems.push({ key: `sealing.keyBackups[${i}]`, reason: 'is the keyring itself: name the backup copies only' })
  })
  return problems
}
