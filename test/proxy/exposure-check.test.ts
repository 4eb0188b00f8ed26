// The NAS lockdown check (issue 21): the gateway asks the NAS without
// credentials for a listing and a recording. Real NAS shapes: the demo NAS
// (listing on, no password), Debian's nginx with autoindex (the 2019 NAS),
// nginx with Basic auth on the share (locked), and nginx that refuses
// directories but serves any file to anyone (exposed through a recording).
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { startDemoNas } from '../../src/demo/nas.js'
import { EXPOSURE_USER_AGENT } from '../../src/proxy/exposure-check.js'
import { looksLikeListing, servesFile } from '../../src/exposure/evidence.js'
import { RECORDING, bearer, scrape, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { startDavNas, type DavNas } from '../helpers/dav-nas.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const CALL = '/medicall/2024/05/06/101010_46701234567.wav'

function put (root: string, path: string, body: Buffer): void {
  const file = join(root, path)
  mkdirSync(join(file, '..'), { recursive: true })
  writeFileSync(file, body)
}

async function exposedGauge (gw: TestGateway): Promise<number | undefined> {
  return (await scrape(gw.adminUrl)).get('nasguard_upstream_exposed')
}

async function checksOf (gw: TestGateway, result: string): Promise<number> {
  return (await scrape(gw.adminUrl)).get(`nasguard_upstream_exposure_checks_total{result="${result}"}`) ?? 0
}

/** The gauge once a check with this result has completed (the first runs at start). */
async function settled (gw: TestGateway, result: 'locked' | 'exposed'): Promise<number | undefined> {
  await waitFor(`a lockdown check that found the NAS ${result}`, async () => await checksOf(gw, result) > 0 ? true : undefined, { intervalMs: 50 })
  return await exposedGauge(gw)
}

async function readyz (gw: TestGateway): Promise<{ status: number, body: { status: string, checks: Record<string, string> } }> {
  const r = await fetch(gw.adminUrl + '/readyz')
  return { status: r.status, body: await r.json() as { status: string, checks: Record<string, string> } }
}

const NO_NAMES = (gw: TestGateway): boolean => !gw.logs.some((l) => l.includes('46701234567'))

t.test('listings are told from other answers', async (t) => {
  const table: Array<[string, string, boolean]> = [
    ['text/html', '<html><head><title>Index of /</title></head><body><h1>Index of /</h1><hr><pre><a href="../">../</a>\n<a href="medicall/">medicall/</a></pre></body></html>', true],
    ['text/html', '<ul><li><a href="/medicall/">medicall</a></li><li><a href="/stockholm/">stockholm</a></li></ul>', true],
    ['text/html', '<pre><a href="2019/">2019/</a>\n<a href="call%20one.wav">call one.wav</a></pre>', true],
    ['text/xml', '<?xml version="1.0"?>\n<list>\n<directory mtime="2024-05-06T10:10:10Z">2024</directory>\n</list>', true],
    ['application/json', '[{ "name":"2024", "type":"directory", "mtime":"Mon, 06 May 2024 10:10:10 GMT" }]', true],
    ['application/json', '{"data":{"files":[{"path":"/medicall/a.wav"}]},"success":true}', true],
    ['text/xml', '<ns0:multistatus xmlns:ns0="DAV:"><ns0:response/></ns0:multistatus>', true],
    ['text/html', '<html><body><a href="/about">About us</a> <a href="/privacy">Privacy</a> <a href="/login">Log in</a></body></html>', false],
    ['text/html', '<form method="post"><input name="user"></form><a href="/forgot">Forgot password?</a>', false],
    ['application/json', '{"success":false,"error":{"code":119}}', false],
    ['application/json', '[{"name":"medicall","type":"directory"}]', true],
    ['application/xml', '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response/></D:multistatus>', true],
    ['text/xml', '<multistatus xmlns="DAV:"></multistatus>', true],
    ['text/html', '<html><body><form method="post">Log in</form></body></html>', false],
    ['text/plain', 'OK', false],
    ['application/json', '{}', false],
    ['audio/wav', 'RIFF....WAVE', false]
  ]
  for (const [type, body, listing] of table) t.equal(looksLikeListing(type, body), listing, `${type}: ${body.slice(0, 40)}`)
})

t.test('real file servers\' listings are listings; pages with links are not (test/fixtures/listings)', async (t) => {
  const dir = 'test/fixtures/listings'
  const listings = ['apache', 'lighttpd', 'tomcat', 'jetty', 'iis_one', 'iis_two', 'gofs_one', 'caddy_one', 'caddy_2019', 'py_one', 'py_2019', 'serve']
  const pages = ['blog', 'help', 'lang']
  for (const name of listings) t.ok(looksLikeListing('text/html', readFileSync(join(dir, `${name}.html`), 'utf8')), `${name}: a listing`)
  for (const name of pages) t.notOk(looksLikeListing('text/html', readFileSync(join(dir, `${name}.html`), 'utf8')), `${name}: not a listing`)
})

t.test('a recording is given away by its first byte, its whole body, or its size; an HTML page is not one', async (t) => {
  const table: Array<[number, Record<string, string>, boolean]> = [
    [206, { 'content-range': 'bytes 0-0/24044', 'content-type': 'audio/wav' }, true],
    [200, { 'content-type': 'audio/wav' }, true],
    [200, { 'content-type': 'application/octet-stream' }, true],
    [416, { 'content-range': 'bytes */0' }, true],
    [200, { 'content-type': 'text/html; charset=utf-8' }, false],
    [206, { 'content-range': 'bytes 0-0/24044', 'content-type': 'text/html' }, true],
    [206, { 'content-type': 'multipart/byteranges; boundary=x' }, true],
    [206, { 'content-type': 'audio/wav' }, false],
    [401, {}, false], [403, {}, false], [404, {}, false], [302, { location: '/login' }, false], [416, {}, false]
  ]
  for (const [status, headers, served] of table) t.equal(servesFile(status, headers), served, `${status} ${JSON.stringify(headers)}`)
})

t.test('the demo NAS (listing on, no password): exposed at start, in the metric, the log and /readyz, still ready by default', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nasguard-open-nas-'))
  put(root, CALL, RECORDING)
  const nas = await startDemoNas(root)
  t.teardown(() => nas.app.close())
  const gw = await startTestGateway(t, nas)
  t.equal(await settled(gw, 'exposed'), 1)
  const r = await readyz(gw)
  t.equal(r.status, 200, 'upstream.readyWhenExposed defaults to true')
  t.match(r.body.checks.nasLockdown, /^exposed: the NAS answered a listing of \/ \(GET\) with 200/)
  t.ok(gw.logs.some((l) => /"level":40/.test(l) && l.includes('NAS lockdown check: exposed')), 'a warning is logged')
  t.ok(NO_NAMES(gw))
})

t.test('upstream.readyWhenExposed false: an exposed NAS takes the gateway out of service', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nasguard-open-nas-'))
  put(root, CALL, RECORDING)
  const nas = await startDemoNas(root)
  t.teardown(() => nas.app.close())
  const gw = await startTestGateway(t, nas, { upstream: { readyWhenExposed: false } })
  t.equal(await settled(gw, 'exposed'), 1)
  const r = await readyz(gw)
  t.equal(r.status, 503)
  t.equal(r.body.status, 'not ready')
  t.equal(r.body.checks.nas, 'ok', 'the NAS itself answers the gateway')
  t.match(r.body.checks.nasLockdown, /^exposed/)
})

t.test('nginx with autoindex on and no password (the 2019 NAS): exposed by GET and PROPFIND-less listing', async (t) => {
  const nas = await startDavNas(t, { autoindex: true })
  put(nas.root, CALL, RECORDING)
  const gw = await startTestGateway(t, nas)
  t.equal(await settled(gw, 'exposed'), 1)
  t.match((await readyz(gw)).body.checks.nasLockdown, /a listing of \/ \(GET\) with 200/)
  t.ok(nas.exposureChecks().includes('GET 200 /'), 'the check asked nginx for / without credentials')
})

t.test('nginx with Basic auth on the share: locked (0), and the gateway with its credentials still serves', async (t) => {
  const nas = await startDavNas(t, { autoindex: true, basicAuth: { user: 'nasguard', password: 'nas-password-1' } })
  put(nas.root, CALL, RECORDING)
  const gw = await startTestGateway(t, nas, { upstream: { username: 'nasguard', password: 'nas-password-1', exposureCheckSec: 1 } })
  t.equal(await settled(gw, 'locked'), 0)
  t.match((await readyz(gw)).body.checks.nasLockdown, /^listings refused; no recording asked for yet/, 'not ok before a recording was asked for: a NAS that serves files to anyone may refuse listings')
  for (const proto of PROTOCOLS) {
    const r = await fetchAs(proto, gw, CALL, bearer(gw.token()))
    t.equal(r.status, 200, proto)
    t.same(r.body, RECORDING, proto)
  }
  // Once a recording was served, the next check asks for it too (its first byte), and is refused.
  await waitFor('a check that asked for the served recording', () => nas.exposureChecks().includes(`GET 401 ${CALL}`) ? true : undefined, { intervalMs: 50 })
  await waitFor('/readyz ok once the recording was refused too', async () => (await readyz(gw)).body.checks.nasLockdown === 'ok' ? true : undefined, { intervalMs: 50 })
  t.equal(await exposedGauge(gw), 0)
  t.equal(await checksOf(gw, 'exposed'), 0)
  t.ok(NO_NAMES(gw))
})

t.test('a NAS that refuses listings but serves any file to anyone: exposed through the last recording it served', async (t) => {
  const nas = await startDavNas(t)
  put(nas.root, CALL, RECORDING)
  const gw = await startTestGateway(t, nas, { upstream: { exposureCheckSec: 1 } })
  t.equal(await settled(gw, 'locked'), 0, 'no listing, and no recording known yet')
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, CALL, bearer(gw.token()))).status, 200, proto)
  t.equal(await settled(gw, 'exposed'), 1)
  const check = (await readyz(gw)).body.checks.nasLockdown
  t.match(check, /the last recording the NAS served the gateway with 206/)
  t.notMatch(check, /46701234567/, 'not by its name')
  t.ok(gw.logs.some((l) => l.includes('the last recording the NAS served the gateway')))
  t.ok(NO_NAMES(gw), 'the log does not name the recording (a phone number)')
})

t.test('upstream.exposureCheckRecording: a canary asked for from the first check', async (t) => {
  const nas = await startDavNas(t)
  put(nas.root, '/canary/canary.wav', RECORDING)
  const gw = await startTestGateway(t, nas, { upstream: { exposureCheckRecording: '/canary/canary.wav' } })
  t.equal(await settled(gw, 'exposed'), 1)
  t.match((await readyz(gw)).body.checks.nasLockdown, /the canary recording \(upstream.exposureCheckRecording\) with 206/)
})

t.test('upstream.exposureCheckPaths: a recording root that lists while / does not', async (t) => {
  const nas = await startDavNas(t)
  put(nas.root, CALL, RECORDING)
  const { createServer } = await import('node:http')
  // A NAS front that lists /medicall/ only (a share root), refusing / and everything else.
  const seen: string[] = []
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers['user-agent'] === EXPOSURE_USER_AGENT ? 'check' : 'gateway'}`)
    if (req.url === '/medicall/' && req.method === 'GET') { res.writeHead(200, { 'content-type': 'text/html' }).end('<a href="2024/">2024/</a><a href="2025/">2025/</a>'); return }
    res.writeHead(403).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  const locked = await startTestGateway(t, { url })
  t.equal(await settled(locked, 'locked'), 0, 'only / asked by default')
  const gw = await startTestGateway(t, { url }, { upstream: { exposureCheckPaths: ['/', '/medicall/'] } })
  t.equal(await settled(gw, 'exposed'), 1)
  t.match((await readyz(gw)).body.checks.nasLockdown, /a listing of \/medicall\/ \(GET\) with 200/)
  t.ok(seen.every((s) => s.endsWith('check') || s.startsWith('HEAD')), 'only the checks (and readiness) asked')
})

t.test('a NAS that goes away: the check fails, the gauge keeps its verdict; exposureCheckSec 0 asks nothing', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nasguard-open-nas-'))
  put(root, CALL, RECORDING)
  const nas = await startDemoNas(root)
  let closed = false
  t.teardown(async () => { if (!closed) await nas.app.close() })
  const gw = await startTestGateway(t, nas, { upstream: { exposureCheckSec: 1, connectTimeoutMs: 1000 } })
  t.equal(await settled(gw, 'exposed'), 1)
  closed = true
  await nas.app.close()
  await waitFor('a failed check', async () => await checksOf(gw, 'failed') > 0 ? true : undefined, { intervalMs: 50 })
  t.equal(await exposedGauge(gw), 1)
  t.match((await readyz(gw)).body.checks.nasLockdown, /^check failed \(/)
  t.ok(gw.logs.some((l) => l.includes('NAS lockdown check could not ask the NAS')))

  const off: DavNas = await startDavNas(t, { autoindex: true })
  const quiet = await startTestGateway(t, off, { upstream: { exposureCheckSec: 0 } })
  t.equal((await readyz(quiet)).body.checks.nasLockdown, 'off (upstream.exposureCheckSec: 0): never checked', 'readyz says the check is off, not that it is pending')
  t.same(off.exposureChecks(), [], 'the check asked the NAS nothing')
  t.equal(await checksOf(quiet, 'locked') + await checksOf(quiet, 'exposed') + await checksOf(quiet, 'failed'), 0)
})

/** A NAS front on loopback answering with `handler`; torn down with the test. */
async function nasFront (t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('a NAS that ignores Range: exposed, and the check does not read the whole recording', async (t) => {
  const total = 256 * 1024 * 1024
  let written = 0
  let closed = false
  const url = await nasFront(t, (req, res) => {
    if (req.headers['user-agent'] !== EXPOSURE_USER_AGENT || req.url !== '/canary.wav') { res.writeHead(403).end(); return }
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': total })
    const chunk = Buffer.alloc(64 * 1024)
    const pump = (): void => {
      while (written < total && !closed) {
        written += chunk.length
        if (!res.write(chunk)) { res.once('drain', pump); return }
      }
      if (written >= total) res.end()
    }
    res.on('close', () => { closed = true })
    pump()
  })
  const gw = await startTestGateway(t, { url }, { upstream: { exposureCheckRecording: '/canary.wav' } })
  t.equal(await settled(gw, 'exposed'), 1)
  await waitFor('the NAS saw the check hang up', () => closed ? true : undefined)
  t.ok(written < total, `the check hung up after ${written} of ${total} bytes`)
})

t.test('a NAS front that answers every path with its HTML app: not a listing, not a recording', async (t) => {
  const url = await nasFront(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body><div id="app"></div><a href="/about">About</a><a href="/help">Help</a></body></html>')
  })
  const gw = await startTestGateway(t, { url }, { upstream: { exposureCheckRecording: '/medicall/2024/05/06/call.wav' } })
  t.equal(await settled(gw, 'locked'), 0)
  t.equal((await readyz(gw)).body.checks.nasLockdown, 'ok')
})

t.test('a redirect within the NAS is followed once: a recording behind a redirect to an unguarded link is exposed; one to another host is not followed', async (t) => {
  let elsewhere = 0
  const other = await nasFront(t, (_req, res) => { elsewhere++; res.writeHead(200, { 'content-type': 'audio/wav' }).end('RIFF') })
  const url = await nasFront(t, (req, res) => {
    if (req.url === '/canary.wav') { res.writeHead(302, { location: '/share/open/canary.wav?token=none' }).end(); return }
    if (req.url === '/share/open/canary.wav?token=none') { res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': 'bytes 0-0/4' }).end('R'); return }
    if (req.url === '/away.wav') { res.writeHead(302, { location: `${other}/away.wav` }).end(); return }
    res.writeHead(403).end()
  })
  const gw = await startTestGateway(t, { url }, { upstream: { exposureCheckRecording: '/canary.wav' } })
  t.equal(await settled(gw, 'exposed'), 1)
  const away = await startTestGateway(t, { url }, { upstream: { exposureCheckRecording: '/away.wav' } })
  t.equal(await settled(away, 'locked'), 0)
  t.equal(elsewhere, 0, 'the other host was not asked')
})

t.test('where a redirect leads, a share link that hands out the file is exposure, and a page that answers 200 is not', async (t) => {
  // [where the redirect leads, what it answers there, exposed?]
  const table: Array<[string, number, Record<string, string>, string, boolean]> = [
    ['the whole file, Range ignored', 200, { 'content-type': 'audio/wav' }, 'RIFF....WAVE', true],
    ['the whole file, no content type', 200, {}, 'RIFF....WAVE', true],
    ['the whole file as octet-stream', 200, { 'content-type': 'application/octet-stream' }, 'RIFF....WAVE', true],
    ['a multipart 206 without a top-level Content-Range', 206, { 'content-type': 'multipart/byteranges; boundary=x' }, '--x\r\ncontent-range: bytes 0-0/4\r\n\r\nR\r\n--x--', true],
    ['a login page', 200, { 'content-type': 'text/html; charset=utf-8' }, '<form><input name="user"></form>', false],
    ['a "link expired" notice in text', 200, { 'content-type': 'text/plain' }, 'this link has expired', false],
    ['an API\'s error in JSON', 200, { 'content-type': 'application/json' }, '{"success":false,"error":{"code":119}}', false],
    ['an API\'s error in problem+json', 200, { 'content-type': 'application/problem+json' }, '{"title":"login required"}', false],
    ['an XML error', 200, { 'content-type': 'application/xml' }, '<error>login</error>', false]
  ]
  for (const [what, status, headers, body, exposed] of table) {
    const url = await nasFront(t, (req, res) => {
      if (req.url === '/canary.wav') { res.writeHead(307, { location: '/canary.wav?dl=1' }).end(); return }
      if (req.url === '/canary.wav?dl=1') { res.writeHead(status, headers).end(body); return }
      res.writeHead(403).end()
    })
    const gw = await startTestGateway(t, { url }, { upstream: { exposureCheckRecording: '/canary.wav' } })
    t.equal(await settled(gw, exposed ? 'exposed' : 'locked'), exposed ? 1 : 0, what)
    t.match((await readyz(gw)).body.checks.nasLockdown, exposed ? /^exposed: the NAS answered the canary recording \(upstream.exposureCheckRecording\), through a redirect with 20[06] without credentials/ : /^ok$/, `${what}: /readyz`)
  }
})
