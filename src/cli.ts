#!/usr/bin/env node
// The nasguard command line (commander). Exit codes, for every command:
// 0 ok, 1 failure (a bad config, a broken chain, an expired certificate),
// 2 usage error. --help and --version exit 0. Every command that takes
// --config also reads NASGUARD_CONFIG.
import { existsSync, readFileSync } from 'node:fs'
import { basename, dirname, join, resolve as resolvePath } from 'node:path'
import cluster from 'node:cluster'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import type { Config } from './config/schema.js'
import type { RevocationEntry } from './auth/revocation.js'
import type { ChainAnchor } from './audit/commands.js'
import { loadAuditKey } from './audit/key.js'
import { auditKeyFile } from './config/derived.js'
import { refuseForeignOwner } from './files/ownership.js'
import { parseTimeArg } from './time-arg.js'

// Only commander and small modules load at start: each command imports what
// it needs (the config schema, fast-jwt, x509, fastify) when it runs, so
// --help, --version and the audit commands start in a fraction of the time.
const audits = async (): Promise<typeof import('./audit/commands.js')> => await import('./audit/commands.js')
const tokens = async (): Promise<typeof import('./auth/tokens.js')> => await import('./auth/tokens.js')

class UsageError extends Error {}

const DAY_MS = 24 * 3600 * 1000

/** A command line time to the millisecond (audit records carry milliseconds); a bad one is a usage error. */
function parseTimeMs (t: string): number {
  try {
    return parseTimeArg(t)
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
}

/** --anchor values: each [chain@]seq:hash, and no two for one record with different hashes. */
async function anchorsOf (texts: string[] = []): Promise<ChainAnchor[]> {
  const { conflictingAnchors, parseAnchor } = await audits()
  const anchors = texts.map((text) => {
    const a = parseAnchor(text)
    if (!a) throw new UsageError(`invalid --anchor ${JSON.stringify(text)}: use [chain@]seq:hash as audit verify prints it (worker-0@1234:<64 hex digits>, seq from 1)`)
    return a
  })
  const clash = conflictingAnchors(anchors)
  if (clash) throw new UsageError(`two --anchor values for ${clash[0].chain}@${clash[0].seq} with different hashes: they cannot both be this trail's record; check where each came from`)
  return anchors
}

const out = (s: string): void => { process.stdout.write(s) }
const err = (s: string): void => { process.stderr.write(s) }

/** A repeatable option's values, in order. */
const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

/**
 * Refuses a single-valued option given twice (`--key-type rsa --key-type
 * ecdsa`): commander would keep the last, and an operator who wrote both
 * meant one of them. Repeatable options (collect, variadic) and flags pass.
 */
function refuseRepeats (cmd: Command): void {
  for (const o of cmd.options) {
    if (o.variadic || o.parseArg === collect || !(o.required || o.optional)) continue
    const inner = o.parseArg
    let given = false
    o.parseArg = <T>(v: string, prev: T): T => {
      if (given) throw new InvalidArgumentError(`${o.long ?? o.short ?? o.flags} is given more than once; give it once`)
      given = true
      return inner === undefined ? v as T : inner(v, prev)
    }
  }
  for (const sub of cmd.commands) refuseRepeats(sub)
}

/** --config FILE, or NASGUARD_CONFIG. */
const configOption = (required: boolean): Option => {
  const o = new Option('-c, --config <file>', 'the config file').env('NASGUARD_CONFIG')
  return required ? o.makeOptionMandatory() : o
}

const load = async (file: string): Promise<Readonly<Config>> => (await import('./config/load.js')).loadConfig({ file, env: process.env })

/** The keys NASGUARD_* variables set, on stderr: a key the file sets too is a warning (its edits do nothing). */
async function tellEnvOverrides (file: string): Promise<void> {
  const { envOverrideLines, envOverrides } = await import('./config/load.js')
  for (const line of envOverrideLines(envOverrides(process.env, file))) err(line + '\n')
}

/** What start checks before listening (and config check without listening); throws a ConfigError. */
async function preflight (c: Readonly<Config>): Promise<typeof import('./config/preflight.js')> {
  const checks = await import('./config/preflight.js')
  const problems = checks.startProblems(c)
  if (problems.length > 0) throw new (await import('./config/load.js')).ConfigError(problems)
  return checks
}

/** Runs fn; an error of a command family's own usage class is a usage error (exit 2). */
async function withUsageErrors<T> (usageClass: () => Promise<abstract new (...a: never[]) => Error>, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof await usageClass()) throw new UsageError(e.message)
    throw e
  }
}

/** Runs an action and keeps its exit code (a long-running one returns nothing). */
function action<A extends unknown[]> (fn: (...a: A) => Promise<number | undefined> | number | undefined): (...a: A) => Promise<void> {
  return async (...a: A) => {
    const code = await fn(...a)
    if (code !== undefined) process.exitCode = code
  }
}

function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

function buildProgram (): Command {
  const program = new Command('nasguard')
    .description('A TLS, JWT and audit gateway in front of a NAS full of sensitive recordings.\nEvery config key can also be set by a NASGUARD_* variable, e.g. NASGUARD_LISTEN_PORT.')
    .version(version(), '-V, --version')
    .showHelpAfterError('(nasguard --help lists the commands)')
    .exitOverride()

  program.command('start').description('run the gateway (no config: the demo)')
    .addOption(configOption(false))
    .action(async (o: { config?: string }) => {
      if (!o.config) {
        await started(demo)
        return
      }
      const file = o.config
      const release = holdReloads()
      const config = await load(file)
      await started(async () => { await start(config, file, release) })
    })

  program.command('demo').description('run the demo: embedded NAS, local CA, demo token')
    .action(async () => { await started(demo) })

  const config = program.command('config').description('configuration files')
  config.command('check').description('validate a config file without starting')
    .argument('[file]', 'the config file (or --config, or NASGUARD_CONFIG)')
    .addOption(configOption(false))
    .action(action(async (file: string | undefined, o: { config?: string }) => {
      const f = file ?? o.config
      if (!f) throw new UsageError('config check needs a FILE (or --config, or NASGUARD_CONFIG)')
      const c = await load(f)
      const { portsInUse, readableSecrets, weakSettings } = await preflight(c)
      for (const p of [...readableSecrets(c), ...weakSettings(c)]) err(`warning: config at ${p.key}: ${p.reason}\n`)
      await tellEnvOverrides(f)
      // The running gateway holds its own ports: a warning, not an error.
      for (const p of await portsInUse(c)) err(`warning: config at ${p.key}: ${p.reason} (expected if this config's gateway is running)\n`)
      out(`config OK: ${f}\n  listen ${c.listen.host}:${c.listen.port} (TLS ${c.tls.profile}), upstream ${c.upstream.url}, ${c.policy.length} policy rule(s), audit in ${c.audit.dir} (${c.audit.durability})\n`)
      return 0
    }))

  const token = program.command('token').description('tokens and the revocation denylist')
  token.command('issue').description('print a signed token (with a jti)')
    .addOption(configOption(true))
    .requiredOption('--sub <subject>', 'the subject (sub claim)')
    .requiredOption('--scope <scopes>', 'space-separated scopes, e.g. "recordings:read"')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 8h', '15m')
    .option('--kid <kid>', 'the key id to sign with')
    .action(action(async (o: { config: string, sub: string, scope: string, ttl: string, kid?: string }) => {
      const { issueToken, parseTtl } = await tokens()
      const ttlSeconds = await withUsageErrors(async () => Error, async () => parseTtl(o.ttl))
      // A token the gateway would refuse (no subject) or could not take (a header past its 16 KiB) is not issued.
      if (!/^[^\x00-\x1f\x7f]{1,256}$/.test(o.sub)) throw new UsageError('--sub: 1 to 256 printable characters (the gateway refuses a token without a subject)')
      if (o.scope.trim() === '') throw new UsageError('--scope: at least one scope (a token without one is refused by every rule)')
      const c = await load(o.config)
      const { token, jti, exp } = issueToken(c.auth.jwt, { sub: o.sub, scope: o.scope, ttlSeconds, kid: o.kid })
      out(token + '\n')
      err(`jti ${jti}, expires ${new Date(exp * 1000).toISOString()}\n`)
      return 0
    }))
  token.command('revoke').description('add to the denylist; running gateways apply it within a second')
    .addOption(configOption(true))
    .option('--jti <jti>', 'one token')
    .option('--sub <subject>', 'every token and grant of a subject')
    .option('--issued-before <time>', 'with --sub: issued before this (ISO 8601, epoch seconds, or now: every token issued so far, this second\'s too)', 'now')
    .action(action(async (o: { config: string, jti?: string, sub?: string, issuedBefore: string }) => {
      if (!o.jti === !o.sub) throw new UsageError(o.jti ? 'token revoke takes --jti or --sub, not both' : 'token revoke needs one of --jti or --sub')
      return await revoke(await load(o.config), o)
    }))

  program.command('state').description('shared state of several gateways (state.redis)')
    .command('init').description('mark Redis as holding this deployment\'s revocations (gateways fail closed until then, and again if Redis loses its data), importing the denylist file\'s live entries')
    .addOption(configOption(true))
    .option('--import <file>', 'the denylist file whose live entries are added (default: revoked.jsonl in audit.dir)')
    .action(action(async (o: { config: string, import?: string }) => await stateInit(await load(o.config), o.import)))

  const audit = program.command('audit').description('the audit trail')
  const trail = (cmd: Command): Command => cmd
    .addOption(configOption(false))
    .option('--dir <dir>', 'the audit directory (instead of --config)')
    .option('--key-file <file>', 'with --dir: the audit key (default: <dir>.key beside it)')
  const filters = (cmd: Command): Command => cmd
    .option('--sub <subject>', 'only this subject')
    .option('--path-prefix <prefix>', 'only paths under this prefix')
    .option('--since <time>', 'from this time (ISO 8601, epoch seconds, now)')
    .option('--until <time>', 'up to this time')
    .option('--event <event>', 'only this event (access, fetch, refusal, grant, ...)')
    .option('--json', 'JSON lines', false)
  trail(audit.command('verify').description('check the audit chain: exit 1 on the first edit, deletion, insertion, reordering or missing file; --dir may be a collection, <dir>/<audit.instance>/ per host'))
    .option('--anchor <anchor...>', 'a [chain@]seq:hash an earlier verify printed, kept off this host: the trail must still hold that record (a rollback does not)')
    .option('--expect <instance...>', 'over a collection: the instances that must be in it (without it a host whose whole directory is missing goes unseen)')
    .action(action(async (o: TrailOptions & { anchor?: string[], expect?: string[] }) => {
      const loc = await trailOf(o, 'verify')
      const { INSTANCE_NAME, isCollection, verifyCollection } = await import('./audit/collection.js')
      if (!isCollection(loc.dir, { expectGiven: o.expect !== undefined })) {
        if (o.expect !== undefined) throw new UsageError(`--expect is for a collection (one audit directory per instance, <dir>/<audit.instance>/), but ${loc.dir} holds a trail of its own, or does not exist`)
        return await (await audits()).auditVerify(loc, out, await anchorsOf(o.anchor))
      }
      if (o.anchor !== undefined) throw new UsageError(`--anchor names one host's chains: over a collection, check each instance with audit verify --dir ${join(loc.dir, '<instance>')} --anchor ...`)
      const bad = o.expect?.find((e) => !INSTANCE_NAME.test(e))
      if (bad !== undefined) throw new UsageError(`invalid --expect ${JSON.stringify(bad)}: an audit.instance name (letters, digits, . _ -)`)
      return await verifyCollection(loc, { expect: o.expect ?? await registeredExpectation(o.config) }, out)
    }))
  filters(trail(audit.command('search').description('records matching the filters')))
    .action(action(async (o: TrailOptions & FilterOptions) => await (await audits()).auditSearch(await trailOf(o, 'search'), filtersOf(o), o.json, out, err)))
  filters(trail(audit.command('summary').description('per subject: files, fetches, bytes, first and last access')))
    .action(action(async (o: TrailOptions & FilterOptions) => await (await audits()).auditSummary(await trailOf(o, 'summary'), filtersOf(o), o.json, out, err)))
  trail(audit.command('report').description('GDPR art. 15 access report from the verified chain: every access to recordings whose path holds a phone number, or every recording access of one subject; exit 1 when the chain is not intact'))
    .option('--phone <number>', 'recordings whose path holds this number (+46 70-123 45 67, 0046701234567, 46701234567); repeat for other spellings, e.g. the national 0701234567', collect)
    .option('--subject <subject>', 'what this identity accessed')
    .option('--since <time>', 'from this time (ISO 8601, epoch seconds, now)')
    .option('--until <time>', 'up to this time')
    .option('--json', 'one JSON document: query, chain state, accesses', false)
    .option('--csv', 'CSV (RFC 4180; a cell starting with = + - @ tab or CR gets a leading \')', false)
    .action(action(async (o: TrailOptions & { phone?: string[], subject?: string, since?: string, until?: string, json: boolean, csv: boolean }) => {
      const { auditReport, reportQuery } = await import('./audit/report.js')
      const q = reportQuery({ phones: o.phone, subject: o.subject, json: o.json, csv: o.csv, since: o.since ? parseTimeMs(o.since) : undefined, until: o.until ? parseTimeMs(o.until) : undefined })
      if (typeof q === 'string') throw new UsageError(q)
      return await auditReport(await trailOf(o, 'report'), q, out, err)
    }))
  audit.command('new-key').description('after losing the audit key: set the old trail aside (retired-<time>/), make a new key, record it')
    .addOption(configOption(true))
    .action(action(async (o: { config: string }) => {
      const c = await load(o.config)
      refuseForeignOwner([c.audit.dir, dirname(auditKeyFile(c))], 'audit new-key')
      return await (await audits()).auditNewKey(c.audit.dir, auditKeyFile(c), c.audit.instance, out)
    }))
  trail(audit.command('prune').description('remove rotated audit files whose every record is older than --before; a sealed checkpoint (audit.pruned) and a prune record keep verify passing'))
    .requiredOption('--before <time>', 'the cut-off (ISO 8601, epoch seconds)')
    .option('--dry-run', 'list what would be removed, remove nothing', false)
    .option('--anchor <anchor...>', 'as for verify: the trail must hold these records first (a rolled-back trail is not pruned)')
    .action(action(async (o: TrailOptions & { before: string, dryRun: boolean, anchor?: string[] }) => {
      const before = parseTimeMs(o.before)
      // A typo (an extra digit of epoch seconds, a compact date read as one) would remove every rotated file.
      if (before > Date.now() + DAY_MS) throw new UsageError(`--before ${o.before} is ${new Date(before).toISOString()}, more than a day from now: to prune every rotated file, say now`)
      const anchors = await anchorsOf(o.anchor)
      const c = o.config ? await load(o.config) : undefined
      const { auditPrune } = await import('./audit/prune.js')
      const trail = await trailOf(o, 'prune')
      if (!o.dryRun) refuseForeignOwner([trail.dir], 'audit prune')
      return await auditPrune(trail, { before, dryRun: o.dryRun, instance: c?.audit.instance, rotateBytes: c?.audit.rotateBytes, anchors }, out, err)
    }))

  certCommands(program.command('cert').description('a local CA, server and client certificates, and their revocation list'))
  sealingCommands(program)
  retentionCommands(program)
  quotaCommands(program)
  probeCommand(program)
  refuseRepeats(program)
  return program
}

/** Runs a start; one that fails ends the process with 1, whatever listeners or handles it left open. */
async function started (fn: () => Promise<void>): Promise<void> {
  try {
    await fn()
  } catch (e) {
    process.stderr.write(`nasguard: ${(e as Error).message}\n`, () => process.exit(1))
  }
}

async function demo (): Promise<void> {
  const { runDemo } = await import('./demo/run.js')
  await runDemo()
}

/**
 * A SIGHUP that comes while the gateway starts would end the process
 * (Node's default for it, silently): it is held, and applied as a reload
 * once the gateway's own handler is in place (the returned function).
 */
function holdReloads (): () => void {
  let held = false
  const hold = (): void => { held = true }
  process.on('SIGHUP', hold)
  return () => {
    process.removeListener('SIGHUP', hold)
    if (held) process.emit('SIGHUP', 'SIGHUP')
  }
}

async function start (config: Readonly<Config>, file: string, release: () => void): Promise<void> {
  // What config check checks, start refuses (config/preflight.ts).
  const { readableSecrets, weakSettings } = await preflight(config)
  for (const p of [...readableSecrets(config), ...weakSettings(config)]) err(`warning: config at ${p.key}: ${p.reason}\n`)
  await tellEnvOverrides(file)
  // Loaded on demand: a primary needs neither the app nor node-forge.
  const { runPrimary, workerCount } = await import('./cluster.js')
  if (workerCount(config) > 1) {
    // The primary's handler is in place once runPrimary is called (a reload then reaches each worker once it is ready).
    const primary = runPrimary(config, file)
    release()
    await primary
    return
  }
  const { closeOnSignals, startGateway } = await import('./server.js')
  const running = await startGateway(config)
  closeOnSignals(running, async () => {}, { configFile: file, watchConfig: config.tls.watch })
  running.gateway.app.log.info({ address: running.url, admin: running.adminUrl }, 'nasguard listening')
  release()
}

async function revoke (c: Readonly<Config>, o: { jti?: string, sub?: string, issuedBefore: string }): Promise<number> {
  // Checked before anything is touched: a time that is not one is a usage error (exit 2).
  const before = o.jti === undefined && o.issuedBefore !== 'now' ? Math.floor(parseTimeMs(o.issuedBefore) / 1000) : undefined
  const { denylistFile, revoke: addTo } = await import('./auth/revoke.js')
  const what = (e: RevocationEntry): string => e.type === 'jti' ? `token ${e.jti}` : `every token and grant of ${e.sub} issued before ${new Date(e.issuedBefore * 1000).toISOString()}`
  const redis = c.state.redis
  if (!redis) refuseForeignOwner([dirname(denylistFile(c))], 'token revoke')
  // A damaged denylist is rewritten with what it still holds: say so, as
  // revocations in the damaged part are lost and may need to be redone.
  const r = await addTo(c, (now) => o.jti ? { jti: o.jti } : { sub: o.sub as string, issuedBefore: before ?? now + 1 }, (m) => err(`warning: ${m}\n`))
  if (redis) {
    const { redisAddress } = await import('./state/redis.js')
    out(`revoked ${what(r.entry)}; ${redisAddress(redis)} holds ${r.kept} entr${r.kept === 1 ? 'y' : 'ies'}; published to ${r.heard} gateway connection${r.heard === 1 ? '' : 's'}, which apply it at once (gateways not connected now load it when they reconnect)\n`)
    return 0
  }
  out(`revoked ${what(r.entry)}; ${r.file} holds ${r.kept} entr${r.kept === 1 ? 'y' : 'ies'}; running gateways apply it within ${c.auth.revocation.pollMs} ms\n`)
  return 0
}

/** With a config that has state.redis: the instances registered there, which a collection must hold. */
async function registeredExpectation (file: string | undefined): Promise<string[] | undefined> {
  const redis = file === undefined ? undefined : (await load(file)).state.redis
  if (!redis) return undefined
  const { registeredInstances } = await import('./state/instances.js')
  const names = await registeredInstances(redis)
  err(`expecting the ${names.length} instance${names.length === 1 ? '' : 's'} registered in Redis: ${names.join(', ')}\n`)
  return names
}

/** `nasguard state init`: the epoch that makes gateways trust Redis, and the denylist file's entries moved there. */
async function stateInit (c: Readonly<Config>, from: string | undefined): Promise<number> {
  const redis = c.state.redis
  if (!redis) throw new UsageError('state init needs state.redis in the config')
  const { denylistEntries } = await import('./auth/revocation.js')
  const { initSharedRevocations } = await import('./auth/shared-revocations.js')
  const { redisAddress } = await import('./state/redis.js')
  const file = from ?? join(c.audit.dir, 'revoked.jsonl')
  const entries = denylistEntries(file)
  const r = await initSharedRevocations(redis, entries, c.auth.jwt.clockToleranceSec)
  out(`${redisAddress(redis)}: ${r.created ? 'initialised' : 'already initialised'}; ${r.imported} live revocation${r.imported === 1 ? '' : 's'} imported from ${file}\n`)
  return 0
}

interface TrailOptions { config?: string, dir?: string, keyFile?: string }
interface FilterOptions { sub?: string, pathPrefix?: string, since?: string, until?: string, event?: string, json: boolean }

async function trailOf (o: TrailOptions, command: string): Promise<{ dir: string, key: Buffer }> {
  let dir = o.dir
  let keyFile = o.keyFile
  if (o.config) {
    const c = await load(o.config)
    dir ??= c.audit.dir
    keyFile ??= auditKeyFile(c)
  }
  if (!dir) throw new UsageError(`audit ${command} needs --config (or NASGUARD_CONFIG) or --dir`)
  if (!existsSync(dir)) throw new Error(`no audit trail at ${dir}: the directory does not exist`)
  keyFile ??= join(dirname(resolvePath(dir)), `${basename(resolvePath(dir))}.key`)
  if (!existsSync(keyFile)) throw new Error(`no audit key at ${keyFile}${o.keyFile === undefined ? ' (beside the trail by default; name it with --key-file)' : ''}: without it the trail cannot be verified`)
  return { dir, key: loadAuditKey(keyFile) }
}

function filtersOf (o: FilterOptions): { sub?: string, pathPrefix?: string, since?: number, until?: number, event?: string } {
  return {
    sub: o.sub,
    pathPrefix: o.pathPrefix,
    since: o.since ? parseTimeMs(o.since) : undefined,
    until: o.until ? parseTimeMs(o.until) : undefined,
    event: o.event
  }
}

function certCommands (cert: Command): void {
  const commands = async (): Promise<typeof import('./tls/cert-commands.js')> => await import('./tls/cert-commands.js')
  /** A cert command's action: a bad option value or a missing option exits 2. */
  const certAction = <A extends unknown[]>(fn: (...a: A) => Promise<number>): ((...a: A) => Promise<void>) =>
    action(async (...a: A) => await withUsageErrors(async () => (await commands()).CertUsageError, async () => await fn(...a)))
  cert.command('init').description('a local CA and a server certificate for those names/IPs')
    .requiredOption('--host <name>', 'a DNS name or IP address (repeat for more)', collect)
    .option('--dir <dir>', 'where the CA and certificates live', 'certs')
    .option('--days <n>', 'server certificate lifetime (at most 397)', '397')
    .option('--crl-url <url>', 'CRL distribution point to put in certificates')
    .option('--force', 'overwrite an existing server certificate (and, with --new-ca, the CA)', false)
    .option('--new-ca', 'with --force: replace an existing CA (every client certificate it issued stops working; to renew the server certificate, use cert renew)', false)
    .option('--key-type <type>', 'the server certificate\'s key: ecdsa (P-256) or rsa (2048 bits, for clients without ECDSA)', 'ecdsa')
    .action(certAction(async (o: { host: string[], dir: string, days: string, crlUrl?: string, force: boolean, newCa: boolean, keyType: string }) => {
      refuseForeignOwner([o.dir], 'cert init')
      out((await commands()).certInit({ dir: o.dir, hosts: o.host, days: Number(o.days), force: o.force, newCa: o.newCa, crlUrl: o.crlUrl, keyType: o.keyType }) + '\n')
      return 0
    }))
  cert.command('renew').description('a new server certificate signed by the existing CA (same names unless --host); replaces server.crt/.key atomically')
    .option('--dir <dir>', 'the CA directory', 'certs')
    .option('--days <n>', 'lifetime (at most 397)', '397')
    .option('--host <name>', 'a DNS name or IP address (repeat for more; default: the names of the current server.crt)', collect)
    .option('--crl-url <url>', 'CRL distribution point (default: the current certificate\'s)')
    .option('--key-type <type>', 'ecdsa (P-256) or rsa (2048 bits) (default: the current certificate\'s, else ecdsa)')
    .action(certAction(async (o: { dir: string, days: string, host?: string[], crlUrl?: string, keyType?: string }) => {
      refuseForeignOwner([o.dir], 'cert renew')
      out((await commands()).certRenew({ dir: o.dir, hosts: o.host ?? [], days: Number(o.days), crlUrl: o.crlUrl, keyType: o.keyType }) + '\n')
      return 0
    }))
  cert.command('crl').description('re-sign the revocation list (certs/ca.crl) with the same entries and a new nextUpdate')
    .option('--dir <dir>', 'the CA directory', 'certs')
    .option('--days <n>', 'until nextUpdate (past it, every client certificate is refused)', '365')
    .action(certAction(async (o: { dir: string, days: string }) => {
      refuseForeignOwner([o.dir], 'cert crl')
      out((await commands()).certCrl({ dir: o.dir, days: Number(o.days) }) + '\n')
      return 0
    }))
  cert.command('client').description('a client certificate (and a PKCS#12 bundle) signed by the CA')
    .requiredOption('--name <cn>', 'the certificate CN (what policy rules grant: certs: [CN=name])')
    .requiredOption('--out <dir>', 'where to write it')
    .option('--dir <dir>', 'the CA directory', 'certs')
    .option('--days <n>', 'lifetime', '365')
    .option('--p12', 'also write a PKCS#12 bundle (needs --password-file)', false)
    .option('--password-file <file>', 'the PKCS#12 password')
    .option('--crl-url <url>', 'CRL distribution point')
    .option('--force', 'overwrite existing files', false)
    .action(certAction(async (o: { name: string, out: string, dir: string, days: string, p12: boolean, passwordFile?: string, crlUrl?: string, force: boolean }) => {
      const password = o.passwordFile ? readFileSync(o.passwordFile, 'utf8').replace(/\r?\n$/, '') : undefined
      refuseForeignOwner([o.dir, o.out], 'cert client')
      out((await commands()).certClient({ dir: o.dir, name: o.name, out: o.out, days: Number(o.days), p12: o.p12, password, force: o.force, crlUrl: o.crlUrl }) + '\n')
      return 0
    }))
  cert.command('revoke').description("add to the CA's revocation list (certs/ca.crl)")
    .option('--cert <file>', 'the certificate to revoke')
    .option('--serial <hex>', 'or its serial number')
    .option('--dir <dir>', 'the CA directory', 'certs')
    .action(certAction(async (o: { cert?: string, serial?: string, dir: string }) => {
      refuseForeignOwner([o.dir], 'cert revoke')
      out((await commands()).certRevoke({ dir: o.dir, certFile: o.cert, serial: o.serial }) + '\n')
      return 0
    }))
  cert.command('show').description('subject, names, issuer, validity, SHA-256; warns within 30 days, exit 1 when expired or not yet valid')
    .argument('[file]', 'a PEM certificate (or chain)', 'certs/server.crt')
    .action(certAction(async (file: string) => {
      const c = await commands()
      out(c.showCertificate(file) + '\n')
      return c.certificateOutOfDate(file) ? 1 : 0
    }))
}

const sealing = async (): Promise<typeof import('./sealing/commands.js')> => await import('./sealing/commands.js')

const retention = async (): Promise<typeof import('./retention/commands.js')> => await import('./retention/commands.js')

/** Runs a retention or hold command: its usage errors exit 2. */
async function retentionRun (fn: () => Promise<number>): Promise<number> {
  return await withUsageErrors(async () => (await retention()).HoldUsageError, fn)
}

/** Asks for the typed confirmation on a terminal; elsewhere --confirm must carry it. */
async function typedConfirmation (expected: string, given: string | undefined): Promise<string | undefined> {
  if (given !== undefined) return given
  if (!process.stdin.isTTY) return undefined
  const { createInterface } = await import('node:readline/promises')
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    return (await rl.question(`This cannot be undone. Type "${expected}" to go on: `)).trim()
  } finally {
    rl.close()
  }
}

/** Where the hold commands write: the ops chain in audit.dir, and the holds file's directory (none with Redis). */
async function holdDirs (c: Readonly<Config>): Promise<string[]> {
  return [c.audit.dir, ...(c.state.redis ? [] : [dirname((await import('./retention/holds-redis.js')).holdsFileOf(c))])]
}

function retentionCommands (program: Command): void {
  const hold = program.command('hold').description('legal holds: recordings under a hold are served past their retention and never erased (state.holdsFile, or Redis with state.redis)')
  hold.command('init').description('an empty legal holds document, so that retention sweep --apply knows there are none (audited)')
    .addOption(configOption(true))
    .action(action(async (o: { config: string }) => { const c = await load(o.config); refuseForeignOwner(await holdDirs(c), 'hold init'); return await retentionRun(async () => await (await retention()).holdInit(c, out)) }))
  hold.command('add').description('place a hold on every recording whose path starts with the prefix (audited)')
    .addOption(configOption(true))
    .requiredOption('--path-prefix <prefix>', 'a recording path prefix, e.g. /medicall/2016/03/ or /medicall/2016/03/14/46701234567')
    .requiredOption('--case <id>', 'the case the hold is for, e.g. 2026-LEGAL-042')
    .requiredOption('--reason <text>', 'why the recordings must be kept')
    .option('--until <time>', 'when the hold lapses (ISO 8601); default: until released')
    .action(action(async (o: { config: string, pathPrefix: string, case: string, reason: string, until?: string }) => {
      const c = await load(o.config)
      refuseForeignOwner(await holdDirs(c), 'hold add')
      return await retentionRun(async () => await (await retention()).holdAdd(c, { prefix: o.pathPrefix, case: o.case, reason: o.reason, until: o.until }, out))
    }))
  hold.command('list').description('the holds in force (--all: lapsed too)')
    .addOption(configOption(true))
    .option('--all', 'lapsed holds too', false)
    .option('--json', 'one JSON document', false)
    .action(action(async (o: { config: string, all: boolean, json: boolean }) => { const c = await load(o.config); return await retentionRun(async () => await (await retention()).holdList(c, o, out)) }))
  hold.command('release').description("release every hold of a case (audited)")
    .addOption(configOption(true))
    .requiredOption('--case <id>', 'the case whose holds end')
    .action(action(async (o: { config: string, case: string }) => { const c = await load(o.config); refuseForeignOwner(await holdDirs(c), 'hold release'); return await retentionRun(async () => await (await retention()).holdRelease(c, o.case, out)) }))
  program.command('retention').description('retention rules at rest (config.retention)')
    .command('sweep').description('report every sealed period (and, with --source, every plaintext recording) against retention and holds; --apply erases: the identity of each expired period without a hold (keyring and sealing.keyBackups), and expired plaintext recordings on the share')
    .addOption(configOption(true))
    .option('--source <dir>', 'the NAS share, mounted on this host (its root is the NAS URL /): plaintext recordings are judged one by one, sealed ones counted per period')
    .option('--apply', 'erase, after a typed confirmation (default: a dry run)', false)
    .option('--confirm <text>', 'with --apply, where no terminal can ask: the exact confirmation the dry run prints ("erase N periods and delete M files")')
    .option('--at <time>', 'judge as of this time (ISO 8601): a preview, refused with --apply')
    .option('--json', 'the plan as one JSON document', false)
    .action(action(async (o: { config: string, source?: string, apply: boolean, confirm?: string, at?: string, json: boolean }) => {
      if (o.at !== undefined && o.apply) throw new UsageError('--at is for a preview: --apply judges as of now')
      if (o.confirm !== undefined && !o.apply) throw new UsageError('--confirm goes with --apply')
      const c = await load(o.config)
      // Even a dry run writes the status the gateway's metrics read.
      refuseForeignOwner([c.audit.dir, ...(o.apply && c.sealing.keyring ? [c.sealing.keyring, ...c.sealing.keyBackups] : [])], 'retention sweep')
      const now = o.at === undefined ? Date.now() : parseTimeMs(o.at)
      return await retentionRun(async () => await (await retention()).retentionSweep(c, { source: o.source, apply: o.apply, json: o.json, now, preview: o.at !== undefined, confirm: async (expected) => await typedConfirmation(expected, o.confirm) }, out, err))
    }))
}

function quotaCommands (program: Command): void {
  const quota = program.command('quota').description('per-subject download budgets (limits.perSubject), asked of the running gateway through its admin listener')
  quota.command('show').description('what a subject used of each budget, in the windows now')
    .addOption(configOption(true))
    .option('--sub <subject>', 'the subject (a token\'s sub, a certificate\'s CN=...)')
    .option('--sub-json <json>', 'the subject as a JSON string, for one a command line cannot carry (e.g. \'"eve\\ud800"\')')
    .option('--json', 'one JSON document', false)
    .action(action(async (o: { config: string, sub?: string, subJson?: string, json: boolean }) => {
      const c = await import('./budgets/commands.js')
      return await c.quotaShow(await load(o.config), c.subjectOf(o), o.json, out)
    }))
  quota.command('reset').description('forget what a subject used (audited by the gateway: event quota-reset)')
    .addOption(configOption(true))
    .option('--sub <subject>', 'the subject')
    .option('--sub-json <json>', 'the subject as a JSON string')
    .action(action(async (o: { config: string, sub?: string, subJson?: string }) => {
      const c = await import('./budgets/commands.js')
      return await c.quotaReset(await load(o.config), c.subjectOf(o), out)
    }))
}

function probeCommand (program: Command): void {
  program.command('probe').description('test addresses the way an attacker or a journalist would, without credentials: plain HTTP on the TLS port, listings, files, TLS versions and ciphers, HSTS, the certificate, banners; exit 1 on any HIGH finding')
    .argument('<url...>', 'https:// (or http://) addresses, e.g. https://nas.example.org/')
    .option('--ca <file>', 'judge the certificate against this CA (PEM) instead of the system store')
    .option('--path <path>', 'a recording (or a directory, ending in /) to ask for without credentials; repeatable', collect, [])
    .addOption(new Option('--format <format>', 'table, json, or prom (for node_exporter\'s textfile collector)').choices(['table', 'json', 'prom']).default('table'))
    .option('--json', 'the same as --format json', false)
    .option('--timeout-ms <ms>', 'for each connection and answer', '5000')
    .option('--deadline-ms <ms>', 'for the whole probe of one URL', '120000')
    .action(action(async (urls: string[], o: { ca?: string, path: string[], format: string, json: boolean, timeoutMs: string, deadlineMs: string }) => {
      const { targetOf } = await import('./probe/net.js')
      for (const u of urls) {
        try { targetOf(u) } catch (e) { throw new UsageError(`invalid URL ${JSON.stringify(u)}: ${(e as Error).message}`) }
      }
      const bad = o.path.find((p) => !p.startsWith('/'))
      if (bad !== undefined) throw new UsageError(`invalid --path ${JSON.stringify(bad)}: a path starts with /`)
      const timeoutMs = Number(o.timeoutMs)
      if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`invalid --timeout-ms ${JSON.stringify(o.timeoutMs)}: a whole number of milliseconds`)
      const deadlineMs = Number(o.deadlineMs)
      if (!Number.isInteger(deadlineMs) || deadlineMs < 1) throw new UsageError(`invalid --deadline-ms ${JSON.stringify(o.deadlineMs)}: a whole number of milliseconds`)
      const ca = o.ca !== undefined ? readFileSync(o.ca) : undefined
      const { probe } = await import('./probe/probe.js')
      const output = await import('./probe/output.js')
      const results = []
      let failed = false
      for (const u of urls) {
        try {
          results.push(await probe(u, { timeoutMs, deadlineMs, ca, paths: o.path }))
        } catch (e) {
          // One target the probe could not finish does not lose the others' findings.
          failed = true
          err(`nasguard: the probe of ${u} could not finish: ${(e as Error).message}\n`)
        }
      }
      const format = o.json ? 'json' : o.format
      out(format === 'json' ? output.jsonOf(results) : format === 'prom' ? await output.promOf(results) : output.tableOf(results))
      return failed || results.some((r) => r.findings.some((f) => f.severity === 'HIGH')) ? 1 : 0
    }))
}

function sealingCommands (program: Command): void {
  const keys = program.command('keys').description('the sealing keyring: one age identity per period (sealing.keyring)')
  keys.command('new').description('make the identity of a period (default: the current one); never replaces one')
    .addOption(configOption(true))
    .option('--period <period>', 'e.g. 2026-11 (as sealing.period says: 2026, 2026-11 or 2026-11-29)')
    .action(action(async (o: { config: string, period?: string }) => {
      const c = await load(o.config)
      refuseForeignOwner([keyringOf(c)], 'keys new')
      out((await sealing()).keysNew(c, o.period))
      return 0
    }))
  keys.command('list').description('periods, key ids and recipients (public)')
    .addOption(configOption(true))
    .action(action(async (o: { config: string }) => { out((await sealing()).keysList(await load(o.config))); return 0 }))
  keys.command('show').description("a period's recipient (what a recorder encrypts to) and its identity file (for age -d -i)")
    .addOption(configOption(true))
    .requiredOption('--period <period>', 'e.g. 2026-11')
    .action(action(async (o: { config: string, period: string }) => { out((await sealing()).keysShow(await load(o.config), o.period)); return 0 }))
  keys.command('rotate').description("re-seal every file of a period to a new identity (<period>.next.key), then retire the old one; resumable")
    .addOption(configOption(true))
    .requiredOption('--period <period>', 'e.g. 2026-11')
    .requiredOption('--source <dir>', 'the NAS share, mounted on this host (its root is the NAS URL /)')
    .option('--jobs <n>', 'files at a time', '2')
    .option('--journal <file>', 'the journal of the run, off the NAS (default: <audit.dir>/rotate-<period>.journal)')
    .action(action(async (o: BulkFlags) => await bulkRun('rotate', o)))
  program.command('seal').description('seal the recordings of a mounted NAS share: each written under its sealed name, verified, optionally the original removed; resumable')
    .addOption(configOption(true))
    .requiredOption('--source <dir>', 'the NAS share, mounted on this host (its root is the NAS URL /)')
    .option('--jobs <n>', 'files at a time', '2')
    .option('--period <period>', 'only the recordings of this period, e.g. 2016-01')
    .option('--dry-run', 'print what would be sealed; write nothing, make no key', false)
    .option('--remove-plaintext', 'remove each original once its sealed file is verified', false)
    .option('--journal <file>', 'the journal of the run, off the NAS (default: <audit.dir>/seal.journal)')
    .action(action(async (o: BulkFlags) => await bulkRun('seal', o)))
  const names = program.command('names').description("recordings' sealed names on the NAS")
  names.command('encode').description('the NAS name of a recording path')
    .addOption(configOption(true))
    .argument('<path>', 'e.g. /medicall/2026/11/29/101500_46701234567.wav')
    .action(action(async (path: string, o: { config: string }) => { out((await sealing()).namesEncode(await load(o.config), path)); return 0 }))
  names.command('decode').description('the recording path of a NAS name; exit 1 when it does not decode with this keyring')
    .addOption(configOption(true))
    .argument('<path>', 'a sealed path as the NAS lists it')
    .action(action(async (path: string, o: { config: string }) => {
      const plain = (await sealing()).namesDecode(await load(o.config), path)
      if (plain === undefined) { err('nasguard: not a sealed name of this keyring (another key, another directory, or altered)\n'); return 1 }
      out(plain + '\n')
      return 0
    }))
}

interface BulkFlags { config: string, source: string, jobs: string, period?: string, journal?: string, dryRun?: boolean, removePlaintext?: boolean }

/** nasguard seal and keys rotate: JSON lines unless stdout is a terminal; exit 1 when a file failed. */
async function bulkRun (command: 'seal' | 'rotate', o: BulkFlags): Promise<number> {
  const c = await load(o.config)
  const s = await sealing()
  const opts = { source: o.source, jobs: Number(o.jobs), period: o.period, journal: o.journal, dryRun: o.dryRun, removePlaintext: o.removePlaintext }
  const problem = s.bulkOptionProblem(c, opts, command)
  if (problem !== undefined) throw new UsageError(problem)
  if (o.dryRun !== true) refuseForeignOwner([keyringOf(c), dirname(resolvePath(s.journalOf(c, opts, command)))], command === 'seal' ? 'seal' : 'keys rotate')
  // The run's record goes to the audit trail's operator chain (a dry run writes nothing, there either).
  const record = o.dryRun === true ? undefined : async (r: import('./sealing/bulk/run.js').SealRunRecord) => { await (await import('./audit/operator-events.js')).recordOperatorEvent(c.audit, r) }
  const io = { out, tty: process.stdout.isTTY === true, record }
  return command === 'seal' ? await s.seal(c, opts, io) : await s.keysRotate(c, opts, io)
}

function keyringOf (c: Readonly<Config>): string {
  if (!c.sealing.keyring) throw new UsageError('sealing.keyring is not set in the config')
  return c.sealing.keyring
}

/** The exit code for an error that reached the top. */
function failure (e: unknown): number {
  if (e instanceof CommanderError) {
    // --help and --version end here too, having printed what was asked.
    return e.exitCode === 0 ? 0 : 2
  }
  if (e instanceof UsageError) {
    err(`nasguard: ${e.message}\n(nasguard --help lists the commands)\n`)
    return 2
  }
  // A ConfigError (src/config/load.ts, loaded only by the commands that read a config) names its keys itself.
  if ((e as Error).name === 'ConfigError') err((e as Error).message + '\n')
  else err(`nasguard: ${(e as Error).message}\n`)
  return 1
}

// `nasguard audit search ... | head`: a reader that stops early is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0)
  throw e
})

async function main (argv: string[]): Promise<void> {
  // A worker of `workers: N`: its config comes from the primary.
  if (cluster.isWorker) {
    const { runWorker } = await import('./worker.js')
    await runWorker()
    return
  }
  const program = buildProgram()
  if (argv.length === 0) {
    program.outputHelp({ error: true })
    process.exitCode = 2
    return
  }
  await program.parseAsync(argv, { from: 'user' })
}

main(process.argv.slice(2)).catch((e: unknown) => { process.exitCode = failure(e) })
