// `nasguard audit prune --before T`, run as an operator would: the built CLI
// (npm run build first) in a child process, against trails written by the
// real AuditWriter with a small rotateBytes (several rotated files). Record
// times are chosen (all today, so the writer rotates by size only): "old"
// records before the cut-off, "new" ones after it. Every tampering case
// runs on its own copy of a pruned trail and must make verify exit 1.
import t, { type Test as TapTest } from 'tap'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { seal } from '../../src/audit/chain.js'
import { chainKey, OPS_CHAIN, recordChains } from '../../src/audit/chains.js'
import { AuditWriter, ARCHIVE, AUDIT_FILE, HEAD_FILE, archiveName, type AuditRecord } from '../../src/audit/writer.js'
import { trailFiles } from '../../src/audit/verify.js'
import { auditedGeneration } from '../../src/retention/audited-generation.js'
import { runCli } from '../helpers/process.js'
import { testCerts } from '../helpers/certs.js'
import { clearOfUtcMidnight } from '../helpers/wait.js'

const KEY_TEXT = '0123456789abcdef'.repeat(4)
const KEY = Buffer.from(KEY_TEXT)
const CHECKPOINT = 'audit.pruned'

type Test = { teardown: (fn: () => void) => void }

function tempDir (t: Test, prefix = 'nasguard-prune-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

// Record times: midnight UTC today plus an offset, so no rotation by day
// (the whole file runs within one UTC day).
await clearOfUtcMidnight(90_000)
const DAY = new Date().toISOString().slice(0, 10)
const BASE = Date.parse(`${DAY}T00:00:00.000Z`)
const HOUR = 3600_000
const at = (ms: number): string => new Date(BASE + ms).toISOString()

function rec (i: number, time: string): AuditRecord {
  return { event: 'access', time, requestId: `req-${String(i).padStart(5, '0')}`, subject: 'alice', method: 'GET', path: `/medicall/2016/01/01/${String(i).padStart(6, '0')}_46701234567.wav`, clientIp: '127.0.0.1' }
}

/** A closed trail: for each epoch, n records with times at its hour (+ i ms). */
async function writeTrail (dir: string, epochs: Array<{ hour: number, n: number }>, instance = 'prune-test', chain = '.'): Promise<void> {
  // batched: what is written is the same, without an fsync per record.
  const w = await AuditWriter.open({ dir, durability: 'batched', batchMs: 10, key: chainKey(KEY, chain), instance, rotateBytes: 4096 })
  let i = 0
  for (const e of epochs) for (let k = 0; k < e.n; k++) { i++; await w.append(rec(i, at(e.hour * HOUR + k))) }
  await w.close()
}

/** A trail directory and its key file beside it (<dir>.key, the default). */
function newTrail (t: Test): { dir: string, keyFile: string } {
  const base = tempDir(t)
  const dir = join(base, 'audit')
  const keyFile = join(base, 'audit.key')
  writeFileSync(keyFile, KEY_TEXT + '\n', { mode: 0o600 })
  return { dir, keyFile }
}

/** A copy of a trail (and its key beside it), to tamper with. */
function copyOf (t: Test, src: string): string {
  const dst = join(tempDir(t, 'nasguard-prune-copy-'), 'audit')
  cpSync(src, dst, { recursive: true })
  writeFileSync(`${dst}.key`, KEY_TEXT + '\n', { mode: 0o600 })
  return dst
}

function records (file: string): Array<Record<string, unknown>> {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
}

function archives (dir: string): string[] {
  return readdirSync(dir).filter((f) => ARCHIVE.test(f)).sort()
}

/** Archives a prune --before `cut` must remove: the prefix whose every record is older. */
function expectedRemoved (dir: string, cut: number): string[] {
  const out: string[] = []
  for (const a of archives(dir)) {
    if (!records(join(dir, a)).every((r) => Date.parse(String(r.time)) < cut)) break
    out.push(a)
  }
  return out
}

const firstSeqOf = (dir: string, file: string): number => Number(records(join(dir, file))[0].seq)
/** The trail's files and their sizes (not audit.head or audit.lock, which a writer rewrites). */
const listing = (dir: string): string => readdirSync(dir).filter((f) => ARCHIVE.test(f) || f === AUDIT_FILE || f === CHECKPOINT).sort()
  .map((f) => `${f}:${readFileSync(join(dir, f)).length}`).join(',')

const prune = (dir: string, before: number | string, ...more: string[]): ReturnType<typeof runCli> =>
  runCli(['audit', 'prune', '--dir', dir, '--before', typeof before === 'number' ? new Date(before).toISOString() : before, ...more])
const verify = (dir: string): ReturnType<typeof runCli> => runCli(['audit', 'verify', '--dir', dir])
/** The prune records in a chain's files (verify, run alongside, says the chain holds). */
const pruneRecords = (dir: string): Array<Record<string, unknown>> =>
  trailFiles(dir).flatMap((f) => records(join(dir, f))).filter((r) => r.event === 'prune')

function assertTampered (t: TapTest, r: { status: number | null, stdout: string, stderr: string }, why: RegExp[]): void {
  t.equal(r.status, 1, r.stdout + r.stderr)
  t.match(r.stdout, /TAMPERING/)
  for (const w of why) t.match(r.stdout, w)
  t.notMatch(r.stdout, /chain intact/)
}

/** Tampering cases, each on its own copy of `src`, verified side by side (a CLI run is slow to start). */
async function tamperCases (t: TapTest, src: string, cases: Array<[string, (copy: string) => void, ...RegExp[]]>): Promise<void> {
  const copies = cases.map(([, tamper]) => { const c = copyOf(t, src); tamper(c); return c })
  const results = await Promise.all(copies.map((c) => verify(c)))
  for (let i = 0; i < cases.length; i++) {
    const [name, , ...why] = cases[i]
    await t.test(name, async (t) => { assertTampered(t, results[i], why) })
  }
}

// Old records at 00:00, the cut-off at 01:00, new records at 02:00.
const CUT = BASE + HOUR
const OLD = 70
const NEW = 40

t.test('prune: whole old files go, verify passes and says so, the prune is in the chain', async (t) => {
  const { dir, keyFile } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: OLD }, { hour: 2, n: NEW }])
  const before = archives(dir)
  const gone = expectedRemoved(dir, CUT)
  t.ok(gone.length >= 2, `${gone.length} archive(s) hold only old records`)
  const kept = before.filter((a) => !gone.includes(a))
  t.ok(kept.length >= 2, 'archives hold new records')
  const straddling = records(join(dir, kept[0]))
  t.ok(straddling.some((r) => Date.parse(String(r.time)) < CUT) && straddling.some((r) => Date.parse(String(r.time)) >= CUT), `${kept[0]} holds records both before and after the cut-off`)
  const F = firstSeqOf(dir, kept[0])
  const lastBefore = records(join(dir, AUDIT_FILE)).slice(-1)[0].seq as number
  t.equal(lastBefore, OLD + NEW)

  await t.test('dry run: lists what would go, removes nothing', async (t) => {
    const was = listing(dir)
    const r = await prune(dir, CUT, '--dry-run')
    t.equal(r.status, 0, r.stdout + r.stderr)
    t.match(r.stdout, /dry run/)
    for (const a of gone) t.match(r.stdout, `would remove ${a}`)
    for (const a of kept) t.notMatch(r.stdout, a)
    t.notMatch(r.stdout, AUDIT_FILE)
    t.match(r.stdout, `would keep records from seq ${F} on`)
    t.equal(listing(dir), was, 'nothing changed in the directory')
    t.notOk(existsSync(join(dir, CHECKPOINT)))
  })

  const r = await prune(dir, CUT)
  t.equal(r.status, 0, r.stdout + r.stderr)
  for (const a of gone) t.match(r.stdout, `removed ${a}`)
  t.same(archives(dir), kept, 'exactly the old archives were removed; the one straddling the cut-off stays')
  t.ok(existsSync(join(dir, AUDIT_FILE)), 'audit.jsonl stays')
  t.ok(existsSync(join(dir, CHECKPOINT)), 'the checkpoint was written')
  const pr = pruneRecords(dir)
  t.equal(pr.length, 1, 'one prune record')
  t.match(pr[0], { event: 'prune', seq: lastBefore + 1, keptFrom: F, records: F - 1, files: gone.length, before: new Date(CUT).toISOString() })

  const v = await verify(dir)
  t.equal(v.status, 0, v.stdout + v.stderr)
  t.match(v.stdout, /chain intact/)
  t.match(v.stdout, `seq ${F}..${lastBefore + 1}`)
  const prunedOn = String((JSON.parse(readFileSync(join(dir, CHECKPOINT), 'utf8')) as { time: string }).time).slice(0, 10)
  t.match(v.stdout, `records before seq ${F} were pruned on ${prunedOn}`)
  t.match(v.stdout, `removed ${F - 1} record(s) in ${gone.length} file(s)`)
  t.notMatch(v.stdout, /interrupted/)

  await t.test('tampering after a prune is still caught', async (t) => {
    const resealed = (copy: string, o: { prev?: string, key?: Buffer }): void => {
      const { mac: _m, seq, prev, ...rest } = JSON.parse(readFileSync(join(copy, CHECKPOINT), 'utf8')) as Record<string, unknown> & { seq: number, prev: string }
      writeFileSync(join(copy, CHECKPOINT), seal(rest, seq, o.prev ?? prev, o.key ?? KEY) + '\n')
    }
    await tamperCases(t, dir, [
      ['the first kept file deleted (at the checkpoint)', (c) => { unlinkSync(join(c, kept[0])) },
        new RegExp(`the trail starts at seq \\d+, but ${CHECKPOINT} says only records before seq ${F} were pruned`)],
      ['a later file deleted', (c) => { unlinkSync(join(c, kept[kept.length - 1])) }, /are missing before audit\.jsonl/],
      ['the checkpoint edited', (c) => { writeFileSync(join(c, CHECKPOINT), readFileSync(join(c, CHECKPOINT), 'utf8').replace(/"records":\d+/, '"records":1')) },
        /audit\.pruned was edited or forged/],
      ['the checkpoint moved past a deleted file', (c) => {
        writeFileSync(join(c, CHECKPOINT), readFileSync(join(c, CHECKPOINT), 'utf8').replace(`"seq":${F},`, `"seq":${firstSeqOf(c, kept[1])},`))
        unlinkSync(join(c, kept[0]))
      }, /audit\.pruned was edited or forged/, /the trail starts at seq \d+: records 1\.\.\d+ are missing/],
      ['a checkpoint forged with another key', (c) => { resealed(c, { key: Buffer.from('f'.repeat(64)) }) }, /audit\.pruned was edited or forged/],
      ['audit.head copied over the checkpoint', (c) => { cpSync(join(c, HEAD_FILE), join(c, CHECKPOINT)) }, /audit\.pruned is sealed, but is not a prune checkpoint/],
      ['a sealed checkpoint that is not this trail\'s', (c) => { resealed(c, { prev: 'e'.repeat(64) }) }, /does not follow the last pruned record named by audit\.pruned/],
      ['the checkpoint deleted', (c) => { unlinkSync(join(c, CHECKPOINT)) },
        new RegExp(`the trail starts at seq ${F}: records 1..${F - 1} are missing`), /audit\.pruned is missing, but record seq \d+ says records before seq \d+ were pruned/]
    ])
  })

  await t.test('a second run removes nothing and records nothing; --config works the same', async (t) => {
    const copy = copyOf(t, dir)
    const cdir = tempDir(t)
    const certs = testCerts()
    const file = join(cdir, 'nasguard.yaml')
    writeFileSync(file, [
      'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
      'upstream: { url: "http://127.0.0.1:9" }',
      `auth: { jwt: { secret: "${'s'.repeat(40)}" } }`,
      'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
      `audit: { dir: ${JSON.stringify(copy)}, keyFile: ${JSON.stringify(keyFile)} }`
    ].join('\n'))
    const was = listing(dir)
    // --before as epoch seconds: 03:00, after every record of the copy.
    const [again, c] = await Promise.all([prune(dir, CUT), runCli(['audit', 'prune', '--config', file, '--before', String(Math.floor((BASE + 3 * HOUR) / 1000))])])
    t.equal(again.status, 0, again.stdout + again.stderr)
    t.match(again.stdout, /nothing to prune/)
    t.equal(listing(dir), was, 'nothing changed')
    t.equal(pruneRecords(dir).length, 1)

    t.equal(c.status, 0, c.stdout + c.stderr)
    t.same(archives(copy), [], 'every archive (all older than 03:00) went; audit.jsonl holds records')
    t.equal(pruneRecords(copy).length, 2, 'a second prune record')
    const [v1, v2] = await Promise.all([verify(dir), runCli(['audit', 'verify', '--config', file])])
    t.equal(v1.status, 0, v1.stdout)
    t.equal(v2.status, 0, v2.stdout + v2.stderr)
    t.match(v2.stdout, /records before seq \d+ were pruned/)
  })
})

t.test('a rotated file deleted without prune is TAMPERING, and prune refuses such a trail', async (t) => {
  const { dir } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: OLD }, { hour: 2, n: NEW }])
  unlinkSync(join(dir, archives(dir)[0]))
  const was = listing(dir)
  const [v, r] = await Promise.all([verify(dir), prune(dir, CUT)])
  assertTampered(t, v, [/records 1\.\.\d+ are missing \(older files removed\)/])
  t.equal(r.status, 1, r.stdout + r.stderr)
  t.match(r.stderr, /audit prune refuses: the trail does not verify/)
  t.equal(listing(dir), was, 'nothing removed')
  t.notOk(existsSync(join(dir, CHECKPOINT)))
})

t.test('an old checkpoint put back after a later prune is TAMPERING', async (t) => {
  const { dir } = newTrail(t)
  // 00:00, 02:00, 04:00: prune before 01:00, then before 03:00.
  await writeTrail(dir, [{ hour: 0, n: OLD }, { hour: 2, n: OLD }, { hour: 4, n: NEW }])
  const first = await prune(dir, CUT)
  t.equal(first.status, 0, first.stdout + first.stderr)
  const old = readFileSync(join(dir, CHECKPOINT))
  const second = await prune(dir, BASE + 3 * HOUR)
  t.equal(second.status, 0, second.stdout + second.stderr)
  t.match(second.stdout, /removed audit-/)
  t.not(readFileSync(join(dir, CHECKPOINT)).toString(), old.toString(), 'a new checkpoint')
  t.equal(pruneRecords(dir).length, 2, 'both prunes are in the chain')
  const copy = copyOf(t, dir)
  writeFileSync(join(copy, CHECKPOINT), old)
  const [v, replayed] = await Promise.all([verify(dir), verify(copy)])
  t.equal(v.status, 0, v.stdout + v.stderr)
  assertTampered(t, replayed, [/an old checkpoint was put back/])
})

t.test('crash safety: a prune interrupted after its checkpoint verifies, and the next run finishes it', async (t) => {
  const { dir } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: OLD }, { hour: 2, n: NEW }])
  const gone = expectedRemoved(dir, CUT)
  t.ok(gone.length >= 3, 'at least three files to prune')
  // The checkpoint a prune of this very trail writes (a copy pruned for real).
  const done = copyOf(t, dir)
  t.equal((await prune(done, CUT)).status, 0)
  const checkpoint = readFileSync(join(done, CHECKPOINT))
  const keptFrom = firstSeqOf(done, archives(done)[0])
  const interrupted = (...removed: string[]) => (c: string): void => {
    writeFileSync(join(c, CHECKPOINT), checkpoint)
    for (const f of removed) unlinkSync(join(c, f))
  }

  const cases: Array<[string, (c: string) => void]> = [
    ['before any file was removed', interrupted()],
    ['after the oldest file was removed', interrupted(gone[0])],
    ['after every file, before the record', interrupted(...gone)]
  ]
  const copies = cases.map(([, crash]) => { const c = copyOf(t, dir); crash(c); return c })
  const runs = await Promise.all(copies.map(async (c) => {
    const v = await verify(c)
    const recordsBefore = pruneRecords(c).length
    const r = await prune(c, CUT)
    return { v, recordsBefore, r, after: await verify(c) }
  }))
  for (let i = 0; i < cases.length; i++) {
    const { v, recordsBefore, r, after } = runs[i]
    const c = copies[i]
    await t.test(cases[i][0], async (t) => {
      t.equal(v.status, 0, v.stdout + v.stderr)
      t.match(v.stdout, /chain intact/)
      t.match(v.stdout, /interrupted/)
      t.equal(recordsBefore, 0)
      t.equal(r.status, 0, r.stdout + r.stderr)
      t.same(archives(c), archives(done), 'the same files as an uninterrupted prune')
      t.equal(after.status, 0, after.stdout + after.stderr)
      t.notMatch(after.stdout, /interrupted/)
      const pr = pruneRecords(c)
      t.equal(pr.length, 1, 'the prune record was written')
      t.match(pr[0], { keptFrom })
    })
  }

  await tamperCases(t, dir, [
    ['a file the interrupted prune left, deleted from the middle', interrupted(gone[1]), new RegExp(`are missing before ${gone[2]}`)],
    ['the checkpoint of an interrupted prune deleted, with files gone', (c) => { interrupted(gone[0])(c); unlinkSync(join(c, CHECKPOINT)) }, /records 1\.\.\d+ are missing/]
  ])
})

t.test('the live file and the newest records are never pruned', async (t) => {
  const { dir } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: OLD }])
  t.ok(archives(dir).length >= 2)
  // What a rotation leaves just before the next record: an empty
  // audit.jsonl. A writer resumes the chain from the newest archive, so
  // that one stays.
  const { dir: empty } = newTrail(t)
  await writeTrail(empty, [{ hour: 0, n: OLD }])
  const live = records(join(empty, AUDIT_FILE))
  cpSync(join(empty, AUDIT_FILE), join(empty, archiveName(Number(live[0].seq))))
  writeFileSync(join(empty, AUDIT_FILE), '')
  const newest = archives(empty).slice(-1)[0]

  const [r, r2] = await Promise.all([prune(dir, 'now'), prune(empty, 'now')])
  t.equal(r.status, 0, r.stdout + r.stderr)
  t.same(archives(dir), [], 'every archive is older')
  t.ok(records(join(dir, AUDIT_FILE)).length > 1, 'audit.jsonl and its records stay')
  t.equal(r2.status, 0, r2.stdout + r2.stderr)
  t.same(archives(empty), [newest], 'the newest archive stays')
  const [v, v2] = await Promise.all([verify(dir), verify(empty)])
  t.equal(v.status, 0, v.stdout)
  t.equal(v2.status, 0, v2.stdout)
})

t.test('a running gateway (the audit lock held): prune refuses and changes nothing; --dry-run works', async (t) => {
  const { dir } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: OLD }, { hour: 2, n: NEW }])
  const holder = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 4096 })
  const was = listing(dir)
  let r, dry
  try {
    [r, dry] = await Promise.all([prune(dir, CUT), prune(dir, CUT, '--dry-run')])
  } finally {
    await holder.close()
  }
  t.equal(r.status, 1, r.stdout + r.stderr)
  t.match(r.stderr, /another process \(pid \d+\) writes to the audit trail/)
  t.match(r.stderr, /stop the gateway/)
  t.match(r.stderr, /Nothing was pruned/)
  t.equal(listing(dir), was, 'nothing removed')
  t.notOk(existsSync(join(dir, CHECKPOINT)))
  t.equal(dry.status, 0, dry.stdout + dry.stderr)
  t.match(dry.stdout, /would remove audit-/)
  const after = await prune(dir, CUT)
  t.equal(after.status, 0, after.stdout + after.stderr)
  t.equal(pruneRecords(dir).length, 1)
})

t.test('workers: every chain is pruned, each with its checkpoint; verify checks each', async (t) => {
  const { dir } = newTrail(t)
  const chains = ['worker-0', 'worker-1']
  for (const c of chains) await writeTrail(join(dir, c), [{ hour: 0, n: OLD + chains.indexOf(c) * 5 }, { hour: 2, n: NEW }], `prune-test-${c}`, c)
  recordChains(dir, KEY, chains)
  const gone = Object.fromEntries(chains.map((c) => [c, expectedRemoved(join(dir, c), CUT)]))

  await t.test('a lock held on one chain: nothing is pruned anywhere', async (t) => {
    const copy = copyOf(t, dir)
    const holder = await AuditWriter.open({ dir: join(copy, 'worker-1'), durability: 'strict', batchMs: 100, key: chainKey(KEY, 'worker-1'), instance: 'gateway', rotateBytes: 4096 })
    let r
    try {
      r = await prune(copy, CUT)
    } finally {
      await holder.close()
    }
    t.equal(r.status, 1, r.stdout + r.stderr)
    t.match(r.stderr, /stop the gateway \(every worker\)/)
    for (const c of chains) t.notOk(existsSync(join(copy, c, CHECKPOINT)), `${c}: no checkpoint`)
    for (const c of chains) t.same(archives(join(copy, c)), archives(join(dir, c)), `${c}: nothing removed`)
    t.equal(pruneRecords(join(copy, 'worker-0')).length, 0)
  })

  const r = await prune(dir, CUT)
  t.equal(r.status, 0, r.stdout + r.stderr)
  for (const c of chains) {
    t.ok(gone[c].length >= 2)
    for (const a of gone[c]) t.match(r.stdout, `removed ${c}/${a}`)
    for (const a of gone[c]) t.notOk(existsSync(join(dir, c, a)))
    t.ok(existsSync(join(dir, c, CHECKPOINT)), `${c}: checkpoint`)
    t.equal(pruneRecords(join(dir, c)).length, 1, `${c}: a prune record in its chain`)
  }
  const v = await verify(dir)
  t.equal(v.status, 0, v.stdout + v.stderr)
  t.match(v.stdout, /worker-0: \d+ records.*\n {4}records before seq \d+ were pruned/)
  t.match(v.stdout, /worker-1: \d+ records.*\n {4}records before seq \d+ were pruned/)

  await tamperCases(t, dir, [
    ['one worker\'s checkpoint copied over another\'s', (c) => { cpSync(join(c, 'worker-0', CHECKPOINT), join(c, 'worker-1', CHECKPOINT)) }, /worker-1: /],
    ['a kept file of one worker deleted', (c) => { unlinkSync(join(c, 'worker-1', archives(join(c, 'worker-1'))[0])) }, /worker-1: the trail starts at seq \d+, but audit\.pruned says/],
    ['one worker\'s checkpoint deleted', (c) => { unlinkSync(join(c, 'worker-0', CHECKPOINT)) }, /worker-0: the trail starts at seq/]
  ])
})

t.test('the ops chain: a prune carries the newest legal holds generation it removed into its record, so the holds check is not lowered', async (t) => {
  const { dir, keyFile } = newTrail(t)
  const ops = join(dir, OPS_CHAIN)
  const w = await AuditWriter.open({ dir: ops, durability: 'batched', batchMs: 10, key: chainKey(KEY, OPS_CHAIN), instance: 'prune-test', rotateBytes: 4096 })
  // The newest generation first: it is in the oldest file, which the prune removes.
  for (let i = 0; i < OLD; i++) await w.append({ event: 'hold', time: at(i), case: 'CASE-1', path: '/medicall/2016/01/', reason: 'add: litigation', counts: { generation: OLD - i } })
  for (let i = 0; i < NEW; i++) await w.append({ event: 'seal', time: at(2 * HOUR + i), reason: 'a seal run', counts: { sealed: 1 } })
  await w.close()
  recordChains(dir, KEY, [OPS_CHAIN])
  t.equal(await auditedGeneration({ audit: { dir, keyFile } }), OLD, 'before the prune: the newest hold change')
  const gone = expectedRemoved(ops, CUT)
  t.ok(gone.length >= 1, 'the oldest file is pruned')
  const r = await prune(dir, CUT)
  t.equal(r.status, 0, r.stdout + r.stderr)
  for (const a of gone) t.notOk(existsSync(join(ops, a)), `${a} removed`)
  const [record] = pruneRecords(ops)
  t.same(record?.counts, { generation: OLD }, 'the prune record names the newest generation')
  t.equal(await auditedGeneration({ audit: { dir, keyFile } }), OLD, 'after the prune: the same, from its record')
  const v = await verify(dir)
  t.equal(v.status, 0, v.stdout + v.stderr)
})

t.test('usage errors exit 2', async (t) => {
  const { dir } = newTrail(t)
  await writeTrail(dir, [{ hour: 0, n: 5 }])
  const [bad, missing, nowhere] = await Promise.all([
    prune(dir, 'last tuesday'),
    runCli(['audit', 'prune', '--dir', dir]),
    runCli(['audit', 'prune', '--before', '2020-01-01T00:00:00Z'])
  ])
  t.equal(bad.status, 2, bad.stderr)
  t.match(bad.stderr, /invalid time/)
  t.equal(missing.status, 2, missing.stderr)
  t.match(missing.stderr, /--before/)
  t.equal(nowhere.status, 2, nowhere.stderr)
  t.notOk(existsSync(join(dir, CHECKPOINT)))
})
