// audit.jsonl deleted or moved away under a running gateway (an operator's
// rm or mv, a logrotate rule aimed at the audit directory): the records
// would go to an unlinked inode and vanish at exit, or to a file no
// reader looks at, while fetches went on. Now the gateway fails closed
// (503, not ready) until the trail is put back, and a start (or a reopen)
// on a trail that ends before the seq audit.head names is refused instead
// of starting the chain again and overwriting the head that says so.
import t from 'tap'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, AUDIT_FILE, HEAD_FILE, type AuditRecord } from '../../src/audit/writer.js'
import { bearer, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const KEY = Buffer.from('k'.repeat(64))

async function readyz (adminUrl: string): Promise<number> {
  return (await fetch(adminUrl + '/readyz')).status
}

const HOW = [
  { name: 'removed (rm)', away: (file: string, kept: string) => { copyFileSync(file, kept); rmSync(file) }, back: (file: string, kept: string) => { copyFileSync(kept, file) } },
  { name: 'moved away (mv, as logrotate does)', away: (file: string, kept: string) => { renameSync(file, kept) }, back: (file: string, kept: string) => { renameSync(kept, file) } }
]

t.test('a running gateway whose audit.jsonl is removed or moved away fails closed until it is put back', async (t) => {
  for (const how of HOW) {
    t.test(how.name, async (t) => {
      const nas = await startStubNas(t)
      const gw = await startTestGateway(t, nas)
      const file = join(gw.auditDir, AUDIT_FILE)
      const kept = join(gw.auditDir, 'audit.jsonl.1')
      for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 200, `${proto}: served while the trail is in place`)
      await waitFor('audit.head', () => existsSync(join(gw.auditDir, HEAD_FILE)) ? true : undefined)
      const asked = nas.requests.length
      how.away(file, kept)
      for (const proto of PROTOCOLS) {
        const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
        t.equal(res.status, 503, `${proto}: 503 while the trail is away`)
        t.match(res.body.toString(), /NASGUARD_ERR_AUDIT_UNAVAILABLE/, `${proto}: the audit is unavailable`)
      }
      t.equal(nas.requests.length, asked, 'the NAS was not asked')
      t.equal(await readyz(gw.adminUrl), 503, '/readyz: not ready')
      t.notOk(gw.logs.some((l) => l.includes(PATH) || l.includes('46701234567')), 'no log line names the recording')
      const failed = gw.logs.filter((l) => l.includes('audit record could not be written'))
      t.ok(failed.some((l) => /was (removed|replaced) while the gateway had it open|names seq \d+: records/.test(l)), 'the log says why')
      t.ok(failed.every((l) => l.split('"reqId"').length === 2), 'each line names its reqId once (strict JSON readers take it)')

      how.back(file, kept)
      await waitFor('the gateway to serve again', async () => (await fetchAs('h1', gw, PATH, bearer(gw.token()))).status === 200 ? true : undefined, { tries: 100, intervalMs: 50 })
      for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 200, `${proto}: served again once the trail is back`)
      t.equal(await readyz(gw.adminUrl), 200, '/readyz: ready again')
      await gw.gateway.close()
      const v = await runCli(['audit', 'verify', '--dir', gw.auditDir])
      t.equal(v.status, 0, 'the trail put back verifies whole:\n' + v.stdout + v.stderr)
    })
  }
})

function rec (i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `req-${i}`, subject: 'alice', method: 'GET', path: PATH, clientIp: '127.0.0.1' }
}

const open = async (dir: string): Promise<AuditWriter> => await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 << 20 })

t.test('a start on a trail that ends before audit.head is refused, and the head is left as it was', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-removed-')), 'audit')
  const first = await open(dir)
  for (let i = 0; i < 5; i++) await first.append(rec(i))
  await first.close()
  const head = readFileSync(join(dir, HEAD_FILE), 'utf8')
  const saved = readFileSync(join(dir, AUDIT_FILE))

  for (const how of ['removed', 'emptied'] as const) {
    if (how === 'removed') rmSync(join(dir, AUDIT_FILE))
    else copyFileSync('/dev/null', join(dir, AUDIT_FILE))
    const w = await open(dir)
    t.equal(w.startupError?.code, 'EAUDITCHAIN', `${how}: the start is refused (EAUDITCHAIN)`)
    t.match(w.startupError?.message, /ends at seq 0, but audit\.head names seq 5: records 1\.\.5 were removed/, `${how}: the message names the gap`)
    await t.rejects(w.append(rec(9)), { code: 'EAUDITCHAIN' }, `${how}: no record is written`)
    t.equal(readFileSync(join(dir, HEAD_FILE), 'utf8'), head, `${how}: audit.head still names seq 5`)
    // Put back, the same writer recovers by itself and goes on from seq 5.
    copyFileSync('/dev/null', join(dir, AUDIT_FILE))
    rmSync(join(dir, AUDIT_FILE))
    await import('node:fs').then((fs) => { fs.writeFileSync(join(dir, AUDIT_FILE), saved, { mode: 0o600 }) })
    await w.append(rec(10))
    t.equal(w.lastSeq, 6, `${how}: once the trail is back, the chain goes on from seq 5`)
    await w.close()
    // Back to five records for the next round.
    await import('node:fs').then((fs) => { fs.writeFileSync(join(dir, AUDIT_FILE), saved, { mode: 0o600 }); fs.writeFileSync(join(dir, HEAD_FILE), head, { mode: 0o600 }) })
  }
})

t.test('removed right after a rotation, before audit.head caught up: still refused, by what the writer knows it wrote', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-removed-')), 'audit')
  // Every group rotates: audit.jsonl holds only the newest, which audit.head (a second late) may not name yet.
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 })
  for (let i = 0; i < 6; i++) await w.append(rec(i))
  t.equal(w.lastSeq, 6)
  rmSync(join(dir, AUDIT_FILE))
  await t.rejects(w.append(rec(7)), 'the group after the removal is refused (its rotation finds no file)')
  await t.rejects(w.append(rec(8)), { code: 'EAUDITCHAIN', message: /ends at seq 5, but this gateway wrote seq 6: records 6\.\.6 were removed/ }, 'the reopen finds the trail short of what it wrote, and refuses')
  await w.close()
})

t.test('batched: a deferred fsync during a group that then fails does not count that group durable (no false refusal after)', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-removed-')), 'audit')
  const w = await AuditWriter.open({ dir, durability: 'batched', batchMs: 5, key: KEY, instance: 'gateway', rotateBytes: 1 << 20 })
  await w.append(rec(1))
  // The next group's write stalls past the deferred fsync (5 ms), then fails as a full disk does.
  const h = (w as unknown as { handle: { write: (...a: unknown[]) => Promise<unknown> } }).handle
  const write = h.write.bind(h)
  let fail = true
  h.write = async (...a: unknown[]) => {
    if (!fail) return await write(...a)
    fail = false
    await new Promise((resolve) => setTimeout(resolve, 100))
    throw Object.assign(new Error('no space left (simulated)'), { code: 'ENOSPC' })
  }
  await t.rejects(w.append(rec(2)), { code: 'ENOSPC' }, 'the group is refused')
  await w.append(rec(3))
  t.equal(w.lastSeq, 2, 'the next group is written, after the one record on disk')
  t.equal(w.durableLastSeq <= 2, true, 'and nothing beyond what is on the file was called durable')
  await w.close()
})

t.test('strict: a trail moved away between groups never gets the next group, not even for a moment (a copy taken during its fsync would hold it)', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-removed-')), 'audit')
  const moved = join(dir, 'audit.jsonl.1')
  const seqsIn = (file: string): number[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { seq: number }).seq)
  // What the moved file held whenever a group reached its fsync.
  const atSync: number[][] = []
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 << 20, beforeSync: async () => { if (existsSync(moved)) atSync.push(seqsIn(moved)) } })
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  renameSync(join(dir, AUDIT_FILE), moved)
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' }, 'the group after the move is refused')
  t.same(atSync, [], 'no group was written into the moved file (none reached its fsync there)')
  t.same(seqsIn(moved), [1, 2, 3], 'the moved file holds the three records it had')
  await w.close()
})

t.test('a file put in audit.jsonl\'s place is not archived by a rotation as if it were the trail: the group is refused', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-removed-')), 'audit')
  // Every group after the first rotates.
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 })
  for (let i = 0; i < 3; i++) await w.append(rec(i))
  const archives = (): string[] => readdirSync(dir).filter((f) => /^audit-\d+\.jsonl$/.test(f)).sort()
  const before = archives()
  const impostor = join(dir, 'impostor')
  writeFileSync(impostor, '')
  renameSync(impostor, join(dir, AUDIT_FILE))
  await t.rejects(w.append(rec(3)), { code: 'EAUDITREPLACED' }, 'the group that would rotate is refused')
  t.same(archives(), before, 'the impostor was not renamed into the archives')
  t.equal(readFileSync(join(dir, AUDIT_FILE), 'utf8'), '', 'and is left as it was')
  await w.close()
})

t.test('an audit directory moved away and replaced by a symbolic link fails closed, and nothing is made where the link points', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 200, `${proto}: served`)
  const elsewhere = mkdtempSync(join(tmpdir(), 'nasguard-elsewhere-'))
  const kept = gw.auditDir + '.kept'
  renameSync(gw.auditDir, kept)
  symlinkSync(elsewhere, gw.auditDir)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 503, `${proto}: 503 while the directory is a link`)
  t.same(readdirSync(elsewhere), [], 'no audit.jsonl made where the link points')
  t.ok(gw.logs.some((l) => /was (removed|replaced|replaced by a symbolic link) while the gateway had it open/.test(l)), 'the log says why')
  rmSync(gw.auditDir)
  renameSync(kept, gw.auditDir)
  await waitFor('the gateway to serve again', async () => (await fetchAs('h1', gw, PATH, bearer(gw.token()))).status === 200 ? true : undefined, { tries: 100, intervalMs: 50 })
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 200, `${proto}: served again once the directory is back`)
})
