#!/usr/bin/env node
// npm run build && node test/bench/budgets.mjs: what download budgets cost
// on W1 (64 KB recordings, 32 keep-alive connections), budgets on against
// off, in one interleaved run, for each place the budgets are kept:
//
//   1 worker, off       | 1 worker, budgets in memory
//   2 workers, off      | 2 workers, budgets in the primary (IPC) | 2 workers, budgets in Redis
//
// Two measures per round: requests a second (what wrk saw), and CPU time
// per request of everything the setup runs (the gateway's processes, and
// redis-server where it keeps the budgets; not wrk, not the NAS, which are
// the same for all). On a busy 2-core VM throughput swings by ±15% between
// rounds of the same target; CPU per request swings far less, so the cost
// is read from it, as the median over rounds of each round's ratio to its
// pair (the two ran seconds apart, on the same machine state). The budgets
// are set high, so nothing is refused: what is measured is the checking.
// For Redis, the budget scripts it ran per 1000 requests are counted too
// (INFO commandstats): how often a worker asked, leases included.
//
// Settings (env): BENCH_ROUNDS (5), BENCH_SECONDS (8), BENCH_WARMUP (3),
// BENCH_SETUPS (memory,ipc,redis: which pairs to run).
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FILES, credentials, run, sleep, waitFor200, writeFixtures } from './lib/setup.mjs'
import { cpuSeconds, have, startNas, startNasguard, treePids } from './lib/peers.mjs'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SETUPS = new Set((process.env.BENCH_SETUPS ?? 'memory,ipc,redis').split(','))
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8)
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3)
if (!have('wrk') || !have('redis-server')) { console.error('needs wrk and redis-server (apt-get install wrk redis-server)'); process.exit(2) }

const dir = mkdtempSync(join(tmpdir(), 'nasguard-bench-budgets-'))
const root = writeFixtures(dir, ['small'])
const { cert, key, secretFile, token } = credentials(dir)
const NAS_PORT = 18180
const REDIS_PORT = 18199
const BUDGETS = { requestsPerMinute: 1000000, recordingsPerHour: 1000000, recordingsPerDay: 10000000, bytesPerHour: 1e15 }
const procs = []

const redisDir = join(dir, 'redis')
await run('mkdir', ['-p', redisDir])
const redis = spawn('redis-server', ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--dir', redisDir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec'], { stdio: 'ignore' })
procs.push({ stop: () => redis.kill('SIGTERM') })
await sleep(500)
// The epoch `nasguard state init` makes: a gateway on Redis trusts the (empty) revocations.
await run('redis-cli', ['-p', String(REDIS_PORT), 'SET', 'nasguard:{revocations}:epoch', new Date().toISOString()])

procs.push(await startNas(dir, root, NAS_PORT))
const targets = []
function add (name, port, o) {
  const config = {
    listen: { host: '127.0.0.1', port },
    tls: { cert, key },
    auth: { jwt: { secretFile, algorithms: ['HS256'] } },
    policy: [{ name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] }],
    audit: { dir: join(dir, `audit-${port}`) },
    admin: { host: '127.0.0.1', port: port + 1000 },
    limits: { clientFetches: 4096, clientConnections: 4096, ...(o.budgets ? { perSubject: BUDGETS } : {}) },
    upstream: { url: `http://127.0.0.1:${NAS_PORT}`, connections: 256 },
    workers: o.workers,
    ...(o.redis ? { state: { redis: { url: `redis://127.0.0.1:${REDIS_PORT}` } } } : {})
  }
  const p = startNasguard(dir, { name: `ng-${port}`, cli: 'dist/cli.js', config })
  procs.push(p)
  targets.push({ name, port, proc: p, redis: o.redis === true, pair: o.pair })
}
if (SETUPS.has('memory')) {
  add('1 worker, off', 18401, { workers: 1 })
  add('1 worker, in memory', 18402, { workers: 1, budgets: true, pair: '1 worker, off' })
}
if (SETUPS.has('ipc') || SETUPS.has('redis')) add('2 workers, off', 18403, { workers: 2 })
if (SETUPS.has('ipc')) add('2 workers, primary (IPC)', 18404, { workers: 2, budgets: true, pair: '2 workers, off' })
if (SETUPS.has('redis')) add('2 workers, Redis', 18405, { workers: 2, budgets: true, redis: true, pair: '2 workers, off' })

const stop = () => { for (const p of procs) p.stop() }
process.on('exit', stop)
for (const t of targets) await waitFor200(`https://127.0.0.1:${t.port}${FILES.small}`, token, t.name)

/** Scripts (EVALSHA, EVAL) redis-server ran so far. */
async function redisScripts () {
  const { stdout } = await run('redis-cli', ['-p', String(REDIS_PORT), 'INFO', 'commandstats'])
  let n = 0
  for (const m of stdout.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)) n += Number(m[1])
  return n
}

async function round (t, seconds) {
  const pids = [...t.proc.pids(), ...(t.redis ? treePids(redis.pid) : [])]
  const scriptsBefore = t.redis ? await redisScripts() : 0
  const before = cpuSeconds(pids)
  const { stdout } = await run('wrk', ['-t2', '-c32', `-d${seconds}s`, '--timeout', '10s', '-H', `Authorization: Bearer ${token}`, `https://127.0.0.1:${t.port}${FILES.small}`])
  const cpu = cpuSeconds(pids) - before
  const scripts = t.redis ? await redisScripts() - scriptsBefore : undefined
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0)
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0)
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0), cpuUs: requests > 0 ? cpu * 1e6 / requests : NaN, non2xx, ...(scripts !== undefined ? { scriptsPerK: scripts * 1000 / requests } : {}) }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
for (const t of targets) await round(t, WARMUP)
const results = Object.fromEntries(targets.map((t) => [t.name, []]))
for (let r = 0; r < ROUNDS; r++) for (const t of targets) results[t.name].push(await round(t, SECONDS))

console.log(`budgets bench ${new Date().toISOString()}: W1, ${ROUNDS} interleaved rounds of ${SECONDS} s; budgets set high (nothing refused)`)
console.log('target                        req/s   CPU µs/req   rounds (req/s)                 rounds (CPU µs/req)            cost (CPU)  cost (req/s)  Redis scripts per 1000 req')
const rows = {}
for (const t of targets) {
  const rs = results[t.name]
  rows[t.name] = { rps: median(rs.map((x) => x.rps)), cpu: median(rs.map((x) => x.cpuUs)), bad: rs.reduce((a, x) => a + x.non2xx, 0) }
}
for (const t of targets) {
  const row = rows[t.name]
  const base = t.pair ? rows[t.pair] : undefined
  // Each round against its pair's same round.
  const paired = (f) => median(results[t.name].map((x, i) => f(x, results[t.pair][i])))
  const cost = base ? `${(paired((x, b) => x.cpuUs / b.cpuUs - 1) * 100).toFixed(1).padStart(6)}%    ${(paired((x, b) => 1 - x.rps / b.rps) * 100).toFixed(1).padStart(6)}%` : '   (base)'
  const scripts = t.redis ? `  ${median(results[t.name].map((x) => x.scriptsPerK)).toFixed(1).padStart(8)}` : ''
  console.log(`${t.name.padEnd(28)} ${String(Math.round(row.rps)).padStart(6)} ${row.cpu.toFixed(0).padStart(12)}   ${results[t.name].map((x) => Math.round(x.rps)).join(', ').padEnd(30)} ${results[t.name].map((x) => x.cpuUs.toFixed(0)).join(', ').padEnd(30)} ${cost}${scripts}${row.bad ? `  (${row.bad} non-2xx!)` : ''}`)
}
writeFileSync(join(dir, 'results.json'), JSON.stringify({ rows, results }, null, 2))
console.log(`results: ${join(dir, 'results.json')}`)
stop()
process.exit(0)
