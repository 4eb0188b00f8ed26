// What `start` needs beyond a config that loads, checked without listening,
// so that `config check` refuses what `start` would refuse: the certificate
// and key parse, match and are valid now; the client CA and CRL parse;
// audit.dir is (or can be made) a writable directory; the audit key, when
// there, is one, and is not missing beside a trail sealed with it; the two listeners do not clash.
// `start` runs the same checks first, so the two cannot drift apart.
import { accessSync, constants, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:net'
import { dirname } from 'node:path'
import { sealingOf } from '../sealing/settings.js'
import type { Config } from './schema.js'
import type { ConfigProblem } from './load.js'
import { auditKeyFile } from './derived.js'
import { readSecretFile } from './secrets.js'
import { loadCertificate } from '../tls/server.js'
import { ClientCrls } from '../tls/client-crl.js'
import { loadAuditKey, trailEntries } from '../audit/key.js'

const reasonOf = (err: unknown): string => (err as NodeJS.ErrnoException).code && !(err as Error).message.includes(String((err as NodeJS.ErrnoException).code))
  ? `${(err as NodeJS.ErrnoException).code}: ${(err as Error).message}`
  : (err as Error).message

export function startProblems (c: Readonly<Config>): ConfigProblem[] {
  return [...certificateProblems(c), ...auditProblems(c), ...listenerProblems(c), ...sealingProblems(c)]
}

/**
 * sealing.*: the keyring must load and the period pattern compile (the
 * error names the key). A rule that allows uploads (PUT) needs sealing on:
 * an upload is sealed on its way in, never stored in plaintext.
 */
function sealingProblems (c: Readonly<Config>): ConfigProblem[] {
  const uploads = c.policy.flatMap((r, i) => r.methods.includes('PUT') && c.sealing.mode === 'off'
    ? [{ key: `policy[${i}].methods`, reason: `PUT (uploads) needs sealing.mode migrate or require: uploads are sealed on their way to the NAS, never stored in plaintext (rule ${r.name})` }]
    : [])
  try {
    sealingOf(c)
    return uploads
  } catch (err) {
    const message = (err as Error).message
    const at = message.indexOf(': ')
    return [...uploads, { key: message.slice(0, at), reason: message.slice(at + 2) }]
  }
}

function certificateProblems (c: Readonly<Config>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  try {
    loadCertificate(c.tls.cert, c.tls.key)
  } catch (err) {
    problems.push({ key: 'tls.cert', reason: reasonOf(err) })
  }
  if (c.tls.clientAuth !== 'off' && c.tls.clientCa && c.tls.clientCrl) {
    try {
      ClientCrls.load(readFileSync(c.tls.clientCa), readFileSync(c.tls.clientCrl))
    } catch (err) {
      problems.push({ key: 'tls.clientCrl', reason: reasonOf(err) })
    }
  }
  return problems
}

/** The nearest directory that exists at or above `dir`. */
function existingAncestor (dir: string): string {
  for (let p = dir; ; p = dirname(p)) {
    try {
      statSync(p)
      return p
    } catch {
      if (dirname(p) === p) return p
    }
  }
}

function auditProblems (c: Readonly<Config>): ConfigProblem[] {
  const dir = c.audit.dir
  const at = existingAncestor(dir)
  if (!statSync(at).isDirectory()) {
    return [{ key: 'audit.dir', reason: at === dir ? `${dir} is not a directory` : `${dir} cannot be made: ${at} is not a directory` }]
  }
  try {
    accessSync(at, constants.W_OK | constants.X_OK)
  } catch {
    return [{ key: 'audit.dir', reason: at === dir ? `${dir} is not writable by this user` : `${dir} cannot be made: ${at} is not writable by this user` }]
  }
  const keyFile = auditKeyFile(c)
  try {
    // A key that is there must be one (the start reads it the same way).
    loadAuditKey(keyFile)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return [{ key: 'audit.keyFile', reason: reasonOf(err) }]
    if (at === dir && trailEntries(dir).length > 0) {
      return [{ key: 'audit.keyFile', reason: `${keyFile} is missing, but ${dir} holds a trail sealed with it: restore it from your backup, or start a new chain with nasguard audit new-key` }]
    }
  }
  return []
}

function listenerProblems (c: Readonly<Config>): ConfigProblem[] {
  if (!c.admin.enabled || c.admin.port === 0 || c.admin.port !== c.listen.port) return []
  const any = (h: string): boolean => h === '0.0.0.0' || h === '::'
  if (c.admin.host !== c.listen.host && !any(c.admin.host) && !any(c.listen.host)) return []
  return [{ key: 'admin.port', reason: `${c.admin.host}:${c.admin.port} is also the gateway's listen address (listen.host ${c.listen.host}, listen.port ${c.listen.port})` }]
}

/** The config's secret files: tls.key, the audit key, and every *secretFile, *passwordFile, *tokenFile and *privateKeyFile, by key. */
export function secretFiles (c: Readonly<Config>): Array<[string, string]> {
  const found: Array<[string, string]> = [['tls.key', c.tls.key], ['audit.keyFile', auditKeyFile(c)]]
  const walk = (v: unknown, at: string): void => {
    if (Array.isArray(v)) v.forEach((x, i) => { walk(x, `${at}[${i}]`) })
    else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) walk(x, at ? `${at}.${k}` : k)
    else if (typeof v === 'string' && /(secret|password|token|privateKey)File$/.test(at)) found.push([at, v])
  }
  walk(c, '')
  return found
}

/**
 * Secret files every user of this host can read (mode o+r): a warning for
 * `config check` and `start`, not an error (the README's service layout
 * makes them root-owned, readable by the gateway's group only).
 */
export function readableSecrets (c: Readonly<Config>): ConfigProblem[] {
  return secretFiles(c).flatMap(([key, file]) => {
    let mode: number
    try {
      mode = statSync(file).mode
    } catch {
      return []
    }
    if ((mode & 0o004) === 0) return []
    return [{ key, reason: `${file} can be read by every user of this host (mode ${(mode & 0o777).toString(8).padStart(4, '0')}): chmod o-r ${file}` }]
  })
}

/**
 * Settings that are allowed but weaker than they look: warnings for
 * `config check` and `start` (an operator may mean them).
 */
export function weakSettings (c: Readonly<Config>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const loopback = /^(127\.|::1$|localhost$)/.test(c.admin.host)
  if (c.admin.enabled && !loopback && !c.admin.tokenFile && !c.admin.basicAuth) problems.push({ key: 'admin.host', reason: `${c.admin.host} is reachable from other hosts and the admin listener has no credential: anyone who reaches it reads /metrics and /readyz (set admin.tokenFile or admin.basicAuth, or bind it to 127.0.0.1)` })
  if (c.tls.hstsMaxAge === 0) problems.push({ key: 'tls.hstsMaxAge', reason: '0 tells browsers to forget that this host is HTTPS-only (Strict-Transport-Security: max-age=0)' })
  if (c.tls.clientAuth === 'off') {
    for (const k of ['clientCa', 'clientCrl'] as const) if (c.tls[k] !== undefined) problems.push({ key: `tls.${k}`, reason: 'is set, but tls.clientAuth is off: no client certificate is asked for or checked' })
  }
  // A real NAS streams one download at tens of MB a second at best: a floor above that cuts healthy ones.
  if (c.upstream.minRate > 100 * 1024 * 1024) problems.push({ key: 'upstream.minRate', reason: `${c.upstream.minRate} bytes a second is more than a NAS sends one download: downloads would be cut as slow (kind="slow"); it is a floor against a NAS that trickles (default 1024)` })
  if (c.upstream.pipelining > 1 && c.upstream.minRate > 0) problems.push({ key: 'upstream.pipelining', reason: `${c.upstream.pipelining} requests share a NAS connection: one queued behind a slow client's download waits on it, gets 504 after a window of upstream.timeoutMs, and closing the connection cuts that download too (use 1)` })
  const secretOf = (k: { secret?: string, secretFile?: string }): string | undefined => k.secret ?? (k.secretFile !== undefined ? safeRead(k.secretFile) : undefined)
  const jwtSecrets = [c.auth.jwt, ...(c.auth.jwt.keys ?? [])].map(secretOf)
  const grantSecret = secretOf(c.auth.grants)
  if (grantSecret !== undefined && jwtSecrets.includes(grantSecret)) problems.push({ key: c.auth.grants.secret !== undefined ? 'auth.grants.secret' : 'auth.grants.secretFile', reason: 'is the JWT secret: give grants a key of their own (openssl rand -base64 48), so that one leaked key does not give both' })
  return problems
}

/** A secret file's content, or undefined when it cannot be read (its own check says why). */
function safeRead (file: string): string | undefined {
  try {
    return readSecretFile(file)
  } catch {
    return undefined
  }
}

/** Ports another process holds now: a warning for `config check` (the running gateway holds its own), an error for `start`. */
export async function portsInUse (c: Readonly<Config>): Promise<ConfigProblem[]> {
  const ports: Array<[string, string, number]> = [['listen.port', c.listen.host, c.listen.port]]
  if (c.admin.enabled) ports.push(['admin.port', c.admin.host, c.admin.port])
  const problems: ConfigProblem[] = []
  for (const [key, host, port] of ports) {
    if (port === 0) continue
    const code = await new Promise<string | undefined>((resolve) => {
      const s = createServer()
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
      s.listen(port, host, () => s.close(() => resolve(undefined)))
    })
    if (code === 'EADDRINUSE') problems.push({ key, reason: `${host}:${port} is in use by another process` })
    else if (code !== undefined) problems.push({ key, reason: `cannot listen on ${host}:${port}: ${code}` })
  }
  return problems
}
