// A rollback: someone without the key puts back an older genuine
// audit.head and cuts the trail back to it. The trail then verifies on its
// own (every line is genuine, and the head matches its end); only an anchor
// kept off the host tells. `audit verify` prints anchors, and takes them
// back with --anchor. Run through the built CLI (npm run build first).
import t, { type Test } from 'tap'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, AUDIT_FILE, HEAD_FILE, type AuditRecord } from '../../src/audit/writer.js'
import { chainKey, recordChains } from '../../src/audit/chains.js'
import { runCli } from '../helpers/process.js'
import { clearOfUtcMidnight } from '../helpers/wait.js'

// The audit writer rotates by the wall clock's UTC day; trails cut by line: the whole file runs within one UTC day.
await clearOfUtcMidnight(30_000)

const KEY_TEXT = 'r'.repeat(64)
const KEY = Buffer.from(KEY_TEXT)

function rec (i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `req-${i}`, subject: 'alice', method: 'GET', path: '/medicall/x.wav', clientIp: '127.0.0.1' }
}

async function append (dir: string, n: number, chain = '.'): Promise<void> {
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: chainKey(KEY, chain), instance: 'gateway', rotateBytes: 1 << 20 })
  for (let i = 0; i < n; i++) await w.append(rec(i))
  await w.close()
}

function newTrail (t: Test): string {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-rollback-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  writeFileSync(join(base, 'audit.key'), KEY_TEXT + '\n', { mode: 0o600 })
  return join(base, 'audit')
}

async function verify (dir: string, ...anchors: string[]): Promise<{ status: number | null, stdout: string, stderr: string }> {
  return await runCli(['audit', 'verify', '--dir', dir, ...(anchors.length > 0 ? ['--anchor', ...anchors] : [])])
}

function anchorsOf (stdout: string): string[] {
  const m = /^anchors \(keep them off this host; pass them back with --anchor\): (.+)$/m.exec(stdout)
  return m ? m[1].split(' ') : []
}

/** The first n lines of the trail's live file, as a cut back to an older head leaves it. */
function cutTo (dir: string, lines: number): void {
  const file = join(dir, AUDIT_FILE)
  writeFileSync(file, readFileSync(file, 'utf8').split('\n').slice(0, lines).map((l) => l + '\n').join(''))
}

/** A trail of kept and then later records, and rollback(): the later ones cut off and the head of the kept ones put back. */
async function rollbackable (t: Test, kept: number, later: number): Promise<{ dir: string, rollback: () => void }> {
  const dir = newTrail(t)
  await append(dir, kept)
  const oldHead = join(dir, '..', 'old-head')
  copyFileSync(join(dir, HEAD_FILE), oldHead)
  await append(dir, later)
  return {
    dir,
    rollback: () => {
      cutTo(dir, kept)
      copyFileSync(oldHead, join(dir, HEAD_FILE))
    }
  }
}

t.test('a trail cut back to an older genuine head: verify alone passes, the anchor catches it', async (t) => {
  const { dir, rollback } = await rollbackable(t, 10, 10)
  const before = await verify(dir)
  t.equal(before.status, 0, before.stdout + before.stderr)
  const anchors = anchorsOf(before.stdout)
  t.equal(anchors.length, 1)
  t.match(anchors[0], /^20:[0-9a-f]{64}$/)
  const held = await verify(dir, ...anchors)
  t.equal(held.status, 0, held.stdout + held.stderr)
  t.match(held.stdout, /chain intact, and it holds the 1 anchored record\(s\)/)

  // The rollback: records 11..20 cut off, the head of seq 10 put back.
  rollback()
  const blind = await verify(dir)
  t.equal(blind.status, 0, 'without an anchor the cut trail verifies: this is why anchors exist')
  const caught = await verify(dir, ...anchors)
  t.equal(caught.status, 1, caught.stdout)
  t.match(caught.stdout, /the trail ends at seq 10, but an anchor says record seq 20 was written: records 11\.\.20 were removed from the end \(the trail was rolled back\)/)

  // The gateway then went on writing: seq 20 exists again, but is another record.
  await append(dir, 12)
  const rewritten = await verify(dir, ...anchors)
  t.equal(rewritten.status, 1, rewritten.stdout)
  t.match(rewritten.stdout, /record seq 20 is not the record anchored as [0-9a-f]{16}…: the trail was cut back and written again from there/)
})

t.test('worker chains: one anchor each, and a chain the trail no longer has is reported', async (t) => {
  const dir = newTrail(t)
  await append(join(dir, 'worker-0'), 4, 'worker-0')
  await append(join(dir, 'worker-1'), 6, 'worker-1')
  recordChains(dir, KEY, ['worker-0', 'worker-1'])
  const r = await verify(dir)
  t.equal(r.status, 0, r.stdout + r.stderr)
  const anchors = anchorsOf(r.stdout)
  t.same(anchors.map((a) => a.split(':')[0]), ['worker-0@4', 'worker-1@6'])
  t.equal((await verify(dir, ...anchors)).status, 0)
  const w2 = anchors[1].replace('worker-1@', 'worker-2@')
  const gone = await verify(dir, w2)
  t.equal(gone.status, 1)
  t.match(gone.stdout, /an anchor names chain worker-2 at seq 6, but the trail has no such chain/)
  // worker-1's anchor checked against worker-0: not its record.
  const crossed = await verify(dir, anchors[1].replace('worker-1@', 'worker-0@'))
  t.equal(crossed.status, 1)
  t.match(crossed.stdout, /worker-0: the trail ends at seq 4, but an anchor says record seq 6 was written/)
})

t.test('a malformed anchor is a usage error (exit 2) naming the format', async (t) => {
  const dir = newTrail(t)
  await append(dir, 2)
  for (const bad of ['20', '20:abc', 'worker-x@1:' + '0'.repeat(64), '-1:' + '0'.repeat(64)]) {
    const r = await verify(dir, bad)
    t.equal(r.status, 2, bad)
    t.match(r.stderr, /invalid --anchor .*: use \[chain@\]seq:hash/, bad)
  }
})

t.test('anchors and prune: the last pruned record is checked against the checkpoint; an older one cannot be, and is never counted as held', async (t) => {
  const dir = newTrail(t)
  await append(dir, 10)
  const before = anchorsOf((await verify(dir)).stdout)[0]
  // Rotate: record 11 goes to a new file, so the first ten can be pruned.
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 })
  await w.append(rec(11))
  await w.close()
  const pruned = await runCli(['audit', 'prune', '--dir', dir, '--before', new Date(Date.now() + 60_000).toISOString()])
  t.equal(pruned.status, 0, pruned.stdout + pruned.stderr)
  t.match(pruned.stdout, /removed audit-/)
  const intact = await verify(dir)
  t.equal(intact.status, 0, intact.stdout)
  const cut = Number(/records before seq (\d+) were pruned/.exec(intact.stdout)?.[1])
  t.equal(cut, 11, intact.stdout)
  t.match(before, /^10:/)
  t.equal((await verify(dir, before)).status, 0, 'the last pruned record, checked against the checkpoint')
  const forged = await verify(dir, `10:${'0'.repeat(64)}`)
  t.equal(forged.status, 1)
  t.match(forged.stdout, /the last pruned record, seq 10, is not the record anchored/)
  const old = await verify(dir, `1:${'0'.repeat(64)}`)
  t.equal(old.status, 1, 'an anchor in the pruned range cannot be checked: not counted as held')
  t.match(old.stdout, /an anchor names seq 1, but records before seq \d+ were pruned: it cannot be checked/)
})

t.test('prune --anchor: a rolled-back trail is not pruned (so the evidence stays)', async (t) => {
  const { dir, rollback } = await rollbackable(t, 6, 4)
  const anchor = anchorsOf((await verify(dir)).stdout)[0]
  rollback()
  await append(dir, 6)
  const r = await runCli(['audit', 'prune', '--dir', dir, '--before', new Date(Date.now() + 60_000).toISOString(), '--anchor', anchor])
  t.equal(r.status, 1, r.stdout + r.stderr)
  t.match(r.stderr, /is not the record anchored as/)
  t.match(r.stderr, /nothing was pruned/)
})

t.test('two anchors for one record with different hashes, or seq 0: a usage error', async (t) => {
  const dir = newTrail(t)
  await append(dir, 5)
  const real = anchorsOf((await verify(dir)).stdout)[0]
  for (const args of [[`5:${'f'.repeat(64)}`, real], [real, `5:${'f'.repeat(64)}`]]) {
    const r = await verify(dir, ...args)
    t.equal(r.status, 2, args.join(' '))
    t.match(r.stderr, /two --anchor values for \.@5 with different hashes/)
  }
  const zero = await verify(dir, `0:${'0'.repeat(64)}`)
  t.equal(zero.status, 2)
  t.equal((await verify(dir, real, real)).status, 0, 'the same anchor twice is fine')
})
