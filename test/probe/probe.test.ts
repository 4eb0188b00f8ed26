// `nasguard probe` (issue 21), through the built CLI against real servers:
// the gateway itself (no HIGH, and its NAS is never asked), Debian's nginx
// with autoindex answering plain HTTP on a "TLS" port (the 2019 shape: every
// HIGH it has), and Caddy's TLS site with its internal CA (its actual
// findings). Plus the outputs: table, --json, --format prom (promtool).
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { RECORDING, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { startDavNas } from '../helpers/dav-nas.js'
import { freePort, run, runCli } from '../helpers/process.js'
import { waitFor } from '../helpers/wait.js'
import type { ProbeResult, Severity } from '../../src/probe/findings.js'

type Json = Array<ProbeResult & { counts: Record<Severity, number> }>

const ids = (r: ProbeResult, severity?: Severity): string[] => r.findings.filter((f) => severity === undefined || f.severity === severity).map((f) => f.id).sort()
const judged = (r: ProbeResult): string[] => r.findings.filter((f) => f.severity !== 'INFO').map((f) => `${f.severity} ${f.id}`).sort()

async function probeJson (t: Test, args: string[]): Promise<{ status: number | null, result: ProbeResult }> {
  const r = await runCli(['probe', '--json', ...args])
  t.equal(r.stderr, '', 'nothing on stderr')
  const parsed = JSON.parse(r.stdout) as Json
  t.equal(parsed.length, 1)
  for (const f of parsed[0].findings) t.ok(f.severity === 'INFO' || f.fix.length > 0, `${f.id} has a one-line fix`)
  return { status: r.status, result: parsed[0] }
}

t.test('the gateway: no HIGH, exit 0, and the NAS behind it is never asked', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const certs = testCerts()
  const { status, result } = await probeJson(t, [`https://localhost:${gw.port}/`, '--ca', certs.ca, '--path', '/medicall/2019/01/02/call_46701234567.wav', '--path', '/medicall/'])
  t.equal(status, 0)
  t.same(ids(result, 'HIGH'), [])
  t.same(judged(result), [], 'nothing but INFO: TLS 1.2/1.3 in profile, HSTS, trusted certificate, plain HTTP refused')
  t.ok(ids(result).includes('plaintext-refused'))
  t.ok(ids(result).includes('credentials-required'))
  t.same(nas.requests, [], 'the probe got no request through to the NAS')
})

t.test('nginx with autoindex, plain HTTP on a "TLS" port (the 2019 NAS): every HIGH, exit 1', async (t) => {
  const nas = await startDavNas(t, { autoindex: true })
  // The 2019 shape: dated directories, the caller's number in each name.
  mkdirSync(join(nas.root, 'recordings', '2019', '01'), { recursive: true })
  writeFileSync(join(nas.root, 'recordings', '2019', '01', '20190101-0930_46701234567.wav'), RECORDING)
  const port = new URL(nas.url).port
  const { status, result } = await probeJson(t, [`https://127.0.0.1:${port}/`])
  t.equal(status, 1, 'a HIGH finding exits 1')
  t.same(ids(result, 'HIGH'), ['anonymous-fetch', 'directory-listing', 'plaintext-on-tls-port'])
  t.same(ids(result, 'LOW'), ['banner-version'], 'nginx/1.x in Server')
  const listing = result.findings.find((f) => f.id === 'directory-listing')
  t.match(listing?.title, /\/ \(GET 200\)/)
  t.match(listing?.title, /\/recordings\/ \(GET 200\)/)
  t.match(listing?.title, /and 2 directories below/, 'the dated directories were opened to find a file')
  t.match(result.findings.find((f) => f.id === 'anonymous-fetch')?.title, /a file in \/recordings\/2019\/01\/ \(20[06]\)/, 'found through the listings')
  t.notMatch(JSON.stringify(result), /46701234567/, 'the file is named by its directory: its name holds a phone number')
  t.notOk(ids(result).some((i) => i.startsWith('tls') || i.startsWith('certificate') || i.startsWith('hsts')), 'no TLS to judge')

  // The same nginx asked for by http://: no TLS at all.
  const plain = await probeJson(t, [`http://127.0.0.1:${port}/`, '--path', '/recordings/2019/01/20190101-0930_46701234567.wav'])
  t.equal(plain.status, 1)
  t.same(ids(plain.result, 'HIGH'), ['anonymous-fetch', 'directory-listing', 'no-tls'])

  // The table names each HIGH with its fix; prom text is valid for promtool and the textfile collector.
  const table = await runCli(['probe', `https://127.0.0.1:${port}/`])
  t.equal(table.status, 1)
  t.match(table.stdout, /^https:\/\/127\.0\.0\.1:\d+\/: 3 HIGH, 0 MEDIUM, 1 LOW, \d+ INFO$/m)
  t.match(table.stdout, /HIGH\s+plaintext\s+.*speaks plain HTTP.*put TLS on this port/)
  const prom = await runCli(['probe', '--format', 'prom', `https://127.0.0.1:${port}/`])
  t.equal(prom.status, 1)
  t.match(prom.stdout, new RegExp(`nasguard_probe_findings\\{url="https://127.0.0.1:${port}/",severity="HIGH"\\} 3`))
  t.match(prom.stdout, /nasguard_probe_finding\{url="[^"]+",id="directory-listing",severity="HIGH"\} 1/)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-probe-'))
  writeFileSync(join(dir, 'probe.prom'), prom.stdout)
  const check = await run('sh', ['-c', `promtool check metrics < ${join(dir, 'probe.prom')}`])
  t.equal(check.status, 0, check.stdout + check.stderr)
})

/** Caddy's TLS site as it comes: its internal CA (local_certs), a file server, nothing hardened. */
async function startCaddy (t: Test): Promise<{ port: number, root: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-caddy-'))
  mkdirSync(join(dir, 'site'))
  writeFileSync(join(dir, 'site', 'index.html'), '<html><body>Caddy works</body></html>')
  const port = await freePort()
  writeFileSync(join(dir, 'Caddyfile'), `{
\tadmin off
\tskip_install_trust
\tlocal_certs
\tstorage file_system ${dir}/data
}
https://localhost:${port} {
\troot * ${dir}/site
\tfile_server
}
`)
  const child: ChildProcess = spawn('caddy', ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], { env: { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'xdg'), XDG_CONFIG_HOME: join(dir, 'xdg') }, stdio: 'ignore' })
  t.teardown(() => new Promise<void>((resolve) => {
    if (child.exitCode !== null) { resolve(); return }
    child.once('exit', () => resolve())
    child.kill('SIGTERM')
  }))
  // Ready once it completes a handshake with its certificate (issued at start).
  await waitFor('caddy serving TLS', async () => await new Promise<true | undefined>((resolve) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false })
    s.once('secureConnect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { resolve(undefined) })
  }), { intervalMs: 100 })
  return { port, root: join(dir, 'data', 'pki', 'authorities', 'local', 'root.crt') }
}

t.test("Caddy's TLS site with its internal CA: its actual findings", async (t) => {
  const caddy = await startCaddy(t)
  const url = `https://localhost:${caddy.port}/`
  const { status, result } = await probeJson(t, [url])
  t.equal(status, 0, 'no HIGH')
  t.same(judged(result), ['MEDIUM certificate-untrusted', 'MEDIUM hsts-missing'])
  t.ok(ids(result).includes('plaintext-refused'), 'Go answers plain HTTP on the TLS port with 400')
  t.ok(ids(result).includes('tls12-ciphers'), 'TLS 1.2 ciphers in the profile')
  t.ok(ids(result).includes('banner'), 'Server: Caddy, without a version')
  const trusted = await probeJson(t, [url, '--ca', caddy.root])
  t.same(judged(trusted.result), ['MEDIUM hsts-missing'], 'with its root CA given, only HSTS is left')
})

t.test('usage errors exit 2 and name what is wrong; nothing listening is not a finding to fail on', async (t) => {
  for (const [args, message] of [
    [['probe', 'ftp://nas.example/'], /invalid URL "ftp:\/\/nas.example\/": .*https:\/\/ and http:\/\//],
    [['probe', 'not a url'], /invalid URL "not a url"/],
    [['probe', 'https://127.0.0.1/', '--path', 'recordings/'], /invalid --path "recordings\/": a path starts with \//],
    [['probe', 'https://127.0.0.1/', '--timeout-ms', 'soon'], /invalid --timeout-ms "soon"/],
    [['probe', 'https://127.0.0.1/', '--format', 'xml'], /--format/]
  ] as Array<[string[], RegExp]>) {
    const r = await runCli(args)
    t.equal(r.status, 2, args.join(' '))
    t.match(r.stderr, message)
  }
  const port = await freePort()
  const { status, result } = await probeJson(t, [`https://127.0.0.1:${port}/`, '--timeout-ms', '3000'])
  t.equal(status, 0)
  t.equal(result.reached, false)
  t.same(ids(result), ['unreachable'])
})

t.test('an old NAS that speaks only TLS 1.0 and 1.1, listing on: found over its old TLS, not called plain HTTP', async (t) => {
  const certs = testCerts()
  const nas = await startDavNas(t, { autoindex: true, tls: { cert: certs.cert, key: certs.key, protocols: 'TLSv1 TLSv1.1' } })
  mkdirSync(join(nas.root, 'calls'))
  writeFileSync(join(nas.root, 'calls', '20190101-0930_46701234567.wav'), RECORDING)
  const { status, result } = await probeJson(t, [`https://localhost:${new URL(nas.url).port}/`, '--ca', certs.ca])
  t.equal(status, 1)
  t.same(ids(result, 'HIGH'), ['anonymous-fetch', 'directory-listing', 'tls-obsolete-only'])
  t.ok(ids(result).includes('tls-old-versions'))
  t.notOk(ids(result).includes('plaintext-on-tls-port'), 'its 400 to plain HTTP does not make it a plain port')
})

/** A server on loopback answering with `handler`, closed with the test. */
async function serve (t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return (server.address() as { port: number }).port
}

t.test('a WebDAV share that answers PROPFIND only; an ordinary site with links is no listing', async (t) => {
  const dav = await serve(t, (req, res) => {
    if (req.method === 'PROPFIND' && req.url === '/recordings/') {
      // The share names itself by an inside name, as NAS boxes do; the caller's folder is their number.
      res.writeHead(207, { 'content-type': 'application/xml' }).end('<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/recordings/</D:href></D:response><D:response><D:href>http://nas.internal/recordings/46701234567/call.wav</D:href></D:response></D:multistatus>')
      return
    }
    if (req.method === 'GET' && req.url === '/recordings/46701234567/call.wav') {
      res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes 0-0/${RECORDING.length}` }).end(RECORDING.subarray(0, 1))
      return
    }
    res.writeHead(403).end()
  })
  const found = await probeJson(t, [`http://127.0.0.1:${dav}/`])
  t.same(ids(found.result, 'HIGH'), ['anonymous-fetch', 'directory-listing', 'no-tls'])
  t.match(found.result.findings.find((f) => f.id === 'directory-listing')?.title, /\/recordings\/ \(PROPFIND 207\)/)
  t.match(found.result.findings.find((f) => f.id === 'anonymous-fetch')?.title, /a file in \/recordings\/46…\/ \(206\)/, 'the caller\'s folder is cut to two digits')
  t.notMatch(JSON.stringify(found.result), /46701234567/)

  const site = await serve(t, (req, res) => {
    res.writeHead(req.url === '/' ? 200 : 404, { 'content-type': 'text/html' }).end('<html><body><h1>Welcome</h1><a href="/about">About us</a> <a href="/privacy">Privacy</a> <a href="/contact">Contact</a></body></html>')
  })
  const plain = await probeJson(t, [`http://127.0.0.1:${site}/`])
  t.same(ids(plain.result, 'HIGH'), ['no-tls'], 'no listing, no file: only the plain HTTP')
})

t.test('per-caller folders are masked as the NAS reads them: a listing that percent-encodes the number (070%20123…) gets no readable number through', async (t) => {
  const folders = ['070%20123%2045%2067', '%2B46%2070-123%2045%2067', '46701234567', '%0a46701234567']
  const port = await serve(t, (req, res) => {
    if (req.url === '/calls/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html><head><title>Index of /calls/</title></head><body><h1>Index of /calls/</h1><pre>' + folders.map((f) => `<a href="${f}/">${decodeURIComponent(f)}/</a>\n`).join('') + '</pre></body></html>')
      return
    }
    const folder = folders.find((f) => req.url === `/calls/${f}/`)
    if (folder !== undefined) { res.writeHead(200, { 'content-type': 'text/html' }).end('<html><head><title>Index of /calls/x/</title></head><body><pre><a href="call.wav">call.wav</a>\n</pre></body></html>'); return }
    if (req.url?.endsWith('/call.wav') === true) { res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes 0-0/${RECORDING.length}` }).end(RECORDING.subarray(0, 1)); return }
    res.writeHead(404).end()
  })
  const found = await probeJson(t, [`http://127.0.0.1:${port}/`])
  const title = found.result.findings.find((f) => f.id === 'anonymous-fetch')?.title ?? ''
  t.match(title, /a file in \/calls\/07…\/ \(206\)/, 'spaces written %20')
  t.match(title, /a file in \/calls\/46…\/ \(206\)/)
  const everything = JSON.stringify(found.result)
  for (const digits of ['1234567', '123%2045', '123 45', '45%2067', '45 67']) t.notOk(everything.includes(digits), `no ${digits} in the probe's output`)
  t.notMatch(title, /[\n\r]/, 'a control character is written encoded')
})

t.test('a server that trickles every answer does not hold the probe past --deadline-ms, and says so', async (t) => {
  const port = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' })
    const timer = setInterval(() => { res.write('<') }, 200)
    res.on('close', () => { clearInterval(timer) })
  })
  const r = await runCli(['probe', '--json', '--timeout-ms', '1000', '--deadline-ms', '4000', `https://127.0.0.1:${port}/`])
  t.equal(r.stderr, '', 'no warnings (no listener leak on the deadline)')
  const result = (JSON.parse(r.stdout) as Json)[0]
  t.ok(ids(result).includes('probe-deadline'), 'the deadline is a finding')
  t.ok(ids(result).includes('plaintext-on-tls-port'), 'what was found before it is kept')
  t.equal(r.status, 1)
})
