// Worker chains are each checked against themselves: a chain replaced by a
// copy of another, or by a link to it, or two chains swapped, would verify
// and hide or misattribute records. Each chain is sealed under a key bound
// to its name (chainKey), and verify must report all of these.
import t from 'tap'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, type AuditRecord } from '../../src/audit/writer.js'
import { chainKey, recordChains } from '../../src/audit/chains.js'
import { walkAll } from '../../src/audit/commands.js'

const KEY = Buffer.from('k'.repeat(64))

function rec (who: string, i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `${who}-${i}`, subject: who, method: 'GET', path: `/medicall/${who}-${i}.wav`, clientIp: '127.0.0.1' }
}

async function trail (): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-chains-'))
  for (const [i, who] of ['alice', 'mallory'].entries()) {
    const w = await AuditWriter.open({ dir: join(dir, `worker-${i}`), durability: 'strict', batchMs: 100, key: chainKey(KEY, `worker-${i}`), instance: 'gateway', rotateBytes: 1 << 20 })
    for (let n = 0; n < 5; n++) await w.append(rec(who, n))
    await w.close()
  }
  recordChains(dir, KEY, ['worker-0', 'worker-1'])
  return dir
}

t.test('a clean pair of chains verifies', async (t) => {
  const { merged } = await walkAll({ dir: await trail(), key: KEY })
  t.same(merged.problems, [])
})

t.test('a chain replaced by a copy of another is reported', async (t) => {
  const dir = await trail()
  rmSync(join(dir, 'worker-1'), { recursive: true })
  cpSync(join(dir, 'worker-0'), join(dir, 'worker-1'), { recursive: true })
  const { merged } = await walkAll({ dir, key: KEY })
  t.ok(merged.problems.some((p) => /chain worker-1 starts with the same record as chain worker-0: it is a copy/.test(p.message)))
})

t.test('a chain replaced by a link to another is reported', async (t) => {
  const dir = await trail()
  rmSync(join(dir, 'worker-1'), { recursive: true })
  symlinkSync(join(dir, 'worker-0'), join(dir, 'worker-1'))
  const { merged } = await walkAll({ dir, key: KEY })
  t.ok(merged.problems.some((p) => /chain worker-1 is a symbolic link/.test(p.message)))
})

t.test('two chains swapped are reported: a chain verifies only under its own name', async (t) => {
  const dir = await trail()
  renameSync(join(dir, 'worker-0'), join(dir, 'swap'))
  renameSync(join(dir, 'worker-1'), join(dir, 'worker-0'))
  renameSync(join(dir, 'swap'), join(dir, 'worker-1'))
  const { merged } = await walkAll({ dir, key: KEY })
  t.ok(merged.problems.some((p) => /^worker-0: /.test(p.message)), 'worker-0 reported')
  t.ok(merged.problems.some((p) => /^worker-1: /.test(p.message)), 'worker-1 reported')
})

t.test('one chain\'s head copied over another\'s is reported', async (t) => {
  const dir = await trail()
  copyFileSync(join(dir, 'worker-0', 'audit.head'), join(dir, 'worker-1', 'audit.head'))
  const { merged } = await walkAll({ dir, key: KEY })
  t.ok(merged.problems.some((p) => /^worker-1: .*audit\.head/.test(p.message)), JSON.stringify(merged.problems))
})

t.test('a worker chain written before chain keys (sealed with the audit key) upgrades in place: the gateway goes on writing it, verify passes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-chains-'))
  const old = await AuditWriter.open({ dir: join(dir, 'worker-0'), durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 << 20 })
  for (let n = 0; n < 3; n++) await old.append(rec('alice', n))
  await old.close()
  recordChains(dir, KEY, ['worker-0'])
  t.same((await walkAll({ dir, key: KEY })).merged.problems, [], 'the old chain verifies as it is')
  const upgraded = await AuditWriter.open({ dir: join(dir, 'worker-0'), durability: 'strict', batchMs: 100, key: chainKey(KEY, 'worker-0'), legacyKey: KEY, instance: 'gateway', rotateBytes: 1 << 20 })
  t.equal(upgraded.startupError, null)
  t.ok(upgraded.healthy)
  for (let n = 3; n < 6; n++) await upgraded.append(rec('alice', n))
  await upgraded.close()
  const { merged } = await walkAll({ dir, key: KEY })
  t.same(merged.problems, [])
  t.equal(merged.records, 6)
})

t.test('a record sealed with the audit key after one sealed with the chain key is an edit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-chains-'))
  const w = await AuditWriter.open({ dir: join(dir, 'worker-0'), durability: 'strict', batchMs: 100, key: chainKey(KEY, 'worker-0'), instance: 'gateway', rotateBytes: 1 << 20 })
  for (let n = 0; n < 2; n++) await w.append(rec('alice', n))
  await w.close()
  // Only a holder of the key could write this; the rule still holds: legacy records come first or not at all.
  const late = await AuditWriter.open({ dir: join(dir, 'worker-0'), durability: 'strict', batchMs: 100, key: KEY, legacyKey: chainKey(KEY, 'worker-0'), instance: 'gateway', rotateBytes: 1 << 20 })
  await late.append(rec('mallory', 0))
  await late.close()
  recordChains(dir, KEY, ['worker-0'])
  const { merged } = await walkAll({ dir, key: KEY })
  t.ok(merged.problems.some((p) => /worker-0: audit\.jsonl:3: the record was edited/.test(p.message)), JSON.stringify(merged.problems))
})

t.test('a chain replaced by a plain file, or a trail file by a directory: reported, not a crash', async (t) => {
  const dir = await trail()
  rmSync(join(dir, 'worker-1'), { recursive: true })
  writeFileSync(join(dir, 'worker-1'), 'not a chain\n')
  const a = await walkAll({ dir, key: KEY })
  t.ok(a.merged.problems.some((p) => /chain worker-1 is listed in audit\.chains but its files are gone/.test(p.message)), JSON.stringify(a.merged.problems))
  const other = await trail()
  rmSync(join(other, 'worker-0', 'audit.jsonl'))
  mkdirSync(join(other, 'worker-0', 'audit.jsonl'))
  const b = await walkAll({ dir: other, key: KEY })
  t.ok(b.merged.problems.some((p) => /^worker-0: /.test(p.message)), JSON.stringify(b.merged.problems))
})
