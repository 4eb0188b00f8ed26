// Worker chains are each checked against themselves: a chain replaced by a
// copy of another, or by a link to it, would verify and hide its own
// records. verify must report both.
import t from 'tap'
import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, type AuditRecord } from '../../src/audit/writer.js'
import { recordChains } from '../../src/audit/chains.js'
import { walkAll } from '../../src/audit/commands.js'

const KEY = Buffer.from('k'.repeat(64))

function rec (who: string, i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `${who}-${i}`, subject: who, method: 'GET', path: `/medicall/${who}-${i}.wav`, clientIp: '127.0.0.1' }
}

async function trail (): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-chains-'))
  for (const [i, who] of ['alice', 'mallory'].entries()) {
    const w = await AuditWriter.open({ dir: join(dir, `worker-${i}`), durability: 'strict', batchMs: 100, key: KEY, instance: 'gateway', rotateBytes: 1 << 20 })
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
