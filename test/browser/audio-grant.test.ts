// A browser <audio> player, which cannot send an Authorization header,
// plays a recording through a playback grant URL, and seeking sends a
// Range request: a plaintext recording, and a sealed one that the gateway
// decrypts on the fly. Real headless Chromium (Debian's package) via
// playwright-core; CI installs it (.ci/run).
import t, { type Test } from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { request } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { chromium, type Browser } from 'playwright-core'
import { toneWav } from '../../src/demo/recordings.js'
import { bearer, startStubNas, startTestGateway, testCerts, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))
// Ten minutes of 8 kHz audio (9.6 MB): more than the player buffers at once,
// so a seek near the end has to ask for a new range.
const LONG = toneWav(440, 600)

function serveLong (req: IncomingMessage, res: ServerResponse): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
  const headers = { 'content-type': 'audio/wav', 'accept-ranges': 'bytes' }
  if (!m) {
    res.writeHead(200, { ...headers, 'content-length': LONG.length })
    res.end(req.method === 'HEAD' ? undefined : LONG)
    return
  }
  const start = Number(m[1])
  const end = m[2] ? Math.min(Number(m[2]), LONG.length - 1) : LONG.length - 1
  res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${LONG.length}`, 'content-length': end - start + 1 })
  res.end(req.method === 'HEAD' ? undefined : LONG.subarray(start, end + 1))
}


if (!CHROMIUM && process.env.CI) t.fail('chromium is not installed, and CI should have installed it (.ci/run)')

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

// One browser for both tests (a launch is seconds of CPU); each test has its own context.
let browser: Browser | undefined
async function launched (): Promise<Browser> {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--mute-audio', '--autoplay-policy=no-user-gesture-required',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
  })
  return browser
}
t.teardown(async () => { await browser?.close() })

t.test('an <audio> element plays a recording through a grant URL, and seeking sends a Range request', {
  skip: CHROMIUM ? false : 'chromium is not installed here (apt-get install chromium)'
}, async (t) => {
  const nas = await startStubNas(t, serveLong)
  await playAndSeek(t, await startTestGateway(t, nas), nas, LONG.length)
})

t.test('the same with a sealed recording: decrypted on the fly, and the seek asks the NAS for chunks past the middle', {
  skip: CHROMIUM ? false : 'chromium is not installed here (apt-get install chromium)'
}, async (t) => {
  const keys = makeKeyring(['2016-01'])
  const ring = keys.ring()
  const mem = memoryNas()
  const sealed = await sealBytes(ring, '2016-01', PATH, LONG)
  mem.files.set(sealedName(ring, PATH), sealed)
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  await playAndSeek(t, gw, nas, sealed.length)
  t.ok(nas.requests.every((r) => r.url === sealedName(ring, PATH)), 'the NAS was asked only for the sealed name')
})

async function playAndSeek (t: Test, gw: TestGateway, nas: StubNas, nasBytes: number): Promise<void> {
  if (!CHROMIUM) return
  const minted = await fetchGrant(gw)
  t.match(minted.url, /^\/medicall\/2016\/01\/01\/083012_46701234567\.wav\?grant=[\w-]+\.[\w-]+$/)

  const browser = await launched()
  // The gateway's certificate comes from the test CA, which this throw-away
  // browser profile does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true })
  t.teardown(() => context.close())
  const page = await context.newPage()
  await page.setContent(`<audio id="player" preload="auto" src="${gw.url}${minted.url}"></audio>`)
  // Plain JavaScript, as the page runs it: a function would be serialised
  // as the test's transpiler emitted it (helpers such as __name included).
  const result = await page.evaluate(`(async () => {
    const a = document.getElementById('player')
    const once = (ev) => new Promise((resolve, reject) => {
      a.addEventListener(ev, () => resolve(), { once: true })
      a.addEventListener('error', () => reject(new Error('media error ' + (a.error ? a.error.code + ': ' + a.error.message : '?'))), { once: true })
    })
    const playing = once('playing')
    await a.play()
    await playing
    const seeked = once('seeked')
    a.currentTime = a.duration - 5
    await seeked
    return { duration: a.duration, currentTime: a.currentTime }
  })()`) as { duration: number, currentTime: number }
  t.ok(Math.abs(result.duration - 600) < 1, `the player read the whole file's length (${result.duration} s)`)
  t.ok(result.currentTime > 590, `the seek landed near the end (${result.currentTime} s)`)

  const ranges = nas.requests.map((r) => String(r.headers.range ?? ''))
  t.ok(nas.requests.length >= 2, `the player asked more than once (${nas.requests.length} requests: ${ranges.join(', ')})`)
  const starts = ranges.map((r) => Number(/^bytes=(\d+)-/.exec(r)?.[1] ?? -1))
  t.ok(starts.some((s) => s > nasBytes / 2), `a Range request started past the middle (${ranges.join(', ')})`)
  t.ok(nas.requests.every((r) => !String(r.url).includes('grant')), 'the grant never reaches the NAS')
  const fetches = gw.auditRecords().filter((r) => r.event === 'fetch' || r.event === 'access')
  t.ok(fetches.length > 0 && fetches.every((r) => r.auth === 'grant' && r.subject === 'alice'), 'every fetch is audited as alice, through the grant')
  t.notOk(gw.logs.join('\n').includes(minted.url.split('grant=')[1]), 'the grant is in no log line')
}

async function fetchGrant (gw: { port: number, token: () => string }): Promise<{ url: string }> {
  const body = JSON.stringify({ path: PATH })
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/_nasguard/grants', method: 'POST', ca: readFileSync(testCerts().ca), agent: false, headers: { ...bearer(gw.token()), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => res.statusCode === 201 ? resolve(JSON.parse(text) as { url: string }) : reject(new Error(`grant: ${res.statusCode ?? 0} ${text}`)))
    })
    req.on('error', reject)
    req.end(body)
  })
}
