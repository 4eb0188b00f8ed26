// The edges of the NAS exchange (src/proxy/nas-exchange.ts) that a red team
// found: a player's two-byte probe under files.checkMagic, a NAS body that
// ends short of what it declared, and an HTTP/2 HEAD the client resets
// while the NAS is failing. Each over HTTP/1.1 and HTTP/2.
import t from 'tap'
import { connect as http2Connect, constants as h2 } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { toneMp3 } from '../../src/demo/recordings.js'
import { RECORDING, bearer, scrape, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { startFoldingNas } from '../helpers/folding-nas.js'
import { getLoose, waitFor, within } from '../helpers/wait.js'

/** Serves body with ranges and an ETag, as a NAS does. */
function serveBody (body: Buffer, type: string): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    const h = { 'content-type': type, etag: '"v1"', 'accept-ranges': 'bytes' }
    if (!m) { res.writeHead(200, { ...h, 'content-length': body.length }); res.end(body); return }
    const start = Number(m[1])
    const end = m[2] !== '' ? Math.min(Number(m[2]), body.length - 1) : body.length - 1
    res.writeHead(206, { ...h, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
    res.end(body.subarray(start, end + 1))
  }
}

t.test('checkMagic: a player\'s probe of the first bytes (Safari asks bytes=0-1) is judged by the file\'s head', async (t) => {
  const mp3 = Buffer.concat([Buffer.from('ID3\x04\x00\x00\x00\x00\x00\x00', 'latin1'), toneMp3()])
  // RIFF....WAVE with a fmt chunk no WAV has: the head check refuses it; its first 12 bytes alone would pass.
  const fmt = Buffer.alloc(24, 0xee)
  fmt.write('fmt ', 0, 'latin1')
  fmt.writeUInt32LE(16, 4)
  const fakeWav = Buffer.concat([Buffer.from('RIFF\x00\x10\x00\x00WAVE', 'latin1'), fmt, Buffer.from('Patient journal +46701234567 '.repeat(300))])
  const files: Record<string, [Buffer, string]> = { '/medicall/a.wav': [RECORDING, 'audio/wav'], '/medicall/b.mp3': [mp3, 'audio/mpeg'], '/medicall/c.wav': [fakeWav, 'audio/wav'] }
  const nas = await startStubNas(t, (req, res) => { const [body, type] = files[String(req.url)]; serveBody(body, type)(req, res) })
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav', '.mp3'], checkMagic: true } })
  for (const proto of PROTOCOLS) {
    for (const [path, range, from, to] of [['/medicall/a.wav', 'bytes=0-1', 0, 2], ['/medicall/b.mp3', 'bytes=0-1', 0, 2], ['/medicall/a.wav', 'bytes=0-11', 0, 12]] as const) {
      const res = await fetchAs(proto, gw, path, { ...bearer(gw.token()), range })
      t.equal(res.status, 206, `${proto} ${path} ${range}: served`)
      t.ok(res.body.equals(files[path][0].subarray(from, to)), `${proto} ${path} ${range}: its bytes`)
    }
    for (const range of ['bytes=0-1', 'bytes=0-11', 'bytes=0-99']) {
      const res = await fetchAs(proto, gw, '/medicall/c.wav', { ...bearer(gw.token()), range })
      t.equal(res.status, 502, `${proto} a file that is not a WAV, ${range}: refused by its head`)
      t.notOk(res.body.includes(Buffer.from('RIFF')), `${proto} ${range}: none of its bytes`)
    }
  }
})

t.test('a NAS body that ends short of its declared length is cut, never ended as if complete', async (t) => {
  // A chunked 206 (its length comes from the span) that ends cleanly after half of it.
  const nas = await startStubNas(t, (_req, res) => {
    res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': 'bytes 0-9999/20000', 'transfer-encoding': 'chunked' })
    res.end(RECORDING.subarray(0, 5000))
  })
  const gw = await startTestGateway(t, nas)
  for (const proto of PROTOCOLS) {
    const before = gw.auditRecords().filter((r) => r.event === 'fetch').length
    const outcome = proto === 'h1'
      ? await getLoose(gw, '/medicall/short.wav', { headers: { ...bearer(gw.token()), range: 'bytes=0-9999' } }).then((r) => r.complete ? `complete ${r.body.length}` : 'cut', () => 'cut')
      : await fetchAs('h2', gw, '/medicall/short.wav', { ...bearer(gw.token()), range: 'bytes=0-9999' }).then((r) => `complete ${r.body.length}`, () => 'cut')
    t.equal(outcome, 'cut', `${proto}: the client sees a cut`)
    const fetch = await waitFor('the completion record', () => gw.auditRecords().filter((r) => r.event === 'fetch')[before])
    t.equal(fetch.outcome, 'upstream-error', `${proto}: audited as the NAS's failure`)
  }
  const m = await scrape(gw.adminUrl)
  t.ok((m.get('nasguard_upstream_errors_total{kind="body"}') ?? 0) >= 2, 'counted as a body failure')
  // With checkMagic the first bytes are held back: a body that ends short within them is known before any is sent.
  const shorter = await startStubNas(t, (_req, res) => {
    res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': 'bytes 0-9999/20000', 'transfer-encoding': 'chunked' })
    res.end(RECORDING.subarray(0, 1000))
  })
  const held = await startTestGateway(t, shorter, { files: { extensions: ['.wav'], checkMagic: true } })
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, held, '/medicall/short.wav', { ...bearer(held.token()), range: 'bytes=0-9999' })
    t.equal(res.status, 502, `${proto} with checkMagic: refused before a byte`)
    t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_ERROR', `${proto}: as the NAS's error`)
  }
})

t.test('an HTTP/2 HEAD reset while the NAS has not answered ends at once: its NAS request cancelled, its admission released, its completion recorded', async (t) => {
  let asked = 0
  const atNas: Array<() => void> = []
  const cancelled: Array<() => void> = []
  const nas = await startStubNas(t, (req, res) => {
    asked++
    if (req.method === 'HEAD') { // never answers
      req.socket.once('close', () => { for (const f of cancelled.splice(0)) f() })
      for (const f of atNas.splice(0)) f()
      return
    }
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': RECORDING.length })
    res.end(RECORDING)
  })
  // The NAS's own timeout is far beyond the test's wait: only the client's reset can end the HEAD in time.
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 600000, connections: 1, queueTimeoutMs: 20000 } })
  const session = http2Connect(`https://localhost:${gw.port}`, { ca: readFileSync(testCerts().ca) })
  session.on('error', () => {})
  t.teardown(() => { session.destroy() })
  const reached = new Promise<void>((resolve) => atNas.push(resolve))
  const nasSawCancel = new Promise<void>((resolve) => cancelled.push(resolve))
  const stream = session.request({ ':method': 'HEAD', ':path': '/medicall/head.wav', ...bearer(gw.token()) })
  stream.on('error', () => {})
  stream.end()
  await within('the HEAD at the NAS', reached)
  stream.close(h2.NGHTTP2_CANCEL)
  await within('the NAS request cancelled', nasSawCancel)
  const fetch = await waitFor('the HEAD\'s completion record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.method === 'HEAD'))
  t.equal(fetch.outcome, 'client-aborted', 'its completion says the client left')
  // With one NAS connection, the next download gets it: the HEAD's ticket was released.
  const next = await fetchAs('h2', gw, '/medicall/next.wav', bearer(gw.token()))
  t.equal(next.status, 200, 'the next download is served')
  t.ok(asked >= 2, 'and reached the NAS')
})

t.test('on a NAS that folds names, the probe is judged by the head of the file the gate named, and folded spellings never reach the NAS', async (t) => {
  const nas = await startFoldingNas(t, { '/medicall/a.wav': RECORDING })
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav'], checkMagic: true }, upstream: { fileSystem: 'folding' } })
  for (const proto of PROTOCOLS) {
    const ok = await fetchAs(proto, gw, '/medicall/a.wav', { ...bearer(gw.token()), range: 'bytes=0-1' })
    t.equal(ok.status, 206, `${proto}: the probe of the real name is served`)
    t.ok(ok.body.equals(RECORDING.subarray(0, 2)), `${proto}: its two bytes`)
    for (const variant of ['/medicall/a.wav.', '/medicall/a.wav::$DATA', '/MEDICALL/a.wav']) {
      const before = nas.requests.length
      const res = await fetchAs(proto, gw, encodeURI(variant), { ...bearer(gw.token()), range: 'bytes=0-1' })
      t.ok(res.status >= 400 && res.status < 500, `${proto} ${variant}: refused (${res.status})`)
      t.equal(nas.requests.length - before, 0, `${proto} ${variant}: nothing reached the NAS, no head check either`)
    }
  }
})

t.test('the same over HTTP/1.1: a HEAD whose client leaves before the NAS answers cancels it and is completed', async (t) => {
  const atNas: Array<() => void> = []
  const cancelled: Array<() => void> = []
  const nas = await startStubNas(t, (req, res) => {
    if (req.method === 'HEAD') {
      req.socket.once('close', () => { for (const f of cancelled.splice(0)) f() })
      for (const f of atNas.splice(0)) f()
      return
    }
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': RECORDING.length })
    res.end(RECORDING)
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 600000, connections: 1, queueTimeoutMs: 20000 } })
  const reached = new Promise<void>((resolve) => atNas.push(resolve))
  const nasSawCancel = new Promise<void>((resolve) => cancelled.push(resolve))
  const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, method: 'HEAD', path: '/medicall/head.wav', headers: bearer(gw.token()), ca: readFileSync(testCerts().ca), agent: false })
  req.on('error', () => {})
  req.end()
  await within('the HEAD at the NAS', reached)
  req.destroy()
  await within('the NAS request cancelled', nasSawCancel)
  const fetch = await waitFor('the HEAD\'s completion record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.method === 'HEAD'))
  t.equal(fetch.outcome, 'client-aborted', 'its completion says the client left')
  const next = await fetchAs('h1', gw, '/medicall/next.wav', bearer(gw.token()))
  t.equal(next.status, 200, 'the next download gets the NAS connection')
})
