#!/usr/bin/env node
// nasguard <start | demo | config check | token issue>
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { ConfigError, loadConfig } from './config/load.js'
import { issueToken, parseTime, parseTtl } from './auth/tokens.js'
import { addRevocation, type RevocationEntry } from './auth/revocation.js'
import { basename, dirname, join, resolve as resolvePath } from 'node:path'
import { auditNewKey, auditSearch, auditSummary, auditVerify } from './audit/commands.js'
import { loadAuditKey } from './audit/key.js'
import { auditKeyFile } from './config/derived.js'
import { readFileSync } from 'node:fs'
import cluster from 'node:cluster'

const USAGE = `usage:
  nasguard start [--config FILE]      run the gateway (no config: the demo)
  nasguard demo                       run the demo: embedded NAS, local CA, demo token
  nasguard config check FILE          validate a config file without starting
  nasguard token issue --config FILE --sub S --scope "a b" [--ttl 15m] [--kid K]
                                      print a signed token (with a jti)
  nasguard token revoke --config FILE --jti J | --sub S [--issued-before T]
                                      add to the denylist; running gateways apply it within a second
  nasguard audit verify [--config FILE | --dir D [--key-file K]]
                                      check the audit chain: exit 1 on the first edit, deletion,
                                      insertion, reordering or missing file
  nasguard audit search [--config FILE | --dir D] [--sub S] [--path-prefix P] [--since T] [--until T] [--event E] [--json]
  nasguard audit summary [--config FILE | --dir D] [--since T] [--until T] [--json]
                                      per subject: files, fetches, bytes, first and last access
  nasguard audit new-key --config FILE
                                      after losing the audit key: set the old trail aside
                                      (retired-<time>/), make a new key, record it
  nasguard cert init --host H [--host H2 ...] [--dir certs] [--days 397] [--crl-url URL] [--force]
                                      a local CA and a server certificate for those names/IPs
  nasguard cert client --name N --out DIR [--dir certs] [--days 365] [--p12 --password-file F] [--crl-url URL] [--force]
                                      a client certificate (and a PKCS#12 bundle) signed by the CA
  nasguard cert revoke --cert FILE | --serial HEX [--dir certs]
                                      add to the CA's revocation list (certs/ca.crl)
  nasguard cert show [FILE]           subject, names, issuer, validity, SHA-256; warns within 30 days
Every config key can be set by a NASGUARD_* variable, e.g. NASGUARD_LISTEN_PORT.`

class UsageError extends Error {}

/** Like parseTime, to the millisecond: audit records carry milliseconds. */
function parseTimeMs (t: string): number {
  if (/^\d{9,11}$/.test(t)) return Number(t) * 1000
  if (t === 'now') return Date.now()
  const ms = Date.parse(t)
  if (Number.isNaN(ms)) throw new UsageError(`invalid time ${JSON.stringify(t)}: use ISO 8601 (2026-11-21T10:00:00Z), epoch seconds, or now`)
  return ms
}

function args (argv: string[], options: NonNullable<ParseArgsConfig['options']>): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values as Record<string, string | boolean | undefined>
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

async function main (argv: string[]): Promise<number> {
  // A worker of `workers: N`: its config comes from the primary.
  if (cluster.isWorker) {
    const { runWorker } = await import('./worker.js')
    await runWorker()
    return -1
  }
  const [cmd, sub, ...rest] = argv
  if (cmd === 'start') {
    const v = args(sub ? [sub, ...rest] : [], { config: { type: 'string', short: 'c' } })
    const file = (v.config as string | undefined) ?? process.env.NASGUARD_CONFIG
    if (!file) {
      const { runDemo } = await import('./server.js')
      await runDemo()
      return -1
    }
    const config = loadConfig({ file, env: process.env })
    // Loaded on demand: a primary needs neither the app nor node-forge.
    const { runPrimary, workerCount } = await import('./cluster.js')
    if (workerCount(config) > 1) {
      await runPrimary(config)
      return -1
    }
    const { closeOnSignals, startGateway } = await import('./server.js')
    const running = await startGateway(config)
    closeOnSignals(running)
    running.gateway.app.log.info({ address: running.url, admin: running.adminUrl }, 'nasguard listening')
    return -1
  }
  if (cmd === 'demo') {
    const { runDemo } = await import('./server.js')
    await runDemo()
    return -1
  }
  if (cmd === 'config' && sub === 'check') {
    const file = rest[0]
    if (!file) throw new UsageError('config check needs a FILE')
    const c = loadConfig({ file, env: process.env })
    process.stdout.write(`config OK: ${file}\n  listen ${c.listen.host}:${c.listen.port} (TLS ${c.tls.profile}), upstream ${c.upstream.url}, ${c.policy.length} policy rule(s), audit in ${c.audit.dir} (${c.audit.durability})\n`)
    return 0
  }
  if (cmd === 'token' && sub === 'revoke') {
    const v = args(rest, { config: { type: 'string', short: 'c' }, jti: { type: 'string' }, sub: { type: 'string' }, 'issued-before': { type: 'string' } })
    if (!v.config || (!v.jti === !v.sub)) throw new UsageError('token revoke needs --config and one of --jti or --sub')
    const c = loadConfig({ file: v.config as string, env: process.env })
    const file = c.auth.revocation.file ?? join(c.audit.dir, 'revoked.jsonl')
    const now = Math.floor(Date.now() / 1000)
    // No token that could match outlives this: exp <= iat + maxLifetimeSec,
    // and exp is honoured up to clockToleranceSec late.
    const max = c.auth.jwt.maxLifetimeSec + c.auth.jwt.clockToleranceSec
    let entry: RevocationEntry
    if (v.jti) {
      entry = { type: 'jti', jti: v.jti as string, expiresAt: now + c.auth.jwt.clockToleranceSec + max, at: now }
    } else {
      const before = parseTime((v['issued-before'] as string | undefined) ?? 'now')
      entry = { type: 'sub', sub: v.sub as string, issuedBefore: before, expiresAt: Math.max(before, now) + max, at: now }
    }
    // A damaged denylist is rewritten with what it still holds: say so, as
    // revocations in the damaged part are lost and may need to be redone.
    const n = addRevocation(file, entry, now, { warn: (m) => process.stderr.write(`warning: ${m}\n`) })
    process.stdout.write(`revoked ${v.jti ? `token ${v.jti as string}` : `every token and grant of ${v.sub as string} issued before ${new Date((entry as { issuedBefore: number }).issuedBefore * 1000).toISOString()}`}; ${file} holds ${n} entr${n === 1 ? 'y' : 'ies'}; running gateways apply it within ${c.auth.revocation.pollMs} ms\n`)
    return 0
  }
  if (cmd === 'token' && sub === 'issue') {
    const v = args(rest, { config: { type: 'string', short: 'c' }, sub: { type: 'string' }, scope: { type: 'string' }, ttl: { type: 'string', default: '15m' }, kid: { type: 'string' } })
    if (!v.config || !v.sub || !v.scope) throw new UsageError('token issue needs --config, --sub and --scope')
    const c = loadConfig({ file: v.config as string, env: process.env })
    const { token, jti, exp } = issueToken(c.auth.jwt, { sub: v.sub as string, scope: v.scope as string, ttlSeconds: parseTtl(v.ttl as string), kid: v.kid as string | undefined })
    process.stdout.write(token + '\n')
    process.stderr.write(`jti ${jti}, expires ${new Date(exp * 1000).toISOString()}\n`)
    return 0
  }
  if (cmd === 'audit' && sub === 'new-key') {
    const v = args(rest, { config: { type: 'string', short: 'c' } })
    if (!v.config) throw new UsageError('audit new-key needs --config')
    const c = loadConfig({ file: v.config as string, env: process.env })
    return await auditNewKey(c.audit.dir, auditKeyFile(c), c.audit.instance, (s) => { process.stdout.write(s) })
  }
  if (cmd === 'audit' && (sub === 'verify' || sub === 'search' || sub === 'summary')) {
    const v = args(rest, {
      config: { type: 'string', short: 'c' }, dir: { type: 'string' }, 'key-file': { type: 'string' },
      sub: { type: 'string' }, 'path-prefix': { type: 'string' }, since: { type: 'string' }, until: { type: 'string' }, event: { type: 'string' }, json: { type: 'boolean', default: false }
    })
    let dir = v.dir as string | undefined
    let keyFile = v['key-file'] as string | undefined
    if (v.config) {
      const c = loadConfig({ file: v.config as string, env: process.env })
      dir ??= c.audit.dir
      keyFile ??= auditKeyFile(c)
    }
    if (!dir) throw new UsageError(`audit ${sub} needs --config or --dir`)
    keyFile ??= join(dirname(resolvePath(dir)), `${basename(resolvePath(dir))}.key`)
    const loc = { dir, key: loadAuditKey(keyFile) }
    const out = (s: string): void => { process.stdout.write(s) }
    const err = (s: string): void => { process.stderr.write(s) }
    if (sub === 'verify') return auditVerify(loc, out)
    const f = {
      sub: v.sub as string | undefined,
      pathPrefix: v['path-prefix'] as string | undefined,
      since: v.since ? parseTimeMs(v.since as string) : undefined,
      until: v.until ? parseTimeMs(v.until as string) : undefined,
      event: v.event as string | undefined
    }
    return sub === 'search' ? auditSearch(loc, f, v.json as boolean, out, err) : auditSummary(loc, f, v.json as boolean, out, err)
  }
  if (cmd === 'cert') {
    const { certClient, certInit, certRevoke, showCertificate } = await import('./tls/cert-commands.js')
    if (sub === 'init') {
      const v = args(rest, { host: { type: 'string', multiple: true }, dir: { type: 'string', default: 'certs' }, days: { type: 'string', default: '397' }, force: { type: 'boolean', default: false }, 'crl-url': { type: 'string' } })
      process.stdout.write(certInit({ dir: v.dir as string, hosts: (v.host as unknown as string[] | undefined) ?? [], days: Number(v.days), force: v.force as boolean, crlUrl: v['crl-url'] as string | undefined }) + '\n')
      return 0
    }
    if (sub === 'client') {
      const v = args(rest, { name: { type: 'string' }, out: { type: 'string' }, dir: { type: 'string', default: 'certs' }, days: { type: 'string', default: '365' }, p12: { type: 'boolean', default: false }, 'password-file': { type: 'string' }, force: { type: 'boolean', default: false }, 'crl-url': { type: 'string' } })
      if (!v.name || !v.out) throw new UsageError('cert client needs --name and --out')
      const pwFile = v['password-file'] as string | undefined
      const password = pwFile ? readFileSync(pwFile, 'utf8').replace(/\r?\n$/, '') : undefined
      process.stdout.write(certClient({ dir: v.dir as string, name: v.name as string, out: v.out as string, days: Number(v.days), p12: v.p12 as boolean, password, force: v.force as boolean, crlUrl: v['crl-url'] as string | undefined }) + '\n')
      return 0
    }
    if (sub === 'revoke') {
      const v = args(rest, { cert: { type: 'string' }, serial: { type: 'string' }, dir: { type: 'string', default: 'certs' } })
      process.stdout.write(certRevoke({ dir: v.dir as string, certFile: v.cert as string | undefined, serial: v.serial as string | undefined }) + '\n')
      return 0
    }
    if (sub === 'show') {
      process.stdout.write(showCertificate(rest[0] ?? 'certs/server.crt') + '\n')
      return 0
    }
  }
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE + '\n')
    return cmd === undefined ? 2 : 0
  }
  throw new UsageError(`unknown command: ${[cmd, sub].filter(Boolean).join(' ')}`)
}

// `nasguard audit search ... | head`: a reader that stops early is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exitCode = code
}, (err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(err.message + '\n')
    process.exitCode = 1
  } else if ((err as Error).name === 'CertCommandError') {
    process.stderr.write(`nasguard: ${(err as Error).message}\n`)
    process.exitCode = 1
  } else if (err instanceof UsageError) {
    process.stderr.write(`nasguard: ${err.message}\n\n${USAGE}\n`)
    process.exitCode = 2
  } else {
    process.stderr.write(`nasguard: ${(err as Error).message}\n`)
    process.exitCode = 1
  }
})
