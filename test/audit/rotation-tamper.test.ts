// A rotation archives audit.jsonl only if it is the chain's own file, and
// never over an existing archive; the file opened after it must be new;
// a trail cut in place (logrotate's copytruncate, truncate -s0) is noticed
// at the next group. In every case the group is refused (the gateway fails
// closed), no record is acknowledged that the trail does not hold, and no
// file the writer does not own is archived or adopted. The races are made
// deterministic by running the intruder inside the writer's own file
// system calls.
import t, { type Test } from 'tap'
import { appendFileSync, constants as fsConstants, promises as fsp, linkSync, mkdtempSync, symlinkSync, readFileSync, readdirSync, renameSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, AUDIT_FILE, archiveName, type AuditRecord } from '../../src/audit/writer.js'
import { walkTrail } from '../../src/audit/verify.js'

const KEY = Buffer.from('r'.repeat(64))
const IMPOSTOR = '{"event":"access","note":"not the chain\'s"}\n'

function rec (i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `req-${i}`, subject: 'alice', method: 'GET', path: '/medicall/2016/01/01/a.wav', clientIp: '127.0.0.1' }
}

async function writer (t: Test, rotateBytes: number): Promise<{ dir: string, w: AuditWriter }> {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-rotation-')), 'audit')
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes })
  t.teardown(async () => { await w.close().catch(() => {}) })
  return { dir, w }
}

/** Runs `intrude` once, inside the next call of fs.promises[name], before (or after) the call itself. */
function once (t: Test, name: 'link' | 'unlink' | 'lstat' | 'open', intrude: () => void, when: 'before' | 'after'): void {
  const original = fsp[name] as (...a: unknown[]) => Promise<void>
  let done = false
  ;(fsp as unknown as Record<string, unknown>)[name] = async (...a: unknown[]) => {
    if (!done && when === 'before') { done = true; intrude() }
    const r = await original(...a)
    if (!done && when === 'after') { done = true; intrude() }
    return r
  }
  t.teardown(() => { (fsp as unknown as Record<string, unknown>)[name] = original })
}

const archives = (dir: string): string[] => readdirSync(dir).filter((f) => /^audit-\d+\.jsonl$/.test(f)).sort()
const holdsImpostor = (dir: string): string[] => archives(dir).filter((f) => readFileSync(join(dir, f), 'utf8').includes('not the chain'))

t.test('an impostor renamed over audit.jsonl while the rotation syncs the old file is not archived', async (t) => {
  const { dir, w } = await writer(t, 1)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  once(t, 'link', () => { writeFileSync(join(dir, 'x'), IMPOSTOR); renameSync(join(dir, 'x'), join(dir, AUDIT_FILE)) }, 'before')
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' }, 'the group that would rotate is refused')
  t.same(holdsImpostor(dir), [], 'no archive holds the impostor')
  t.equal(readFileSync(join(dir, AUDIT_FILE), 'utf8'), IMPOSTOR, 'it is left where it was put')
  await t.rejects(w.append(rec(4)), { code: 'EAUDITCHAIN' }, 'and the next group refuses a trail that does not read as the chain')
})

t.test('a file put at audit.jsonl between the archive and the new file is not adopted as the next file', async (t) => {
  const { dir, w } = await writer(t, 1)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  once(t, 'unlink', () => { writeFileSync(join(dir, AUDIT_FILE), IMPOSTOR) }, 'after')
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' }, 'the group is refused')
  t.equal(readFileSync(join(dir, AUDIT_FILE), 'utf8'), IMPOSTOR, 'nothing was appended to the file put there')
  const walked = await walkTrail(dir, KEY)
  t.equal(walked.lastSeq, 3, 'the archives hold every acknowledged record, 1 to 3')
})

t.test('an archive name already taken is never written over: the group is refused, the file there untouched', async (t) => {
  const { dir, w } = await writer(t, 1)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  // The next rotation archives the file that starts at seq 3.
  const taken = join(dir, archiveName(3))
  writeFileSync(taken, 'kept for an investigation\n')
  await t.rejects(w.append(rec(3)), { code: 'EAUDITCHAIN', message: /exists already/ })
  t.equal(readFileSync(taken, 'utf8'), 'kept for an investigation\n', 'the file of that name is as it was')
  t.ok(readFileSync(join(dir, AUDIT_FILE), 'utf8').includes('"seq":3'), 'audit.jsonl still holds seq 3')
})

t.test('a trail cut in place (copytruncate, truncate -s0) refuses the next group, and the one after', async (t) => {
  for (const cut of [0, 40]) {
    const { dir, w } = await writer(t, 1 << 20)
    for (let i = 0; i < 5; i++) await w.append(rec(i))
    truncateSync(join(dir, AUDIT_FILE), cut)
    await t.rejects(w.append(rec(5)), { code: 'EAUDITREPLACED', message: /cut or written to/ }, `cut to ${cut} bytes: the group is refused`)
    t.equal(readFileSync(join(dir, AUDIT_FILE)).length, cut, 'nothing was written after the cut')
    await t.rejects(w.append(rec(6)), { code: 'EAUDITCHAIN' }, 'a reopen refuses a trail short of what this gateway wrote')
  }
})

t.test('on a file system without hard links the rotation renames, and the trail reads whole', async (t) => {
  const { dir, w } = await writer(t, 1)
  const original = fsp.link
  ;(fsp as unknown as Record<string, unknown>).link = async () => { throw Object.assign(new Error('operation not permitted'), { code: 'EPERM' }) }
  t.teardown(() => { (fsp as unknown as Record<string, unknown>).link = original })
  for (let i = 0; i < 5; i++) await w.append(rec(i))
  t.ok(archives(dir).length >= 3, `archived by rename (${archives(dir).length} archives)`)
  const walked = await walkTrail(dir, KEY)
  t.equal(walked.lastSeq, 5)
  t.same(walked.problems, [], 'verify finds no problem')
})

t.test('a rotation stopped between its archive link and the removal of audit.jsonl is finished at the next start: no record twice', async (t) => {
  const { dir, w } = await writer(t, 1 << 20)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  await w.close()
  // What a crash right after the link leaves: one file, two names.
  linkSync(join(dir, AUDIT_FILE), join(dir, archiveName(1)))
  const again = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 << 20 })
  t.teardown(async () => { await again.close().catch(() => {}) })
  t.equal(again.startupError, null, 'the start goes on')
  await again.append(rec(3))
  await again.close()
  const walked = await walkTrail(dir, KEY)
  t.equal(walked.lastSeq, 4, 'the chain went on from seq 3')
  t.equal(walked.records, 4, 'each record once')
  t.same(walked.problems, [], 'verify finds no problem')
  t.equal(readFileSync(join(dir, archiveName(1)), 'utf8').split('\n').filter(Boolean).length, 3, 'the archive holds the three records it was made with')
})

t.test('a trail cut or written to just before a group that rotates is refused, not archived as the chain\'s', async (t) => {
  for (const [how, tamper] of [['cut to nothing', (f: string) => { truncateSync(f, 0) }], ['a line appended', (f: string) => { appendFileSync(f, IMPOSTOR) }]] as const) {
    // Every group after the first rotates.
    const { dir, w } = await writer(t, 1)
    for (let i = 0; i < 3; i++) await w.append(rec(i))
    const before = archives(dir)
    tamper(join(dir, AUDIT_FILE))
    await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED', message: /cut or written to/ }, `${how}: the group is refused`)
    await t.rejects(w.append(rec(4)), `${how}: and the next`)
    t.same(archives(dir), before, `${how}: the tampered file was not archived`)
  }
})

t.test('audit.jsonl moved out and replaced by a symlink to it is not the trail any more', async (t) => {
  const { dir, w } = await writer(t, 1 << 20)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  const outside = join(mkdtempSync(join(tmpdir(), 'nasguard-outside-')), 'moved.jsonl')
  renameSync(join(dir, AUDIT_FILE), outside)
  symlinkSync(outside, join(dir, AUDIT_FILE))
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' }, 'refused')
  t.equal(readFileSync(outside, 'utf8').split('\n').filter(Boolean).length, 3, 'the moved file got nothing more')
})

t.test('a trail cut between the check before a group and its write: the refused group is taken back off the file, not left in it', async (t) => {
  const { dir, w } = await writer(t, 1 << 20)
  for (let i = 0; i < 5; i++) await w.append(rec(i))
  const original = fsp.lstat
  let armed = true
  ;(fsp as unknown as Record<string, unknown>).lstat = async (...a: unknown[]) => {
    const r = await (original as (...x: unknown[]) => Promise<unknown>)(...a)
    if (armed) { armed = false; truncateSync(join(dir, AUDIT_FILE), 0) }
    return r
  }
  t.teardown(() => { (fsp as unknown as Record<string, unknown>).lstat = original })
  await t.rejects(w.append(rec(5)), { code: 'EAUDITREPLACED' }, 'refused after its fsync')
  t.equal(readFileSync(join(dir, AUDIT_FILE), 'utf8'), '', 'the refused record is not in the file')
  await t.rejects(w.append(rec(6)), { code: 'EAUDITCHAIN' }, 'the next reopen refuses a trail short of what this writer wrote')
})

t.test('a file put at audit.jsonl after a rotation is refused until it is moved aside; then the trail goes on', async (t) => {
  const { dir, w } = await writer(t, 1)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  once(t, 'unlink', () => { writeFileSync(join(dir, AUDIT_FILE), '') }, 'after')
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' })
  await t.rejects(w.append(rec(4)), { code: 'EAUDITREPLACED' }, 'the next group too: an empty file put there is not adopted either')
  renameSync(join(dir, AUDIT_FILE), join(dir, 'planted'))
  await w.append(rec(5))
  const walked = await walkTrail(dir, KEY)
  t.equal(walked.lastSeq, 4, 'the chain went on: seq 4')
  t.same(walked.problems, [], 'verify finds no problem')
})

t.test('bytes put into the new file between its exclusive open and the first group are not adopted', async (t) => {
  const { dir, w } = await writer(t, 1)
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  const original = fsp.open
  let armed = true
  ;(fsp as unknown as Record<string, unknown>).open = async (...a: unknown[]) => {
    const h = await (original as (...x: unknown[]) => Promise<unknown>)(...a)
    if (armed && a[0] === join(dir, AUDIT_FILE) && typeof a[1] === 'number' && (a[1] & fsConstants.O_EXCL) !== 0) { armed = false; appendFileSync(join(dir, AUDIT_FILE), IMPOSTOR) }
    return h
  }
  t.teardown(() => { (fsp as unknown as Record<string, unknown>).open = original })
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED', message: /cut or written to/ })
  t.equal(readFileSync(join(dir, AUDIT_FILE), 'utf8'), IMPOSTOR, 'nothing was appended to it')
})
