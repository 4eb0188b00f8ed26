// A NAS (or something in front of it) that answers 206 with another span
// than the one asked for, or a 206 to a request without Range, would have the
// client splice the wrong bytes into its file. Such answers get 502
// NASGUARD_ERR_UPSTREAM_ERROR, are counted as upstream_errors{kind="range"},
// and not one byte of the NAS body reaches the client; correct 206s and a
// 200 full answer to a Range request are served. Over HTTP/1.1 and HTTP/2.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { RECORDING, bearer, scrape, startStubNas, startTestGateway, type NasHandler } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const N = RECORDING.length
const RANGE_ERRORS = 'nasguard_upstream_errors_total{kind="range"}'
// What the misbehaving NAS sends as its body: recognisable if any of it leaks.
const MARK = 'NASBODY!'

function marked (n: number): Buffer {
  return Buffer.from(MARK.repeat(Math.ceil(n / MARK.length))).subarray(0, n)
}

/** A 206 with these headers and a body of `bodyLength` marked bytes (Content-Length: bodyLength unless given). */
function answer206 (contentRange: string | undefined, bodyLength: number, contentLength = bodyLength): NasHandler {
  return (_req: IncomingMessage, res: ServerResponse) => {
    const headers: Record<string, string | number> = { 'content-type': 'audio/wav', 'accept-ranges': 'bytes', 'content-length': contentLength }
    if (contentRange !== undefined) headers['content-range'] = contentRange
    res.writeHead(206, headers)
    res.end(marked(Math.min(bodyLength, contentLength)))
  }
}

/** A correct file server: single ranges, open and suffix ones included. */
const correctRanges: NasHandler = (req, res) => {
  const m = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''))
  if (!m || (m[1] === '' && m[2] === '')) {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': N })
    res.end(RECORDING)
    return
  }
  const start = m[1] === '' ? Math.max(0, N - Number(m[2])) : Number(m[1])
  const end = m[1] === '' || m[2] === '' ? N - 1 : Math.min(Number(m[2]), N - 1)
  res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes ${start}-${end}/${N}`, 'content-length': end - start + 1 })
  res.end(RECORDING.subarray(start, end + 1))
}

/** Ignores Range: the whole file, 200. */
const ignoresRange: NasHandler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': N })
  res.end(RECORDING)
}

interface Bad { what: string, range?: string, handler: NasHandler }

const BAD: Bad[] = [
  { what: '206 to a request without Range', handler: answer206(`bytes 0-${N - 1}/${N}`, N) },
  { what: '206 without Content-Range', range: 'bytes=100-199', handler: answer206(undefined, 100) },
  { what: 'bytes 0-99 for bytes=100-199', range: 'bytes=100-199', handler: answer206(`bytes 0-99/${N}`, 100) },
  { what: 'bytes 100-150 for bytes=100-199', range: 'bytes=100-199', handler: answer206(`bytes 100-150/${N}`, 51) },
  { what: 'bytes 100-199 for bytes=100-', range: 'bytes=100-', handler: answer206(`bytes 100-199/${N}`, 100) },
  { what: 'bytes 0-99 for bytes=-100', range: 'bytes=-100', handler: answer206(`bytes 0-99/${N}`, 100) },
  { what: 'Content-Length not matching Content-Range', range: 'bytes=100-199', handler: answer206(`bytes 100-199/${N}`, 50) },
  { what: 'malformed bytes 100-99', range: 'bytes=100-199', handler: answer206(`bytes 100-99/${N}`, 100) },
  { what: 'total * for bytes=-100', range: 'bytes=-100', handler: answer206(`bytes ${N - 100}-${N - 1}/*`, 100) }
]

t.test('206 answers that are not the span asked for: 502, kind="range", no NAS byte reaches the client', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  for (const proto of PROTOCOLS) {
    for (const row of BAD) {
      const label = `${proto} ${row.what}`
      nas.handle(row.handler)
      const before = (await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0
      const asked = nas.requests.length
      const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), ...(row.range ? { range: row.range } : {}) })
      t.equal(res.status, 502, `${label}: 502`)
      t.match(res.headers['content-type'], /^application\/json/, `${label}: a JSON error`)
      const body = JSON.parse(res.body.toString()) as Record<string, unknown>
      t.same(Object.keys(body).sort(), ['error', 'message'], `${label}: the body is exactly the error`)
      t.equal(body.error, 'NASGUARD_ERR_UPSTREAM_ERROR', `${label}: NASGUARD_ERR_UPSTREAM_ERROR`)
      t.notOk(res.body.includes(MARK), `${label}: no byte of the NAS body`)
      t.equal(res.headers['content-range'], undefined, `${label}: no Content-Range passed on`)
      t.equal(nas.requests.length, asked + 1, `${label}: the NAS was asked once`)
      t.equal(nas.requests.at(-1)?.headers.range, row.range, `${label}: the Range sent to the NAS is the client's`)
      const after = await waitFor(`${label}: the range error to be counted`, async () => {
        const v = (await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0
        return v > before ? v : undefined
      })
      t.equal(after, before + 1, `${label}: upstream_errors{kind="range"} +1`)
      const id = res.headers['x-request-id']
      const fetch = await waitFor(`${label}: the fetch record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === id))
      t.match(fetch, { status: 502, outcome: 'upstream-error', bytes: 0 }, `${label}: audited as an upstream error, no bytes`)
    }
  }
})

t.test('correct 206s and a 200 full answer to a Range request are served', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const controls: Array<{ what: string, range: string, handler: NasHandler, status: number, body: Buffer, contentRange?: string }> = [
    { what: 'bytes=100-199', range: 'bytes=100-199', handler: correctRanges, status: 206, body: RECORDING.subarray(100, 200), contentRange: `bytes 100-199/${N}` },
    { what: 'bytes=100-', range: 'bytes=100-', handler: correctRanges, status: 206, body: RECORDING.subarray(100), contentRange: `bytes 100-${N - 1}/${N}` },
    { what: 'bytes=-100', range: 'bytes=-100', handler: correctRanges, status: 206, body: RECORDING.subarray(N - 100), contentRange: `bytes ${N - 100}-${N - 1}/${N}` },
    { what: 'a 200 full answer to bytes=100-199', range: 'bytes=100-199', handler: ignoresRange, status: 200, body: RECORDING }
  ]
  const before = (await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0
  for (const proto of PROTOCOLS) {
    for (const c of controls) {
      const label = `${proto} ${c.what}`
      nas.handle(c.handler)
      const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), range: c.range })
      t.equal(res.status, c.status, `${label}: ${c.status}`)
      t.ok(res.body.equals(c.body), `${label}: the bytes asked for (${res.body.length} bytes)`)
      t.equal(res.headers['content-range'], c.contentRange, `${label}: Content-Range`)
      t.match(res.headers['content-type'], /^audio\//, `${label}: audio`)
    }
  }
  t.equal(nas.requests.length, controls.length * PROTOCOLS.length)
  t.equal((await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0, before, 'no range error counted')
})

t.test('a chunked 206 is held to its span: bytes past it are cut, never passed on (h1 and h2)', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  // The span asked for, then more: what a NAS whose Content-Range lies would send.
  const overlong: NasHandler = (_req, res) => {
    res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes 100-199/${N}` })
    res.write(RECORDING.subarray(100, 200))
    setImmediate(() => res.end(marked(20000)))
  }
  const exact: NasHandler = (_req, res) => {
    res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes 100-199/${N}` })
    res.end(RECORDING.subarray(100, 200))
  }
  for (const proto of PROTOCOLS) {
    nas.handle(overlong)
    const before = (await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0
    let body: Buffer = Buffer.alloc(0)
    // Its own subject: a cut that surfaces as a reset leaves no request id to find the record by.
    const sub = `overlong-${proto}`
    try {
      const res = await fetchAs(proto, gw, PATH, { ...bearer(gw.token({ sub })), range: 'bytes=100-199' })
      body = res.body
    } catch {
      // The cut may surface as a reset: what matters is what arrived and what was recorded.
    }
    t.notOk(body.includes(MARK), `${proto}: no byte past the span reached the client`)
    t.ok(body.length <= 100, `${proto}: at most the span's 100 bytes (${body.length})`)
    const after = await waitFor(`${proto}: the range error`, async () => {
      const v = (await scrape(gw.adminUrl)).get(RANGE_ERRORS) ?? 0
      return v > before ? v : undefined
    })
    t.equal(after, before + 1, `${proto}: upstream_errors{kind="range"} +1`)
    // The completion (the access record has no outcome).
    const fetch = await waitFor(`${proto}: the fetch record`, () => gw.auditRecords().find((r) => r.event === 'fetch' && r.subject === sub && r.outcome !== undefined))
    t.equal(fetch.outcome, 'upstream-error', `${proto}: audited as an upstream error`)

    nas.handle(exact)
    const ok = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), range: 'bytes=100-199' })
    t.equal(ok.status, 206, `${proto}: a chunked 206 of the right length is served`)
    t.ok(ok.body.equals(RECORDING.subarray(100, 200)), `${proto}: its bytes`)
    t.equal(ok.headers['content-length'], '100', `${proto}: with the span's length declared`)
  }
})
