// The completion record says what reached the client: `complete` only when
// the last byte was written without error, and `bytes` what left the
// gateway, not what was queued. Node's HTTP/2 compatibility response emits
// 'finish' whenever its stream closes, so a player that resets the stream
// after 1 MB (an <audio> element seeking), a client that never opens its
// window, and a stream the gateway cut used to be audited as `complete`
// with every queued byte. Over HTTP/1.1 and HTTP/2.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { connect as http2Connect, constants } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { ServerResponse } from 'node:http'
import { bearer, RECORDING, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { baseHeaders, h2Raw } from '../helpers/h2-raw.js'
import { waitFor } from '../helpers/wait.js'

const CA = readFileSync(testCerts().ca)
const SIZE = 64 * 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 0x41)
const MB = 1024 * 1024

/** Reads until `stopAt` bytes (or the end), then resets (h2) or closes (h1); resolves with what arrived. */
function download (proto: 'h1' | 'h2', gw: TestGateway, path: string, stopAt: number): Promise<{ got: number, id: string }> {
  const headers = bearer(gw.token())
  if (proto === 'h1') {
    return new Promise((resolve) => {
      let got = 0
      let id = ''
      const req = httpsRequest({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path, headers, ca: CA, agent: false }, (res) => {
        id = String(res.headers['x-request-id'])
        res.on('data', (c: Buffer) => { got += c.length; if (got >= stopAt) req.destroy() })
        res.on('end', () => resolve({ got, id }))
        res.on('close', () => resolve({ got, id }))
        res.on('error', () => resolve({ got, id }))
      })
      req.on('error', () => resolve({ got, id }))
      req.on('close', () => resolve({ got, id }))
      req.end()
    })
  }
  return new Promise((resolve) => {
    const session = http2Connect(`https://localhost:${gw.port}`, { ca: CA })
    session.on('error', () => {})
    const stream = session.request({ ':path': path, ...headers })
    let got = 0
    let id = ''
    stream.on('response', (h) => { id = String(h['x-request-id']) })
    stream.on('data', (c: Buffer) => { got += c.length; if (got >= stopAt) stream.close(constants.NGHTTP2_CANCEL) })
    stream.on('error', () => {})
    stream.on('close', () => { session.close(); resolve({ got, id }) })
    stream.end()
  })
}

async function fetchRecord (gw: TestGateway, id: string): Promise<Record<string, unknown>> {
  return await waitFor(`the fetch record of ${id}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id), { tries: 300, intervalMs: 50 })
}

t.test('what the completion record says about downloads that did not finish', async (t) => {
  const nas = await startStubNas(t, (req, res: ServerResponse) => {
    const small = req.url?.includes('small')
    const size = small ? 2 * MB : SIZE
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': size })
    let sent = 0
    const pump = (): void => {
      while (sent < size && !res.destroyed) {
        sent += CHUNK.length
        if (!res.write(CHUNK)) return
      }
      if (sent >= size) res.end()
    }
    res.on('drain', pump)
    pump()
  })
  const gw = await startTestGateway(t, nas, { limits: { sendTimeoutMs: 500 } })

  for (const proto of ['h1', 'h2'] as const) {
    const whole = await download(proto, gw, '/medicall/small.wav', Infinity)
    t.equal(whole.got, 2 * MB, `${proto}: a whole download arrives`)
    const done = await fetchRecord(gw, whole.id)
    t.match(done, { outcome: 'complete', bytes: 2 * MB, clientIp: '127.0.0.1' }, `${proto}: audited complete, every byte, with the client address`)

    const cut = await download(proto, gw, '/medicall/big.wav', MB)
    const rec = await fetchRecord(gw, cut.id)
    t.equal(rec.outcome, 'client-aborted', `${proto}: a download left after ${cut.got} bytes is not complete`)
    t.ok(Number(rec.bytes) <= cut.got + MB, `${proto}: bytes recorded (${String(rec.bytes)}) are about what arrived (${cut.got}), not what was queued`)
    t.equal(rec.clientIp, '127.0.0.1', `${proto}: the completion names the client`)
  }
})

// curl, and any client that knows the length it was promised, closes its
// connection the moment the last body byte is in. Over HTTP/2 the stream's
// END_STREAM can still be unsent then (here held by a stream window of
// exactly the body's size): the stream is reset with CANCEL as the session
// goes, after every byte was written. That download is complete. It used to
// be audited client-aborted (about 1 curl download in 20).
t.test('a client that leaves as soon as the last byte is in has a complete download', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const size = RECORDING.length

  const h1 = await download('h1', gw, '/medicall/whole-h1.wav', size)
  t.equal(h1.got, size, 'h1: every byte arrived before the client left')
  t.match(await fetchRecord(gw, h1.id), { outcome: 'complete', bytes: size }, 'h1: audited complete, every byte')

  for (const hangUp of ['fin', 'goaway', 'reset'] as const) {
    const path = `/medicall/whole-h2-${hangUp}.wav`
    const conn = await h2Raw(gw, [{ headers: baseHeaders(path, [['authorization', `Bearer ${gw.token()}`]]) }], { windows: size, leaveAfterBytes: size, hangUp })
    const [stream] = conn.streams
    t.equal(stream.bytes, size, `h2 (${hangUp}): every byte arrived before the client left`)
    t.notOk(stream.ended, `h2 (${hangUp}): its END_STREAM was still held back`)
    const rec = await waitFor(`the fetch record of ${path}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && String(r.path).endsWith(path)), { tries: 300, intervalMs: 50 })
    t.match(rec, { outcome: 'complete', bytes: size }, `h2 (${hangUp}): audited complete, every byte`)
  }

  // One byte short: the window holds the last byte back, so it was never written.
  const path = '/medicall/short-h2.wav'
  const conn = await h2Raw(gw, [{ headers: baseHeaders(path, [['authorization', `Bearer ${gw.token()}`]]) }], { windows: size - 1, leaveAfterBytes: size - 1, hangUp: 'fin' })
  t.equal(conn.streams[0].bytes, size - 1, 'h2: all but the last byte arrived')
  const rec = await waitFor(`the fetch record of ${path}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && String(r.path).endsWith(path)), { tries: 300, intervalMs: 50 })
  t.equal(rec.outcome, 'client-aborted', 'h2: a download left one byte short is not complete')
  t.ok(Number(rec.bytes) < size, `h2: and its bytes (${String(rec.bytes)}) are short of the whole`)
})

// A client that takes every byte but never opens its window for the
// END_STREAM (an empty DATA frame is still held by a closed window) kept
// its stream, and with it its admission and NAS tickets, for as long as it
// liked: the slow-reader watch saw nothing waiting. It is a stalled reader.
t.test('a stream whose END_STREAM the client never lets out is cut as a stalled reader, every byte counted', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { sendTimeoutMs: 1000 } })
  const size = RECORDING.length
  const path = '/medicall/held-h2.wav'
  const conn = await h2Raw(gw, [{ headers: baseHeaders(path, [['authorization', `Bearer ${gw.token()}`]]) }], { windows: size, timeoutMs: 30000 })
  const [stream] = conn.streams
  t.equal(stream.bytes, size, 'every byte arrived')
  t.notOk(conn.timedOut, 'the gateway ended the stream; the client did not have to')
  t.ok(stream.rstCode !== undefined && stream.rstCode !== 0, `reset with an error code (${String(stream.rstCode)})`)
  const rec = await waitFor(`the fetch record of ${path}`, () => gw.auditRecords().find((r) => r.event === 'fetch' && String(r.path).endsWith(path)), { tries: 300, intervalMs: 50 })
  t.match(rec, { outcome: 'client-too-slow', bytes: size }, 'audited as a stalled reader, with every byte it was sent')
})
