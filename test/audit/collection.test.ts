// `nasguard audit verify` over a collection: the audit dirs of three
// gateways copied into <collection>/<instance>/, written by the real
// writer (gw1 one process, gw2 two workers, gw3 one process and the
// operator tools' chain), all under one audit key. A clean collection
// passes; a missing host (with --expect), an edited record, a trail
// filed under a second name and a removed worker chain each fail, named.
import t from 'tap'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, type AuditRecord } from '../../src/audit/writer.js'
import { chainKey, recordChains } from '../../src/audit/chains.js'
import { walkCollection } from '../../src/audit/collection.js'
import { runCli } from '../helpers/process.js'

// The key file holds the key as text (src/audit/key.ts), as a gateway's.
const KEY_TEXT = 'c'.repeat(64)
const KEY = Buffer.from(KEY_TEXT)

function rec (who: string, i: number): AuditRecord {
  return { event: 'access', time: new Date().toISOString(), requestId: `${who}-${i}`, subject: who, method: 'GET', path: `/medicall/${who}-${i}.wav`, clientIp: '127.0.0.1' }
}

async function chain (dir: string, name: string, instance: string, who: string, n = 4): Promise<void> {
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: chainKey(KEY, name), instance, rotateBytes: 1 << 20 })
  for (let i = 0; i < n; i++) await w.append(rec(who, i))
  await w.close()
}

/** A collection of three instances and the key file; a fresh one per test (they damage it). */
async function collection (t: { teardown: (fn: () => void) => void }): Promise<{ dir: string, keyFile: string }> {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-collection-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const dir = join(base, 'collected')
  mkdirSync(dir)
  // gw1: a single process (the `.` chain in the dir itself).
  await chain(join(dir, 'gw1'), '.', 'gw1', 'alice')
  // gw2: two workers, listed in the sealed audit.chains.
  await chain(join(dir, 'gw2', 'worker-0'), 'worker-0', 'gw2', 'bob')
  await chain(join(dir, 'gw2', 'worker-1'), 'worker-1', 'gw2', 'carol')
  recordChains(join(dir, 'gw2'), KEY, ['worker-0', 'worker-1'])
  // gw3: a single process and the operator tools' chain.
  await chain(join(dir, 'gw3'), '.', 'gw3', 'dave')
  await chain(join(dir, 'gw3', 'ops'), 'ops', 'gw3', 'operator', 1)
  recordChains(join(dir, 'gw3'), KEY, ['.', 'ops'])
  const keyFile = join(base, 'audit.key')
  writeFileSync(keyFile, KEY_TEXT + '\n', { mode: 0o600 })
  return { dir, keyFile }
}

const verify = async (dir: string, keyFile: string, expect?: string[]): Promise<{ status: number | null, stdout: string, stderr: string }> =>
  await runCli(['audit', 'verify', '--dir', dir, '--key-file', keyFile, ...(expect ? ['--expect', ...expect] : [])])

t.test('the key file format verify reads', async (t) => {
  // The test's key file must be one loadAuditKey accepts: one instance verified alone.
  const { dir, keyFile } = await collection(t)
  const r = await verify(join(dir, 'gw1'), keyFile)
  t.equal(r.status, 0, 'exit 0', { output: r.stdout + r.stderr })
  t.match(r.stdout, /chain intact/)
})

t.test('a clean collection passes, with a verdict per instance', async (t) => {
  const { dir, keyFile } = await collection(t)
  const r = await verify(dir, keyFile, ['gw1', 'gw2', 'gw3'])
  t.equal(r.status, 0, 'exit 0', { output: r.stdout + r.stderr })
  t.match(r.stdout, /collection .*: 3 instance\(s\), expected: gw1 gw2 gw3/)
  for (const gw of ['gw1', 'gw2', 'gw3']) t.match(r.stdout, new RegExp(`^${gw}: intact`, 'm'))
  t.match(r.stdout, /^ {2}worker-1: 4 records/m)
  t.match(r.stdout, /^ {2}ops \(operator tools\): 1 records/m)
  t.match(r.stdout, /all 3 instance\(s\) intact/)
  t.match(r.stdout, /^ {2}gw2: worker-0@4:[0-9a-f]{64} worker-1@4:[0-9a-f]{64}$/m, 'anchors per instance')
  t.notMatch(r.stdout, /no --expect given/)
  const bare = await verify(dir, keyFile)
  t.equal(bare.status, 0, 'exit 0', { output: bare.stdout })
  t.match(bare.stdout, /no --expect given: a host whose whole directory is missing from the collection cannot be detected/)
})

t.test('a deleted instance fails, named, when the instances are expected', async (t) => {
  const { dir, keyFile } = await collection(t)
  rmSync(join(dir, 'gw2'), { recursive: true })
  const r = await verify(dir, keyFile, ['gw1', 'gw2', 'gw3'])
  t.equal(r.status, 1, 'exit 1', { output: r.stdout })
  t.match(r.stdout, /^gw2: MISSING: instance gw2 is expected but gw2\/ is not in the collection/m)
  t.match(r.stdout, /TAMPERING or missing trails: gw2$/m)
  t.match(r.stdout, /^gw1: intact/m, 'the others still get their verdict')
  // The expected list is a parameter (a registry of instances can feed it).
  const c = await walkCollection({ dir, key: KEY }, { expect: ['gw1', 'gw2', 'gw3'] })
  t.same(c.missing, ['gw2'])
  // Without the list, nothing can tell: the output says so.
  const bare = await verify(dir, keyFile)
  t.equal(bare.status, 0)
  t.match(bare.stdout, /no --expect given/)
})

t.test('an edited record in one instance fails, naming the instance and the chain', async (t) => {
  const { dir, keyFile } = await collection(t)
  const file = join(dir, 'gw2', 'worker-1', 'audit.jsonl')
  const text = readFileSync(file, 'utf8')
  t.ok(text.includes('/medicall/carol-2.wav'))
  writeFileSync(file, text.replace('/medicall/carol-2.wav', '/medicall/carol-9.wav'))
  const r = await verify(dir, keyFile, ['gw1', 'gw2', 'gw3'])
  t.equal(r.status, 1, 'exit 1', { output: r.stdout })
  t.match(r.stdout, /^gw2: FAILED/m)
  t.match(r.stdout, /^ {2}TAMPERING: .*worker-1: /m)
  t.match(r.stdout, /^gw1: intact/m)
  t.match(r.stdout, /^gw3: intact/m)
  t.match(r.stdout, /TAMPERING or missing trails: gw2$/m)
})

t.test('a trail copied under a second instance name fails: its records name another instance', async (t) => {
  const { dir, keyFile } = await collection(t)
  // gw3's trail replaced by a copy of gw1's (each verifies on its own: one key).
  rmSync(join(dir, 'gw3'), { recursive: true })
  cpSync(join(dir, 'gw1'), join(dir, 'gw3'), { recursive: true })
  // And gw1's copied to a name of its own, that the list expects too.
  cpSync(join(dir, 'gw1'), join(dir, 'gw4'), { recursive: true })
  const r = await verify(dir, keyFile, ['gw1', 'gw2', 'gw3', 'gw4'])
  t.equal(r.status, 1, 'exit 1', { output: r.stdout })
  t.match(r.stdout, /^gw3: FAILED/m)
  t.match(r.stdout, /record seq 1 names instance gw1, but it is filed under gw3\//)
  t.match(r.stdout, /^gw4: FAILED/m)
  t.match(r.stdout, /record seq 1 names instance gw1, but it is filed under gw4\//)
  t.match(r.stdout, /1 more record\(s\) name another instance than gw4/, 'the rest counted, not listed')
  t.match(r.stdout, /^gw1: intact/m)
  t.match(r.stdout, /TAMPERING or missing trails: gw3, gw4$/m)
  // The same, in process (the CLI above runs the build).
  const c = await walkCollection({ dir, key: KEY }, { expect: ['gw1', 'gw2', 'gw3', 'gw4'] })
  t.same(c.instances.filter((i) => i.report.problems.length > 0).map((i) => i.name), ['gw3', 'gw4'])
  t.same(c.problems, [])
})

t.test('a removed worker chain inside one instance fails, naming the instance and the chain', async (t) => {
  const { dir, keyFile } = await collection(t)
  rmSync(join(dir, 'gw2', 'worker-1'), { recursive: true })
  const r = await verify(dir, keyFile, ['gw1', 'gw2', 'gw3'])
  t.equal(r.status, 1, 'exit 1', { output: r.stdout })
  t.match(r.stdout, /^gw2: FAILED/m)
  t.match(r.stdout, /chain worker-1 is listed in audit\.chains but its files are gone/)
  t.match(r.stdout, /TAMPERING or missing trails: gw2$/m)
})

t.test('an instance with an unexpected name, and a directory that is no trail, fail', async (t) => {
  const { dir, keyFile } = await collection(t)
  mkdirSync(join(dir, 'gw5'))
  const r = await verify(dir, keyFile, ['gw1', 'gw2'])
  t.equal(r.status, 1, 'exit 1', { output: r.stdout })
  t.match(r.stdout, /^gw3: FAILED: instance gw3 is in the collection but not among the expected instances/m)
  t.match(r.stdout, /^gw5: FAILED: gw5\/ is not an instance's audit directory/m)
})

t.test('--expect on a single host\'s trail, and --anchor over a collection, are usage errors', async (t) => {
  const { dir, keyFile } = await collection(t)
  const one = await verify(join(dir, 'gw1'), keyFile, ['gw1'])
  t.equal(one.status, 2, 'exit 2', { output: one.stdout + one.stderr })
  t.match(one.stderr, /--expect is for a collection/)
  const anchored = await runCli(['audit', 'verify', '--dir', dir, '--key-file', keyFile, '--anchor', `1:${'0'.repeat(64)}`])
  t.equal(anchored.status, 2, 'exit 2', { output: anchored.stdout + anchored.stderr })
  t.match(anchored.stderr, /--anchor names one host's chains/)
})
