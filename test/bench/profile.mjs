#!/usr/bin/env node
// npm run bench:profile [-- W1|W2|W3|W5] [bare|sealed]: one nasguard process (workers: 1;
// BENCH_WORKERS=2 for the workers npm run bench runs, each worker's profile summed)
// (with `sealed`, the files sealed on the NAS and sealing.mode require)
// (or, with `bare`, the bare Node proxy of bare-proxy.mjs, for the side-by-side)
// under `node --cpu-prof`, loaded by wrk for BENCH_SECONDS (15), then the
// profile summed by self time: the top functions, and a coarse split by
// where the time goes (TLS, audit, HTTP parsing, proxying, GC...).
// The .cpuprofile file is kept (open it in Chrome DevTools for the flame chart).
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, openSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { startNas } from './lib/peers.mjs'
import { FILES, credentials, run, waitFor200, writeFixtures } from './lib/setup.mjs'
import { SEALED_PATTERN, sealFixtures } from './lib/sealed.mjs'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 15)
/** Processes serving: 1 (a profile of one), or as npm run bench runs them with BENCH_WORKERS=2 (each worker's profile, summed). */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1)
const workload = process.argv.slice(2).find((a) => /^W[1-5]$/.test(a)) ?? 'W1'
const dir = mkdtempSync(join(tmpdir(), 'nasguard-profile-'))
const root = writeFixtures(dir, workload === 'W3' ? ['small', 'huge'] : ['small', 'large'])
const { small, large, huge } = FILES
const { cert, key, secretFile, token } = credentials(dir)
const nas = await startNas(dir, root, 18090)
const sealed = process.argv.includes('sealed')
if (sealed) await sealFixtures(root, join(dir, 'keyring'), workload === 'W3' ? [small, huge] : [small, large])
writeFileSync(join(dir, 'nasguard.json'), JSON.stringify({
  ...(sealed ? { sealing: { mode: 'require', keyring: join(dir, 'keyring'), periodPattern: SEALED_PATTERN } } : {}),
  listen: { host: '127.0.0.1', port: 18490 },
  tls: { cert, key },
  upstream: { url: 'http://127.0.0.1:18090' },
  auth: { jwt: { secretFile, algorithms: ['HS256'] } },
  policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }],
  audit: { dir: join(dir, 'audit') },
  admin: { port: 19490 },
  workers: WORKERS
}))
const profDir = join(dir, 'prof')
const log = openSync(join(dir, 'nasguard.log'), 'a')
const bare = process.argv.includes('bare')
const target = bare
  ? [resolve('test/bench/bare-proxy.mjs'), '18490', '18090', cert, key, secretFile, String(WORKERS)]
  : [resolve('dist/cli.js'), 'start', '--config', join(dir, 'nasguard.json')]
const gw = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-dir', profDir, ...target], { stdio: ['ignore', log, log] })
const url = `https://127.0.0.1:18490${workload === 'W2' ? large : workload === 'W3' ? huge : small}`
await waitFor200(url, token, 'nasguard')
const conns = { W1: 32, W2: 4, W3: 16, W5: 32 }[workload]
// W3 as the bench runs it: random 64 KB ranges inside the 256 MB file.
const rangeScript = join(dir, 'range.lua')
writeFileSync(rangeScript, 'request = function()\n  local off = math.random(0, 4095) * 65536\n  wrk.headers["Range"] = "bytes=" .. off .. "-" .. (off + 65535)\n  return wrk.format(nil, nil)\nend\n')
const extra = workload === 'W5' ? ['-H', 'Connection: close'] : workload === 'W3' ? ['-s', rangeScript] : []
// The window of the load, on the monotonic clock the profile's timestamps use: startup is left out.
const loadFrom = Number(process.hrtime.bigint() / 1000n)
const { stdout } = await run('wrk', ['-t2', `-c${conns}`, `-d${SECONDS}s`, '-H', `Authorization: Bearer ${token}`, ...extra, url])
const loadTo = Number(process.hrtime.bigint() / 1000n)
console.log(stdout.split('\n').filter((l) => /Requests\/sec|Transfer|Non-2xx/.test(l)).join('\n'))
const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN)
console.log(`load window (µs, monotonic): ${loadFrom} ${loadTo}; ${requests} requests`)
if (!bare) {
  // How the trail's group commit grouped the run's records (one write, and in strict mode one fdatasync, per group).
  const metrics = await (await fetch('http://127.0.0.1:19490/metrics')).text()
  const value = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN)
  const [groups, records] = [value('nasguard_audit_batch_records_count'), value('nasguard_audit_batch_records_sum')]
  console.log(`audit: ${records} records in ${groups} groups (${(records / groups).toFixed(2)} a group), ${(groups / requests).toFixed(2)} groups per request`)
}
gw.kill('SIGTERM')
await new Promise((r) => gw.once('exit', r))
nas.stop()

const AREAS = [
  ['TLS write/encrypt', (f) => /writev|writeGeneric|writeBuffer|_writeGeneric|TLSWrap|tls_wrap/.test(f.functionName) || /_tls_wrap/.test(f.url)],
  ['audit (seal, write, fsync)', (f) => /\/audit\//.test(f.url)],
  ['JWT verification', (f) => /fast-jwt|\/auth\//.test(f.url)],
  ['metrics', (f) => /prom-client|\/metrics\//.test(f.url)],
  ['logging (pino)', (f) => /pino|sonic-boom/.test(f.url)],
  ['undici (NAS client)', (f) => /undici/.test(f.url)],
  ['sealing (src/sealing/)', (f) => /\/sealing\//.test(f.url)],
  ['the NAS exchange (src/proxy/)', (f) => /\/proxy\//.test(f.url)],
  ['fastify core', (f) => /node_modules\/fastify\/|find-my-way|avvio|light-my-request/.test(f.url)],
  ['node http/http2 server', (f) => /node:_http|node:internal\/http2|_http_/.test(f.url)],
  ['streams', (f) => /internal\/streams/.test(f.url)],
  ['GC', (f) => f.functionName === '(garbage collector)'],
  ['idle', (f) => f.functionName === '(idle)']
]
const label = (n) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(dist|src)\//, '$1/')}:${n.callFrame.lineNumber + 1}`

/** One process's profile within the load window: time by function and by area (self time charged to the nearest known caller), µs. */
function analyse (prof) {
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const self = new Map()
  const dt = prof.timeDeltas
  let total = 0
  let at = prof.startTime
  for (let i = 0; i < prof.samples.length; i++) {
    at += dt[i] ?? 0
    if (at < loadFrom || at > loadTo) continue
    const n = byId.get(prof.samples[i])
    const us = dt[i] ?? 0
    total += us
    self.set(n, (self.get(n) ?? 0) + us)
  }
  const byLabel = new Map()
  const areas = new Map()
  for (const [n, us] of self) {
    byLabel.set(label(n), (byLabel.get(label(n)) ?? 0) + us)
    let area = 'other'
    for (let m = n; m; m = parent.get(m.id)) {
      const hit = AREAS.find(([, test]) => test(m.callFrame))
      if (hit) { area = hit[0]; break }
    }
    areas.set(area, (areas.get(area) ?? 0) + us)
  }
  return { total, byLabel, areas }
}

// One profile per process: with BENCH_WORKERS > 1, the primary's and each worker's, summed
// (a worker may write its profile after the primary has exited: waited for, up to 20 s).
const expected = WORKERS > 1 ? WORKERS + 1 : 1
const profiles = () => readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(profDir, f))
for (let i = 0; i < 200 && profiles().length < expected; i++) await new Promise((r) => setTimeout(r, 100))
const files = profiles()
if (files.length < expected) console.log(`(only ${files.length} of ${expected} profiles were written)`)
let total = 0
const byLabel = new Map()
const areas = new Map()
for (const file of files) {
  const one = analyse(JSON.parse(readFileSync(file, 'utf8')))
  total += one.total
  for (const [k, us] of one.byLabel) byLabel.set(k, (byLabel.get(k) ?? 0) + us)
  for (const [k, us] of one.areas) areas.set(k, (areas.get(k) ?? 0) + us)
}
const idle = areas.get('idle') ?? 0
const busyUs = total - idle
console.log(`\nprofile${files.length > 1 ? `s of ${files.length} processes` : ''} ${files.join(', ')}: ${(total / 1e6).toFixed(1)} s sampled under load (startup left out), ${(100 - idle / total * 100).toFixed(0)}% busy, ${(busyUs / requests).toFixed(0)} µs of CPU per request`)
console.log('top self time:')
for (const [l, us] of [...byLabel].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.BENCH_TOP ?? 30))) console.log(`${(us / total * 100).toFixed(1).padStart(6)}%  ${l}`)
console.log('\nby area (self time charged to the nearest known caller; µs of CPU per request):')
for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1])) console.log(`${(us / total * 100).toFixed(1).padStart(6)}%  ${(us / requests).toFixed(1).padStart(6)} µs  ${a}`)
