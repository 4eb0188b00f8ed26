// Regressions from the second review of the audit writer and verifier.
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { execFileSync, spawn } from 'node:child_process'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditWriter, AUDIT_FILE, HEAD_FILE, type AuditWriterOptions } from '../../src/audit/writer.js'
import { walkTrail } from '../../src/audit/verify.js'
import { clearOfUtcMidnight } from '../helpers/wait.js'

// The audit writer rotates by the wall clock's UTC day; files counted: the whole file runs within one UTC day.
await clearOfUtcMidnight(30_000)

const key = Buffer.from('r'.repeat(64))
const opts = (dir: string, extra: Partial<AuditWriterOptions> = {}): AuditWriterOptions => ({ dir, durability: 'strict', batchMs: 100, key, instance: 't', rotateBytes: 1 << 26, ...extra })
const rec = (i: number): { event: 'access', time: string, requestId: string } => ({ event: 'access', time: new Date().toISOString(), requestId: `r${i}` })

t.test('a failed sync right after a failed open does not wipe acknowledged records', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-wipe-'))
  const w1 = await AuditWriter.open(opts(dir))
  for (let i = 1; i <= 20; i++) await w1.append(rec(i))
  await w1.close()
  const size = readFileSync(join(dir, AUDIT_FILE)).length
  // The first group after a restart fails at its fsync.
  let fail = true
  const w2 = await AuditWriter.open(opts(dir, { beforeSync: async () => { if (fail) { fail = false; throw new Error('EIO (simulated)') } } }))
  await t.rejects(w2.append(rec(21)), /EIO/)
  await w2.append(rec(22))
  await w2.close()
  t.ok(readFileSync(join(dir, AUDIT_FILE)).length > size, 'the file kept its records and grew')
  const r = await walkTrail(dir, key)
  t.same(r.problems, [], 'the chain is intact')
  t.equal(r.records, 21, 'twenty acknowledged records plus the one after the failure')
})

t.test('verify: a removed audit.head, and an edited last line without its newline, are tampering', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-tail-'))
  const w = await AuditWriter.open(opts(dir))
  for (let i = 1; i <= 10; i++) await w.append(rec(i))
  await w.close()
  const file = join(dir, AUDIT_FILE)
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n')

  const a = join(dir, 'a'); mkdirSync(a)
  writeFileSync(join(a, AUDIT_FILE), lines.slice(0, 7).join('\n') + '\n')
  const ra = await walkTrail(a, key)
  t.match(ra.problems.map((p) => p.kind), ['missing-tail'], 'last records and the head removed: reported')

  const b = join(dir, 'b'); mkdirSync(b)
  writeFileSync(join(b, AUDIT_FILE), [...lines.slice(0, 9), lines[9].replace('"r10"', '"rX0"')].join('\n'))
  writeFileSync(join(b, HEAD_FILE), readFileSync(join(dir, HEAD_FILE)))
  const rb = await walkTrail(b, key)
  t.ok(rb.problems.some((p) => p.kind === 'edited'), 'an edited last line is an edit, not a crash')
  t.notOk(rb.truncatedTail)

  const c = join(dir, 'c'); mkdirSync(c)
  writeFileSync(join(c, AUDIT_FILE), lines.join('\n') + '\n' + lines[0].slice(0, 40))
  writeFileSync(join(c, HEAD_FILE), readFileSync(join(dir, HEAD_FILE)))
  const rc = await walkTrail(c, key)
  t.same(rc.problems, [], 'a torn fragment at the end is still a crash')
  t.ok(rc.truncatedTail)
})

t.test('one writer per audit directory: a second is refused while the first lives; a dead one\'s lock is taken over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-lock-'))
  const w1 = await AuditWriter.open(opts(dir))
  await w1.append(rec(1))
  await t.rejects(AuditWriter.open(opts(dir)), /another process|one writer per directory/, 'refused while the first is open')
  await w1.close()
  const w2 = await AuditWriter.open(opts(dir))
  await w2.append(rec(2))
  await w2.close()
  // A lock left by a process that died (kill -9): pid 2^22+1 does not exist.
  writeFileSync(join(dir, 'audit.lock'), '4194305\n')
  const w3 = await AuditWriter.open(opts(dir))
  await w3.append(rec(3))
  // The same dead pid, with this host and pid namespace named: taken over too.
  const self = readFileSync(join(dir, 'audit.lock'), 'utf8').split(' ').slice(1).join(' ')
  await w3.close()
  writeFileSync(join(dir, 'audit.lock'), `4194305 ${self}`)
  const w4 = await AuditWriter.open(opts(dir))
  await w4.append(rec(4))
  await w4.close()
  const r = await walkTrail(dir, key)
  t.same(r.problems, [])
  t.equal(r.records, 4)
})

t.test('a lock from another host or container sharing the directory is never taken over: its pid means nothing here', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-lock-'))
  const w = await AuditWriter.open(opts(dir))
  await w.append(rec(1))
  await w.close()
  for (const owner of ['host=other-box pidns=pid:[4026531836]', `host=${hostname()} pidns=pid:[1]`]) {
    // pid 2^22+1 does not exist here; in that other namespace it may be the gateway.
    writeFileSync(join(dir, 'audit.lock'), `4194305 ${owner}\n`)
    await t.rejects(AuditWriter.open(opts(dir)), { code: 'EAUDITLOCKED', message: /another process \(pid 4194305, host=.*\) holds .*audit\.lock: a gateway on another host or in another container.*If none runs there, remove/ }, owner)
    t.ok(existsSync(join(dir, 'audit.lock')), 'the lock stays')
  }
})

t.test('a lock that is not a regular file (a FIFO, a link) is refused at once, never read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-lock-'))
  execFileSync('mkfifo', [join(dir, 'audit.lock')])
  await t.rejects(AuditWriter.open(opts(dir)), { code: 'EAUDITLOCKED', message: /audit\.lock is not a regular file/ }, 'a FIFO: refused, no hang')
  unlinkSync(join(dir, 'audit.lock'))
  symlinkSync('/dev/zero', join(dir, 'audit.lock'))
  await t.rejects(AuditWriter.open(opts(dir)), { code: 'EAUDITLOCKED', message: /audit\.lock cannot be read as a lock \(ELOOP\)/ }, 'a link: refused, not followed')
  unlinkSync(join(dir, 'audit.lock'))
  writeFileSync(join(dir, 'audit.lock'), '123  456\n')
  await t.rejects(AuditWriter.open(opts(dir)), { code: 'EAUDITLOCKED', message: /does not hold a lock line/ }, 'garbage: refused with what it is')
})

t.test('processes racing for a stale lock: exactly one takes it, every time', async (t) => {
  const script = `import { takeLock } from ${JSON.stringify(new URL('../../dist/audit/lock.js', import.meta.url).href)}
try { await takeLock(process.argv[1]); console.log('took') } catch (e) { console.log(e.code) }
process.stdin.resume()`
  for (let round = 0; round < 4; round++) {
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-lock-race-'))
    // Left by a process that died (pid 2^22+1 does not exist), or none at all.
    if (round % 2 === 0) writeFileSync(join(dir, 'audit.lock'), '4194305\n')
    // Each process says its outcome and lives on until all four have said
    // theirs: the one that took the lock holds it while the others try
    // (however late a busy machine starts them), never leaving it stale.
    const children = Array.from({ length: 4 }, () => spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['pipe', 'pipe', 'inherit'] }))
    t.teardown(() => { for (const c of children) c.kill() })
    const outcomes = await Promise.all(children.map(async (c) => await new Promise<string>((resolve) => {
      let out = ''
      c.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('\n')) resolve(out.trim()) })
      c.once('exit', () => resolve(out.trim()))
    })))
    await Promise.all(children.map(async (c) => await new Promise((resolve) => { if (c.exitCode !== null || c.signalCode !== null) resolve(null); else { c.once('exit', resolve); c.stdin.end() } })))
    t.equal(outcomes.filter((o) => o === 'took').length, 1, `round ${round}: ${outcomes.join(',')}`)
    t.same(outcomes.filter((o) => o !== 'took'), ['EAUDITLOCKED', 'EAUDITLOCKED', 'EAUDITLOCKED'])
  }
})

t.test('the durable sequence (what nasguard_audit_sequence reports) never goes back on a failed write', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-durable-'))
  let fail = false
  const w = await AuditWriter.open(opts(dir, { beforeSync: async () => { if (fail) throw Object.assign(new Error('no space'), { code: 'ENOSPC' }) } }))
  for (let i = 0; i < 5; i++) await w.append(rec(i))
  t.equal(w.durableLastSeq, 5)
  fail = true
  await t.rejects(w.append(rec(6)))
  t.equal(w.durableLastSeq, 5, 'still 5')
  fail = false
  await w.append(rec(7))
  t.equal(w.durableLastSeq, 6)
  await w.close()
})
