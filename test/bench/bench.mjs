#!/usr/bin/env node
// npm run bench: nasguard (TLS, JWT, policy, strict audit, metrics: all on,
// as shipped) against a baseline in the same run, in interleaved rounds.
// Baseline: nginx as a TLS reverse proxy without auth when nginx is
// installed, else the bare NAS over plain HTTP. Needs wrk (Debian: wrk).
// Not part of npm test: it measures, it does not assert.
import { execFile, spawn, spawnSync } from 'node:child_process'
import { promisify } from 'node:util'
import { createServer } from 'node:http'
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createSigner } from 'fast-jwt'
import { createCa, issueServerCert, writeKeyFile } from '../../dist/tls/certificates.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32)
const SIZE = 64 * 1024

function have (cmd) { return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0 }
if (!have('wrk')) { console.error('wrk is not installed (apt-get install wrk)'); process.exit(2) }

const dir = mkdtempSync(join(tmpdir(), 'nasguard-bench-'))
const ca = createCa('bench CA')
const server = issueServerCert(ca, ['localhost', '127.0.0.1'])
writeKeyFile(join(dir, 'server.key'), server.keyPem)
writeFileSync(join(dir, 'server.crt'), server.certPem)
const secret = 'b'.repeat(48)
writeFileSync(join(dir, 'jwt.secret'), secret)

// The NAS: a 64 KB recording from memory, keep-alive.
const body = Buffer.alloc(SIZE, 0x42)
const nas = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': body.length })
  res.end(body)
})
await new Promise((r) => nas.listen(0, '127.0.0.1', r))
const nasPort = nas.address().port

// Two nasguard instances, identical but for audit durability: strict (the
// default, fsync before the response starts) and batched (fsync every
// 100 ms). There is no "audit off" mode to compare with, by design.
const gwConfig = (name, port, adminPort, durability) => writeFileSync(join(dir, `${name}.yaml`), [
  `listen: { host: 127.0.0.1, port: ${port} }`,
  'tls: { cert: server.crt, key: server.key }',
  `upstream: { url: "http://127.0.0.1:${nasPort}" }`,
  'auth: { jwt: { secretFile: jwt.secret } }',
  'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
  `audit: { dir: audit-${name}, durability: ${durability} }`,
  `admin: { port: ${adminPort} }`,
  'log: { level: warn }'
].join('\n'))
gwConfig('strict', 18443, 19464, 'strict')
gwConfig('batched', 18445, 19465, 'batched')
const gws = ['strict', 'batched'].map((n) => spawn(process.execPath, [resolve('dist/cli.js'), 'start', '--config', join(dir, `${n}.yaml`)], { stdio: ['ignore', 'ignore', 'inherit'] }))

let nginx = null
const targets = [{ name: 'nasguard (strict audit)', url: 'https://127.0.0.1:18443/medicall/2016/01/01/083012_46701234567.wav', auth: true }]
if (have('nginx')) {
  mkdirSync(join(dir, 'nginx'), { recursive: true })
  writeFileSync(join(dir, 'nginx.conf'), `worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log; daemon off;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/nginx; proxy_temp_path ${dir}/nginx; fastcgi_temp_path ${dir}/nginx; uwsgi_temp_path ${dir}/nginx; scgi_temp_path ${dir}/nginx;
  upstream nas { server 127.0.0.1:${nasPort}; keepalive 64; }
  server { listen 127.0.0.1:18444 ssl; ssl_certificate ${dir}/server.crt; ssl_certificate_key ${dir}/server.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://nas; proxy_http_version 1.1; proxy_set_header Connection ""; } } }`)
  nginx = spawn('nginx', ['-c', join(dir, 'nginx.conf')], { stdio: 'ignore' })
  targets.push({ name: 'nginx-tls-proxy (no auth)', url: 'https://127.0.0.1:18444/medicall/2016/01/01/083012_46701234567.wav', auth: false })
} else {
  targets.push({ name: 'bare NAS (plain HTTP)', url: `http://127.0.0.1:${nasPort}/medicall/x.wav`, auth: false })
}

targets.splice(1, 0, { name: 'nasguard (batched audit)', url: 'https://127.0.0.1:18445/medicall/2016/01/01/083012_46701234567.wav', auth: true })

const token = createSigner({ key: secret, algorithm: 'HS256' })({ sub: 'bench', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 3600 })

// The NAS runs in this process: child tools must run asynchronously.
const run = promisify(execFile)

async function waitUp (url, headers) {
  for (let i = 0; i < 100; i++) {
    const r = await run('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', ...headers.flatMap((h) => ['-H', h]), url]).catch(() => ({ stdout: '' }))
    if (r.stdout === '200') return
    await new Promise((res) => setTimeout(res, 100))
  }
  throw new Error(`${url} did not come up`)
}

async function wrk (t) {
  const args = ['-t2', `-c${CONNECTIONS}`, `-d${SECONDS}s`, '--latency', ...(t.auth ? ['-H', `Authorization: Bearer ${token}`] : []), t.url]
  const { stdout: out } = await run('wrk', args)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const p50 = /50%\s+([\d.]+\w+)/.exec(out)?.[1]
  const p99 = /99%\s+([\d.]+\w+)/.exec(out)?.[1]
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
  return { rps, p50, p99, non2xx }
}

try {
  for (const t of targets) await waitUp(t.url, t.auth ? [`Authorization: Bearer ${token}`] : [])
  const results = Object.fromEntries(targets.map((t) => [t.name, []]))
  for (let r = 0; r < ROUNDS; r++) {
    for (const t of targets) results[t.name].push(await wrk(t))
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const base = median(results[targets.find((t) => !t.name.startsWith('nasguard')).name].map((x) => x.rps))
  console.log(`64 KB recordings, ${CONNECTIONS} keep-alive connections, ${ROUNDS} interleaved rounds of ${SECONDS}s, ${new Date().toISOString()}`)
  for (const t of targets) {
    const rs = results[t.name]
    const m = median(rs.map((x) => x.rps))
    console.log(`${t.name.padEnd(30)} median ${m.toFixed(0).padStart(7)} req/s  (${rs.map((x) => x.rps.toFixed(0)).join(', ')})  p50 ${rs.map((x) => x.p50).join('/')}  p99 ${rs.map((x) => x.p99).join('/')}  non-2xx ${rs.reduce((a, x) => a + x.non2xx, 0)}  ratio ${(m / base).toFixed(2)}x`)
  }
  const strict = median(results[targets[0].name].map((x) => x.rps))
  const batched = median(results[targets[1].name].map((x) => x.rps))
  console.log(`strict audit / batched audit: ${(strict / batched).toFixed(2)}x`)
  for (const [n, port] of [['strict', 19464], ['batched', 19465]]) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const v = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
    const sum = v('nasguard_audit_batch_records_sum')
    const count = v('nasguard_audit_batch_records_count')
    console.log(`${n}: ${sum} audit records in ${count} writes, ${(sum / count).toFixed(1)} records per write (group commit)`)
  }
} finally {
  for (const g of gws) g.kill('SIGTERM')
  nginx?.kill('SIGTERM')
  nas.close()
  nas.closeAllConnections()
}
