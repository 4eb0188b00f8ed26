// nasguard seal through the built CLI, killed with SIGKILL three times at
// points chosen by what it has done (its output, its journal, a temporary
// file being written), then run to the end: every recording is on the
// share exactly once, sealed, and decrypts to its SHA-256; no temporary
// file is left; no output names a plaintext file. A second full run is
// safe, and a bad option is a usage error (exit 2).
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Keyring } from '../../src/sealing/keyring.js'
import { sealedPathOf } from '../../src/sealing/names.js'
import { diskPathOf } from '../../src/sealing/bulk/durable.js'
import { bindingOf, openedDigest } from '../../src/sealing/bulk/seal.js'
import { listFiles, makeShare, readJournal, sha256 } from './seal-fixtures.js'

const CLI = resolve('dist/cli.js')

const files: Array<[string, Buffer]> = []
for (let i = 0; i < 24; i++) files.push([`/medicall/2016/01/${String(100000 + i)}_4670${String(1000000 + i)}.wav`, randomBytes(1000 + i * 997)])
for (let i = 0; i < 10; i++) files.push([`/medicall/2016/02/${String(200000 + i)}_4671${String(1000000 + i)}.mp3`, randomBytes(i * 3001)])
// First in the walk's order: the first run is killed while one is being written.
const BIG = ['/medicall/2016/01/000000_46720000001.wav', '/medicall/2016/01/000001_46720000002.wav']
for (const p of BIG) files.push([p, randomBytes(2_000_000)])

interface Run { proc: ChildProcess, out: () => string, done: Promise<number | null> }

function start (args: string[]): Run {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  proc.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const done = new Promise<number | null>((resolve) => proc.on('exit', (code) => { resolve(code) }))
  return { proc, out: () => out, done }
}

/** Kills the run with SIGKILL as soon as `when` holds (checked on each output and every millisecond); false when it ended first. */
async function killWhen (run: Run, when: () => boolean): Promise<boolean> {
  return await new Promise((resolve) => {
    const check = (): void => {
      if (!when()) return
      clearInterval(timer)
      run.proc.kill('SIGKILL')
      resolve(true)
    }
    const timer = setInterval(check, 1)
    run.proc.stdout?.on('data', check)
    void run.done.then(() => { clearInterval(timer); resolve(false) })
  })
}

t.test('seal, killed three times and rerun, leaves every recording sealed once', async (t) => {
  const share = makeShare(files)
  const args = ['seal', '--config', share.configFile, '--source', share.root, '--jobs', '2', '--remove-plaintext']
  const journal = join(share.audit, 'seal.journal')
  const lines = (): number => readJournal(journal).split('\n').filter((l) => l.startsWith('{')).length
  let output = ''

  // 1: while one of the big recordings is being written to its temporary file.
  const one = start(args)
  // A temporary file (random name) of size over 1 MiB: a big recording's, being written.
  const bigTemp = (): boolean => {
    try {
      return readdirSync(join(share.root, 'medicall/2016/01')).some((n) => /^\.nasguard-seal-[0-9a-f]{32}\.tmp$/.test(n) && statSync(join(share.root, 'medicall/2016/01', n)).size > (1 << 20))
    } catch {
      return false
    }
  }
  const midWrite = await killWhen(one, bigTemp)
  t.ok(midWrite, 'killed while a temporary file was being written')
  output += one.out()
  // 2: after its fifth sealed recording is reported.
  const two = start(args)
  t.ok(await killWhen(two, () => (two.out().match(/"result":"sealed"/g) ?? []).length >= 5), 'killed after 5 sealed')
  output += two.out()
  // 3: once its journal has three more lines than when it started.
  const before = lines()
  const three = start(args)
  t.ok(await killWhen(three, () => lines() >= before + 3), 'killed after 3 more journal lines')
  output += three.out()

  const last = start(args)
  t.equal(await last.done, 0, 'the rerun ends well')
  output += last.out()
  const summary = JSON.parse(last.out().trim().split('\n').at(-1) as string).summary
  t.equal(summary.failed, 0)

  const left = listFiles(share.root)
  t.same(left.filter((p) => !p.endsWith('.age')), [], 'no plaintext recording and no temporary file left')
  t.equal(left.length, files.length, 'every recording exactly once')
  const now = Keyring.load(share.keyring)
  let wrong = 0
  for (const [path] of files) {
    const segments = path.split('/').slice(1)
    const sealed = diskPathOf(share.root, sealedPathOf(now.nameKey, segments, 1))
    const got = await openedDigest(sealed, now.identities(`${segments[1]}-${segments[2]}`), bindingOf(segments))
    if (got.sha256 !== share.sha.get(path)) wrong++
  }
  t.equal(wrong, 0, 'each decrypts to its SHA-256')
  const big = diskPathOf(share.root, sealedPathOf(now.nameKey, BIG[0].split('/').slice(1), 1))
  t.equal(sha256(spawnSync('age', ['-d', '-i', join(share.keyring, '2016-01.key'), big], { maxBuffer: 1 << 24 }).stdout), share.sha.get(BIG[0]), 'age -d opens a big one')
  const seen = output + readFileSync(journal, 'utf8')
  const numbers = files.map(([p]) => (p.split('_')[1] ?? '').split('.')[0])
  t.same(numbers.filter((n) => seen.includes(n)), [], 'no phone number in any output or the journal')
  t.notMatch(seen, /\.wav|\.mp3/, 'no plaintext file name either')

  // Twice is safe: nothing left to do.
  const again = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8' })
  t.equal(again.status, 0)
  t.match(JSON.parse(again.stdout.trim().split('\n').at(-1) as string).summary, { sealed: 0, failed: 0 })
  t.equal(listFiles(share.root).length, files.length)
  // Every run that finished left its counts in the audit trail's operator chain (the killed ones could not).
  const ops = readFileSync(join(share.audit, 'ops', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string, counts?: { sealed: number, failed: number } })
  t.match(ops.filter((r) => r.event === 'seal').map((r) => r.counts), [{ failed: 0 }, { sealed: 0, failed: 0 }], 'each completed run is an audit event with its counts')
  t.notMatch(JSON.stringify(ops), /\.wav|\.mp3/, 'the audit events name no recording')

  const usage = spawnSync(process.execPath, [CLI, 'seal', '--config', share.configFile, '--source', share.root, '--jobs', '0'], { env: { PATH: process.env.PATH }, encoding: 'utf8' })
  t.equal(usage.status, 2)
  t.match(usage.stderr, /--jobs: a whole number/)
})
