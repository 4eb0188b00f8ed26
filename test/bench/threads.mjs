#!/usr/bin/env node
// npm run bench:threads [-- ROUNDS]: where W1's CPU goes by thread and by
// user/kernel time, which a --cpu-prof profile (main thread, JavaScript
// only) does not show. nasguard as shipped (audit.durability strict),
// nasguard with durability batched (to show what the strict fsync costs;
// not a shipped setting) and the bare Node proxy, 2 workers each (BENCH_WORKERS), loaded in
// turn by wrk (W1: 64 KB, 32 connections, 8 s a round, 3 rounds). Prints,
// per request: user and system CPU of each process's main threads and of
// its other threads (libuv's pool: audit writes, fsyncs, stats, log
// writes; V8's GC helpers), with their context switches, and the whole machine's busy time (which also
// holds the kernel's journal commits, wrk and the NAS).
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { startNas, treePids } from './lib/peers.mjs'
import { FILES, credentials, run, waitFor200, writeFixtures } from './lib/setup.mjs'

const ROUNDS = Number(process.argv[2] ?? 3)
/** Workers for every target (BENCH_WORKERS, default 2, as npm run bench). */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2)
const TICKS = 100
const dir = mkdtempSync(join(tmpdir(), 'nasguard-threads-'))
const root = writeFixtures(dir, ['small'])
const { cert, key, secretFile, token } = credentials(dir)
const NAS_PORT = 18094
const nas = await startNas(dir, root, NAS_PORT)
const log = openSync(join(dir, 'targets.log'), 'a')

function nasguard (name, port, durability) {
  const file = join(dir, `${name}.json`)
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port },
    tls: { cert, key },
    upstream: { url: `http://127.0.0.1:${NAS_PORT}` },
    auth: { jwt: { secretFile, algorithms: ['HS256'] } },
    policy: [{ name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] }],
    audit: { dir: join(dir, `audit-${name}`), durability },
    admin: { host: '127.0.0.1', port: port + 1000 },
    limits: { clientFetches: 4000, clientConnections: 4000 },
    workers: WORKERS
  }))
  return spawn(process.execPath, [resolve('dist/cli.js'), 'start', '--config', file], { stdio: ['ignore', log, log] })
}
const targets = [
  { name: 'nasguard (strict, as shipped)', port: 18495, proc: nasguard('strict', 18495, 'strict') },
  { name: 'nasguard (batched)', port: 18496, proc: nasguard('batched', 18496, 'batched') },
  { name: 'bare Node proxy', port: 18497, proc: spawn(process.execPath, [resolve('test/bench/bare-proxy.mjs'), '18497', String(NAS_PORT), cert, key, secretFile, String(WORKERS)], { stdio: ['ignore', log, log] }) }
]
for (const t of targets) await waitFor200(`https://127.0.0.1:${t.port}${FILES.small}`, token, t.name)

/** user and system ticks by thread kind: main threads (a worker's, the primary's) and the others. */
function threadTicks (rootPid) {
  const out = new Map()
  for (const pid of treePids(rootPid)) {
    let tids = []
    try { tids = readdirSync(`/proc/${pid}/task`) } catch { continue }
    for (const tid of tids) {
      try {
        const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
        const switches = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0) + Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0)
        const kind = `${String(pid) === tid ? 'main threads' : 'other threads'}${pid === rootPid ? ' (primary)' : ''}`
        const [u, k, c] = out.get(kind) ?? [0, 0, 0]
        out.set(kind, [u + Number(f[11]), k + Number(f[12]), c + switches])
      } catch {}
    }
  }
  return out
}
/** The machine's busy ticks (user, nice, system, irq, softirq). */
function machineBusy () {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number)
  return f[0] + f[1] + f[2] + f[5] + f[6]
}

for (const t of targets) { t.requests = 0; t.machine = 0; t.ticks = new Map() }
for (let round = 0; round < ROUNDS; round++) {
  for (const t of targets) {
    const before = threadTicks(t.proc.pid)
    const m0 = machineBusy()
    const { stdout } = await run('wrk', ['-t2', '-c32', '-d8s', '-H', `Authorization: Bearer ${token}`, `https://127.0.0.1:${t.port}${FILES.small}`])
    const after = threadTicks(t.proc.pid)
    t.machine += machineBusy() - m0
    const n = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0)
    t.requests += n
    for (const [kind, [u, k, c]] of after) {
      const [u0, k0, c0] = before.get(kind) ?? [0, 0, 0]
      const [su, sk, sc] = t.ticks.get(kind) ?? [0, 0, 0]
      t.ticks.set(kind, [su + u - u0, sk + k - k0, sc + c - c0])
    }
    console.log(`round ${round + 1}: ${t.name} ${(n / 8).toFixed(0)} req/s`)
  }
}
const us = (ticks, n) => (ticks * 1e6 / TICKS / n).toFixed(1).padStart(7)
console.log(`\nCPU µs per W1 request (${ROUNDS} rounds of 8 s each, interleaved; /proc ticks are 10 ms, so a line under ~2 µs is noise)`)
for (const t of targets) {
  console.log(`\n${t.name}: ${(t.requests / (ROUNDS * 8)).toFixed(0)} req/s; the machine busy ${us(t.machine, t.requests)} µs a request`)
  let [tu, tk, tc] = [0, 0, 0]
  const switches = (c) => (c / t.requests).toFixed(2).padStart(6)
  for (const [kind, [u, k, c]] of [...t.ticks].sort()) {
    tu += u; tk += k; tc += c
    console.log(`  ${kind.padEnd(26)} user ${us(u, t.requests)}  system ${us(k, t.requests)}  context switches ${switches(c)}`)
  }
  console.log(`  ${'all'.padEnd(26)} user ${us(tu, t.requests)}  system ${us(tk, t.requests)}  context switches ${switches(tc)}`)
}
for (const t of targets) t.proc.kill('SIGTERM')
nas.stop()
