#!/usr/bin/env node
// Issue 17's evidence for `nasguard seal` (not part of npm test: minutes of
// disk and CPU). On a generated share of FILES recordings of mixed sizes
// (log-uniform from 1 KB to 1 MB, and one of BIG_MB):
//   1. Debian's `age -r` encrypts every file (2 at a time), timed;
//   2. `nasguard seal --jobs 2` seals the same tree (durable and verified),
//      timed; its output is removed again;
//   3. `nasguard seal --remove-plaintext` is killed with SIGKILL three times at
//      random points (a random count of journal lines; a random fraction of
//      the big recording written to its temporary file; a random count of
//      sealed results), each time rerun, then run to its end;
//   4. the tree is checked: every recording exactly once, sealed, no
//      plaintext and no temporary file, and each one opened by Debian's
//      `age -d` with its period's identity to its original SHA-256.
// Prints one line per step and a JSON summary; exits 1 if a check fails.
//
//   npm run build && node test/bench/seal-crash.mjs [--dir /tmp/x] [--files 10000] [--big-mb 600]
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes, randomInt } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const { values: opt } = parseArgs({ options: { dir: { type: 'string', default: '/tmp/nasguard-seal-crash' }, files: { type: 'string', default: '10000' }, 'big-mb': { type: 'string', default: '600' } } })
const DIR = resolve(opt.dir)
const FILES = Number(opt.files)
const BIG = Number(opt['big-mb']) * 1e6
const CLI = resolve('dist/cli.js')
if (!existsSync(CLI)) throw new Error('run npm run build first')
const ROOT = join(DIR, 'nas')
const log = (s) => { process.stdout.write(s + '\n') }
const MB = 1e6

// ---- the share -----------------------------------------------------------------
rmSync(DIR, { recursive: true, force: true })
mkdirSync(ROOT, { recursive: true })
spawnSync(process.execPath, [CLI, 'cert', 'init', '--host', 'localhost', '--dir', join(DIR, 'certs')], { stdio: 'ignore' })
const CONFIG = join(DIR, 'nasguard.yaml')
writeFileSync(CONFIG, `listen: { port: 8443 }
tls: { cert: ${DIR}/certs/server.crt, key: ${DIR}/certs/server.key }
upstream: { url: http://127.0.0.1:1 }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]
audit: { dir: ${DIR}/audit }
sealing: { mode: require, keyring: ${DIR}/keyring, periodPattern: "/medicall/{yyyy}/{mm}/**" }
`)

/** Share path → SHA-256 of the plaintext. */
const sha = new Map()
const sizeOf = () => Math.round(Math.exp(Math.log(1000) + Math.random() * (Math.log(1e6) - Math.log(1000))))
let t0 = Date.now()
let total = 0
// In 2017-07, three quarters into the walk's order: after the first two kills.
const bigIndex = Math.floor(FILES / 2 / 24) * 24 + 18
for (let i = 0; i < FILES; i++) {
  const month = String(1 + (i % 24) % 12).padStart(2, '0')
  const year = 2016 + Math.floor((i % 24) / 12)
  const day = String(1 + (Math.floor(i / 24) % 28)).padStart(2, '0')
  const path = `/medicall/${year}/${month}/${day}/${String(100000 + i)}_467${String(10000000 + i).padStart(8, '0')}.wav`
  mkdirSync(dirname(join(ROOT, path)), { recursive: true })
  const h = createHash('sha256')
  const fd = openSync(join(ROOT, path), 'w')
  if (i === bigIndex) {
    const block = randomBytes(8 << 20)
    for (let at = 0; at < BIG; at += block.length) {
      block.writeUInt32BE(at / block.length, 0)
      const part = block.subarray(0, Math.min(block.length, BIG - at))
      h.update(part)
      writeSync(fd, part)
    }
    total += BIG
  } else {
    const body = randomBytes(sizeOf())
    h.update(body)
    writeSync(fd, body)
    total += body.length
  }
  closeSync(fd)
  sha.set(path, h.digest('hex'))
}
const bigPath = [...sha.keys()][bigIndex]
log(`generated ${FILES} recordings, ${(total / MB).toFixed(0)} MB (one of ${(BIG / MB).toFixed(0)} MB) in ${((Date.now() - t0) / 1000).toFixed(1)} s`)

function listFiles (root) {
  const out = []
  const visit = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) visit(p)
      else out.push('/' + relative(root, p))
    }
  }
  visit(root)
  return out
}

/** Runs jobs (functions returning promises) `n` at a time. */
async function pool (items, n, fn) {
  let next = 0
  await Promise.all(Array.from({ length: n }, async () => { while (next < items.length) await fn(items[next++]) }))
}

function run (cmd, args, stdin) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
    const h = createHash('sha256')
    p.stdout.on('data', (d) => h.update(d))
    p.stderr.resume()
    p.on('close', (code) => resolve({ code, sha256: h.digest('hex') }))
  })
}

// ---- 1. age -r on every file -----------------------------------------------------
spawnSync(process.execPath, [CLI, 'keys', 'new', '--config', CONFIG, '--period', '2016-01'], { stdio: 'ignore' })
const recipient = /public key: (age1\S+)/.exec(readFileSync(join(DIR, 'keyring', '2016-01.key'), 'utf8'))[1]
const ageOut = join(DIR, 'age-out')
mkdirSync(ageOut)
const paths = [...sha.keys()]
spawnSync('sync')
t0 = Date.now()
await pool(paths, 2, async (p) => { await run('age', ['-r', recipient, '-o', join(ageOut, createHash('sha256').update(p).digest('hex').slice(0, 16) + '.age'), join(ROOT, p)]) })
const ageSeconds = (Date.now() - t0) / 1000
spawnSync('sync')
const ageSyncSeconds = (Date.now() - t0) / 1000
rmSync(ageOut, { recursive: true })
log(`age -r, 2 at a time: ${ageSeconds.toFixed(1)} s, ${(total / MB / ageSeconds).toFixed(1)} MB/s, ${(FILES / ageSeconds).toFixed(0)} files/s (no fsync; with a final sync: ${ageSyncSeconds.toFixed(1)} s, ${(total / MB / ageSyncSeconds).toFixed(1)} MB/s)`)
const bigAge = join(DIR, 'big.age')
t0 = Date.now()
spawnSync('age', ['-r', recipient, '-o', bigAge, join(ROOT, bigPath)])
const ageBigSeconds = (Date.now() - t0) / 1000
rmSync(bigAge)
log(`age -r, the big recording alone: ${(BIG / MB / ageBigSeconds).toFixed(1)} MB/s`)

// ---- 2. nasguard seal, clean ---------------------------------------------------------
const sealArgs = ['seal', '--config', CONFIG, '--source', ROOT, '--jobs', '2']
t0 = Date.now()
const clean = spawnSync(process.execPath, [CLI, ...sealArgs, '--journal', join(DIR, 'clean.journal')], { encoding: 'utf8', maxBuffer: 1 << 28 })
const cleanSeconds = (Date.now() - t0) / 1000
const cleanSummary = JSON.parse(clean.stdout.trim().split('\n').at(-1)).summary
log(`nasguard seal --jobs 2 (fsync, rename, verified by decrypting): ${cleanSeconds.toFixed(1)} s, ${(total / MB / cleanSeconds).toFixed(1)} MB/s, ${(FILES / cleanSeconds).toFixed(0)} files/s; ${JSON.stringify(cleanSummary)}`)
for (const p of listFiles(ROOT)) if (p.endsWith('.age')) rmSync(join(ROOT, p))
rmSync(join(DIR, 'clean.journal'))
rmSync(join(DIR, 'keyring'), { recursive: true })

// ---- 3. killed three times, rerun ----------------------------------------------------
const journal = join(DIR, 'audit', 'seal.journal')
const journalLines = () => { try { return readFileSync(journal, 'utf8').split('\n').filter((l) => l.startsWith('{')).length } catch { return 0 } }
const crashArgs = [...sealArgs, '--remove-plaintext']
const bigTemp = () => readdirSync(join(ROOT, ...bigPath.split('/').slice(1, -1))).find((n) => /^\.nasguard-seal-[0-9a-f]{32}\.tmp$/.test(n))

/** Starts the seal and kills it with SIGKILL once `when(out)` holds. */
async function killedWhen (label, when) {
  const p = spawn(process.execPath, [CLI, ...crashArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
  let sealed = 0
  let tail = ''
  p.stdout.on('data', (d) => { tail = (tail + d.toString()).slice(-1 << 16); sealed += (d.toString().match(/"result":"sealed"/g) ?? []).length })
  p.stderr.resume()
  const started = Date.now()
  const outcome = await new Promise((resolve) => {
    const timer = setInterval(() => { if (when(sealed)) { clearInterval(timer); p.kill('SIGKILL'); resolve('killed') } }, 2)
    p.on('exit', () => { clearInterval(timer); resolve('ended first') })
  })
  await new Promise((resolve) => { if (p.exitCode !== null || p.signalCode !== null) resolve(); else p.on('exit', resolve) })
  log(`kill ${label}: ${outcome} after ${((Date.now() - started) / 1000).toFixed(1)} s; journal ${journalLines()} lines, temporary file of the big one: ${bigTemp() ? 'present' : 'none'}`)
  return outcome
}

const target1 = randomInt(200, Math.max(201, Math.floor(FILES / 3)))
const kills = []
kills.push(await killedWhen(`1 (at ${target1} journal lines)`, () => journalLines() >= target1))
const target2 = randomInt(50, Math.max(51, Math.floor(FILES / 10)))
kills.push(await killedWhen(`2 (after ${target2} sealed results)`, (sealed) => sealed >= target2))
const fraction = 0.1 + Math.random() * 0.8
kills.push(await killedWhen(`3 (the big recording ${(fraction * 100).toFixed(0)}% written to its temporary file)`, () => {
  const t = bigTemp()
  if (!t) return false
  try { return statSync(join(ROOT, ...bigPath.split('/').slice(1, -1), t)).size >= fraction * BIG } catch { return false }
}))
t0 = Date.now()
const last = spawnSync(process.execPath, [CLI, ...crashArgs], { encoding: 'utf8', maxBuffer: 1 << 28 })
const lastSummary = JSON.parse(last.stdout.trim().split('\n').at(-1)).summary
log(`rerun to the end: exit ${last.status} in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${JSON.stringify(lastSummary)}`)

// ---- 4. the checks --------------------------------------------------------------------
const problems = []
const left = listFiles(ROOT)
const plaintext = left.filter((p) => !p.endsWith('.age'))
if (plaintext.length > 0) problems.push(`${plaintext.length} file(s) not sealed or temporary: ${plaintext.filter((p) => p.includes('.nasguard-seal-')).length} temporary`)
if (left.length !== FILES) problems.push(`${left.length} files on the share, expected ${FILES}`)
const { Keyring } = await import(resolve('dist/sealing/keyring.js'))
const { sealedPathOf } = await import(resolve('dist/sealing/names.js'))
const ring = Keyring.load(join(DIR, 'keyring'))
let opened = 0
t0 = Date.now()
await pool(paths, 2, async (p) => {
  const segments = p.split('/').slice(1)
  const sealed = join(ROOT, ...sealedPathOf(ring.nameKey, segments, 1).split('/').slice(1))
  const r = await run('age', ['-d', '-i', join(DIR, 'keyring', `${segments[1]}-${segments[2]}.key`), sealed])
  if (r.code !== 0) problems.push(`a sealed file does not open with age -d (${sealedPathOf(ring.nameKey, segments, 1)})`)
  else if (r.sha256 !== sha.get(p)) problems.push(`a sealed file does not decrypt to its SHA-256 (${sealedPathOf(ring.nameKey, segments, 1)})`)
  else opened++
})
log(`age -d opened ${opened} of ${FILES} sealed recordings to their original SHA-256 in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
const result = {
  files: FILES,
  megabytes: Math.round(total / MB),
  bigMegabytes: BIG / MB,
  kills,
  ageMBps: +(total / MB / ageSeconds).toFixed(1),
  ageWithSyncMBps: +(total / MB / ageSyncSeconds).toFixed(1),
  ageBigMBps: +(BIG / MB / ageBigSeconds).toFixed(1),
  sealMBps: +(total / MB / cleanSeconds).toFixed(1),
  sealFilesPerSecond: Math.round(FILES / cleanSeconds),
  finalExit: last.status,
  openedByAge: opened,
  problems: problems.slice(0, 20)
}
log(JSON.stringify(result))
process.exitCode = problems.length === 0 && last.status === 0 ? 0 : 1
