// nasguard seal's bulk module in-process, on real files: what a run leaves
// (every recording sealed, verified, decrypting to its SHA-256), reruns
// (the journal, a torn journal line, a leftover temporary file, a sealed
// file without a journal line, intact or damaged), a file changing while
// it is sealed, --dry-run, --remove-plaintext, an erased period, and no
// plaintext name in any output or in the journal.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { seal, type BulkOptions } from '../../src/sealing/commands.js'
import { eraseKey, initKeyring, Keyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { sealedPathOf } from '../../src/sealing/names.js'
import { commit, diskPathOf, tempFileOf } from '../../src/sealing/bulk/durable.js'
import { Journal, lockShare } from '../../src/sealing/bulk/journal.js'
import { runBulk, sealRunRecord, type FileResult, type Summary } from '../../src/sealing/bulk/run.js'
import { bindingOf, openedDigest, SealingKeys, sealJob, verifyWritten } from '../../src/sealing/bulk/seal.js'
import { compilePeriodPattern } from '../../src/sealing/period.js'
import { SealStream } from '../../src/sealing/seal-stream.js'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { listFiles, makeShare, readJournal, sha256, snapshot, type Share } from './seal-fixtures.js'

const NUMBERS = ['46701234567', '46709876543', '46700000001', '46700000002']

function recordings (): Array<[string, Buffer]> {
  return [
    [`/medicall/2016/01/101500_${NUMBERS[0]}.wav`, randomBytes(200_000)],
    [`/medicall/2016/01/101600_${NUMBERS[1]}.wav`, Buffer.alloc(0)],
    [`/medicall/2016/01/team a/101700_${NUMBERS[2]}.mp3`, randomBytes(65_536)],
    [`/medicall/2016/02/090000_${NUMBERS[3]}.wav`, randomBytes(65_537)]
  ]
}

interface Ran { code: number, results: FileResult[], summary: Summary, text: string }

async function run (share: Share, o: Partial<BulkOptions> = {}, tty = false): Promise<Ran> {
  let text = ''
  const code = await seal(share.config, { source: share.root, jobs: 2, ...o }, { out: (s) => { text += s }, tty })
  const lines = tty ? [] : text.trim().split('\n').map((l) => JSON.parse(l) as FileResult & { summary?: Summary })
  return { code, results: lines.filter((l) => l.summary === undefined), summary: lines.find((l) => l.summary)?.summary as Summary, text }
}

const sealedOf = (share: Share, path: string): string => sealedPathOf(Keyring.load(share.keyring).nameKey, path.split('/').slice(1), 1)

/** Every recording of the share opens, sealed, to its SHA-256; returns how many. */
async function checkSealed (t: Test, share: Share): Promise<void> {
  const ring = Keyring.load(share.keyring)
  for (const [path, sha] of share.sha) {
    const segments = path.split('/').slice(1)
    const period = `${segments[1]}-${segments[2]}`
    const got = await openedDigest(diskPathOf(share.root, sealedOf(share, path)), ring.identities(period), bindingOf(segments))
    t.equal(got.sha256, sha, 'a sealed recording decrypts to its SHA-256')
  }
}

function noPlaintextNames (t: Test, text: string, what: string): void {
  for (const n of NUMBERS) t.notOk(text.includes(n), `no phone number in ${what}`)
  // (Directories stay readable: only file names are sealed here.)
  t.notOk(/\.wav|\.mp3/.test(text), `no plaintext file name in ${what}`)
}

t.test('a share sealed, verified and resumed; the journal and the output hold no plaintext name', async (t) => {
  const share = makeShare(recordings())
  writeFileSync(join(share.root, 'medicall/2016/01/notes.txt'), 'not a recording')
  writeFileSync(join(share.root, 'medicall/readme.wav'), 'no period')
  // Recorded in 2016: a retention rule dated by Last-Modified must still see 2016 once they are sealed.
  const recorded = new Date('2016-01-14T10:15:00Z')
  for (const [path] of recordings()) utimesSync(join(share.root, path), recorded, recorded)
  const first = await run(share)
  for (const [path] of recordings()) t.equal(statSync(diskPathOf(share.root, sealedOf(share, path))).mtimeMs, recorded.getTime(), 'the sealed file keeps the recording\'s Last-Modified')
  t.equal(first.code, 0)
  t.same([first.summary.sealed, first.summary.skipped, first.summary.failed], [4, 2, 0])
  t.equal(first.summary.bytes, 200_000 + 65_536 + 65_537)
  await checkSealed(t, share)
  t.ok(listFiles(share.root).every((p) => !/\.nasguard-seal-/.test(p)), 'no temporary file left')
  const journal = readJournal(join(share.audit, 'seal.journal'))
  t.equal(journal.trim().split('\n').length, 4, 'one journal line per sealed file')
  noPlaintextNames(t, first.text + journal, 'the output and the journal')
  t.match(first.results.find((r) => r.bytes === 65_536)?.sealed, /^\/medicall\/2016\/01\/team%20a\/[a-z2-7]+\.age$/, 'readable segments percent-encoded as the NAS path is')
  // Debian's age opens what seal wrote.
  const [path, body] = recordings().slice(0, 1)[0]
  const opened = execFileSync('age', ['-d', '-i', join(share.keyring, '2016-01.key'), diskPathOf(share.root, sealedOf(share, path))])
  t.equal(sha256(opened), share.sha.get(path), 'age -d opens it')
  t.equal(body.length, 200_000)

  // A rerun finds every file in the journal; a torn last line (a crash while
  // writing it) is skipped and the next line stands alone.
  appendFileSync(join(share.audit, 'seal.journal'), '{"sealed":"/medicall/2016/01/x')
  const again = await run(share)
  t.same(again.results.filter((r) => r.bytes !== undefined).map((r) => r.reason), ['done', 'done', 'done', 'done'])
  t.equal(again.summary.sealed, 0)

  // --remove-plaintext removes each original once its sealed file is known good.
  const removed = await run(share, { removePlaintext: true })
  t.equal(removed.code, 0)
  t.equal(removed.results.filter((r) => r.removed === true).length, 4)
  t.same(listFiles(share.root).filter((p) => !p.endsWith('.age')), ['/medicall/2016/01/notes.txt', '/medicall/readme.wav'], 'the recordings are there only sealed')
  await checkSealed(t, share)
  t.same(sealRunRecord(removed.summary), { event: 'seal', reason: 'seal: ok', counts: { sealed: 0, skipped: 2 + 4 + 4, failed: 0, bytes: 0 } }, "the run's audit record")
})

t.test('a rerun repairs what a crash left: a temporary file, a sealed file without its journal line (intact; a damaged one is a conflict)', async (t) => {
  const share = makeShare(recordings())
  await run(share)
  const [a, , c, d] = recordings().map(([p]) => p)
  // The crash came after the rename, before the journal line, for every file.
  writeFileSync(join(share.audit, 'seal.journal'), '')
  // One sealed file is damaged (the crash was before its rename... and the disk lied).
  const damaged = diskPathOf(share.root, sealedOf(share, c))
  const bytes = readFileSync(damaged)
  bytes[bytes.length - 5] ^= 1
  writeFileSync(damaged, bytes)
  // Another's sealed file is missing, and half of its temporary file is there.
  const missing = diskPathOf(share.root, sealedOf(share, d))
  writeFileSync(tempFileOf(missing), readFileSync(missing).subarray(0, 1000))
  writeFileSync(missing + '.keep', '')
  execFileSync('rm', [missing, missing + '.keep'])
  // And an orphan temporary file whose recording is gone.
  writeFileSync(join(share.root, 'medicall/2016/01/.nasguard-seal-0123456789abcdef0123456789abcdef.tmp'), 'x')
  const rerun = await run(share, { jobs: 1 })
  const bySealed = new Map(rerun.results.filter((r) => r.sealed).map((r) => [r.sealed, r]))
  t.match(bySealed.get(sealedOf(share, a))?.reason, /verified a sealed file left by an interrupted run/, 'an intact sealed file is verified, not sealed again')
  t.same([bySealed.get(sealedOf(share, c))?.result, bySealed.get(sealedOf(share, c))?.reason], ['failed', 'conflict'], 'a damaged one is reported, not replaced')
  t.equal(rerun.code, 1)
  t.same(readFileSync(damaged), bytes, 'and kept as it is')
  t.equal(bySealed.get(sealedOf(share, d))?.result, 'sealed', 'a missing one is sealed')
  t.ok(rerun.summary.tempsRemoved >= 1, 'the orphan temporary file is removed')
  t.ok(listFiles(share.root).every((p) => !/\.nasguard-seal-/.test(p)), 'no temporary file left')
  // The admin looks at it, and removes it: the next run seals the recording.
  execFileSync('rm', [damaged])
  t.equal((await run(share, { jobs: 1 })).code, 0)
  await checkSealed(t, share)
})

t.test('a recording that changes while it is sealed is left alone and reported', async (t) => {
  const share = makeShare(recordings())
  initKeyring(share.keyring)
  const [path] = recordings()[0]
  const file = join(share.root, path)
  const settings = { root: share.root, keyringDir: share.keyring, unit: 'month' as const, pattern: compilePeriodPattern('/medicall/{yyyy}/{mm}/**', 'month'), nameSegments: 1, extensions: new Set(['.wav']), dryRun: false, removePlaintext: true }
  const journal = await Journal.open(join(share.audit, 'seal.journal'), false)
  t.teardown(async () => { await journal.close() })
  const job = sealJob(settings, new SealingKeys(share.keyring, 'month'), journal, new Set())
  let grown = false
  // The recorder appends to it after the first 64 KiB were read.
  const r = await job.handle(file, path.split('/').slice(1), () => { if (!grown) { grown = true; appendFileSync(file, 'more audio') } })
  t.same([r.result, r.reason], ['failed', 'changed'])
  t.ok(existsSync(file), 'the recording is not removed')
  t.notOk(existsSync(diskPathOf(share.root, sealedOf(share, path))), 'no sealed file')
  t.ok(listFiles(share.root).every((p) => !/\.nasguard-seal-/.test(p)), 'no temporary file')
  t.equal(readJournal(join(share.audit, 'seal.journal')), '', 'no journal line')
  const next = await job.handle(file, path.split('/').slice(1), () => {})
  t.same([next.result, next.removed], ['sealed', true], 'sealed once it holds still, then removed')
})

t.test('--remove-plaintext removes nothing that did not verify', async (t) => {
  const share = makeShare(recordings())
  await run(share)
  const [path] = recordings()[0]
  const sealed = diskPathOf(share.root, sealedOf(share, path))
  const ring = Keyring.load(share.keyring)
  const key = ring.key('2016-01') as NonNullable<ReturnType<Keyring['key']>>
  const binding = bindingOf(path.split('/').slice(1))
  t.equal(await verifyWritten(sealed, key, binding, share.sha.get(path) as string), undefined)
  t.equal(await verifyWritten(sealed, key, binding, '00'), 'verification failed (SHA-256 differs)')
  t.equal(await verifyWritten(sealed, key, '/medicall/2016/01/other.wav', share.sha.get(path) as string), 'verification failed (integrity: sealed for another path)')
  writeFileSync(sealed, readFileSync(sealed).subarray(0, 232 + 16 + 65_552))
  t.equal(await verifyWritten(sealed, key, binding, share.sha.get(path) as string), 'verification failed (integrity: chunk 0 does not authenticate)', 'cut after a chunk: that chunk is not the last')
  writeFileSync(sealed, readFileSync(sealed).subarray(0, 240))
  t.equal(await verifyWritten(sealed, key, binding, share.sha.get(path) as string), 'verification failed (integrity: truncated before its payload)')
  // The journal vouches for it, but --remove-plaintext opens it first: damaged, so the plaintext stays.
  const r = await run(share, { removePlaintext: true })
  t.equal(r.code, 1)
  t.match(r.results.find((x) => x.result === 'failed')?.reason, /does not give back the recording the journal vouches for/)
  t.ok(existsSync(join(share.root, path)), 'the plaintext of a damaged sealed file is kept')
  t.equal(r.results.filter((x) => x.removed === true).length, 3, 'the others are removed')
})

t.test('--dry-run writes nothing and makes no key', async (t) => {
  const share = makeShare(recordings())
  initKeyring(share.keyring)
  const before = [snapshot(share.root), snapshot(share.keyring), snapshot(share.audit)]
  const dry = await run(share, { dryRun: true, removePlaintext: true })
  t.equal(dry.code, 0)
  t.equal(dry.results.filter((r) => r.result === 'would-seal').length, 4)
  t.same([snapshot(share.root), snapshot(share.keyring), snapshot(share.audit)], before, 'the share, the keyring and the audit directory are as they were')
  t.same(Keyring.load(share.keyring).list(), [], 'no period key made')
  noPlaintextNames(t, dry.text, 'the output')
})

t.test('an erased period is refused, never sealed again', async (t) => {
  const share = makeShare(recordings())
  initKeyring(share.keyring)
  newPeriodKey(share.keyring, 'month', '2016-01')
  eraseKey(share.keyring, '2016-01')
  const r = await run(share, { removePlaintext: true })
  t.equal(r.code, 1, 'exit 1: a file failed')
  t.equal(r.summary.failed, 3)
  t.ok(r.results.filter((x) => x.result === 'failed').every((x) => /period 2016-01 is erased/.test(x.reason ?? '')))
  t.notOk(existsSync(join(share.keyring, '2016-01.key')), 'no new key for the erased period')
  t.equal(listFiles(share.root).filter((p) => p.startsWith('/medicall/2016/01') && p.endsWith('.age')).length, 0)
  t.equal(listFiles(share.root).filter((p) => p.startsWith('/medicall/2016/01')).length, 3, 'its recordings stay as they were')
  t.equal(r.summary.sealed, 1, 'the other period is sealed')
})

t.test('failures, on a terminal too, name no plaintext file', async (t) => {
  const long = `/medicall/2016/01/${'4'.repeat(180)}_${NUMBERS[0]}.wav`
  const share = makeShare([...recordings(), [long, randomBytes(10)]])
  const r = await run(share)
  t.equal(r.code, 1)
  const failed = r.results.find((x) => x.result === 'failed')
  t.same(failed, { result: 'failed', reason: 'its sealed name would be too long for a NAS' })
  noPlaintextNames(t, r.text, 'the JSON lines')
  const tty = await run(share, {}, true)
  t.equal(tty.code, 1)
  t.match(tty.text, /^sealed 0, skipped 8, failed 1; 0\.0 MB in/)
  t.match(tty.text, /failed: \(no sealed name\): its sealed name would be too long/)
  noPlaintextNames(t, tty.text, 'the summary on a terminal')
})

t.test('two runs on one share: the second is refused while the first runs; a commit never replaces a name, nor commits a temporary file it did not write', async (t) => {
  const share = makeShare(recordings().slice(0, 1))
  initKeyring(share.keyring)
  const unlock = lockShare(share.keyring, share.root)
  const lock = readdirSync(share.keyring).find((n) => n.endsWith('.lock')) as string
  // Held by a live process (the test runner).
  writeFileSync(join(share.keyring, lock), `${process.ppid}\n`)
  await t.rejects(run(share, { journal: join(share.dir, 'other.journal') }), /being sealed or rotated by another run/)
  t.equal(listFiles(share.root).length, 1, 'nothing sealed')
  unlock()
  const dir = join(share.root, 'medicall/2016/01')
  t.not(tempFileOf(join(dir, 'x.age')), tempFileOf(join(dir, 'x.age')), 'temporary names are random')
  const temp = tempFileOf(join(dir, 'x.age'))
  writeFileSync(temp, 'mine')
  const ino = statSync(temp, { bigint: true }).ino
  writeFileSync(join(dir, 'x.age'), 'theirs')
  await t.rejects(commit(temp, join(dir, 'x.age'), ino), { code: 'EEXIST' })
  t.equal(readFileSync(join(dir, 'x.age'), 'utf8'), 'theirs', 'an existing name is not replaced')
  // (Moved away, not removed: its inode number is not reused.)
  renameSync(temp, join(share.dir, 'moved'))
  writeFileSync(temp, 'another run wrote this')
  await t.rejects(commit(temp, join(dir, 'y.age'), ino), { code: 'ETEMPREPLACED' })
  t.notOk(existsSync(join(dir, 'y.age')), 'a temporary file of another inode is not committed')
})

t.test('the journal lock: a stale one is taken over, and a run releases only its own', async (t) => {
  const share = makeShare([])
  const file = join(share.audit, 'seal.journal')
  mkdirSync(share.audit, { recursive: true })
  writeFileSync(`${file}.lock`, '999999999\n')
  const j = await Journal.open(file, false)
  t.equal(readFileSync(`${file}.lock`, 'utf8'), `${process.pid}\n`, 'a dead run\'s lock is taken over')
  t.same(readdirSync(share.audit).sort(), ['seal.journal', 'seal.journal.lock'], 'nothing left aside')
  // Another run (live) holds it now, e.g. after a takeover race: closing must not remove its lock.
  writeFileSync(`${file}.lock`, `${process.ppid}\n`)
  await j.close()
  t.equal(readFileSync(`${file}.lock`, 'utf8'), `${process.ppid}\n`, 'another run\'s lock is left')
  await t.rejects(Journal.open(file, false), /in use by another run/)
})

t.test('a sealed name that holds another recording is a conflict: both are kept', async (t) => {
  const [[path, body]] = recordings()
  const share = makeShare([[path, body]])
  initKeyring(share.keyring)
  const key = newPeriodKey(share.keyring, 'month', '2016-01')
  const uploaded = randomBytes(4000)
  const target = diskPathOf(share.root, sealedOf(share, path))
  writeFileSync(target, await buffer(Readable.from([uploaded]).pipe(new SealStream([key.identity.publicKey], path))))
  const before = readFileSync(target)
  const r = await run(share, { removePlaintext: true })
  t.equal(r.code, 1)
  t.same(r.results.filter((x) => x.result === 'failed').map((x) => x.reason), ['conflict'])
  t.same(readFileSync(target), before, 'the sealed file is not replaced')
  t.same(readFileSync(join(share.root, path)), body, 'the plaintext is not removed')
})

t.test('a directory swapped for a symbolic link during the walk is not followed out of the share', async (t) => {
  const share = makeShare([[recordings()[0][0], randomBytes(1000)], ['/medicall/2016/02/keep.txt', Buffer.from('x')]])
  const outside = join(share.dir, 'outside')
  mkdirSync(outside)
  writeFileSync(join(outside, '090000_46700000002.wav'), 'not on the share')
  initKeyring(share.keyring)
  const settings = { root: share.root, keyringDir: share.keyring, unit: 'month' as const, pattern: compilePeriodPattern('/medicall/{yyyy}/{mm}/**', 'month'), nameSegments: 1, extensions: new Set(['.wav']), dryRun: false, removePlaintext: true }
  const journal = await Journal.open(join(share.dir, 'j'), false)
  t.teardown(async () => { await journal.close() })
  const inner = sealJob(settings, new SealingKeys(share.keyring, 'month'), journal, new Set())
  let swapped = false
  const job = { wants: inner.wants, handle: async (f: string, s: string[], p: (n: number) => void): Promise<FileResult> => {
    if (!swapped) { swapped = true; renameSync(join(share.root, 'medicall/2016/02'), join(share.root, 'medicall/2016/.old')); symlinkSync(outside, join(share.root, 'medicall/2016/02')) }
    return await inner.handle(f, s, p)
  } }
  await runBulk({ root: share.root, jobs: 1, job, reporter: { begin () {}, bytes () {}, file () {}, end () {} }, active: new Set(), command: 'seal', dryRun: false })
  t.same(readdirSync(outside), ['090000_46700000002.wav'], 'nothing sealed or removed outside the share')
  // And a file whose directory is swapped after the walk found it.
  symlinkSync(outside, join(share.root, 'medicall/2016/04'))
  const r = await inner.handle(join(share.root, 'medicall/2016/04/090000_46700000002.wav'), ['medicall', '2016', '04', '090000_46700000002.wav'], () => {})
  t.match(r.reason, /replaced \(a symbolic link\?\)/)
  t.same(readdirSync(outside), ['090000_46700000002.wav'])
})

t.test('a recording swapped for a FIFO after the walk found it fails as not a regular file, at once: the run (and its locks) is not held', async (t) => {
  const share = makeShare(recordings())
  initKeyring(share.keyring)
  const settings = { root: share.root, keyringDir: share.keyring, unit: 'month' as const, pattern: compilePeriodPattern('/medicall/{yyyy}/{mm}/**', 'month'), nameSegments: 1, extensions: new Set(['.wav']), dryRun: false, removePlaintext: true }
  const journal = await Journal.open(join(share.dir, 'j'), false)
  t.teardown(async () => { await journal.close() })
  const job = sealJob(settings, new SealingKeys(share.keyring, 'month'), journal, new Set())
  const [path] = recordings()[0]
  const file = join(share.root, path)
  rmSync(file)
  execFileSync('mkfifo', [file])
  const r = await job.handle(file, path.split('/').slice(1), () => {})
  t.same([r.result, r.reason], ['failed', 'not a regular file'])
  t.ok(listFiles(share.root).every((p) => !/\.nasguard-seal-/.test(p)), 'no temporary file')
  // Swapped between the check of the name and the open: the open does not wait for a writer either.
  const { openRegular } = await import('../../src/sealing/bulk/durable.js')
  await t.rejects(openRegular(file), { message: 'not a regular file' })
})
