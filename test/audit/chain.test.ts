// The audit chain at the writer level: a real AuditWriter on a temp
// directory with a known key, then walkTrail over what it wrote. Every
// tamper case runs on its own copy of the trail and must be caught with the
// right kind, at the right file and line; a crash (a torn last line) must
// not be called tampering.
import t from 'tap'
import { appendFileSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, ARCHIVE, AUDIT_FILE, HEAD_FILE, archiveName, type AuditRecord, type AuditWriterOptions } from '../../src/audit/writer.js'
import { lineHash, open as openLine, seal, GENESIS } from '../../src/audit/chain.js'
import { walkTrail, type VerifyReport } from '../../src/audit/verify.js'
import { problemsText } from '../../src/audit/commands.js'
import { clearOfUtcMidnight } from '../helpers/wait.js'

// The audit writer rotates by the wall clock's UTC day; records dated "now" and files counted: the whole file runs within one UTC day.
await clearOfUtcMidnight(30_000)

const KEY = Buffer.from('a'.repeat(32) + 'b'.repeat(32))
const OTHER_KEY = Buffer.from('c'.repeat(64))

function tempDir (t: { teardown: (fn: () => void) => void }, prefix = 'nasguard-chain-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function openWriter (dir: string, o: Partial<AuditWriterOptions> = {}): Promise<AuditWriter> {
  return AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'chain-test', rotateBytes: 64 * 1024 * 1024, ...o })
}

function rec (i: number, time = new Date().toISOString()): AuditRecord {
  return { event: 'access', time, requestId: `req-${i}`, subject: 'alice', method: 'GET', path: `/medicall/2016/01/01/${String(i).padStart(6, '0')}_46701234567.wav`, clientIp: '127.0.0.1' }
}

function lines (file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')
}

function writeLines (file: string, ls: string[]): void {
  writeFileSync(file, ls.join('\n') + '\n')
}

/** A fresh copy of a trail, to tamper with. */
function copyOf (t: { teardown: (fn: () => void) => void }, src: string): string {
  const dst = join(tempDir(t, 'nasguard-chain-copy-'), 'audit')
  cpSync(src, dst, { recursive: true })
  return dst
}

const kinds = (r: VerifyReport): string[] => r.problems.map((p) => p.kind)

/** A closed trail of n records in one file, sequentially written. */
async function trailOf (t: { teardown: (fn: () => void) => void }, n: number): Promise<string> {
  const dir = join(tempDir(t), 'audit')
  const w = await openWriter(dir)
  for (let i = 1; i <= n; i++) await w.append(rec(i))
  await w.close()
  return dir
}

t.test('group commit: 50 concurrent appends, fewer writes than records, one intact chain seq 1..N', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const batches: number[] = []
  const w = await openWriter(dir, { onBatch: (n) => { batches.push(n) } })
  await Promise.all(Array.from({ length: 50 }, (_, i) => w.append(rec(i + 1))))
  t.equal(batches.reduce((a, b) => a + b, 0), 50, 'every record was written in some batch')
  t.ok(batches.length < 50, `group commit happened: ${batches.length} batch(es) for 50 records`)
  for (let i = 51; i <= 60; i++) await w.append(rec(i))
  t.equal(w.lastSeq, 60)
  await w.close()

  const seqs: number[] = []
  const report = await walkTrail(dir, KEY, (r) => { seqs.push(r.seq as number) })
  t.same(report.problems, [], 'no problems')
  t.equal(report.records, 60)
  t.equal(report.lastSeq, 60)
  t.same(seqs, Array.from({ length: 60 }, (_, i) => i + 1), 'seq 1..N in file order')
  t.equal(report.truncatedTail, undefined)
  t.same(report.files, [AUDIT_FILE])
  const all = lines(join(dir, AUDIT_FILE))
  t.equal(JSON.parse(all[0]).prev, GENESIS, 'the first record follows the genesis hash')
  for (let i = 1; i < all.length; i++) {
    if (JSON.parse(all[i]).prev !== lineHash(all[i - 1])) { t.fail(`line ${i + 1} does not carry the hash of line ${i}`); break }
  }
  t.ok(existsSync(join(dir, HEAD_FILE)), 'close wrote audit.head')
  const head = openLine(readFileSync(join(dir, HEAD_FILE), 'utf8').trim(), KEY)
  t.ok(head.ok && head.value.record.seq === 60, 'audit.head records the last seq')
})

t.test('tampering is caught, with the kind and the place', async (t) => {
  const N = 12
  const original = await trailOf(t, N)
  const clean = await walkTrail(original, KEY)
  t.same(clean.problems, [], 'the original is intact')
  t.equal(clean.records, N)

  t.test('a field of one record edited', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f)
    ls[4] = ls[4].replace('"subject":"alice"', '"subject":"mallory"')
    t.not(ls[4], lines(f)[4], 'the line was changed')
    writeLines(f, ls)
    const r = await walkTrail(dir, KEY)
    t.equal(r.problems[0]?.kind, 'edited')
    t.equal(r.problems[0]?.file, AUDIT_FILE)
    t.equal(r.problems[0]?.line, 5)
    t.match(r.problems[0]?.message, /audit\.jsonl:5: .*edited/)
    t.same(kinds(r), ['edited'], 'one edited record is one problem (it is not also reported as deleted)')
  })

  t.test('one line deleted', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f)
    ls.splice(5, 1) // seq 6
    writeLines(f, ls)
    const r = await walkTrail(dir, KEY)
    t.same(kinds(r), ['deleted'])
    t.equal(r.problems[0].line, 6, 'reported where the gap shows')
    t.equal(r.problems[0].seq, 7)
    t.match(r.problems[0].message, /audit\.jsonl:6: records seq 6\.\.6 were deleted/)
  })

  t.test('a copy of an existing line inserted', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f)
    ls.splice(7, 0, ls[2]) // seq 3 again, after seq 7
    writeLines(f, ls)
    const r = await walkTrail(dir, KEY)
    t.same(kinds(r), ['inserted'])
    t.equal(r.problems[0].line, 8)
    t.equal(r.problems[0].seq, 3)
    t.match(r.problems[0].message, /audit\.jsonl:8: record seq 3 appears a second time/)
  })

  t.test('two lines swapped', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f);
    [ls[3], ls[4]] = [ls[4], ls[3]] // seq 5 before seq 4
    writeLines(f, ls)
    const r = await walkTrail(dir, KEY)
    t.ok(r.problems.length > 0, 'caught')
    t.same([...new Set(kinds(r))], ['reordered'], 'only as reordering (nothing was deleted)')
    t.same(r.problems.map((p) => p.line), [4, 5])
    t.match(r.problems[0].message, /audit\.jsonl:4: record seq 5 comes before seq 4\.\.4/)
    t.match(r.problems[1].message, /audit\.jsonl:5: record seq 4 comes after seq 5/)
  })

  t.test('the last records deleted from the active file, audit.head kept', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    writeLines(f, lines(f).slice(0, N - 3))
    const r = await walkTrail(dir, KEY)
    t.same(kinds(r), ['missing-tail'])
    t.equal(r.problems[0].file, HEAD_FILE)
    t.equal(r.problems[0].seq, N)
    t.match(r.problems[0].message, new RegExp(`trail ends at seq ${N - 3}.*records ${N - 2}\\.\\.${N} were removed from the end`))
  })

  t.test('a record replaced by one re-sealed under another key', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f)
    const { mac: _mac, seq, prev, ...body } = JSON.parse(ls[6]) as Record<string, unknown>
    ls[6] = seal({ ...body, path: '/medicall/2016/01/01/innocent.wav' }, seq as number, prev as string, OTHER_KEY)
    t.ok(openLine(ls[6], OTHER_KEY).ok, 'the forgery is well formed under its own key')
    writeLines(f, ls)
    const r = await walkTrail(dir, KEY)
    t.equal(r.problems[0]?.kind, 'edited')
    t.equal(r.problems[0]?.line, 7)
    t.match(r.problems[0]?.message, /audit\.jsonl:7: .*edited/)
    t.same(kinds(r), ['edited'], 'one forged record is one problem (it is not also reported as deleted)')
  })

  t.test('audit.head edited', async (t) => {
    const dir = copyOf(t, original)
    const h = join(dir, HEAD_FILE)
    // Claim an older head, as someone would who removed records from the end and wanted it to match.
    writeFileSync(h, readFileSync(h, 'utf8').replace(`"seq":${N},`, `"seq":${N - 3},`))
    const r = await walkTrail(dir, KEY)
    t.same(kinds(r), ['edited'])
    t.equal(r.problems[0].file, HEAD_FILE)
    t.match(r.problems[0].message, /audit\.head was edited/)
  })

  t.test('the last line cut mid-way by a crash: reported, and not tampering', async (t) => {
    // As a crash leaves it: records 1..N durable (and in audit.head), record
    // N+1 half written with no newline.
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const ls = lines(f)
    const next = seal(rec(N + 1), N + 1, lineHash(ls[ls.length - 1]), KEY)
    const half = next.slice(0, Math.floor(next.length / 2))
    appendFileSync(f, half)
    const r = await walkTrail(dir, KEY)
    t.same(r.problems, [], 'no problems')
    t.same(r.truncatedTail, { file: AUDIT_FILE, bytes: Buffer.byteLength(half) })
    t.equal(r.records, N)

    // Without audit.head it is not: the writer puts a head down right after
    // its first durable write, so a trail with records and no head has had
    // it removed (with records from the end, perhaps).
    rmSync(join(dir, HEAD_FILE))
    const r2 = await walkTrail(dir, KEY)
    t.same(r2.problems.map((p) => p.kind), ['missing-tail'])
    t.equal(r2.truncatedTail?.bytes, Buffer.byteLength(half))
  })

  t.test('a complete last line with its newline removed is not a torn tail', async (t) => {
    const dir = copyOf(t, original)
    const f = join(dir, AUDIT_FILE)
    const text = readFileSync(f, 'utf8')
    writeFileSync(f, text.slice(0, -1))
    const r = await walkTrail(dir, KEY)
    t.same(r.problems, [])
    t.equal(r.records, N, 'the record is still read')
  })
})

t.test('rotation by size: ≥3 files, one chain; a removed archive is a missing file', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w = await openWriter(dir, { rotateBytes: 4096 })
  const N = 80
  for (let i = 1; i <= N; i++) await w.append(rec(i))
  await w.close()
  const report = await walkTrail(dir, KEY)
  t.same(report.problems, [])
  t.equal(report.records, N)
  t.ok(report.files.length >= 3, `rotated into ${report.files.length} files`)
  t.equal(report.files[report.files.length - 1], AUDIT_FILE)
  const archives = report.files.slice(0, -1)
  for (const a of archives) t.match(a, ARCHIVE)
  t.equal(archives[0], archiveName(1), 'the first archive starts at seq 1')
  for (const a of archives) {
    const first = JSON.parse(lines(join(dir, a))[0]) as { seq: number }
    t.equal(a, archiveName(first.seq), `${a} is named after its first seq`)
  }

  t.test('a middle archive removed', async (t) => {
    const copy = copyOf(t, dir)
    const victim = archives[1]
    const after = report.files[2]
    const firstSeq = (JSON.parse(lines(join(copy, victim))[0]) as { seq: number }).seq
    const lastSeq = (JSON.parse(lines(join(copy, victim)).slice(-1)[0]) as { seq: number }).seq
    rmSync(join(copy, victim))
    const r = await walkTrail(copy, KEY)
    t.equal(r.problems[0]?.kind, 'missing-file')
    t.same(kinds(r), ['missing-file'], 'and nothing else')
    t.equal(r.problems[0].file, after)
    t.equal(r.problems[0].line, 1)
    t.equal(r.problems[0].seq, lastSeq + 1)
    t.match(r.problems[0].message, `records seq ${firstSeq}..${lastSeq} are missing before ${after}`)
  })

  t.test('the oldest archive removed', async (t) => {
    const copy = copyOf(t, dir)
    const lastSeq = (JSON.parse(lines(join(copy, archives[0])).slice(-1)[0]) as { seq: number }).seq
    rmSync(join(copy, archives[0]))
    const r = await walkTrail(copy, KEY)
    t.equal(r.problems[0]?.kind, 'missing-file')
    t.same(kinds(r), ['missing-file'], 'and nothing else')
    t.match(r.problems[0].message, `the trail starts at seq ${lastSeq + 1}: records 1..${lastSeq} are missing`)
  })

  t.test('the active file removed (audit.head kept)', async (t) => {
    const copy = copyOf(t, dir)
    rmSync(join(copy, AUDIT_FILE))
    const r = await walkTrail(copy, KEY)
    t.ok(kinds(r).includes('missing-tail'))
    t.same(kinds(r), ['missing-tail'], 'and nothing else')
  })
})

t.test('the chain continues across restarts', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w1 = await openWriter(dir)
  for (let i = 1; i <= 5; i++) await w1.append(rec(i))
  await w1.close()
  const w2 = await openWriter(dir)
  t.equal(w2.lastSeq, 5, 'the second writer picks up at seq 5')
  for (let i = 6; i <= 9; i++) await w2.append(rec(i))
  await w2.close()
  const w3 = await openWriter(dir)
  t.equal(w3.lastSeq, 9)
  await Promise.all([10, 11, 12].map((i) => w3.append(rec(i))))
  await w3.close()

  const seqs: number[] = []
  const ids: string[] = []
  const r = await walkTrail(dir, KEY, (x) => { seqs.push(x.seq as number); ids.push(x.requestId as string) })
  t.same(r.problems, [])
  t.same(seqs, Array.from({ length: 12 }, (_, i) => i + 1), 'seq contiguous 1..12')
  t.same(new Set(ids), new Set(Array.from({ length: 12 }, (_, i) => `req-${i + 1}`)))
})

t.test('a restart right after a rotation (empty active file) continues from the newest archive', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w1 = await openWriter(dir)
  for (let i = 1; i <= 5; i++) await w1.append(rec(i))
  await w1.close()
  // What a rotation leaves just before the next record: the file archived under its first seq.
  renameSync(join(dir, AUDIT_FILE), join(dir, archiveName(1)))
  const w2 = await openWriter(dir)
  t.equal(w2.lastSeq, 5)
  await w2.append(rec(6))
  await w2.append(rec(7))
  await w2.close()
  const seqs: number[] = []
  const r = await walkTrail(dir, KEY, (x) => { seqs.push(x.seq as number) })
  t.same(r.problems, [])
  t.same(r.files, [archiveName(1), AUDIT_FILE])
  t.same(seqs, [1, 2, 3, 4, 5, 6, 7])
})

t.test('the chain runs on across rotations and restarts of a rotating writer', async (t) => {
  const dir = join(tempDir(t), 'audit')
  for (let run = 0; run < 3; run++) {
    const w = await openWriter(dir, { rotateBytes: 4096 })
    t.equal(w.lastSeq, run * 30, `run ${run + 1} starts after seq ${run * 30}`)
    for (let i = 1; i <= 30; i++) await w.append(rec(run * 30 + i))
    t.equal(w.lastSeq, (run + 1) * 30, `run ${run + 1} ends at seq ${(run + 1) * 30}`)
    await w.close()
  }
  const seqs: number[] = []
  const r = await walkTrail(dir, KEY, (x) => { seqs.push(x.seq as number) })
  t.ok(r.files.length >= 3, `rotated: ${r.files.join(', ')}`)
  t.same(r.problems, [])
  t.same(seqs, Array.from({ length: 90 }, (_, i) => i + 1), 'seq contiguous 1..90, no number used twice')
})

t.test('a torn tail is dropped at start, with a recovery record, and the chain stays intact', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w1 = await openWriter(dir)
  for (let i = 1; i <= 4; i++) await w1.append(rec(i))
  await w1.close()
  const f = join(dir, AUDIT_FILE)
  const torn = seal(rec(5), 5, lineHash(lines(f)[3]), KEY).slice(0, 60)
  appendFileSync(f, torn)
  t.equal((await walkTrail(dir, KEY)).truncatedTail?.bytes, 60, 'before recovery: a torn tail')

  const w2 = await openWriter(dir)
  t.equal(w2.startupError, null)
  t.equal(w2.recoveredBytes, 60)
  await w2.append(rec(6))
  await w2.close()
  const records: Array<Record<string, unknown>> = []
  const r = await walkTrail(dir, KEY, (x) => { records.push(x) })
  t.same(r.problems, [])
  t.equal(r.truncatedTail, undefined, 'the torn line is gone')
  t.match(records[4], { event: 'recovery', seq: 5, droppedBytes: 60 })
  t.equal(records.filter((x) => x.event === 'recovery').length, 1, 'one crash, one recovery record')
  t.match(records[5], { event: 'access', seq: 6, requestId: 'req-6' })
  t.equal(records.length, 6)
  t.ok(readFileSync(f, 'utf8').endsWith('\n'))
})

t.test('rotation by UTC day: a trail from yesterday is archived when a record is written today', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const yesterday = new Date(Date.now() - 86400_000).toISOString()
  t.not(yesterday.slice(0, 10), new Date().toISOString().slice(0, 10))
  // Written by hand, as a writer running yesterday would have left it.
  const old: string[] = []
  let prev = GENESIS
  for (let i = 1; i <= 3; i++) {
    const line = seal({ ...rec(i, yesterday), instance: 'chain-test' }, i, prev, KEY)
    old.push(line)
    prev = lineHash(line)
  }
  mkdirSync(dir, { mode: 0o700 })
  writeLines(join(dir, AUDIT_FILE), old)
  writeLines(join(dir, HEAD_FILE), [seal({ event: 'head', time: yesterday, instance: 'chain-test', hash: prev }, 3, prev, KEY)])

  const w = await openWriter(dir)
  t.equal(w.lastSeq, 3)
  await w.append(rec(4))
  await w.close()

  t.same(readdirSync(dir).filter((x) => ARCHIVE.test(x)), [archiveName(1)], 'yesterday\'s file archived')
  t.same(lines(join(dir, archiveName(1))), old, 'the archive holds yesterday\'s records unchanged')
  const active = lines(join(dir, AUDIT_FILE))
  t.equal(active.length, 1, 'today\'s record is in a fresh audit.jsonl')
  t.match(JSON.parse(active[0]), { seq: 4, requestId: 'req-4' })
  t.equal((JSON.parse(active[0]) as { time: string }).time.slice(0, 10), new Date().toISOString().slice(0, 10))
  const r = await walkTrail(dir, KEY)
  t.same(r.problems, [])
  t.equal(r.records, 4)
  t.same(r.files, [archiveName(1), AUDIT_FILE])
})

t.test('rotation by day inside one running writer', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w = await openWriter(dir)
  // The file's day is the day of its first record.
  await w.append(rec(1, new Date(Date.now() - 86400_000).toISOString()))
  await w.append(rec(2))
  await w.append(rec(3))
  await w.close()
  t.same(lines(join(dir, archiveName(1))).map((l) => (JSON.parse(l) as { seq: number }).seq), [1])
  t.same(lines(join(dir, AUDIT_FILE)).map((l) => (JSON.parse(l) as { seq: number }).seq), [2, 3], 'no rotation between records of the same day')
  t.same((await walkTrail(dir, KEY)).problems, [])
})

t.test('a failed write is rolled back: the chain holds no record nobody was told about', async (t) => {
  const dir = join(tempDir(t), 'audit')
  const w = await openWriter(dir)
  await w.append(rec(1))
  let fail = true
  ;(w as unknown as { opts: AuditWriterOptions }).opts.beforeSync = async () => {
    if (fail) throw Object.assign(new Error('simulated EIO'), { code: 'EIO' })
  }
  await t.rejects(w.append(rec(2)), { code: 'EIO' })
  t.equal(w.healthy, false)
  t.equal(w.lastSeq, 1, 'the sequence was taken back')
  fail = false
  await w.append(rec(3))
  t.equal(w.healthy, true)
  await w.close()
  const ids: string[] = []
  const r = await walkTrail(dir, KEY, (x) => { ids.push(x.requestId as string) })
  t.same(ids, ['req-1', 'req-3'])
  t.same(r.problems, [], 'the chain is intact after the rollback')
})

t.test('audit.head must be a head: a record line copied over it does not hide records removed from the end', async (t) => {
  const dir = tempDir(t)
  const w = await openWriter(dir)
  for (let i = 0; i < 10; i++) await w.append(rec(i))
  await w.close()
  const ls = lines(join(dir, AUDIT_FILE))
  // Records 8..10 removed, and the line of record 7 (sealed with the key) put in as the head.
  writeFileSync(join(dir, AUDIT_FILE), ls.slice(0, 7).join('\n') + '\n')
  writeFileSync(join(dir, HEAD_FILE), ls[6] + '\n')
  const r = await walkTrail(dir, KEY)
  t.ok(r.problems.some((p) => p.file === HEAD_FILE && /not a head: it was replaced/.test(p.message)), 'reported')
})

t.test('a trail with records but no head, or a spoilt one, is not written on: records cut from its end would be hidden; a new trail has its head before its first record', async (t) => {
  const fresh = join(tempDir(t), 'audit')
  const w0 = await openWriter(fresh)
  await w0.append(rec(1))
  const genesis = openLine(readFileSync(join(fresh, HEAD_FILE), 'utf8').trim(), KEY)
  t.ok(genesis.ok && genesis.value.record.event === 'head', 'a new trail has a head once its first record is acknowledged')
  await w0.close()
  const src = await trailOf(t, 10)
  const ls = lines(join(src, AUDIT_FILE))
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    ['the head deleted, the last records cut', (dir) => { rmSync(join(dir, HEAD_FILE)); writeLines(join(dir, AUDIT_FILE), ls.slice(0, 7)) }, /audit\.head is missing, though the trail holds records up to seq 7/],
    ['the head deleted, nothing cut', (dir) => { rmSync(join(dir, HEAD_FILE)) }, /audit\.head is missing, though the trail holds records up to seq 10/],
    ['the head filled with garbage', (dir) => { writeFileSync(join(dir, HEAD_FILE), 'garbage\n'); writeLines(join(dir, AUDIT_FILE), ls.slice(0, 7)) }, /does not open as a head/],
    ['the head emptied', (dir) => { writeFileSync(join(dir, HEAD_FILE), '') }, /does not open as a head/],
    ['a record copied over the head', (dir) => { writeFileSync(join(dir, HEAD_FILE), ls[6] + '\n'); writeLines(join(dir, AUDIT_FILE), ls.slice(0, 7)) }, /does not open as a head/]
  ]
  for (const [what, spoil, message] of cases) {
    const dir = copyOf(t, src)
    spoil(dir)
    const before = readFileSync(join(dir, AUDIT_FILE))
    const w = await openWriter(dir)
    await t.rejects(w.append(rec(99)), { code: 'EAUDITCHAIN', message }, `${what}: refused`)
    await w.close().catch(() => {})
    t.ok(readFileSync(join(dir, AUDIT_FILE)).equals(before), `${what}: nothing written`)
    t.ok((await walkTrail(dir, KEY)).problems.length > 0, `${what}: audit verify still sees it`)
  }
})

t.test('a rotation cut short by a crash (audit.jsonl linked to its archive name, not yet unlinked) is no tampering: read once, noted, finished at the next start', async (t) => {
  const dir = await trailOf(t, 6)
  const first = openLine(lines(join(dir, AUDIT_FILE))[0], KEY)
  if (!first.ok) throw new Error('unreadable')
  const archive = archiveName(first.value.record.seq)
  linkSync(join(dir, AUDIT_FILE), join(dir, archive))
  const r = await walkTrail(dir, KEY)
  t.same(r.problems, [], 'no problem')
  t.equal(r.records, 6, 'every record read once')
  t.equal(r.interruptedRotation, archive, 'noted')
  t.match(problemsText(r), new RegExp(`note: audit.jsonl is the same file as ${archive}.*not tampering`))
  const w = await openWriter(dir)
  await w.append(rec(7))
  await w.close()
  const after = await walkTrail(dir, KEY)
  t.same([after.problems, after.records, after.interruptedRotation], [[], 7, undefined], 'the next start finished the rotation')
})

t.test('batched durability: close() leaves a head that names the last record', async (t) => {
  const dir = tempDir(t)
  const w = await openWriter(dir, { durability: 'batched', batchMs: 60000 })
  for (let i = 0; i < 25; i++) await w.append(rec(i))
  await w.close()
  const head = openLine(readFileSync(join(dir, HEAD_FILE), 'utf8').trim(), KEY)
  t.ok(head.ok)
  if (head.ok) t.equal(head.value.record.seq, 25, 'the head names seq 25')
  // So removing the last two records shows.
  const ls = lines(join(dir, AUDIT_FILE))
  writeFileSync(join(dir, AUDIT_FILE), ls.slice(0, 23).join('\n') + '\n')
  const r = await walkTrail(dir, KEY)
  t.ok(r.problems.some((p) => p.kind === 'missing-tail'), 'records removed from the end are reported')
})

t.test('a sealed line is the JSON of { ...record, ...fields, seq, prev } plus its MAC, whatever the record holds', async (t) => {
  // seal() writes that text without building the object (a spread that
  // adds fields is V8's slow path): the bytes must be the spread's.
  const spread = (record: object, fields: Record<string, unknown> | undefined, seq: number, prev: string): string => {
    const body = JSON.stringify({ ...record, ...fields, seq, prev })
    return body.slice(0, -1) + ',"mac":"'
  }
  const values: unknown[] = ['x', '', 'a"b\\c\n\u2028\ud83d\ude00', 0, -1.5, 1e21, true, false, null, undefined, [1, 'two', null], { nested: { deep: 'yes' } }, NaN]
  // xorshift32: exact in 32-bit integer arithmetic, so every record differs.
  let seed = 7
  const rand = (n: number): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n }
  const names = ['event', 'time', 'path', 'instance', 'seq', 'prev', 'mac', 'outcome', '__proto__x', 'a b', 'é', '0', '42']
  const records: object[] = [{}, { instance: 'own' }, { seq: 99 }, { prev: 'p', event: 'x' }, { only: undefined },
    { event: 'x', toJSON: () => ({ other: 1 }) }, [1, 2], { when: new Date(0), event: 'd' }, JSON.parse('{"__proto__":{"a":1},"event":"p"}') as object,
    Object('ab') as object, Object(5) as object, Object(true) as object]
  for (let i = 0; i < 300; i++) {
    const r: Record<string, unknown> = {}
    for (let j = 1 + rand(8); j > 0; j--) r[names[rand(names.length)]] = values[rand(values.length)]
    records.push(r)
  }
  t.ok(new Set(records.map((r) => JSON.stringify(r))).size > 250, 'the records differ')
  const differ: string[] = []
  const unreadable: string[] = []
  let opened = 0
  for (const [i, record] of records.entries()) {
    for (const fields of [undefined, { instance: 'gw-1' }, { instance: undefined }, {}]) {
      const line = seal(record, i + 1, GENESIS, KEY, fields)
      if (!line.startsWith(spread(record, fields, i + 1, GENESIS))) differ.push(`${JSON.stringify(record)} with ${JSON.stringify(fields)}`)
      // (A record with no field of its own has no comma before seq: unreadable, as it always was; the trail never holds one.)
      const plain = !Array.isArray(record) && typeof (record as { toJSON?: unknown }).toJSON !== 'function'
      if (plain && JSON.stringify({ ...record, ...fields }) !== '{}' && !Object.hasOwn(record, 'seq') && !Object.hasOwn(record, 'prev') && !Object.hasOwn(record, 'mac')) {
        const o = openLine(line, KEY)
        if (o.ok) opened++
        else unreadable.push(`${JSON.stringify(record)}: ${o.reason}`)
      }
    }
  }
  t.same(differ, [], `all ${records.length * 4} sealed lines are the spread's text`)
  t.same(unreadable, [], 'every sealed record with fields of its own opens with the key')
  t.ok(opened > 300, `hundreds of them were opened (${opened})`)
})
