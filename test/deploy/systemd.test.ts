// The shipped systemd units, and nasguard under socket activation.
//
// - The units: `systemd-analyze verify` finds no error or warning, and
//   `systemd-analyze security --offline=yes` scores the service at 2.0 or
//   below. verify checks that ExecStart's binary exists on this machine;
//   /usr/bin/nasguard is not installed here, so a temporary copy of the units
//   runs node + dist/cli.js instead (the only line changed), and --man=no
//   keeps it from checking that the Documentation= man pages are installed.
// - sysusers.d and tmpfiles.d: applied to a temporary root (--root), which
//   must end up with the nasguard user and the directories' owners and modes.
// - Socket activation, as systemd does it: systemd-socket-activate(1) opens
//   the sockets and starts `nasguard start` with LISTEN_FDS/LISTEN_FDNAMES and
//   NOTIFY_SOCKET. Node cannot open a unix datagram socket, so a python3
//   one-liner receives the notifications. READY=1 must arrive, requests with
//   a real JWT must reach the NAS over HTTP/1.1 and HTTP/2 through the passed
//   socket, and nothing may listen on the config's listen.port.
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { connect as http2Connect } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { SECRET, bearer, get } from '../helpers/gateway-client.js'
import { waitFor, within } from '../helpers/wait.js'
import { CLI, freePort } from '../helpers/process.js'
import { assignSockets, parseListenFds } from '../../src/systemd.js'

const UNITS = resolve('deploy/systemd')
const SERVICE = join(UNITS, 'nasguard.service')
const SOCKETS = ['nasguard.socket', 'nasguard-admin.socket']
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const token = (): string => sign({ sub: 'alice', scope: 'recordings:read', jti: 'j-' + Math.random().toString(36).slice(2), exp: Math.floor(Date.now() / 1000) + 600 })

t.test('LISTEN_FDS is read as sd_listen_fds(3) reads it', async (t) => {
  const pid = 4242
  t.same(parseListenFds({ LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'gateway:admin' }, pid), [{ fd: 3, name: 'gateway' }, { fd: 4, name: 'admin' }])
  t.same(parseListenFds({ LISTEN_PID: '4243', LISTEN_FDS: '2' }, pid), [], 'meant for another process (a parent): not ours')
  t.same(parseListenFds({ LISTEN_FDS: '1' }, pid), [], 'no LISTEN_PID: not ours')
  t.same(parseListenFds({ LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'one' }, pid), [{ fd: 3, name: 'unknown' }, { fd: 4, name: 'unknown' }], 'a name list of the wrong length is ignored')
  t.same(assignSockets([{ fd: 3, name: 'admin' }, { fd: 4, name: 'gateway' }]), { gateway: 4, admin: 3, passed: [{ fd: 3, name: 'admin' }, { fd: 4, name: 'gateway' }] }, 'by name, not by position')
  t.match(assignSockets([{ fd: 3, name: 'nasguard.socket' }]), { gateway: 3, admin: undefined }, 'one unnamed socket is the gateway')
})

t.test('the units verify and the service scores 2.0 or better', { skip: has('systemd-analyze') ? false : 'systemd-analyze is not installed (apt-get install systemd)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-units-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const f of ['nasguard.service', ...SOCKETS]) cpSync(join(UNITS, f), join(dir, f))
  const service = readFileSync(SERVICE, 'utf8')
  t.match(service, /^ExecStart=\/usr\/bin\/nasguard start --config \/etc\/nasguard\/nasguard\.yaml$/m)
  writeFileSync(join(dir, 'nasguard.service'), service.replace(/^ExecStart=\/usr\/bin\/nasguard /m, `ExecStart=${process.execPath} ${CLI} `))
  const verify = spawnSync('systemd-analyze', ['verify', '--man=no', ...['nasguard.service', ...SOCKETS].map((f) => join(dir, f))], { encoding: 'utf8' })
  t.equal(verify.status, 0, 'systemd-analyze verify passes')
  t.equal(verify.stderr.trim(), '', 'and warns about nothing (an unknown or misspelt key is only a warning)')

  const security = spawnSync('systemd-analyze', ['security', '--offline=yes', SERVICE], { encoding: 'utf8' })
  const m = /Overall exposure level for nasguard\.service: (\d+\.\d+)/.exec(security.stdout)
  t.ok(m, m ? 'systemd-analyze security prints a score' : `no score in:\n${security.stdout.slice(-300)}${security.stderr}`)
  const score = Number(m?.[1])
  t.ok(score <= 2.0, `exposure ${score} is 2.0 or better`)
  t.comment(`systemd-analyze security --offline=yes: ${m?.[0] ?? '(none)'}`)

  // What the service must not take, and what it must say.
  t.notMatch(service, /^(AmbientCapabilities|CapabilityBoundingSet)=.*CAP_/m, 'no capability: port 443 comes from the socket')
  t.notMatch(service, /^MemoryDenyWriteExecute=yes/m, 'V8 needs writable+executable memory')
  t.match(service, /^Type=notify$/m)
  t.match(service, /^SystemCallErrorNumber=EPERM$/m)
  t.match(readFileSync(join(UNITS, 'nasguard.socket'), 'utf8'), /^FileDescriptorName=gateway$/m)
  t.match(readFileSync(join(UNITS, 'nasguard-admin.socket'), 'utf8'), /^FileDescriptorName=admin$/m)
})

t.test('sysusers.d and tmpfiles.d make the user and the directories', { skip: has('systemd-sysusers') && has('systemd-tmpfiles') ? false : 'systemd-sysusers or systemd-tmpfiles is not installed' }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nasguard-root-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  mkdirSync(join(root, 'etc'))
  // Absolute paths: relative ones are looked up in the configuration directories.
  const users = spawnSync('systemd-sysusers', [`--root=${root}`, join(UNITS, 'nasguard.sysusers')], { encoding: 'utf8' })
  t.equal(users.status, 0, users.stderr)
  const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8')
  const entry = /^nasguard:x:(\d+):(\d+):[^:]*:\/var\/lib\/nasguard:\/usr\/sbin\/nologin$/m.exec(passwd)
  t.ok(entry, 'a nasguard system user, no login')
  const [uid, gid] = [Number(entry?.[1]), Number(entry?.[2])]
  t.ok(uid < 1000, 'a system uid')
  t.match(readFileSync(join(root, 'etc/group'), 'utf8'), new RegExp(`^nasguard:x:${gid}:`, 'm'))
  const tmpfiles = spawnSync('systemd-tmpfiles', [`--root=${root}`, '--create', join(UNITS, 'nasguard.tmpfiles')], { encoding: 'utf8' })
  t.equal(tmpfiles.status, 0, tmpfiles.stderr)
  const at = (p: string): { mode: string, uid: number, gid: number } => {
    const st = statSync(join(root, p))
    return { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid }
  }
  t.same(at('etc/nasguard'), { mode: '750', uid: 0, gid }, '/etc/nasguard 0750 root:nasguard')
  t.same(at('var/lib/nasguard'), { mode: '700', uid, gid }, '/var/lib/nasguard 0700 nasguard')
  t.same(at('var/lib/nasguard/audit'), { mode: '700', uid, gid }, 'the audit directory 0700 nasguard')
})

/** A python3 receiver of sd_notify datagrams on a unix socket: one line per datagram. */
async function notifyReceiver (t: { teardown: (fn: () => unknown) => void }, path: string): Promise<{ messages: string[] }> {
  const script = 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nwhile True:\n  print(s.recv(65536).decode(errors="replace").replace("\\n"," "),flush=True)\n'
  const py = spawn('python3', ['-c', script, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { py.kill('SIGKILL') })
  const messages: string[] = []
  let buf = ''
  py.stdout.on('data', (c: Buffer) => {
    buf += c.toString()
    const lines = buf.split('\n')
    buf = lines.pop() ?? ''
    messages.push(...lines)
  })
  await waitFor('the notify receiver to bind', () => messages.includes('bound') ? true : undefined)
  return { messages }
}

/** An HTTP/2 GET on a fresh connection to 127.0.0.1 (not "localhost": that may be ::1). */
function getH2 (port: number, path: string, headers: Record<string, string>): Promise<{ status: number, body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://127.0.0.1:${port}`, { ca: readFileSync(testCerts().ca), servername: 'localhost' })
    session.on('error', reject)
    const stream = session.request({ ':method': 'GET', ':path': path, ...headers })
    const chunks: Buffer[] = []
    let status = 0
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => { session.close(); resolve({ status, body: Buffer.concat(chunks) }) })
    stream.on('error', (err) => { session.destroy(); reject(err) })
    stream.end()
  })
}

/** Whether anything accepts TCP connections on 127.0.0.1:port. */
function listening (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true) })
    s.on('error', () => resolve(false))
  })
}

const activation = has('systemd-socket-activate') && has('python3') && has('systemd-notify')
for (const workers of [1, 2]) {
  t.test(`socket activation and Type=notify (workers: ${workers})`, { skip: activation ? false : 'systemd-socket-activate, systemd-notify or python3 is missing' }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-sd-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const nas = await startStubNas(t)
    const [configPort, configAdminPort, port, adminPort] = [await freePort(), await freePort(), await freePort(), await freePort()]
    const certs = testCerts()
    writeFileSync(join(dir, 'jwt.secret'), SECRET)
    writeFileSync(join(dir, 'g.yaml'), [
      // Ports nobody listens on: the gateway must not bind them itself.
      `listen: { host: 127.0.0.1, port: ${configPort} }`,
      `admin: { host: 127.0.0.1, port: ${configAdminPort} }`,
      `tls: { cert: ${certs.cert}, key: ${certs.key} }`,
      `upstream: { url: "${nas.url}" }`,
      'auth: { jwt: { secretFile: jwt.secret } }',
      'policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]',
      'audit: { dir: audit }',
      `workers: ${workers}`,
      'log: { level: warn }'
    ].join('\n'))
    const notifySocket = join(dir, 'notify.sock')
    const notes = await notifyReceiver(t, notifySocket)
    // systemd-socket-activate passes on only PATH, TERM, USER, HOME and -E variables.
    const child: ChildProcess = spawn('systemd-socket-activate', [
      `--listen=127.0.0.1:${port}`, `--listen=127.0.0.1:${adminPort}`, '--fdname=gateway:admin',
      `--setenv=NOTIFY_SOCKET=${notifySocket}`,
      process.execPath, CLI, 'start', '--config', join(dir, 'g.yaml')
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH } })
    let stderr = ''
    let stdout = ''
    child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
    child.stdout?.on('data', (c: Buffer) => { stdout += c.toString() })
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    await waitFor('the sockets to be opened', () => /Listening on .*as 4\./.test(stderr) ? true : undefined)

    // systemd-socket-activate starts its command on the first connection.
    const first: Socket = netConnect({ host: '127.0.0.1', port })
    first.on('error', () => {})
    t.teardown(() => first.destroy())
    await waitFor('READY=1', () => notes.messages.some((m) => m.includes('READY=1')) ? true : undefined, { tries: 1500, intervalMs: 40 })
    first.destroy()
    const ready = notes.messages.find((m) => m.includes('READY=1')) ?? ''
    t.match(ready, new RegExp(`MAINPID=${child.pid}\\b`), 'sent for the main process (systemd-socket-activate execs it)')
    t.match(ready, workers > 1 ? `with ${workers} workers` : 'STATUS=serving on https://127.0.0.1:', 'once everything listens')

    // Every listener is up when READY=1 arrives: the admin one answers at once, over systemd's socket.
    const health = await within('/healthz', fetch(`http://127.0.0.1:${adminPort}/healthz`))
    t.equal(health.status, 200, 'the admin listener serves on the passed socket')
    for (let i = 0; i < 2 * workers; i++) {
      const h1 = await get({ port }, PATH, { headers: bearer(token()) })
      t.equal(h1.status, 200, 'HTTP/1.1 through the passed socket')
      const h2 = await getH2(port, PATH, bearer(token()))
      t.equal(h2.status, 200, 'HTTP/2 through the passed socket')
      t.equal(h2.body.length, h1.body.length)
    }
    t.equal(nas.requests.length, 4 * workers, 'every request reached the NAS')
    t.equal((await get({ port }, PATH)).status, 401, 'and no token is still refused')
    t.notOk(await listening(configPort), 'nothing listens on listen.port of the config')
    t.notOk(await listening(configAdminPort), 'nothing listens on admin.port of the config')

    child.kill('SIGTERM')
    await waitFor('STOPPING=1', () => notes.messages.some((m) => m.includes('STOPPING=1')) ? true : undefined, { tries: 1500, intervalMs: 40 })
    const code = await within('the gateway to exit', new Promise((resolve) => { if (child.exitCode !== null) resolve(child.exitCode); else child.once('exit', resolve) }))
    t.equal(code, 0, 'a graceful close')
    t.notMatch(stdout + stderr, /could not notify systemd/, 'no notification failed')
  })
}

t.test('the daily retention sweep units verify, score 2.0 or better, and only ever dry-run', { skip: has('systemd-analyze') ? false : 'systemd-analyze is not installed (apt-get install systemd)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-units-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const name = 'nasguard-retention-sweep'
  const service = readFileSync(join(UNITS, `${name}.service`), 'utf8')
  t.match(service, /^ExecStart=\/usr\/bin\/nasguard retention sweep --config \/etc\/nasguard\/nasguard\.yaml$/m)
  t.notMatch(service, /^ExecStart=.*--apply/m, 'an erasure is typed by a person, never run by a timer')
  writeFileSync(join(dir, `${name}.service`), service.replace(/^ExecStart=\/usr\/bin\/nasguard /m, `ExecStart=${process.execPath} ${CLI} `))
  cpSync(join(UNITS, `${name}.timer`), join(dir, `${name}.timer`))
  const verify = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, `${name}.service`), join(dir, `${name}.timer`)], { encoding: 'utf8' })
  t.equal(verify.status, 0, 'systemd-analyze verify passes')
  t.equal(verify.stderr.trim(), '', 'and warns about nothing')
  const security = spawnSync('systemd-analyze', ['security', '--offline=yes', join(UNITS, `${name}.service`)], { encoding: 'utf8' })
  const m = /Overall exposure level for [\w-]+\.service: (\d+\.\d+)/.exec(security.stdout)
  t.ok(m && Number(m[1]) <= 2.0, `exposure ${m?.[1] ?? '(none)'} is 2.0 or better`)
})
