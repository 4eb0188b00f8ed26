// `nasguard audit summary` flags the subjects a download budget stopped:
// a column per subject (which budgets, how many refusals) and one line on
// stderr naming them, read through the verified chain.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createKey } from '../../src/audit/key.js'
import { AuditWriter } from '../../src/audit/writer.js'
import { runCli } from '../helpers/process.js'

t.test('audit summary flags the subjects that hit a budget', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-budget-summary-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const dir = join(base, 'audit')
  const keyFile = join(base, 'audit.key')
  const w = await AuditWriter.open({ dir, durability: 'batched', batchMs: 50, key: createKey(keyFile), instance: 'gw1', rotateBytes: 1 << 20 })
  const time = new Date().toISOString()
  for (let i = 0; i < 3; i++) await w.append({ event: 'fetch', time, requestId: `f${i}`, path: `/medicall/2026/11/30/${i}.wav`, subject: 'scraper', rule: 'recordings', status: 200, bytes: 10, outcome: 'complete' })
  for (let i = 0; i < 4; i++) await w.append({ event: 'refusal', time, requestId: `q${i}`, path: `/medicall/2026/11/30/x${i}.wav`, subject: 'scraper', rule: 'recordings', status: 429, reason: 'NASGUARD_ERR_QUOTA_EXCEEDED', budget: 'recordingsPerHour' })
  await w.append({ event: 'refusal', time, requestId: 'q9', path: '/medicall/a.wav', subject: 'scraper', status: 429, reason: 'NASGUARD_ERR_QUOTA_EXCEEDED', budget: 'requestsPerMinute' })
  await w.append({ event: 'fetch', time, requestId: 'l1', path: '/medicall/2026/11/30/0.wav', subject: 'listener', rule: 'recordings', status: 206, bytes: 10, outcome: 'complete' })
  await w.append({ event: 'refusal', time, requestId: 'l2', path: '/medicall/b', subject: 'listener', status: 403, reason: 'NASGUARD_ERR_INSUFFICIENT_SCOPE' })
  await w.close()

  const json = await runCli(['audit', 'summary', '--dir', dir, '--key-file', keyFile, '--json'])
  t.equal(json.status, 0, json.stderr)
  const rows = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(rows.find((r) => r.subject === 'scraper'), { refusals: 5, budgetsHit: { recordingsPerHour: 4, requestsPerMinute: 1 } })
  t.same(rows.find((r) => r.subject === 'listener')?.budgetsHit, {}, 'a refusal that is not a budget\'s is not one')
  t.match(json.stderr, /1 subject\(s\) hit a download budget: scraper \(recordingsPerHour:4,requestsPerMinute:1\)/)

  const table = await runCli(['audit', 'summary', '--dir', dir, '--key-file', keyFile])
  t.equal(table.status, 0, table.stderr)
  t.match(table.stdout, /^subject\tfiles\tfetches\tbytes\trefusals\tbudgets hit\t/m)
  t.match(table.stdout, /^scraper\t3\t3\t30\t5\trecordingsPerHour:4,requestsPerMinute:1\t/m)
  t.match(table.stdout, /^listener\t1\t1\t10\t1\t-\t/m)
})
