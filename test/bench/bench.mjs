#!/usr/bin/env node
// npm run bench [-- W1 W2 W3 W4 W5 W5r]: nasguard beside nginx and Caddy, in one run.
//
// - The NAS: nginx serving a fixture tree when installed, else a Node static server.
// - nasguard as shipped: TLS, JWT, policy, strict audit, metrics, info logs to a file.
// - Peers, when installed: nginx + auth_request to a small JWT validator,
//   nginx without auth, Caddy + forward_auth to the same validator; and always
//   the bare Node proxy (bare-proxy.mjs), the calibration target.
// - Workloads run in interleaved rounds (A, B, C, A, B, C, ...); medians are printed
//   with each target's ratio to nginx + auth_request.
//
// Not part of npm test: it measures, it does not assert. Needs wrk.
// Settings (env): BENCH_ROUNDS (3), BENCH_SECONDS (8), BENCH_WARMUP (3 s per target), BENCH_WORKERS (cores),
// BENCH_W4_SECONDS (600), BENCH_W4_READERS (1000), BENCH_W4_RATE (bytes/s per reader, 32768),
// BENCH_VARIANT (JSON config overrides: adds "nasguard (variant)"; null deletes a key),
// BENCH_COMPARE (another checkout, built, or a comma list of them: each runs its dist/cli.js beside this one),
// BENCH_PEERS (comma list to keep: nginx-auth,nginx,caddy,bare), BENCH_OUT (results JSON file),
// BENCH_SERVER_KEY=rsa (every target's certificate RSA-2048 instead of ECDSA P-256, cert init's default),
// BENCH_SEALED=1 (adds "nasguard (sealed)": the same files sealed on the NAS, sealing.mode require,
// and prints the sealed/plain ratios and the decryption MB/s of one core).
// Every table also prints nasguard's ratio to the bare Node proxy: what its features cost.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FILES, SIZES, credentials, run, waitFor200, writeFixtures } from './lib/setup.mjs'
import { SEALED_PATTERN, decryptMbps, sealFixtures } from './lib/sealed.mjs'
import { cpuSeconds, have, pssMb, rssMb, startBareProxy, startCaddy, startNas, startNasguard, startNginxPeer, startValidator } from './lib/peers.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const env = process.env
const ROUNDS = Number(env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(env.BENCH_SECONDS ?? 8)
const WARMUP = Number(env.BENCH_WARMUP ?? 3)
const WORKERS = Number(env.BENCH_WORKERS ?? availableParallelism())
const W4_SECONDS = Number(env.BENCH_W4_SECONDS ?? 600)
const W4_READERS = Number(env.BENCH_W4_READERS ?? 1000)
const W4_RATE = Number(env.BENCH_W4_RATE ?? 32768)
const selected = process.argv.slice(2).filter((a) => /^W([1-4]|5r?)$/.test(a))
const WANT = new Set(selected.length ? selected : ['W1', 'W2', 'W3', 'W5', 'W5r', 'W4'])
const PEERS = new Set((env.BENCH_PEERS ?? 'nginx-auth,nginx,caddy,bare').split(','))

if (!have('wrk')) { console.error('wrk is not installed (apt-get install wrk)'); process.exit(2) }

// ---- fixtures and credentials ------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'nasguard-bench-'))
const root = writeFixtures(dir, ['small', 'large', 'huge'])
const { small: SMALL, large: LARGE, huge: HUGE } = FILES
const HUGE_BYTES = SIZES.huge
const { cert, key, secretFile, token } = credentials(dir)

const rangeScript = join(dir, 'range.lua')
writeFileSync(rangeScript, `math.randomseed(os.time())
request = function()
  local off = math.random(0, ${HUGE_BYTES / 65536 - 1}) * 65536
  wrk.headers["Range"] = "bytes=" .. off .. "-" .. (off + 65535)
  return wrk.format(nil, nil)
end
`)

// ---- processes -----------------------------------------------------------
const NAS_PORT = 18080
const VALIDATOR_PORT = 18081
const procs = []
const targets = []
function deepMerge (base, over) {
  const out = { ...base }
  for (const [k, v] of Object.entries(over ?? {})) {
    if (v === null) delete out[k]
    else if (typeof v === 'object' && !Array.isArray(v) && typeof out[k] === 'object') out[k] = deepMerge(out[k], v)
    else out[k] = v
  }
  return out
}
const nasguardConfig = (name, port, adminPort) => ({
  listen: { host: '127.0.0.1', port },
  tls: { cert, key },
  auth: { jwt: { secretFile, algorithms: ['HS256'] } },
  policy: [{ name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] }],
  audit: { dir: join(dir, `audit-${name}`) },
  admin: { host: '127.0.0.1', port: adminPort },
  // All the load comes from one address: the per-client limits (for one
  // abusive client) would stop it, and W4's readers each need a NAS connection.
  limits: { clientFetches: 4 * W4_READERS, clientConnections: 4 * W4_READERS },
  upstream: { url: `http://127.0.0.1:${NAS_PORT}`, connections: W4_READERS + 128 },
  workers: WORKERS
})

const nas = await startNas(dir, root, NAS_PORT)
procs.push(nas)
function addNasguard (name, label, port, adminPort, cli, overrides, extraEnv) {
  const p = startNasguard(dir, { name, cli, config: deepMerge(nasguardConfig(name, port, adminPort), overrides), env: extraEnv })
  procs.push(p)
  targets.push({ name: label, port, auth: true, proc: p, nasguard: true, adminPort })
}
addNasguard('nasguard', 'nasguard', 18443, 19464, 'dist/cli.js')
if (env.BENCH_SEALED) {
  const keyring = join(dir, 'keyring')
  await sealFixtures(root, keyring, [SMALL, LARGE, HUGE])
  addNasguard('sealed', 'nasguard (sealed)', 18460, 19480, 'dist/cli.js', { sealing: { mode: 'require', keyring, periodPattern: SEALED_PATTERN } })
}
if (env.BENCH_VARIANT) addNasguard('variant', 'nasguard (variant)', 18444, 19465, 'dist/cli.js', JSON.parse(env.BENCH_VARIANT))
// BENCH_VARIANTS='{"label": {config overrides, "env": {...}}, ...}': several variants in one run.
Object.entries(JSON.parse(env.BENCH_VARIANTS ?? '{}')).forEach(([label, o], i) => {
  const { env: extraEnv, ...overrides } = o
  addNasguard(`v${i}`, `ng ${label}`, 18500 + i, 19500 + i, 'dist/cli.js', overrides, extraEnv)
})
// BENCH_COMPARE: one checkout, or several (comma-separated), each built; labelled by directory name when several.
const compares = (env.BENCH_COMPARE ?? '').split(',').filter(Boolean)
compares.forEach((checkout, i) => {
  const label = compares.length === 1 ? 'nasguard (compare)' : `ng ${checkout.split('/').filter(Boolean).pop()}`
  addNasguard(`compare${i}`, label, 18445 + i * 10, 19466 + i * 10, join(checkout, 'dist/cli.js'), JSON.parse(env.BENCH_COMPARE_OVERRIDES ?? '{}'))
})
const needValidator = (PEERS.has('nginx-auth') && have('nginx')) || (PEERS.has('caddy') && have('caddy'))
let validator
if (needValidator) { validator = startValidator(dir, VALIDATOR_PORT, secretFile); procs.push(validator) }
const withValidator = (p) => ({ ...p, pids: () => [...p.pids(), ...validator.pids()] })
if (have('nginx') && PEERS.has('nginx-auth')) {
  const p = startNginxPeer(dir, { name: 'nginx-auth', port: 18446, workers: WORKERS, nasPort: NAS_PORT, validatorPort: VALIDATOR_PORT, cert, key })
  procs.push(p)
  targets.push({ name: 'nginx+auth_request', port: 18446, auth: true, proc: withValidator(p), base: true })
}
if (have('nginx') && PEERS.has('nginx')) {
  const p = startNginxPeer(dir, { name: 'nginx-noauth', port: 18447, workers: WORKERS, nasPort: NAS_PORT, cert, key })
  procs.push(p)
  targets.push({ name: 'nginx (no auth)', port: 18447, auth: false, proc: p })
}
if (have('caddy') && PEERS.has('caddy')) {
  const p = startCaddy(dir, { port: 18448, workers: WORKERS, nasPort: NAS_PORT, validatorPort: VALIDATOR_PORT, cert, key })
  procs.push(p)
  targets.push({ name: 'caddy+forward_auth', port: 18448, auth: true, proc: withValidator(p) })
}
if (PEERS.has('bare')) {
  const p = startBareProxy(dir, { port: 18449, workers: WORKERS, nasPort: NAS_PORT, cert, key, secretFile })
  procs.push(p)
  targets.push({ name: 'bare Node proxy', port: 18449, auth: true, proc: p, bare: true })
}
const bareTarget = targets.find((t) => t.bare)
const baseTarget = targets.find((t) => t.base) ?? targets.find((t) => !t.nasguard) ?? targets[0]

// ---- measuring -----------------------------------------------------------
const authHeader = `Authorization: Bearer ${token}`
function waitUp (t) {
  return waitFor200(`https://127.0.0.1:${t.port}${SMALL}`, t.auth ? token : undefined, `${t.name} (logs in ${dir})`)
}

const UNITS = { us: 0.001, ms: 1, s: 1000, m: 60000 }
const toMs = (s) => { const m = /([\d.]+)(us|ms|s|m)/.exec(s ?? ''); return m ? Number(m[1]) * UNITS[m[2]] : NaN }
const BYTES = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }
const toMB = (s) => { const m = /([\d.]+)(B|KB|MB|GB)/.exec(s ?? ''); return m ? Number(m[1]) * BYTES[m[2]] / 1024 ** 2 : NaN }

/** W5r: a Node client that resumes TLS sessions (wrk never does). */
async function resuming (t, w, seconds) {
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, rssMb(t.proc.pids())) }, 250)
  try {
    const { stdout } = await run(process.execPath, [join(here, 'handshakes.mjs'), String(t.port), w.path, t.auth ? token : '', String(w.connections), String(seconds)])
    const r = JSON.parse(stdout)
    const non2xx = Object.entries(r.statuses).filter(([k]) => !k.startsWith('2')).reduce((a, [, n]) => a + n, 0)
    return { rps: r.rps, mbps: NaN, p50: NaN, p99: NaN, non2xx, errors: r.errors ? `${r.errors} errors` : '', rssMb: peak, cpuUs: NaN, resumed: r.resumedShare }
  } finally { clearInterval(sampler) }
}

async function wrk (t, w, seconds) {
  if (w.client === 'resuming') return resuming(t, w, seconds)
  const args = ['-t2', `-c${w.connections}`, `-d${seconds}s`, '--timeout', '10s', '--latency',
    ...(t.auth ? ['-H', authHeader] : []), ...(w.headers ?? []).flatMap((h) => ['-H', h]),
    ...(w.script ? ['-s', w.script] : []), `https://127.0.0.1:${t.port}${w.path}`]
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, rssMb(t.proc.pids())) }, 250)
  const cpuBefore = cpuSeconds(t.proc.pids())
  try {
    const { stdout: out } = await run('wrk', args)
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
    return {
      // The target's own processes (the validator with its peers): steadier than req/s on a shared machine.
      cpuUs: requests > 0 ? (cpuSeconds(t.proc.pids()) - cpuBefore) * 1e6 / requests : NaN,
      rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
      mbps: toMB(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1]),
      p50: toMs(/50%\s+(\S+)/.exec(out)?.[1]),
      p99: toMs(/99%\s+(\S+)/.exec(out)?.[1]),
      non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
      errors: (/Socket errors: (.*)/.exec(out)?.[1] ?? '').trim(),
      rssMb: peak
    }
  } finally { clearInterval(sampler) }
}

/**
 * Each other nasguard (a variant, a checkout) against nasguard, round by
 * round: the median of the per-round ratios, which cancels the machine's
 * drift between rounds better than the ratio of two medians.
 */
function pairedRatios (w, ts, rounds) {
  const main = rounds.nasguard
  const rate = (x) => (w.byMbps ? x.mbps : x.rps)
  for (const t of ts.filter((x) => x.nasguard && x.name !== 'nasguard')) {
    const rs = rounds[t.name]
    const cpu = median(rs.map((x, i) => main[i].cpuUs / x.cpuUs))
    const speed = median(rs.map((x, i) => rate(main[i]) / rate(x)))
    console.log(`nasguard / ${t.name}, paired by round: CPU per request ${cpu.toFixed(3)}x, ${w.byMbps ? 'MB/s' : 'req/s'} ${speed.toFixed(3)}x`)
  }
}

/** sealed/plain: what sealing costs, from one run. */
function sealedRatios (w, rows) {
  const plain = rows.find((r) => r.target === 'nasguard')
  const sealed = rows.find((r) => r.target === 'nasguard (sealed)')
  if (!plain || !sealed) return
  const rate = (x) => (w.byMbps ? x.mbps : x.rps)
  console.log(`sealed / plain: ${(rate(sealed) / rate(plain)).toFixed(2)}x ${w.byMbps ? 'MB/s' : 'req/s'}, p99 ${(sealed.p99 / plain.p99).toFixed(2)}x`)
}

const median = (xs) => { const s = [...xs].filter((x) => !Number.isNaN(x)).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN }
const WORKLOADS = {
  W1: { title: 'W1: 64 KB recordings, 32 keep-alive connections', path: SMALL, connections: 32 },
  W2: { title: 'W2: 48 MB streams, 4 connections (ratios of MB/s)', path: LARGE, connections: 4, byMbps: true },
  W3: { title: 'W3: random 64 KB Range reads inside a 256 MB file, 16 connections', path: HUGE, connections: 16, script: rangeScript },
  W5: { title: 'W5: a new TLS connection per request (Connection: close), 32 connections', path: SMALL, connections: 32, headers: ['Connection: close'] },
  W5r: { title: 'W5r: as W5, but each connection resumes the last session (a Node client, 16 loops)', path: SMALL, connections: 16, client: 'resuming' }
}

async function runWorkload (id) {
  const w = WORKLOADS[id]
  for (const t of targets) await wrk(t, w, WARMUP) // warm-up (the JIT, the heap), not counted
  const rounds = Object.fromEntries(targets.map((t) => [t.name, []]))
  for (let r = 0; r < ROUNDS; r++) for (const t of targets) rounds[t.name].push(await wrk(t, w, SECONDS))
  const rows = targets.map((t) => {
    const rs = rounds[t.name]
    return {
      target: t.name,
      rps: median(rs.map((x) => x.rps)),
      mbps: median(rs.map((x) => x.mbps)),
      p50: median(rs.map((x) => x.p50)),
      p99: median(rs.map((x) => x.p99)),
      cpuUs: median(rs.map((x) => x.cpuUs)),
      rssMb: Math.max(...rs.map((x) => x.rssMb)),
      non2xx: rs.reduce((a, x) => a + x.non2xx, 0),
      errors: rs.map((x) => x.errors).filter(Boolean).join('; '),
      rounds: rs.map((x) => Math.round(x.rps)),
      ...(rs[0].resumed !== undefined ? { resumed: median(rs.map((x) => x.resumed)) } : {})
    }
  })
  const base = rows.find((r) => r.target === baseTarget.name)
  const bare = rows.find((r) => r.target === bareTarget?.name)
  for (const r of rows) {
    const rate = (x) => (w.byMbps ? x.mbps : x.rps)
    r.ratio = rate(r) / rate(base)
    r.p99Ratio = r.p99 / base.p99
    r.bareRatio = bare ? rate(r) / rate(bare) : NaN
    r.bareCpuRatio = bare ? r.cpuUs / bare.cpuUs : NaN
  }
  console.log(`\n${w.title}; ${ROUNDS} interleaved rounds of ${SECONDS} s; ratios to ${baseTarget.name}${bare ? ' and to the bare Node proxy' : ''}`)
  console.log('target                    req/s     MB/s   p50 ms   p99 ms  peak RSS MB  ratio  p99 ratio  to bare  CPU µs/req  CPU to bare  rounds (req/s)')
  for (const r of rows) {
    console.log(`${r.target.padEnd(22)} ${r.rps.toFixed(0).padStart(8)} ${r.mbps.toFixed(1).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${r.rssMb.toFixed(0).padStart(12)} ${r.ratio.toFixed(2).padStart(6)}x ${r.p99Ratio.toFixed(2).padStart(9)}x ${r.bareRatio.toFixed(2).padStart(7)}x ${r.cpuUs.toFixed(0).padStart(11)} ${r.bareCpuRatio.toFixed(2).padStart(11)}x  ${r.rounds.join(', ')}` +
      `${r.resumed !== undefined ? `  resumed ${(r.resumed * 100).toFixed(0)}%` : ''}${r.non2xx ? `  non-2xx ${r.non2xx}` : ''}${r.errors ? `  socket errors: ${r.errors}` : ''}`)
  }
  sealedRatios(w, rows)
  pairedRatios(w, targets, rounds)
  return { id, title: w.title, rows }
}

/** W4: slow readers against one target; RSS (and PSS) of its processes sampled every 2 s. */
async function runW4 (t) {
  const samples = []
  const child = spawn(process.execPath, [join(here, 'slow-readers.mjs'), `https://127.0.0.1:${t.port}${LARGE}`, t.auth ? token : '', String(W4_READERS), String(W4_SECONDS), String(W4_RATE)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let last = {}
  child.stdout.on('data', (b) => { for (const l of b.toString().split('\n').filter(Boolean)) last = JSON.parse(l) })
  const started = Date.now()
  const sampler = setInterval(() => samples.push({ s: (Date.now() - started) / 1000, rss: rssMb(t.proc.pids()), pss: pssMb(t.proc.pids()), streaming: last.streaming ?? 0 }), 2000)
  await new Promise((r) => child.once('exit', r))
  clearInterval(sampler)
  const after = samples.filter((x) => x.s >= 60) // after the ramp-up minute
  const half = Math.floor(after.length / 2)
  const peakOf = (xs) => Math.max(...xs.map((x) => x.rss))
  const row = {
    target: t.name,
    peakRssMb: peakOf(samples),
    // The same processes' PSS: shared pages (the Node binary) counted once, not once per process.
    peakPssMb: Math.max(...samples.map((x) => x.pss)),
    firstHalfPeakMb: after.length ? peakOf(after.slice(0, half)) : NaN,
    secondHalfPeakMb: after.length ? peakOf(after.slice(half)) : NaN,
    streamingAtEnd: last.streaming,
    bytes: last.bytes,
    errors: last.errors,
    statuses: last.statuses,
    series: samples.filter((_, i) => i % 15 === 0).map((x) => [Math.round(x.s), Math.round(x.rss), x.streaming])
  }
  console.log(`${t.name.padEnd(22)} peak RSS ${row.peakRssMb.toFixed(0)} MB (peak PSS ${row.peakPssMb.toFixed(0)} MB: shared pages counted once); peak in the first/second half after minute 1: ${row.firstHalfPeakMb.toFixed(0)}/${row.secondHalfPeakMb.toFixed(0)} MB; ` +
    `streaming at the end ${row.streamingAtEnd}/${W4_READERS}; ${(row.bytes / 1024 ** 2).toFixed(0)} MB read; errors ${row.errors}; statuses ${JSON.stringify(row.statuses)}`)
  console.log(`  [s, RSS MB, streaming] every 30 s: ${JSON.stringify(row.series)}`)
  return row
}

const results = { date: new Date().toISOString(), machine: `${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB, node ${process.version}`, workers: WORKERS, nas: nas.kind, workloads: [] }
try {
  for (const t of targets) await waitUp(t)
  console.log(`nasguard bench ${results.date}; ${results.machine}; workers ${WORKERS} (nasguard and nginx; GOMAXPROCS for Caddy); NAS: ${nas.kind}; files in ${dir}`)
  console.log(`targets: ${targets.map((t) => t.name).join(', ')}`)
  for (const id of ['W1', 'W2', 'W3', 'W5', 'W5r']) if (WANT.has(id)) results.workloads.push(await runWorkload(id))
  if (WANT.has('W4')) {
    console.log(`\nW4: ${W4_READERS} concurrent slow readers (${(W4_RATE / 1024).toFixed(0)} KB/s each) of a 48 MB recording for ${W4_SECONDS} s`)
    const w4targets = targets.filter((t) => t.nasguard || env.BENCH_W4_PEERS)
    const rows = []
    for (const t of w4targets) rows.push(await runW4(t))
    results.workloads.push({ id: 'W4', rows })
  }
  for (const t of targets.filter((x) => x.nasguard)) {
    const text = await (await fetch(`http://127.0.0.1:${t.adminPort}/metrics`)).text().catch(() => '')
    const v = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
    const sum = v('nasguard_audit_batch_records_sum')
    const count = v('nasguard_audit_batch_records_count')
    console.log(`${t.name}: ${sum} audit records in ${count} writes (${(sum / count).toFixed(1)} records per fsync)`)
  }
  const out = env.BENCH_OUT ?? join(dir, 'results.json')
  writeFileSync(out, JSON.stringify(results, null, 2))
  // Measured last, while every target is idle.
  if (env.BENCH_SEALED) console.log(`decryption: ${(await decryptMbps()).toFixed(0)} MB/s on one core (64 KiB ChaCha20-Poly1305 chunks, node:crypto)`)
  console.log(`results: ${out}`)
} finally {
  for (const p of procs.reverse()) p.stop()
}
