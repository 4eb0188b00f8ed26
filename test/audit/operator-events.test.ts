// Operator tools record one event per run in the ops chain
// (src/audit/operator-events.ts) while gateways hold their own chains'
// locks. Through real files and the real AuditWriter: a tool records while
// a gateway-like writer holds audit.dir; tools at once wait for each other
// (one of them another process); a lock of a dead process is taken over and
// one held by a live process past the bound fails naming the lock file;
// verify catches an edited ops record, a removed or unlisted ops chain, and
// records moved between ops and another chain; prune and new-key take ops
// with the rest. The built CLI runs once for verify and once for search.
import t from 'tap'
import { spawn } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { chainKey, readChains, recordChains } from '../../src/audit/chains.js'
import { auditNewKey, auditSummary, walkAll } from '../../src/audit/commands.js'
import { loadAuditKey } from '../../src/audit/key.js'
import { recordOperatorEvent, type OperatorRecord } from '../../src/audit/operator-events.js'
import { auditPrune } from '../../src/audit/prune.js'
import { ARCHIVE, AuditWriter, type AuditRecord } from '../../src/audit/writer.js'
import { runCli } from '../helpers/process.js'
import { clearOfUtcMidnight } from '../helpers/wait.js'

// The audit writer rotates by the wall clock's UTC day; files counted: the whole file runs within one UTC day.
await clearOfUtcMidnight(30_000)

const KEY_TEXT = 'f00d'.repeat(16)
const KEY = Buffer.from(KEY_TEXT)

type Test = { teardown: (fn: () => void) => void }

/** An audit directory (not made yet) and its key beside it, as a config would name them. */
function trail (t: Test): { dir: string, keyFile: string } {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-ops-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const keyFile = join(base, 'audit.key')
  writeFileSync(keyFile, KEY_TEXT + '\n', { mode: 0o600 })
  return { dir: join(base, 'audit'), keyFile }
}

const access = (i: number): AuditRecord => ({ event: 'access', time: new Date().toISOString(), requestId: `r-${i}`, subject: 'alice', method: 'GET', path: `/medicall/2016/01/01/${i}_46701234567.wav`, clientIp: '127.0.0.1' })
const sealRun = (n: number): OperatorRecord => ({ event: 'seal', period: '2016-01', counts: { sealed: n, skipped: 1, failed: 0, bytes: 1000 * n, files: n + 1 }, reason: `run ${n}` })

/** A writer on a chain, as a gateway (audit.dir itself) or a worker (worker-<i>) holds it. */
async function gateway (dir: string, chain = '.'): Promise<AuditWriter> {
  return await AuditWriter.open({ dir: chain === '.' ? dir : join(dir, chain), durability: 'strict', batchMs: 10, key: chainKey(KEY, chain), legacyKey: chain === '.' ? undefined : KEY, instance: 'gateway', rotateBytes: 1 << 20 })
}

function lines (file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean)
}

/** audit.lock as src/audit/lock.ts writes it, naming `pid` on this host and pid namespace. */
function lockLine (pid: number): string {
  let ns = ''
  try { ns = readlinkSync('/proc/self/ns/pid') } catch {}
  return `${pid} host=${hostname().replace(/\s/g, '_')} pidns=${ns.replace(/\s/g, '_')}\n`
}

async function problems (dir: string): Promise<string[]> {
  return (await walkAll({ dir, key: KEY })).merged.problems.map((p) => p.message)
}

t.test('a tool records while a gateway holds the main chain; the ops chain is listed and verifies', async (t) => {
  const { dir, keyFile } = trail(t)
  const gw = await gateway(dir)
  await gw.append(access(1))
  await recordOperatorEvent({ dir, keyFile, instance: 'ops-test' }, sealRun(3))
  await gw.append(access(2))
  await gw.close()
  const [line] = lines(join(dir, 'ops', 'audit.jsonl'))
  const r = JSON.parse(line) as AuditRecord & { seq: number }
  t.match(r, { event: 'seal', seq: 1, instance: 'ops-test', period: '2016-01', counts: { sealed: 3, skipped: 1, failed: 0, bytes: 3000, files: 4 }, reason: 'run 3' })
  t.type(r.subject, 'string', 'who ran it: the OS user')
  t.ok(Math.abs(Date.parse(r.time) - Date.now()) < 60_000, 'time defaults to now')
  t.same(readChains(dir, KEY), { ok: true, chains: ['.', 'ops'] }, 'ops listed, with the single-process trail beside it')
  t.same(await problems(dir), [])
  const { chains } = await walkAll({ dir, key: KEY })
  t.same(chains.map((c) => [c.name, c.report.records]), [['.', 2], ['ops', 1]])
  const out: string[] = []
  await auditSummary({ dir, key: KEY }, {}, true, (s) => out.push(s), () => {})
  t.ok(out.some((s) => (JSON.parse(s) as { subject: string }).subject === r.subject), 'summary reads the ops chain too')
})

t.test('tools at once (one of them another process) wait for each other: every record lands, in one unbroken chain', async (t) => {
  const { dir, keyFile } = trail(t)
  // A tool already recording holds the ops lock for a moment.
  const holder = await AuditWriter.open({ dir: join(dir, 'ops'), durability: 'strict', batchMs: 10, key: chainKey(KEY, 'ops'), instance: 'holder', rotateBytes: 1 << 20 })
  await holder.append({ event: 'rotate', time: new Date().toISOString(), period: '2016-02' })
  recordChains(dir, KEY, ['ops'])
  const child = new Promise<number | null>((done) => {
    const script = `const { recordOperatorEvent } = await import(${JSON.stringify(pathToFileURL(resolve('src/audit/operator-events.ts')).href)});
      await recordOperatorEvent({ dir: ${JSON.stringify(dir)}, keyFile: ${JSON.stringify(keyFile)} }, { event: 'seal', reason: 'child', counts: { sealed: 9 } })`
    const p = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] })
    p.on('close', done)
  })
  const here = Promise.all([1, 2].map(async (n) => await recordOperatorEvent({ dir, keyFile }, sealRun(n))))
  setTimeout(() => { void holder.close() }, 300)
  await here
  t.equal(await child, 0, 'the other process recorded its event')
  const records = lines(join(dir, 'ops', 'audit.jsonl')).map((l) => JSON.parse(l) as { seq: number, reason?: string, event: string })
  t.same(records.map((r) => r.seq), [1, 2, 3, 4], 'one record each, in sequence')
  t.equal(records[0].event, 'rotate', 'the holder\'s record first')
  t.same(records.slice(1).map((r) => r.reason).sort(), ['child', 'run 1', 'run 2'])
  t.same(await problems(dir), [])
})

t.test('a lock held by a live process past the bound fails naming the lock file; once that process is dead its lock is taken over', async (t) => {
  const { dir, keyFile } = trail(t)
  const ops = join(dir, 'ops')
  mkdirSync(ops, { recursive: true, mode: 0o700 })
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' })
  const exited = new Promise((resolve) => sleeper.on('exit', resolve))
  t.teardown(() => { sleeper.kill('SIGKILL') })
  writeFileSync(join(ops, 'audit.lock'), lockLine(sleeper.pid as number), { mode: 0o600 })
  const started = Date.now()
  await t.rejects(recordOperatorEvent({ dir, keyFile }, sealRun(1), { lockWaitMs: 400 }), {
    message: new RegExp(`^the seal event was not recorded in ${ops}: ${ops}/audit\\.lock was still held after 0\\.4 s \\(another process \\(pid ${sleeper.pid as number}\\)`)
  })
  t.ok(Date.now() - started >= 400, 'it waited for the bound')
  t.notOk(existsSync(join(ops, 'audit.jsonl')) && lines(join(ops, 'audit.jsonl')).length > 0, 'nothing written')
  sleeper.kill('SIGKILL')
  await exited
  await recordOperatorEvent({ dir, keyFile }, sealRun(2), { lockWaitMs: 0 })
  t.same(lines(join(ops, 'audit.jsonl')).map((l) => (JSON.parse(l) as { reason: string }).reason), ['run 2'], 'the dead process\'s lock was taken over at once')
  t.notOk(existsSync(join(ops, 'audit.lock')), 'and released')
  t.same(await problems(dir), [])
})

t.test('a tool may run first (it makes the key, as a gateway would); a record that cannot be written is an error naming why, never dropped', async (t) => {
  const { dir, keyFile } = trail(t)
  unlinkSync(keyFile)
  await recordOperatorEvent({ dir, keyFile }, sealRun(1))
  const key = loadAuditKey(keyFile)
  t.not(key.toString(), KEY_TEXT, 'a key of its own')
  t.same(readChains(dir, key), { ok: true, chains: ['ops'] })
  t.same((await walkAll({ dir, key })).merged.problems, [])
  await t.rejects(recordOperatorEvent({ dir, keyFile }, { event: 'seal', counts: { sealed: -1 } }), { message: /^the seal event was not recorded in .*ops\/audit\.jsonl: .*counts\.sealed must be a whole number from 0, not -1/ })
  await t.rejects(recordOperatorEvent({ dir, keyFile }, { event: 'seal', counts: { sealed: 1, lost: 2 } as never }), { message: /counts\.lost is not a count/ })
  unlinkSync(keyFile)
  await t.rejects(recordOperatorEvent({ dir, keyFile }, sealRun(2)), { message: new RegExp(`the audit key ${keyFile} is missing, but ${dir} holds an audit trail`) }, 'a lost key is not made again beside a trail')
  t.equal(lines(join(dir, 'ops', 'audit.jsonl')).length, 1, 'only the first run recorded')
})

t.test('verify catches an edited ops record, a removed or unlisted ops chain, and records moved between ops and another chain', async (t) => {
  const { dir, keyFile } = trail(t)
  const gw = await gateway(dir)
  await gw.append(access(1))
  await gw.close()
  const w0 = await gateway(dir, 'worker-0')
  await w0.append(access(2))
  await w0.close()
  recordChains(dir, KEY, ['.', 'worker-0'])
  await recordOperatorEvent({ dir, keyFile }, sealRun(5))
  await recordOperatorEvent({ dir, keyFile }, sealRun(6))
  t.same(await problems(dir), [])
  const opsFile = join(dir, 'ops', 'audit.jsonl')
  const opsText = readFileSync(opsFile, 'utf8')
  const [opsLine] = lines(opsFile)

  writeFileSync(opsFile, opsText.replace('"sealed":5', '"sealed":50'))
  t.match(await problems(dir), [/^ops: audit\.jsonl:1: .*edited/], 'an edited count')
  writeFileSync(opsFile, opsText)

  const w0File = join(dir, 'worker-0', 'audit.jsonl')
  const w0Text = readFileSync(w0File, 'utf8')
  appendFileSync(w0File, opsLine + '\n')
  t.match(await problems(dir), [/^worker-0: audit\.jsonl:2: the record was edited \(its MAC does not match/], 'an ops record copied into worker-0')
  writeFileSync(w0File, w0Text)

  // Both are seq 1 after the genesis: only the key tells them apart.
  writeFileSync(opsFile, opsText.replace(opsLine, lines(join(dir, 'audit.jsonl'))[0]))
  t.match(await problems(dir), [/^ops: audit\.jsonl:1: the record was edited \(its MAC does not match/], 'a record of the single-process chain put in ops (ops has no legacy key)')
  writeFileSync(opsFile, opsText)
  t.same(await problems(dir), [], 'restored')

  const chains = readFileSync(join(dir, 'audit.chains'))
  recordChainsWithout(dir, ['.', 'worker-0'])
  t.match(await problems(dir), [/chain ops is not listed in audit\.chains/], 'an ops chain the list does not hold')
  writeFileSync(join(dir, 'audit.chains'), chains)

  rmSync(join(dir, 'ops'), { recursive: true })
  t.match(await problems(dir), [/chain ops is listed in audit\.chains but its files are gone/], 'a removed ops chain')
})

/** Replaces audit.chains with a sealed list of just these chains. */
function recordChainsWithout (dir: string, chains: string[]): void {
  unlinkSync(join(dir, 'audit.chains'))
  recordChains(dir, KEY, chains)
}

t.test('prune takes the ops lock with the others and prunes ops like any chain; new-key sets ops aside', async (t) => {
  const { dir, keyFile } = trail(t)
  // A rotation after every record: ops gets archives to prune.
  for (const n of [1, 2, 3]) await recordOperatorEvent({ dir, keyFile, rotateBytes: 1 }, sealRun(n))
  t.same(readdirSync(join(dir, 'ops')).filter((f) => ARCHIVE.test(f)).length, 2)
  const loc = { dir, key: KEY }
  const before = Date.now() + 1000
  const holder = await AuditWriter.open({ dir: join(dir, 'ops'), durability: 'strict', batchMs: 10, key: chainKey(KEY, 'ops'), instance: 'holder', rotateBytes: 1 })
  const err: string[] = []
  t.equal(await auditPrune(loc, { before, dryRun: false, rotateBytes: 1 }, () => {}, (s) => err.push(s)), 1, 'refused while a tool holds ops')
  t.match(err.join(''), /ops.*Nothing was pruned/s)
  await holder.close()
  const out: string[] = []
  t.equal(await auditPrune(loc, { before, dryRun: false, rotateBytes: 1 }, (s) => out.push(s), (s) => err.push(s)), 0, err.join(''))
  t.match(out.join(''), /removed ops\/audit-000000000001\.jsonl[\s\S]*ops\/: records before seq 3 pruned/)
  t.ok(existsSync(join(dir, 'ops', 'audit.pruned')))
  t.same(await problems(dir), [])

  unlinkSync(keyFile)
  t.equal(await auditNewKey(dir, keyFile, 'ops-test', () => {}), 0)
  const retired = readdirSync(dir).find((f) => f.startsWith('retired-')) as string
  t.ok(existsSync(join(dir, retired, 'ops', 'audit.jsonl')), 'ops went with the old trail')
  t.notOk(existsSync(join(dir, 'ops')))
})

t.test('the built CLI verifies the ops chain and searches it by event', async (t) => {
  const { dir, keyFile } = trail(t)
  const gw = await gateway(dir)
  await gw.append(access(1))
  await gw.close()
  await recordOperatorEvent({ dir, keyFile }, sealRun(7))
  await recordOperatorEvent({ dir, keyFile }, { event: 'rotate', period: '2016-02', keyId: '2016-02:abcd' })
  const verify = await runCli(['audit', 'verify', '--dir', dir])
  t.equal(verify.status, 0, verify.stderr)
  t.match(verify.stdout, /ops \(operator tools\): 2 records in 1 file\(s\), seq 1\.\.2/)
  t.match(verify.stdout, /chain intact/)
  t.match(verify.stdout, /ops@2:[0-9a-f]{64}/, 'an anchor for ops too')
  const search = await runCli(['audit', 'search', '--dir', dir, '--event', 'seal'])
  t.equal(search.status, 0, search.stderr)
  t.match(search.stdout, /^\S+\tseal\t\S+\t-\tsealed=7 skipped=1 failed=0 bytes=7000 files=8\t-\t-\n$/)
  t.match(search.stderr, /1 match\(es\) in 3 verified records/)
})
