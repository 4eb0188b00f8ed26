// nasguard retention sweep through the built CLI (npm run build first), on
// a real keyring, a copy of it (sealing.keyBackups) and a mounted share:
// - The dry run changes nothing (every byte of keyring, backup and share
//   the same) and writes the status the metrics read. --apply refuses with
//   no holds document (exit 1), with no --confirm off a terminal, a wrong
//   one, or the dry run's phrase once a hold placed since changed the
//   plan (exit 2), each changing nothing. With the phrase it erases exactly
//   the expired period without a hold and deletes exactly the expired
//   plaintext recording without a hold; notes.txt and young recordings stay.
// - After it, Debian's `age -d` opens the erased period's sealed file with
//   no file left in the keyring or the backup, and a kept period's still
//   opens; a running gateway answers 410 NASGUARD_ERR_RECORDING_ERASED for
//   it without a SIGHUP (it watches the keyring), over HTTP/1.1 and
//   HTTP/2, and does not ask the NAS.
// - A hold on the period, a day in it, part of a file name in it, or the
//   period in another case (folding NAS) keeps the whole period; a lapsed
//   one does not; under upstream.fileSystem posix the other case does not.
// - A holds file edited by a byte: hold list and sweep fail naming it.
// - A key backup not mounted: the keyring's key is destroyed, the backup's
//   is said to be NOT, and a rerun once it is mounted destroys it.
// - The audit trail verifies, with one erasure event per period and per
//   deleted file, and a hold event per hold placed and released.
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, watch, writeFileSync, type FSWatcher } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, relative } from 'node:path'
import { loadAuditKey } from '../../src/audit/key.js'
import { auditKeyFile } from '../../src/config/derived.js'
import { loadConfig } from '../../src/config/load.js'
import { holdAdd as addHold, retentionSweep, type SweepOptions } from '../../src/retention/commands.js'
import { EMPTY_HOLDS, changeHolds, fileHoldsStore, holdsKeyOf } from '../../src/retention/holds.js'
import { compileRetention } from '../../src/retention/rules.js'
import { walkShare } from '../../src/retention/sweep.js'
import { diskPathOf } from '../../src/sealing/bulk/durable.js'
import { eraseKey, initKeyring, Keyring, lockKeyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { bearer, scrape, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { runCli, type Run } from '../helpers/process.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { waitFor } from '../helpers/wait.js'

/** This month: kept for 365 days after its end. */
const YOUNG = new Date().toISOString().slice(0, 7)
const [YY, YM] = YOUNG.split('-')

/** Sealed recordings, one per period. */
const OLD_SEALED = '/medicall/2016/01/14/101500_46701234567.wav'
const HELD_SEALED = '/medicall/2016/02/03/090000_46709876543.wav'
const YOUNG_SEALED = `/medicall/${YY}/${YM}/01/120000_46700000001.wav`
/** Plaintext on the share: one expired, one expired under the hold placed later, one young, and a file that is not a recording. */
const OLD_PLAIN = '/medicall/2016/03/14/101500_46701111111.wav'
const HELD_PLAIN = '/medicall/2016/02/20/081500_46703333333.wav'
const YOUNG_PLAIN = `/medicall/${YY}/${YM}/01/130000_46702222222.wav`
const NOTES = '/medicall/2016/03/14/notes.txt'

const RETENTION = `[{ name: calls, path: "/medicall/{yyyy}/{mm}/{dd}/**", keepDays: 365 }, { name: month, path: "/medicall/{yyyy}/{mm}/**", keepDays: 365 }]`

interface Sealed { nasPath: string, disk: string, plain: Buffer }

interface Site {
  dir: string
  root: string
  keyring: string
  backup: string
  audit: string
  config: string
  sealed: Map<string, Sealed>
  plain: Map<string, Buffer>
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function configText (s: Pick<Site, 'dir' | 'audit' | 'keyring' | 'backup'>, fileSystem = 'folding'): string {
  return `listen: { port: 8443 }
tls: { cert: ${testCerts().cert}, key: ${testCerts().key} }
upstream: { url: "http://127.0.0.1:1", fileSystem: ${fileSystem} }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: "/medicall/**", scopes: [recordings:read] }]
audit: { dir: ${s.audit} }
sealing: { mode: migrate, keyring: ${s.keyring}, periodPattern: "${PATTERN}", keyBackups: [${s.backup}] }
retention: ${RETENTION}
`
}

/** A keyring with these periods, a copy of it (the key backup), a share with these recordings (sealed with nasguard's SealStream, or plain), and a config. */
async function makeSite (o: { periods: string[], sealed?: string[], plain?: string[] }): Promise<Site> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-sweep-'))
  const s = { dir, root: join(dir, 'share'), keyring: join(dir, 'keyring'), backup: join(dir, 'backup'), audit: join(dir, 'audit'), config: join(dir, 'nasguard.yaml'), sealed: new Map<string, Sealed>(), plain: new Map<string, Buffer>() }
  initKeyring(s.keyring)
  for (const p of o.periods) newPeriodKey(s.keyring, 'month', p)
  chmodSync(s.keyring, 0o700)
  mkdirSync(s.backup, { mode: 0o700 })
  for (const name of readdirSync(s.keyring)) {
    copyFileSync(join(s.keyring, name), join(s.backup, name))
    chmodSync(join(s.backup, name), 0o600)
  }
  const put = (disk: string, body: Buffer): void => { mkdirSync(dirname(disk), { recursive: true }); writeFileSync(disk, body) }
  const ring = Keyring.load(s.keyring)
  for (const p of o.sealed ?? []) {
    const segments = p.split('/').slice(1)
    const plain = randomBytes(3000)
    const nasPath = sealedName(ring, p)
    const disk = diskPathOf(s.root, nasPath)
    put(disk, await sealBytes(ring, `${segments[1]}-${segments[2]}`, p, plain))
    s.sealed.set(p, { nasPath, disk, plain })
  }
  for (const p of o.plain ?? []) {
    const body = p.endsWith('.txt') ? Buffer.from('not a recording\n') : randomBytes(2000)
    put(join(s.root, p), body)
    s.plain.set(p, body)
  }
  mkdirSync(s.root, { recursive: true })
  // As a gateway that ran here leaves it (the last test has a host where none ran yet).
  mkdirSync(s.audit, { mode: 0o700 })
  writeFileSync(s.config, configText(s))
  return s
}

/** Every file under the keyring, the backup and the share, with its SHA-256: what "changed nothing" compares. */
function state (s: Site): Map<string, string> {
  const out = new Map<string, string>()
  const visit = (d: string): void => {
    if (!existsSync(d)) return
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) visit(p)
      else out.set(relative(s.dir, p), sha(readFileSync(p)))
    }
  }
  for (const d of [s.keyring, s.backup, s.root]) visit(d)
  return out
}

const sorted = (m: Map<string, string>): string[] => [...m].map(([k, v]) => `${k} ${v}`).sort()

async function cli (s: Site, ...args: string[]): Promise<Run> {
  return await runCli([...args, '--config', s.config])
}

async function sweep (s: Site, ...args: string[]): Promise<Run> {
  return await runCli(['retention', 'sweep', '--config', s.config, ...args])
}

function phraseOf (r: Run): string {
  const m = /^to erase: (.+)$/m.exec(r.stdout)
  if (!m) throw new Error(`no "to erase:" line in ${r.stdout}${r.stderr}`)
  return m[1]
}

async function holdAdd (t: Test, s: Site, prefix: string, caseId: string, config = s.config): Promise<void> {
  const r = await runCli(['hold', 'add', '--config', config, '--path-prefix', prefix, '--case', caseId, '--reason', 'litigation'])
  t.equal(r.status, 0, `hold add ${prefix} (${r.stderr.trim()})`)
}

/**
 * Another process holding dir's shared keyring lock (an upload being sealed
 * there): once a sweep holds dir's exclusive lock and waits for it, it
 * places a hold (the CLI), and only then lets go. Resolves once it holds the lock.
 */
async function holdUnderLock (s: Site, dir: string, prefix: string, caseId: string): Promise<{ said: () => string, exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import { existsSync } from 'node:fs'
    import { spawnSync } from 'node:child_process'
    import { lockKeyring } from ${JSON.stringify(join(process.cwd(), 'dist/sealing/keyring.js'))}
    const unlock = lockKeyring(${JSON.stringify(dir)}, 'shared')
    process.stdout.write('locked\\n')
    while (!existsSync(${JSON.stringify(join(dir, '.keyring.lock'))})) await new Promise((r) => setTimeout(r, 20))
    const r = spawnSync(process.execPath, [${JSON.stringify(join(process.cwd(), 'dist/cli.js'))}, 'hold', 'add', '--config', ${JSON.stringify(s.config)}, '--path-prefix', ${JSON.stringify(prefix)}, '--case', ${JSON.stringify(caseId)}, '--reason', 'placed during the erasure'])
    process.stdout.write('hold ' + r.status + '\\n')
    unlock()
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  let said = ''
  child.stdout.on('data', (d: Buffer) => { said += d.toString() })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  await waitFor('the other process to hold the shared lock', () => said.includes('locked') ? true : undefined, { tries: 400, intervalMs: 50 })
  return { said: () => said, exited }
}

/** `retention sweep --apply --confirm <phrase>` run by the command's own function, in this process. */
async function sweepHere (s: Site, o: Partial<SweepOptions> = {}): Promise<Run> {
  let stdout = ''
  let stderr = ''
  const status = await retentionSweep(loadConfig({ file: s.config, env: {} }), { apply: true, json: false, now: Date.now(), confirm: async (expected) => expected, ...o }, (x) => { stdout += x }, (x) => { stderr += x })
  return { status, stdout, stderr } as Run
}

/** The records of one event in the site's trail (audit search --json). */
async function events (t: Test, s: Site, event: string): Promise<Array<Record<string, unknown>>> {
  const r = await cli(s, 'audit', 'search', '--event', event, '--json')
  t.equal(r.status, 0, `audit search --event ${event}`)
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Whether Debian's age opens `file` with the identities in `identityFile`: its plaintext, or undefined. */
function ageOpens (identityFile: string, file: string): Buffer | undefined {
  const r = spawnSync('age', ['-d', '-i', identityFile, file], { maxBuffer: 1 << 24 })
  return r.status === 0 ? r.stdout : undefined
}

/** Every file left in these directories: each is tried as an identity file. */
function filesIn (...dirs: string[]): string[] {
  return dirs.flatMap((d) => readdirSync(d).map((n) => join(d, n)).filter((f) => statSync(f).isFile()))
}

/** The period's sealed file opens with none of them; returns how many were tried. */
function opensWithNone (t: Test, s: Site, path: string): void {
  const files = filesIn(s.keyring, s.backup)
  const opening = files.filter((f) => ageOpens(f, (s.sealed.get(path) as Sealed).disk) !== undefined)
  t.same(opening, [], `age -d opens ${path.slice(0, 18)}… with none of the ${files.length} files left in the keyring and the backup`)
}

function opensWith (t: Test, s: Site, path: string, keyFile: string): void {
  const f = s.sealed.get(path) as Sealed
  t.same(ageOpens(keyFile, f.disk), f.plain, `age -d -i ${relative(s.dir, keyFile)} opens ${path.slice(0, 18)}…`)
}

function periodLine (r: Run, period: string): string {
  return r.stdout.split('\n').find((l) => l.startsWith(period + ' ')) ?? ''
}

t.test('dry run, refusals, then --apply erases exactly what expired; the erased period opens nowhere and a gateway answers 410 without a SIGHUP', async (t) => {
  const s = await makeSite({ periods: ['2016-01', '2016-02', YOUNG], sealed: [OLD_SEALED, HELD_SEALED, YOUNG_SEALED], plain: [OLD_PLAIN, HELD_PLAIN, YOUNG_PLAIN, NOTES] })
  const before = state(s)
  const oldKeyId = Keyring.load(s.keyring).key('2016-01')?.keyId as string

  // A gateway on this keyring, serving the sealed files from a NAS that counts what it is asked.
  const mem = memoryNas()
  for (const f of s.sealed.values()) mem.files.set(f.nasPath, readFileSync(f.disk))
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: s.keyring, periodPattern: PATTERN } })
  for (const p of [OLD_SEALED, HELD_SEALED, YOUNG_SEALED]) {
    const res = await fetchAs('h1', gw, p, bearer(gw.token()))
    t.equal(res.status, 200, `before the sweep the gateway serves ${p.slice(0, 18)}…`)
    t.same(res.body, s.sealed.get(p)?.plain)
  }

  // No holds document: the dry run says so; --apply refuses.
  const dry0 = await sweep(s, '--source', s.root)
  t.equal(dry0.status, 0, 'dry run without a holds document')
  t.match(dry0.stdout, /legal holds: no document yet \(nasguard hold init\)/)
  const phrase0 = phraseOf(dry0)
  t.equal(phrase0, 'erase 2 periods and delete 2 files', 'the dry run names what --apply would destroy')
  t.match(periodLine(dry0, '2016-01'), /^2016-01\s+expired\s/)
  t.match(periodLine(dry0, '2016-02'), /^2016-02\s+expired\s/)
  t.match(periodLine(dry0, YOUNG), new RegExp(`^${YOUNG}\\s+kept\\s`))
  t.match(dry0.stdout, /plaintext recordings: 2 past retention, 0 held past retention, 1 within retention, 0 under no rule/)
  t.notOk(/4670\d{7}/.test(dry0.stdout + dry0.stderr), 'no file name (phone number) in the output')
  t.same(sorted(state(s)), sorted(before), 'the dry run changed no byte of keyring, backup or share')
  t.match(JSON.parse(readFileSync(join(s.audit, 'retention-status.json'), 'utf8')), { overduePeriods: 2, overdueRecordings: 2, applied: false }, 'the status file holds the overdue counts')
  const noDoc = await sweep(s, '--source', s.root, '--apply', '--confirm', phrase0)
  t.equal(noDoc.status, 1, '--apply without a holds document: exit 1')
  t.match(noDoc.stderr, /no legal holds document at .*legal-holds\.json.*nasguard hold init/)
  t.same(sorted(state(s)), sorted(before), 'nothing erased')

  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  const dry = await sweep(s, '--source', s.root)
  t.equal(phraseOf(dry), phrase0)
  // Off a terminal, without --confirm; then a wrong one.
  // (Both at once: neither may change anything.)
  const [bare, wrong] = await Promise.all([sweep(s, '--source', s.root, '--apply'), sweep(s, '--source', s.root, '--apply', '--confirm', 'erase 2 periods and delete 1 file')])
  t.equal(bare.status, 2, '--apply off a terminal without --confirm: exit 2')
  t.match(bare.stderr, `not confirmed: type exactly "${phrase0}"`)
  t.equal(wrong.status, 2, 'a wrong --confirm: exit 2')
  t.match(wrong.stderr, /nothing was changed/)
  t.same(sorted(state(s)), sorted(before), 'neither changed anything')

  // A hold placed after the dry run: --apply plans again, the dry run's phrase no longer names
  // what it would do, and nothing at all is erased (the safe outcome).
  await holdAdd(t, s, '/medicall/2016/02/', 'CASE-7')
  const late = await sweep(s, '--source', s.root, '--apply', '--confirm', phrase0)
  t.equal(late.status, 2, 'the dry run\'s phrase after a hold was placed: exit 2')
  t.match(late.stderr, 'not confirmed: type exactly "erase 1 period and delete 1 file"')
  t.same(sorted(state(s)), sorted(before), 'nothing erased, the held period least of all')

  const dry2 = await sweep(s, '--source', s.root)
  t.match(periodLine(dry2, '2016-02'), /^2016-02\s+held\s.*CASE-7/)
  const applied = await sweep(s, '--source', s.root, '--apply', '--confirm', phraseOf(dry2))
  t.equal(applied.status, 0, `--apply with the phrase (${applied.stderr.trim()})`)
  t.match(applied.stdout, `period 2016-01: identity destroyed (${oldKeyId})`)
  t.match(applied.stdout, 'erased 1 period(s), deleted 1 file(s)')
  t.notOk(/4670\d{7}/.test(applied.stdout + applied.stderr), 'no file name (phone number) in the output')

  // Exactly this changed: 2016-01's key gone from keyring and backup (a tombstone without a secret in its place), and the expired plaintext file.
  const after = state(s)
  const expected = new Map(before)
  for (const gone of ['keyring/2016-01.key', 'backup/2016-01.key', join('share', OLD_PLAIN)]) t.ok(expected.delete(gone), `${gone} was there`)
  for (const d of [s.keyring, s.backup]) {
    const tomb = join(d, '2016-01.erased')
    t.ok(existsSync(tomb), `${relative(s.dir, tomb)} left`)
    t.notMatch(readFileSync(tomb, 'utf8'), /AGE-SECRET-KEY/, 'the tombstone holds no secret')
    expected.set(relative(s.dir, tomb), after.get(relative(s.dir, tomb)) as string)
  }
  t.same(sorted(after), sorted(expected), 'nothing else changed: 2016-02 (held) and this month\'s keys, the sealed files, the held and young plaintext, notes.txt')
  t.match(JSON.parse(readFileSync(join(s.audit, 'retention-status.json'), 'utf8')), { overduePeriods: 0, overdueRecordings: 0, applied: true })

  // Debian's age: the erased period opens with nothing left; the kept ones with their keys.
  opensWithNone(t, s, OLD_SEALED)
  opensWith(t, s, HELD_SEALED, join(s.keyring, '2016-02.key'))
  opensWith(t, s, YOUNG_SEALED, join(s.backup, `${YOUNG}.key`))

  // The running gateway: 410 once it has seen the tombstone (no SIGHUP), and the NAS is not asked.
  const old = s.sealed.get(OLD_SEALED) as Sealed
  await waitFor('the gateway to answer 410 for the erased period', async () => (await fetchAs('h1', gw, OLD_SEALED, bearer(gw.token()))).status === 410 ? true : undefined, { tries: 1500, intervalMs: 20 })
  const asked = (): number => nas.requests.filter((r) => r.url === old.nasPath).length
  const n = asked()
  for (const proto of PROTOCOLS) {
    for (const method of ['GET', 'HEAD']) {
      const res = await fetchAs(proto, gw, OLD_SEALED, bearer(gw.token()), method)
      t.equal(res.status, 410, `${proto} ${method}: 410`)
      if (method === 'GET') t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_RECORDING_ERASED', `${proto}: NASGUARD_ERR_RECORDING_ERASED`)
    }
    for (const p of [HELD_SEALED, YOUNG_SEALED]) {
      const res = await fetchAs(proto, gw, p, bearer(gw.token()))
      t.equal(res.status, 200, `${proto}: a kept period is still served`)
      t.same(res.body, s.sealed.get(p)?.plain)
    }
  }
  t.equal(asked(), n, 'the NAS was not asked for the erased recording')

  // The trail: intact; one erasure event for the period (with its key id) and one for the file; the hold's event.
  const [verify, erasures, holds, sweeps] = await Promise.all([cli(s, 'audit', 'verify'), events(t, s, 'erasure'), events(t, s, 'hold'), events(t, s, 'retention-sweep')])
  t.equal(verify.status, 0, `audit verify passes (${verify.stdout.trim()} ${verify.stderr.trim()})`)
  t.equal(erasures.length, 3, 'three erasure events: the period\'s before and after its identity was destroyed, and the file\'s')
  t.match(erasures.filter((e) => e.period !== undefined), [
    { period: '2016-01', keyId: oldKeyId, reason: /destroying the identity in the keyring and 1 backup\(s\)/ },
    { period: '2016-01', keyId: oldKeyId, reason: /identity destroyed in the keyring and 1 of 1 backup/ }
  ], 'the period\'s: the one written before anything was destroyed, then the outcome')
  t.match(erasures.find((e) => e.path !== undefined), { path: OLD_PLAIN, reason: /deleted from the NAS/ })
  t.match(holds.find((e) => e.case === 'CASE-7'), { case: 'CASE-7', path: '/medicall/2016/02/', reason: 'add: litigation' })
  t.match(sweeps.filter((e) => e.reason !== 'dry run'), [{ counts: { erased: 1, deleted: 1, held: 0, failed: 0 }, reason: 'applied' }], 'one sweep record, for the one --apply that ran')
  t.ok(sweeps.some((e) => e.reason === 'dry run' && typeof (e.counts as { generation?: unknown } | undefined)?.generation === 'number'), 'a dry run records the holds generation it read')
})

t.test('what the gateway exports: a sweep without --source keeps the last walk\'s plaintext count; old periods the sweep cannot judge are counted, a held one not', async (t) => {
  const s = await makeSite({ periods: ['2016-01', '2016-02', YOUNG], sealed: [OLD_SEALED, HELD_SEALED, YOUNG_SEALED], plain: [OLD_PLAIN, HELD_PLAIN, YOUNG_PLAIN, NOTES] })
  const nas = await startStubNas(t, (_req, res) => { res.statusCode = 404; res.end() })
  // The gateway reads the status from its audit.dir at each scrape: the directory the sweep writes to.
  const gw = await startTestGateway(t, nas, { audit: { dir: s.audit } })
  const gauges = async (): Promise<Record<string, number | undefined>> => {
    const m = await scrape(gw.adminUrl)
    return { recordings: m.get('nasguard_retention_overdue{what="recordings"}'), periods: m.get('nasguard_retention_overdue{what="periods"}'), undetermined: m.get('nasguard_retention_undetermined_periods') }
  }
  const status = (): Record<string, unknown> => JSON.parse(readFileSync(join(s.audit, 'retention-status.json'), 'utf8')) as Record<string, unknown>
  const run = async (...args: string[]): Promise<Run> => {
    const r = await sweep(s, ...args)
    t.equal(r.status, 0, `retention sweep ${args.join(' ')} (${r.stderr.trim()})`)
    return r
  }

  t.same(await gauges(), { recordings: undefined, periods: undefined, undetermined: 0 }, 'before any sweep: no overdue series')
  await run()
  t.same(await gauges(), { recordings: undefined, periods: 2, undetermined: 0 }, 'a dry run without --source: the periods; no plaintext series, as no sweep looked at the share')
  await run('--source', s.root)
  t.same(await gauges(), { recordings: 2, periods: 2, undetermined: 0 }, 'with --source: the plaintext recordings past retention')
  const walked = status().recordingsTime
  t.type(walked, 'number', 'the status says when the share was walked')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_retention_share_walk_timestamp_seconds'), (walked as number) / 1000, 'and the gateway exports it')
  await run()
  t.same(await gauges(), { recordings: 2, periods: 2, undetermined: 0 }, 'the next dry run without --source does not reset the plaintext count to 0')
  t.equal(status().recordingsTime, walked, 'and still says when the share was last walked')
  const written = readFileSync(join(s.audit, 'retention-status.json'), 'utf8')
  await run('--source', s.root, '--at', '2000-01-01T00:00:00Z')
  t.equal(readFileSync(join(s.audit, 'retention-status.json'), 'utf8'), written, 'a preview at another time (--at) leaves the status as it was')
  t.same(await gauges(), { recordings: 2, periods: 2, undetermined: 0 }, 'so it cannot make the metrics say nothing is overdue')

  // Rules the sweep cannot date a sealed period by: a Last-Modified rule over all of it.
  // 2016-01 and 2016-02 would be long past retention; this month is not; no period is erasable.
  writeFileSync(s.config, configText(s).replace(RETENTION, '[{ name: by-nas, path: "/medicall/**", keepDays: 365 }]'))
  const lm = await run()
  for (const p of ['2016-01', '2016-02', YOUNG]) t.match(periodLine(lm, p), new RegExp(`^${p}\\s+undetermined\\s`), `${p} is undetermined`)
  t.same(await gauges(), { recordings: 2, periods: 0, undetermined: 2 }, 'the two old undetermined periods are counted, this month\'s is not')
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  await holdAdd(t, s, '/medicall/2016/02/', 'CASE-9')
  await run()
  t.same(await gauges(), { recordings: 2, periods: 0, undetermined: 1 }, 'a hold on one of them takes it out of the count')
  // A rule that dates by the path again, but covers no period whole: without --source each is undetermined, with it judged.
  writeFileSync(s.config, configText(s).replace(RETENTION, '[{ name: calls, path: "/medicall/{yyyy}/{mm}/{dd}/**", keepDays: 365 }]'))
  await run()
  t.same(await gauges(), { recordings: 2, periods: 0, undetermined: 1 }, 'a rule covering no period whole, swept without --source: still undetermined')
  await run('--source', s.root)
  t.same(await gauges(), { recordings: 1, periods: 1, undetermined: 0 }, 'swept with --source: judged, 2016-01 overdue; 2016-02 and its plaintext held')
  // The status gone (or unreadable): no stale count stays exported, and the last sweep reads as never (the stale-sweep alert fires).
  rmSync(join(s.audit, 'retention-status.json'))
  t.same(await gauges(), { recordings: undefined, periods: undefined, undetermined: 0 }, 'the status file removed: the overdue series are dropped')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_retention_last_sweep_timestamp_seconds'), 0, 'and the last sweep reads 0')
})

t.test('a hold on the period, a day, part of a file name, or another case of it keeps the whole period; a lapsed one does not', async (t) => {
  const s = await makeSite({ periods: ['2016-01', '2016-02', YOUNG] })
  t.equal((await cli(s, 'hold', 'init')).status, 0)
  await holdAdd(t, s, '/medicall/2016/02/', 'KEEP-02')
  const nothing = 'erase 0 periods and delete 0 files'
  const key = holdsKeyOf(loadAuditKey(auditKeyFile({ audit: { dir: s.audit } })))
  const store = fileHoldsStore(join(s.audit, 'legal-holds.json'))
  const prefixes = ['/medicall/2016/01/', '/medicall/2016/01/14/', '/medicall/2016/01/14/4670123', '/MEDICALL/2016/01/']
  for (const [i, prefix] of prefixes.entries()) {
    if (i === 0) await holdAdd(t, s, prefix, `HOLD-${i}`)
    else t.equal(await addHold(loadConfig({ file: s.config, env: {} }), { prefix, case: `HOLD-${i}`, reason: 'litigation' }, () => {}), 0, `hold add ${prefix} (in this process)`)
    // Had the hold not counted, the plan would be "erase 1 period": this phrase would not match (exit 2).
    // The first through the command line; the rest through the same command's code in this process (each process costs CPU the suite does not have).
    const r = i === 0 ? await sweep(s, '--apply', '--confirm', nothing) : await sweepHere(s, { confirm: async () => nothing })
    t.equal(r.status, 0, `${prefix}: --apply has nothing to erase (${r.stderr.trim()})`)
    t.match(periodLine(r, '2016-01'), new RegExp(`^2016-01\\s+held\\s.*HOLD-${i}`), `${prefix}: 2016-01 held by HOLD-${i}`)
    t.ok(existsSync(join(s.keyring, '2016-01.key')), `${prefix}: the period's key is kept`)
    if (i === 0) {
      const rel = await cli(s, 'hold', 'release', '--case', `HOLD-${i}`)
      t.equal(rel.status, 0, 'hold release')
    } else {
      // (Released directly: one CLI release is enough to see its event, and each run costs half a second of CPU.)
      await changeHolds(store, key, (d) => ({ ...d, holds: d.holds.filter((h) => h.case !== `HOLD-${i}`) }))
    }
  }

  // A lapsed hold (the CLI refuses an --until in the past, so it is written directly, as a hold that ran out).
  await changeHolds(store, key, (d) => ({ ...d, holds: [...d.holds, { case: 'LAPSED', prefix: '/medicall/2016/01/', reason: 'ran out', until: new Date(Date.now() - 60_000).toISOString(), at: new Date(Date.now() - 86_400_000).toISOString(), by: 'test' }] }))
  const list = await cli(s, 'hold', 'list', '--all')
  t.match(list.stdout, /LAPSED\t\/medicall\/2016\/01\/\t.*\(lapsed\)/, 'hold list --all shows it lapsed')
  const lapsed = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(lapsed.status, 0, `a lapsed hold: 2016-01 erased (${lapsed.stderr.trim()})`)
  t.notOk(existsSync(join(s.keyring, '2016-01.key')), '2016-01\'s key destroyed')
  t.ok(existsSync(join(s.keyring, '2016-02.key')), '2016-02 (KEEP-02) kept')

  // The other case holds only because names fold: under posix it does not.
  t.equal((await cli(s, 'hold', 'release', '--case', 'KEEP-02')).status, 0)
  const posix = join(s.dir, 'posix.yaml')
  writeFileSync(posix, configText(s, 'posix'))
  await holdAdd(t, s, '/MEDICALL/2016/02/', 'UPPER', posix)
  const p = await runCli(['retention', 'sweep', '--config', posix, '--apply', '--confirm', 'erase 1 period and delete 0 files'])
  t.equal(p.status, 0, `posix: /MEDICALL/2016/02/ does not hold /medicall/2016/02/ (${p.stderr.trim()})`)
  t.notOk(existsSync(join(s.keyring, '2016-02.key')), 'so 2016-02 is erased')
  t.ok(existsSync(join(s.keyring, `${YOUNG}.key`)), 'this month is kept')

  const [holds, verify] = await Promise.all([events(t, s, 'hold'), cli(s, 'audit', 'verify')])
  t.match(holds.filter((e) => e.case === 'HOLD-0'), [{ path: prefixes[0], reason: 'add: litigation' }, { path: prefixes[0], reason: 'release' }], 'an add and a release event, each with case and path')
  for (const [i, prefix] of prefixes.entries()) t.match(holds.filter((e) => e.case === `HOLD-${i}`)[0], { path: prefix, reason: 'add: litigation' }, `HOLD-${i}: an add event with case and path`)
  t.equal(verify.status, 0, 'audit verify passes')
})

t.test('a holds file edited by one byte: hold list and the sweep fail naming it, and nothing is erased', async (t) => {
  const s = await makeSite({ periods: ['2016-01'] })
  t.equal((await cli(s, 'hold', 'init')).status, 0)
  await holdAdd(t, s, '/medicall/2016/01/', 'CASE-T')
  const file = join(s.audit, 'legal-holds.json')
  const text = readFileSync(file, 'utf8')
  t.ok(text.includes('"reason":"litigation"'))
  writeFileSync(file, text.replace('"reason":"litigation"', '"reason":"litigatioN"'))
  const list = await cli(s, 'hold', 'list')
  t.equal(list.status, 1, 'hold list: exit 1')
  t.match(list.stderr, `${file} does not verify`)
  // The phrase an --apply that took the edited file for "no holds" would want.
  const r = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(r.status, 1, 'sweep --apply: exit 1')
  t.match(r.stderr, `${file} does not verify`)
  t.ok(existsSync(join(s.keyring, '2016-01.key')), 'nothing erased')
})

t.test('a key backup not mounted: the keyring\'s key is destroyed, the backup\'s is NOT and is said so; a rerun once it is mounted destroys it', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0)
  const keyId = Keyring.load(s.keyring).key('2016-01')?.keyId as string
  const unmounted = s.backup + '.unmounted'
  renameSync(s.backup, unmounted)
  const one = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(one.status, 1, 'exit 1')
  t.match(one.stderr, `period 2016-01: the key backup ${s.backup} could not be reached`)
  t.match(one.stderr, 'its copy of the key was NOT destroyed; rerun the sweep once it is mounted')
  t.notOk(existsSync(join(s.keyring, '2016-01.key')), 'the keyring\'s key is destroyed')
  t.ok(existsSync(join(unmounted, '2016-01.key')), 'the backup\'s is still there')
  t.match(JSON.parse(readFileSync(join(s.audit, 'retention-status.json'), 'utf8')), { overduePeriods: 1, applied: true }, 'still overdue for the metrics')
  const first = (await events(t, s, 'erasure')).filter((e) => e.period === '2016-01')
  t.equal(first.length, 2, 'before, and after')
  t.match(first[1], { keyId, reason: new RegExp(`and 0 of 1 backup\\(s\\); NOT in ${s.backup.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) })

  renameSync(unmounted, s.backup)
  opensWith(t, s, OLD_SEALED, join(s.backup, '2016-01.key'))
  const dry = await sweep(s)
  const line = periodLine(dry, '2016-01')
  t.match(line, /^2016-01\s+erased\s/)
  t.equal(phraseOf(dry), 'erase 1 period and delete 0 files', 'the rerun plans to destroy the backup\'s copy')
  const two = await sweep(s, '--apply', '--confirm', phraseOf(dry))
  t.equal(two.status, 0, `the rerun: exit 0 (${two.stderr.trim()})`)
  t.notOk(existsSync(join(s.backup, '2016-01.key')), 'the backup\'s key is destroyed')
  t.ok(existsSync(join(s.backup, '2016-01.erased')), 'and a tombstone left there')
  opensWithNone(t, s, OLD_SEALED)
  opensWith(t, s, YOUNG_SEALED, join(s.keyring, `${YOUNG}.key`))
  const last = (await events(t, s, 'erasure')).filter((e) => e.period === '2016-01')
  t.equal(last.length, 4, 'the rerun records the period again, before and after')
  t.match(last[2].reason, /destroying the identity in the backups left and 1 backup/)
  t.match(last[3].reason, /1 of 1 backup/)
  t.notMatch(last[3].reason, /NOT in/)
  t.equal(phraseOf(await sweep(s)), 'erase 0 periods and delete 0 files', 'then nothing is left to erase')
})

t.test('the audit trail cannot be written when --apply starts: nothing is destroyed, so no identity or recording is gone without a record', async (t) => {
  const sites = {
    'a period and a file to erase': { periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED], plain: [OLD_PLAIN] },
    'a file alone to delete': { periods: [YOUNG], sealed: [YOUNG_SEALED], plain: [OLD_PLAIN] }
  }
  for (const [name, site] of Object.entries(sites)) {
    const s = await makeSite(site)
    t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
    const before = state(s)
    // Between the confirmation and the first erasure the ops chain becomes unwritable (a broken disk, in effect): its directory replaced by a file.
    const ops = join(s.audit, 'ops')
    let thrown: Error | undefined
    let status: number | undefined
    try {
      status = (await sweepHere(s, { source: s.root, confirm: async (phrase) => { renameSync(ops, ops + '.aside'); writeFileSync(ops, 'not a directory\n'); return phrase } })).status as number
    } catch (err) { thrown = err as Error }
    t.equal(status, undefined, `${name}: the sweep stops`)
    t.match(thrown?.message, /the erasure event was not recorded/, `${name}: naming the record it could not write`)
    t.same(sorted(state(s)), sorted(before), `${name}: no key destroyed in the keyring or the backup, no recording deleted`)
  }
})

t.test('on a host where no gateway ran yet (audit.dir not made): the dry run and hold init make what they need', async (t) => {
  const s = await makeSite({ periods: ['2016-01'] })
  rmSync(s.audit, { recursive: true })
  const dry = await sweep(s)
  t.equal(dry.status, 0, `the dry run (${dry.stderr.trim()})`)
  t.ok(existsSync(join(s.audit, 'retention-status.json')), 'the status file written')
  const init = await cli(s, 'hold', 'init')
  t.equal(init.status, 0, `hold init (${init.stderr.trim()})`)
  t.ok(existsSync(join(s.audit, 'legal-holds.json')), 'the holds document made')
})

t.test('a directory swapped for a symbolic link between the plan and --apply: the deletion does not follow it onto a held recording', async (t) => {
  const s = await makeSite({ periods: [], plain: [OLD_PLAIN, HELD_PLAIN] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  await holdAdd(t, s, '/medicall/2016/02/', 'LEGAL-1')
  const { status, stdout, stderr } = await sweepHere(s, {
    source: s.root,
    // While the operator reads the plan and types, a share writer swaps 2016/03/14 for a link to the held 2016/02/20.
    confirm: async (expected) => {
      const day = join(s.root, 'medicall/2016/03/14')
      renameSync(day, `${day}.x`)
      symlinkSync('../02/20', day)
      return expected
    }
  })
  t.ok(existsSync(join(s.root, HELD_PLAIN)), 'the held recording is still on the share')
  t.ok(existsSync(join(s.root, OLD_PLAIN.replace('/14/', '/14.x/'))), 'the planned file, moved aside, is untouched too')
  t.equal(status, 1, `exit 1 (${stdout.trim()} / ${stderr.trim()})`)
  t.match(stderr, /a directory on its path was replaced since the plan/, 'and says why')
  t.same((await events(t, s, 'erasure')).filter((r) => String(r.path).startsWith('/medicall/2016/03/14/')), [], 'no erasure is recorded for the file not deleted')
})

t.test('a directory swapped for a symbolic link while the deletion\'s audit record is written: the deletion does not follow it onto a held recording', async (t) => {
  const s = await makeSite({ periods: [], plain: [OLD_PLAIN, HELD_PLAIN] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  await holdAdd(t, s, '/medicall/2016/02/', 'LEGAL-1')
  // The held day gets a file of the expired one's name: where a swapped link would send the deletion.
  const decoy = join(s.root, 'medicall/2016/02/20', basename(OLD_PLAIN))
  writeFileSync(decoy, 'held\n')
  let swapped = false
  let watcher: FSWatcher | undefined
  const { status, stderr } = await sweepHere(s, {
    source: s.root,
    // As soon as the sweep writes to its ops chain (the deletion's record), a share writer swaps 2016/03/14 for a link to the held 2016/02/20.
    confirm: async (expected) => {
      watcher = watch(join(s.audit, 'ops'), () => {
        if (swapped) return
        swapped = true
        const day = join(s.root, 'medicall/2016/03/14')
        renameSync(day, `${day}.x`)
        symlinkSync('../02/20', day)
      })
      return expected
    }
  })
  watcher?.close()
  t.ok(swapped, 'swapped while the record was written')
  t.ok(existsSync(decoy) && existsSync(join(s.root, HELD_PLAIN)), 'the held day is untouched')
  t.ok(existsSync(join(s.root, OLD_PLAIN.replace('/14/', '/14.x/'))), 'the planned file, moved aside, is untouched too')
  t.equal(status, 1, 'exit 1')
  t.match(stderr, /a directory on its path was replaced since the plan/, 'and says why')
  t.match((await events(t, s, 'erasure')).filter((r) => r.path === OLD_PLAIN), [{ reason: /deleted from the NAS/ }, { reason: /NOT deleted from the NAS after all \(a directory on its path was replaced/ }], 'the trail says it was not deleted after all')
})

t.test('a hold placed while a deletion\'s audit record is written wins: the recording stays, and the trail says so', async (t) => {
  const s = await makeSite({ periods: [], plain: [OLD_PLAIN] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  let placed: number | null | undefined
  let watcher: FSWatcher | undefined
  const { status, stdout } = await sweepHere(s, {
    source: s.root,
    // As soon as the sweep writes to its ops chain (the deletion's record), an investigator places a hold on the file's day.
    confirm: async (expected) => {
      watcher = watch(join(s.audit, 'ops'), () => {
        if (placed !== undefined) return
        placed = spawnSync(process.execPath, [join(process.cwd(), 'dist/cli.js'), 'hold', 'add', '--config', s.config, '--path-prefix', OLD_PLAIN.slice(0, OLD_PLAIN.lastIndexOf('/') + 1), '--case', 'LATE-2', '--reason', 'placed during the deletion']).status
      })
      return expected
    }
  })
  watcher?.close()
  t.equal(placed, 0, 'the hold was placed while the record was written')
  t.equal(status, 0, 'exit 0')
  t.ok(existsSync(join(s.root, OLD_PLAIN)), 'the recording is still on the share')
  t.match(stdout, 'deleted 0 file(s), 1 kept by holds placed since the plan')
  t.match((await events(t, s, 'erasure')).filter((r) => r.path === OLD_PLAIN), [{ reason: /deleted from the NAS/ }, { reason: /NOT deleted from the NAS after all \(a legal hold placed since meets it\)/ }], 'the trail says it was not deleted after all')
})

t.test('a key backup a crash left half destroyed (renamed to .shred, not yet overwritten): the period stays on the plan, and --apply destroys it', async (t) => {
  const s = await makeSite({ periods: ['2016-01'], sealed: [OLD_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  // As a sweep killed in the middle leaves it: the keyring's identity destroyed, the backup's renamed for destruction only.
  eraseKey(s.keyring, '2016-01')
  const shredding = join(s.backup, '2016-01.key.shred')
  renameSync(join(s.backup, '2016-01.key'), shredding)
  opensWith(t, s, OLD_SEALED, shredding)
  const dry = await sweep(s)
  t.match(periodLine(dry, '2016-01'), /2016-01/, `the period is still on the plan: ${periodLine(dry, '2016-01')}`)
  const applied = await sweep(s, '--apply', '--confirm', phraseOf(dry))
  t.equal(applied.status, 0, applied.stdout + applied.stderr)
  t.notOk(existsSync(shredding), 'the half-destroyed key is gone')
  opensWithNone(t, s, OLD_SEALED)
  const again = await sweep(s)
  t.notMatch(again.stdout, /^to erase: erase 1 period/m, 'nothing is left to erase')
})

t.test('a key file put back beside its tombstone (restored from a backup, or a crash midway): it opens nothing, a gateway answers 410 without asking the NAS, and the sweep destroys it', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  const saved = join(s.dir, 'saved-2016-01.key')
  copyFileSync(join(s.keyring, '2016-01.key'), saved)
  const first = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(first.status, 0, `the period erased (${first.stderr.trim()})`)
  // Put back in the keyring, beside the tombstone, as a restore from an old backup would.
  copyFileSync(saved, join(s.keyring, '2016-01.key'))
  chmodSync(join(s.keyring, '2016-01.key'), 0o600)
  rmSync(saved)
  opensWith(t, s, OLD_SEALED, join(s.keyring, '2016-01.key'))

  const mem = memoryNas()
  for (const f of s.sealed.values()) mem.files.set(f.nasPath, readFileSync(f.disk))
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: s.keyring, periodPattern: PATTERN } })
  const old = s.sealed.get(OLD_SEALED) as Sealed
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, OLD_SEALED, bearer(gw.token()))
    t.equal(res.status, 410, `${proto}: the erased period stays erased`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_RECORDING_ERASED', `${proto}: NASGUARD_ERR_RECORDING_ERASED`)
    t.equal((await fetchAs(proto, gw, YOUNG_SEALED, bearer(gw.token()))).status, 200, `${proto}: a kept period is served`)
  }
  t.equal(nas.requests.filter((r) => r.url === old.nasPath).length, 0, 'the NAS was not asked for the erased recording')

  const dry = await sweep(s)
  t.match(periodLine(dry, '2016-01'), new RegExp(`^2016-01\\s+erased\\s.*its identity is still in ${s.keyring.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'the sweep names the keyring as still holding it')
  t.equal(phraseOf(dry), 'erase 1 period and delete 0 files', 'and plans to destroy it')
  const two = await sweep(s, '--apply', '--confirm', phraseOf(dry))
  t.equal(two.status, 0, `--apply (${two.stderr.trim()})`)
  t.notOk(existsSync(join(s.keyring, '2016-01.key')), 'the key put back is destroyed')
  opensWithNone(t, s, OLD_SEALED)
  t.equal(phraseOf(await sweep(s)), 'erase 0 periods and delete 0 files', 'then nothing is left to erase')
})

t.test('a keyring still busy when the wait is over (an upload being sealed): the period is NOT erased, and that is said and recorded; a rerun erases it', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  const before = state(s)
  const unlock = lockKeyring(s.keyring, 'shared')
  const { status, stdout, stderr } = await sweepHere(s, { drainMs: 300 })
  unlock()
  t.equal(status, 1, 'exit 1')
  t.match(stdout, 'period 2016-01: NOT erased, the keyring stayed busy')
  t.match(stderr, /period 2016-01: NOT erased: the keyring .* is locked by another run/)
  t.same(sorted(state(s)), sorted(before), 'no key destroyed, in the keyring or the backup')
  const recorded = (await events(t, s, 'erasure')).filter((e) => e.period === '2016-01')
  t.match(recorded, [{ reason: /destroying the identity/ }, { reason: /NOT destroyed, the keyring stayed busy/ }], 'recorded: about to, then not done')
  const again = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(again.status, 0, `the rerun, the keyring free (${again.stderr.trim()})`)
  opensWithNone(t, s, OLD_SEALED)
})

t.test('a hold placed while the erasure waits for uploads being sealed wins: the period is kept, and that is recorded', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  const before = state(s)
  // Another process seals an upload (the keyring's shared lock). Once the
  // erasure holds the exclusive lock and waits for it, that process places
  // a hold on the period, and only then lets go: the hold is in before the
  // erasure could go on, whatever the machine's speed.
  const other = await holdUnderLock(s, s.keyring, '/medicall/2016/01/', 'LATE-1')
  const { status, stdout } = await sweepHere(s, { drainMs: 120000 })
  await other.exited
  t.match(other.said(), 'hold 0', 'the hold was placed')
  t.equal(status, 0, 'exit 0')
  t.match(stdout, 'period 2016-01: held since the plan (placed while uploads drained); kept')
  t.same(sorted(state(s)), sorted(before), 'no key destroyed, in the keyring or the backup')
  t.match((await events(t, s, 'erasure')).filter((e) => e.period === '2016-01'), [{ reason: /destroying the identity/ }, { reason: /NOT destroyed, a legal hold placed since the plan meets the period/ }], 'recorded: about to, then kept')
})

t.test('a hold placed while a key backup waits for its own uploads wins there too: that copy of the identity is kept, and recorded', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  // As a sweep with the backup volume not mounted leaves it: the keyring's identity destroyed, the backup's not.
  eraseKey(s.keyring, '2016-01')
  t.ok(existsSync(join(s.backup, '2016-01.key')), 'the backup still holds the identity')
  // The hold names the period in another case: on this folding NAS it is that period.
  const other = await holdUnderLock(s, s.backup, '/MEDICALL/2016/01/', 'LATE-B')
  const { status, stdout } = await sweepHere(s, { drainMs: 120000 })
  await other.exited
  t.match(other.said(), 'hold 0', 'the hold was placed')
  t.equal(status, 0, 'exit 0')
  t.match(stdout, 'period 2016-01: held since the plan')
  t.ok(existsSync(join(s.backup, '2016-01.key')), 'the last copy of the identity is kept')
  t.match((await events(t, s, 'erasure')).filter((e) => e.period === '2016-01').at(-1), { reason: /NOT in .*: a legal hold placed since the plan meets the period/ }, 'recorded')
})

t.test('the holds document gone while a deletion\'s audit record is written: the file stays, and the trail says it was NOT deleted after all', async (t) => {
  const s = await makeSite({ periods: [], plain: [OLD_PLAIN] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  let gone = false
  let watcher: FSWatcher | undefined
  const run = await sweepHere(s, {
    source: s.root,
    confirm: async (expected) => {
      watcher = watch(join(s.audit, 'ops'), () => { if (!gone) { gone = true; rmSync(join(s.audit, 'legal-holds.json')) } })
      return expected
    }
  }).catch((err: Error) => err)
  watcher?.close()
  t.ok(gone, 'removed while the record was written')
  t.match(run, { message: /is gone since the plan was made/ }, 'the sweep stops, naming why')
  t.ok(existsSync(join(s.root, OLD_PLAIN)), 'the recording is still on the share')
  t.match((await events(t, s, 'erasure')).filter((r) => r.path === OLD_PLAIN), [{ reason: /deleted from the NAS/ }, { reason: /NOT deleted from the NAS after all \(the legal holds could not be read again/ }], 'the trail says so')
})

t.test('a key backup volume not mounted (an empty mount point): nothing is written there and no copy is claimed destroyed', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  renameSync(s.backup, s.backup + '.volume')
  mkdirSync(s.backup, { mode: 0o700 })
  const r = await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')
  t.equal(r.status, 1, 'exit 1')
  t.match(r.stderr, `${s.backup} holds no copy of the keyring (no names.key: not mounted?)`)
  t.same(readdirSync(s.backup), [], 'no tombstone or lock left in the mount point')
  const outcome = (await events(t, s, 'erasure')).filter((e) => e.period === '2016-01').pop()
  t.match(outcome?.reason, /and 0 of 1 backup\(s\); NOT in /, 'the trail says the backup was not reached')
  t.match(periodLine(await sweep(s), '2016-01'), /^2016-01\s+erased\s.*its identity is still in/, 'the period stays on the plan')
  rmSync(s.backup, { recursive: true })
  renameSync(s.backup + '.volume', s.backup)
  t.equal((await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')).status, 0, 'mounted: the rerun destroys the copy')
  opensWithNone(t, s, OLD_SEALED)
})

t.test('a keyring lock held on another host (a shared mount) or in a container: live while its holder touches it, gone 5 minutes after', async (t) => {
  const s = await makeSite({ periods: ['2016-01'], sealed: [OLD_SEALED] })
  t.equal((await cli(s, 'hold', 'init')).status, 0, 'hold init')
  // A pid that does not exist here, held elsewhere, touched just now.
  const lock = join(s.keyring, `.keyring-shared-${'ab'.repeat(8)}.lock`)
  writeFileSync(lock, '4000000 0123456789abcdef otherhost/pid:[4026531836]\n', { mode: 0o600 })
  const { status, stderr } = await sweepHere(s, { drainMs: 200 })
  t.equal(status, 1, 'exit 1')
  t.match(stderr, `on otherhost, or in a container: judged gone 5 minutes after its holder last touched ${lock}`)
  t.ok(existsSync(lock), 'the other host\'s lock is left alone')
  t.ok(existsSync(join(s.keyring, '2016-01.key')), 'nothing destroyed')
  // Its holder gone (a container killed mid-upload): no touch for 6 minutes.
  const old = new Date(Date.now() - 6 * 60_000)
  utimesSync(lock, old, old)
  t.equal((await sweep(s, '--apply', '--confirm', 'erase 1 period and delete 0 files')).status, 0, 'the stale lock is judged gone: the erasure runs')
  t.notOk(existsSync(lock), 'and the stale lock removed')
  opensWithNone(t, s, OLD_SEALED)
})

t.test('a period erased while a gateway starts (after it read its keyring, before it watched the keyring directory) is refused with 410 without a SIGHUP', async (t) => {
  const s = await makeSite({ periods: ['2016-01', YOUNG], sealed: [OLD_SEALED, YOUNG_SEALED] })
  const mem = memoryNas()
  for (const f of s.sealed.values()) mem.files.set(f.nasPath, readFileSync(f.disk))
  const nas = await startStubNas(t, mem.handler)
  // The erasure (as a sweep on another host sharing the keyring makes it)
  // comes the moment the starting gateway has read its keyring.
  const keyFile = join(s.keyring, '2016-01.key')
  const load = Keyring.load.bind(Keyring)
  let erased = false
  const restore = (): void => { Keyring.load = load }
  t.teardown(restore)
  Keyring.load = (dir: string): Keyring => {
    const ring = load(dir)
    if (!erased && dir === s.keyring) {
      erased = true
      eraseKey(s.keyring, '2016-01')
    }
    return ring
  }
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: s.keyring, periodPattern: PATTERN } })
  restore()
  t.ok(erased && existsSync(join(s.keyring, '2016-01.erased')) && !existsSync(keyFile), 'the keyring was read by the gateway, then the period erased')
  await waitFor('the gateway to answer 410 for the period erased as it started', async () => (await fetchAs('h1', gw, OLD_SEALED, bearer(gw.token()))).status === 410 ? true : undefined, { tries: 1500, intervalMs: 20 })
  const old = s.sealed.get(OLD_SEALED) as Sealed
  const asked = nas.requests.filter((r) => r.url === old.nasPath).length
  for (const proto of PROTOCOLS) {
    t.equal((await fetchAs(proto, gw, OLD_SEALED, bearer(gw.token()))).status, 410, `${proto}: 410 for the erased period`)
    const young = await fetchAs(proto, gw, YOUNG_SEALED, bearer(gw.token()))
    t.equal(young.status, 200, `${proto}: the kept period is served`)
    t.same(young.body, s.sealed.get(YOUNG_SEALED)?.plain)
  }
  t.equal(nas.requests.filter((r) => r.url === old.nasPath).length, asked, 'the NAS was not asked for the erased recording')
})

t.test('a plaintext recording dated by its mtime: past retention it is on the list to delete; one modified in the future (a NAS clock days fast) never is', async (t) => {
  const s = await makeSite({ periods: [], plain: ['/medicall/old.wav', '/medicall/young.wav', '/medicall/ahead.wav', '/medicall/far-ahead.wav'] })
  writeFileSync(s.config, configText(s).replace(RETENTION, '[{ name: by-nas, path: "/medicall/**", keepDays: 365 }]'))
  const config = loadConfig({ file: s.config, env: {} })
  const now = Date.now()
  const at = (file: string, ms: number): void => { utimesSync(join(s.root, file), ms / 1000, ms / 1000) }
  at('medicall/old.wav', now - 400 * 86400000)
  at('medicall/young.wav', now - 3 * 86400000)
  at('medicall/ahead.wav', now + 3 * 86400000)
  at('medicall/far-ahead.wav', Date.UTC(2090, 0, 1))
  const { plain } = await walkShare(config, s.root, compileRetention(config.retention), EMPTY_HOLDS, now)
  t.same(plain.expired.map((e) => e.path), ['/medicall/old.wav'], 'only the recording past retention is to be deleted')
  t.equal(plain.kept, 1, 'the young one is kept')
  t.equal(plain.undatable, 2, 'the two modified in the future are counted apart: their age cannot be told')
})
