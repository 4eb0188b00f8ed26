// A NAS that trickles: it sends a few bytes at a time, never leaving a gap
// as long as upstream.timeoutMs, so no timeout fires. Without a floor on its
// rate it would hold the download, its NAS connection and its client's slot
// for days. With upstream.minRate, such an answer is aborted: 504 before any
// byte (audited so, no byte of the body sent), a cut after (HTTP/2:
// INTERNAL_ERROR), counted as nasguard_upstream_errors_total{kind="slow"},
// and the NAS's connection closed. A NAS that stops only because the
// gateway paused it for a slow client is not judged. Over HTTP/1.1 and
// HTTP/2, plaintext and sealed recordings.
import t from 'tap'
import { request as httpsRequest } from 'node:https'
import { connect as http2Connect } from 'node:http2'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { bearer, scrape, startStubNas, startTestGateway, testCerts, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { H2_ERROR, baseHeaders, h2Raw } from '../helpers/h2-raw.js'
import { PROTOCOLS, fetchAs, type Protocol } from '../helpers/protocols.js'
import { getLoose, waitFor, within } from '../helpers/wait.js'
import { sealBytes, sealedName, startSealed } from '../helpers/sealed-nas.js'
import { toneWav } from '../../src/demo/recordings.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
/** A WAV head, so that files.checkMagic passes what comes before the trickle. */
const WAV = Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVEfmt '), Buffer.alloc(64 * 1024 - 16, 0x55)])
const SIZE = 64 * 1024 * 1024
const SLOW = 'nasguard_upstream_errors_total{kind="slow"}'

/**
 * Answers with SIZE bytes of a WAV declared, sends its first `lead` bytes at
 * once, then the next ones `drop` at a time every `everyMs`, until its
 * connection closes.
 */
function trickling (nas: StubNas, lead: number, drop: number, everyMs: number): { cancelled: () => number } {
  let cancelled = 0
  nas.handle((_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': SIZE })
    let at = lead
    res.write(WAV.subarray(0, lead))
    const drip = setInterval(() => { res.write(at < WAV.length ? WAV.subarray(at, at + drop) : Buffer.alloc(drop, 0x55)); at += drop }, everyMs)
    res.on('close', () => { clearInterval(drip); if (!res.writableFinished) cancelled++ })
  })
  return { cancelled: () => cancelled }
}

async function slowCount (gw: TestGateway): Promise<number> {
  return (await scrape(gw.adminUrl)).get(SLOW) ?? 0
}

async function fetchRecord (gw: TestGateway, sub: string): Promise<Record<string, unknown>> {
  return await waitFor(`${sub}: the fetch record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.subject === sub))
}

t.test('with files.checkMagic, a NAS that trickles its first bytes: 504 before any byte, counted as slow, its request cancelled', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 1000, minRate: 1024 }, files: { checkMagic: true } })
  // A byte every 300 ms: files.checkMagic holds the answer until it has the file's first 4096 bytes.
  const drip = trickling(nas, 0, 1, 300)
  for (const proto of PROTOCOLS) {
    const sub = `first-${proto}`
    const before = await slowCount(gw)
    const cancelledBefore = drip.cancelled()
    const r = await within(`${proto}: an answer`, fetchAs(proto, gw, PATH, bearer(gw.token({ sub }))))
    t.equal(r.status, 504, `${proto}: 504`)
    t.match(r.body.toString(), /NASGUARD_ERR_UPSTREAM_TIMEOUT/, `${proto}: UPSTREAM_TIMEOUT`)
    t.equal(await slowCount(gw) - before, 1, `${proto}: counted as kind="slow"`)
    t.match(await fetchRecord(gw, sub), { status: 504, outcome: 'upstream-error', bytes: 0 }, `${proto}: audited, no byte`)
    await waitFor(`${proto}: the NAS request cancelled`, () => drip.cancelled() > cancelledBefore || undefined)
  }
  t.notMatch(gw.logs.join('\n'), /46701234567/, 'no recording name in the log')
  t.match(gw.logs.join('\n'), /less than upstream\.minRate/, 'the log says why')
})

t.test('a NAS that trickles after 64 KiB: the response is cut, audited as upstream-error, its request cancelled', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 1000, minRate: 1024 } })
  const drip = trickling(nas, WAV.length, 16, 100)
  for (const proto of PROTOCOLS) {
    const sub = `after-${proto}`
    const before = await slowCount(gw)
    const cancelledBefore = drip.cancelled()
    const token = gw.token({ sub })
    if (proto === 'h1') {
      const r = await within('h1: the response ends', getLoose(gw, PATH, { headers: bearer(token) }))
      t.equal(r.status, 200, 'h1: the headers had gone out')
      t.notOk(r.complete, 'h1: cut, not complete')
      t.ok(r.body.length < SIZE, `h1: a short body (${r.body.length})`)
    } else {
      const r = await h2Raw(gw, [{ headers: baseHeaders(PATH, [['authorization', `Bearer ${token}`]]) }], { timeoutMs: 60000 })
      const s = r.streams[0]
      t.notOk(r.timedOut, 'h2: ended before the safety bound')
      t.equal(s.status, 200, 'h2: the headers had gone out')
      t.equal(s.rstCode, H2_ERROR.INTERNAL_ERROR, `h2: RST_STREAM INTERNAL_ERROR (got ${String(s.rstCode)})`)
    }
    t.equal(await slowCount(gw) - before, 1, `${proto}: counted as kind="slow"`)
    const f = await fetchRecord(gw, sub)
    t.equal(f.outcome, 'upstream-error', `${proto}: outcome upstream-error`)
    await waitFor(`${proto}: the NAS request cancelled`, () => drip.cancelled() > cancelledBefore || undefined)
  }
})

t.test('a NAS that answers only with interim answers (102 Processing, 103 Early Hints) forever: 504 after a window, GET and HEAD, and /readyz is not ready', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 1000, minRate: 1024 } })
  let cancelled = 0
  let interim: 'processing' | 'hints' = 'processing'
  // undici restarts its headers timeout on every interim answer: one every 300 ms never lets it fire.
  nas.handle((_req, res) => {
    const send = (): void => { if (interim === 'processing') res.writeProcessing(); else res.writeEarlyHints({ link: '</a.css>; rel=preload; as=style' }) }
    const timer = setInterval(send, 300)
    res.on('close', () => { clearInterval(timer); if (!res.writableFinished) cancelled++ })
  })
  for (const kind of ['processing', 'hints'] as const) {
    interim = kind
    for (const proto of PROTOCOLS) {
      for (const method of ['GET', 'HEAD']) {
        const sub = `interim-${kind}-${proto}-${method}`
        const before = cancelled
        const r = await within(`${sub}: an answer`, fetchAs(proto, gw, PATH, bearer(gw.token({ sub })), method))
        t.equal(r.status, 504, `${sub}: 504`)
        t.match(await fetchRecord(gw, sub), { status: 504, outcome: 'upstream-error' }, `${sub}: audited`)
        await waitFor(`${sub}: the NAS request cancelled`, () => cancelled > before || undefined)
      }
    }
  }
  // The admin listener is plain HTTP on loopback.
  const ready = await within('/readyz', fetch(gw.adminUrl + '/readyz'))
  t.equal(ready.status, 503, '/readyz: not ready')
  t.match(((await ready.json()) as { checks: { nas: string } }).checks.nas, /^timeout/, '/readyz: the NAS check timed out')
})

t.test('a NAS slow to answer and then slow to its first byte (a disk spinning up), each within a window, is not cut for the sum', async (t) => {
  const nas = await startStubNas(t)
  nas.handle((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': WAV.length })
      res.flushHeaders()
      setTimeout(() => { res.end(WAV) }, 1800)
    }, 1800)
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 3000, minRate: 1024 } })
  for (const proto of PROTOCOLS) {
    const r = await within(`${proto}: an answer`, fetchAs(proto, gw, PATH, bearer(gw.token({ sub: `spin-${proto}` }))))
    t.equal(r.status, 200, `${proto}: 200`)
    t.ok(r.body.equals(WAV), `${proto}: the whole recording`)
    t.match(await fetchRecord(gw, `spin-${proto}`), { outcome: 'complete' }, `${proto}: audited complete`)
  }
})

/** Starts a download, reads nothing for `pauseMs`, then reads it to the end; resolves with its size. */
function pausedClient (proto: Protocol, gw: TestGateway, token: string, pauseMs: number): Promise<number> {
  const ca = readFileSync(testCerts().ca)
  return new Promise((resolve, reject) => {
    let n = 0
    const take = (body: NodeJS.ReadableStream & { pause: () => void, resume: () => void }): void => {
      body.pause()
      setTimeout(() => { body.resume() }, pauseMs)
      body.on('data', (c: Buffer) => { n += c.length })
    }
    if (proto === 'h1') {
      const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: PATH, headers: bearer(token), ca }, (res) => {
        take(res)
        res.on('end', () => { resolve(res.complete ? n : -1) })
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end()
      return
    }
    const session = http2Connect(`https://localhost:${gw.port}`, { ca })
    session.on('error', reject)
    const stream = session.request({ ':path': PATH, ...bearer(token) })
    take(stream)
    stream.on('end', () => { session.close(); resolve(n) })
    stream.on('error', (err) => { session.destroy(); reject(err) })
  })
}

t.test('a NAS paused for a slow client is not judged: the client that stops reading for three windows still gets every byte', async (t) => {
  const nas = await startStubNas(t)
  const body = Buffer.concat([WAV, Buffer.alloc(16 * 1024 * 1024, 0x33)])
  nas.handle((_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': body.length })
    res.end(body)
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 1000, minRate: 1024 } })
  for (const proto of PROTOCOLS) {
    const before = await slowCount(gw)
    const got = await within(`${proto}: the whole body`, pausedClient(proto, gw, gw.token({ sub: `paused-${proto}` }), 3000), 120000)
    t.equal(got, body.length, `${proto}: every byte`)
    t.equal(await slowCount(gw) - before, 0, `${proto}: nothing counted as slow`)
    t.match(await fetchRecord(gw, `paused-${proto}`), { outcome: 'complete' }, `${proto}: audited complete`)
  }
})

t.test('a sealed recording from a NAS that trickles: 504 or a cut, never held', async (t) => {
  const s = await startSealed(t, ['2016-01'], { upstream: { timeoutMs: 1000, minRate: 1024 } })
  const plain = toneWav(440, 8)
  s.mem.files.set(sealedName(s.ring, PATH), await sealBytes(s.ring, '2016-01', PATH, plain))
  // Bodies longer than a sealed header trickle: 16 bytes every 100 ms.
  s.nas.handle((req, res) => {
    const realEnd = res.end.bind(res)
    res.end = ((chunk?: Buffer) => {
      if (!Buffer.isBuffer(chunk) || chunk.length <= 4096) return realEnd(chunk)
      let at = 0
      const drip = setInterval(() => { res.write(chunk.subarray(at, at + 16)); at += 16 }, 100)
      res.on('close', () => { clearInterval(drip) })
      return res
    }) as typeof res.end
    s.mem.handler(req, res)
  })
  for (const proto of PROTOCOLS) {
    const sub = `sealed-${proto}`
    const before = await slowCount(s.gw)
    const r = await within(`${proto}: an end`, h2OrH1(proto, s.gw, s.gw.token({ sub })), 60000)
    t.ok(r === 504 || r === 'cut', `${proto}: 504 or a cut (${String(r)})`)
    t.equal(await slowCount(s.gw) - before, 1, `${proto}: counted as kind="slow"`)
    t.equal((await fetchRecord(s.gw, sub)).outcome, 'upstream-error', `${proto}: outcome upstream-error`)
  }
})

/** The status of a refused download, or 'cut' for one cut after its headers. */
async function h2OrH1 (proto: Protocol, gw: TestGateway, token: string): Promise<number | 'cut'> {
  if (proto === 'h1') {
    const r = await getLoose(gw, PATH, { headers: bearer(token) })
    return r.status === 200 && !r.complete ? 'cut' : r.status
  }
  const r = await h2Raw(gw, [{ headers: baseHeaders(PATH, [['authorization', `Bearer ${token}`]]) }], { timeoutMs: 60000 })
  const s = r.streams[0]
  return s.status === 200 && s.rstCode === H2_ERROR.INTERNAL_ERROR ? 'cut' : s.status ?? 0
}
