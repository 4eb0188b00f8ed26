#!/usr/bin/env node
// npm run tls:audit [-- https://host:port]: runs Debian's testssl against a
// gateway and summarises its findings by severity. With no URL it starts a
// gateway itself (the shipped TLS settings, a throw-away CA trusted through
// testssl's --add-ca) in front of a stub NAS, and stops it afterwards.
// Exit code: 0 when nothing is MEDIUM or worse, 1 otherwise, 2 when testssl
// is missing (Debian: apt-get install testssl.sh).
import { spawn, spawnSync } from 'node:child_process'
import { createServer } from 'node:http'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { buildCrl, createCa, issueServerCert, writeKeyFile } from '../../dist/tls/certificates.js'

const bin = ['testssl', 'testssl.sh'].find((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status === 0)
if (!bin) { console.error('testssl is not installed (apt-get install testssl.sh)'); process.exit(2) }

const dir = mkdtempSync(join(tmpdir(), 'nasguard-tls-audit-'))
let target = process.argv[2]
let caFile = process.env.TLS_AUDIT_CA
let gw, nas
if (!target) {
  // The stub NAS also publishes the CA's (empty) revocation list, and the
  // server certificate says where (its cRLDistributionPoints), as a
  // deployment with `nasguard cert init --crl-url` would.
  const ca = createCa('tls-audit CA')
  const crlPem = buildCrl(ca, [])
  nas = createServer((req, res) => {
    if (req.url === '/ca.crl') { res.writeHead(200, { 'content-type': 'application/pkix-crl' }); res.end(crlPem); return }
    res.writeHead(404); res.end()
  })
  await new Promise((r) => nas.listen(0, '127.0.0.1', r))
  const server = issueServerCert(ca, ['localhost', '127.0.0.1'], 397, { crlUrl: `http://127.0.0.1:${nas.address().port}/ca.crl` })
  caFile = join(dir, 'ca.crt')
  writeFileSync(caFile, ca.certPem)
  writeFileSync(join(dir, 'server.crt'), server.certPem)
  writeKeyFile(join(dir, 'server.key'), server.keyPem)
  writeFileSync(join(dir, 'jwt.secret'), 'a'.repeat(48))
  const profile = process.env.TLS_AUDIT_PROFILE ?? 'intermediate'
  writeFileSync(join(dir, 'g.yaml'), [
    'listen: { host: 127.0.0.1, port: 18453 }',
    `tls: { cert: server.crt, key: server.key, profile: ${profile} }`,
    `upstream: { url: "http://127.0.0.1:${nas.address().port}" }`,
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
    'audit: { dir: audit }',
    'admin: { enabled: false }',
    'log: { level: error }'
  ].join('\n'))
  gw = spawn(process.execPath, [resolve('dist/cli.js'), 'start', '--config', join(dir, 'g.yaml')], { stdio: ['ignore', 'ignore', 'inherit'] })
  target = 'https://localhost:18453'
  for (let i = 0; i < 100; i++) {
    if (spawnSync('curl', ['-s', '-o', '/dev/null', '--cacert', caFile, `${target}/`]).status === 0) break
    await new Promise((r) => setTimeout(r, 100))
  }
}

const json = join(dir, 'testssl.json')
const args = ['--quiet', '--color', '0', '--warnings', 'batch', '--sneaky', '--jsonfile', json, ...(caFile ? ['--add-ca', caFile] : []), target]
console.log(`${bin} ${args.join(' ')}`)
const run = spawn(bin, args, { stdio: ['ignore', 'inherit', 'inherit'] })
const code = await new Promise((r) => run.on('exit', r))
gw?.kill('SIGTERM')
nas?.close()

let findings = []
try { findings = JSON.parse(readFileSync(json, 'utf8')) } catch { console.error(`testssl wrote no JSON (exit ${code})`); process.exit(1) }
const order = ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'WARN', 'INFO', 'OK']
const by = Object.fromEntries(order.map((s) => [s, findings.filter((f) => f.severity === s)]))
console.log('\n== testssl findings by severity ==')
for (const s of order) console.log(`${s.padEnd(8)} ${by[s].length}`)
for (const s of ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'WARN']) {
  for (const f of by[s]) console.log(`  ${s.padEnd(8)} ${f.id}: ${f.finding}`)
}
process.exit(by.CRITICAL.length + by.HIGH.length + by.MEDIUM.length > 0 ? 1 : 0)
