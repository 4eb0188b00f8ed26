// The NAS's validators (ETag, Last-Modified) go back to it in conditional
// requests, so the gateway keeps them as the NAS wrote them: a date in any
// of the three forms RFC 9110 accepts is passed verbatim, never parsed and
// written anew (asctime has no zone: parsed, it would shift by the host's
// offset), and a value is only trimmed of the whitespace around it.
// A seek with files.checkMagic (whose head check compares the file's
// version) and a sealed recording (whose chunks are asked for with
// If-Unmodified-Since) both work against a NAS that compares the exact
// string it issued. Over HTTP/1.1 and HTTP/2, with the host in a zone
// other than UTC.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { bearer, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { makeKeyring, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { toneWav } from '../../src/demo/recordings.js'

process.env.TZ = 'Europe/Berlin'

const PATH = '/medicall/2026/11/29/101500_46701234567.wav'
const WAV = toneWav(440, 15)

const FORMS: Array<[string, Record<string, string>]> = [
  ['IMF-fixdate', { etag: '"a1"', 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT' }],
  ['RFC 850', { etag: 'W/"a2"', 'last-modified': 'Sunday, 29-Nov-26 10:15:00 GMT' }],
  ['asctime, no ETag', { 'last-modified': 'Sun Nov 29 10:15:00 2026' }],
  ['an ETag and a date with a space after them', { etag: '"a3" ', 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT ' }]
]

/** Serves `body` at `path` with `validators`, one byte range, and If-Unmodified-Since / If-Match compared as the exact strings it issued (trimmed, as a parser does). */
function exactNas (path: string, body: Buffer, validators: Record<string, string>): (req: IncomingMessage, res: ServerResponse) => void {
  const own = (h: string): string | undefined => validators[h]?.trim()
  return (req, res) => {
    if (req.url !== path) { res.writeHead(404, { 'content-type': 'text/html' }); res.end('<h1>404</h1>'); return }
    const ius = req.headers['if-unmodified-since']
    const ifMatch = req.headers['if-match']
    if ((ius !== undefined && ius !== own('last-modified')) || (ifMatch !== undefined && ifMatch !== own('etag'))) { res.writeHead(412); res.end(); return }
    const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', ...validators }
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (m) {
      const start = Number(m[1])
      const end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
      res.end(body.subarray(start, end + 1))
      return
    }
    res.writeHead(200, { ...headers, 'content-length': body.length })
    res.end(body)
  }
}

for (const [form, validators] of FORMS) {
  t.test(`${form}: a seek with files.checkMagic gets its 206, the date passed as the NAS wrote it`, async (t) => {
    const nas = await startStubNas(t, exactNas(PATH, WAV, { ...validators, 'content-type': 'audio/wav' }))
    const gw = await startTestGateway(t, nas, { files: { checkMagic: true } })
    for (const proto of PROTOCOLS) {
      const r = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), range: 'bytes=5000-5999' })
      t.equal(r.status, 206, `${proto}: 206`)
      t.ok(r.body.equals(WAV.subarray(5000, 6000)), `${proto}: the range's bytes`)
      if (validators['last-modified'] !== undefined) t.equal(r.headers['last-modified'], validators['last-modified'].trim(), `${proto}: Last-Modified verbatim`)
    }
  })

  t.test(`${form}: a sealed recording downloads from a NAS that compares its validators as strings`, async (t) => {
    const keys = makeKeyring(['2026-11'])
    const ring = keys.ring()
    const sealed = await sealBytes(ring, '2026-11', PATH, WAV)
    const nas = await startStubNas(t, exactNas(sealedName(ring, PATH), sealed, validators))
    const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
    for (const proto of PROTOCOLS) {
      const r = await fetchAs(proto, gw, PATH, bearer(gw.token()))
      t.equal(r.status, 200, `${proto}: 200`)
      t.ok(r.body.equals(WAV), `${proto}: the recording`)
      const seek = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), range: 'bytes=150000-150099' })
      t.equal(seek.status, 206, `${proto}: a seek: 206`)
      t.ok(seek.body.equals(WAV.subarray(150000, 150100)), `${proto}: the seek's bytes`)
    }
  })
}

t.test('a sealed recording under a retention rule dated by Last-Modified is judged by the NAS\'s own date, in whatever form the NAS wrote it; the client is shown only an HTTP date', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const ring = keys.ring()
  const sealed = await sealBytes(ring, '2026-11', PATH, WAV)
  // Not one of RFC 9110's forms (a numeric zone, as PHP's date('r') writes it), but a date.
  const validators = { 'last-modified': 'Sun, 29 Nov 2026 10:15:00 +0000' }
  const nas = await startStubNas(t, exactNas(sealedName(ring, PATH), sealed, validators))
  const madeAt = Date.UTC(2026, 10, 29, 10, 15)
  for (const [keepDays, status] of [[3650, 200], [1, 410]] as const) {
    const gw = await startTestGateway(t, nas, {
      sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN },
      retention: [{ name: 'by-nas', path: '/medicall/**', keepDays }],
      clock: () => madeAt + 3 * 86400000
    })
    for (const proto of PROTOCOLS) {
      const r = await fetchAs(proto, gw, PATH, bearer(gw.token()))
      t.equal(r.status, status, `kept ${keepDays} days, made 3 days ago, ${proto}: ${status}`)
      if (status === 200) {
        t.ok(r.body.equals(WAV), `${proto}: the recording`)
        t.equal(r.headers['last-modified'], undefined, `${proto}: no Last-Modified outside the HTTP forms shown`)
      }
    }
  }
})
