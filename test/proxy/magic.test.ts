// files.checkMagic: an answer whose first bytes are not a recording of the
// requested type is cut before the client sees a byte.
import t from 'tap'
import type { ServerResponse } from 'node:http'
import { toneMp3 } from '../../src/demo/recordings.js'
import { RECORDING, bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { fetchAs } from '../helpers/protocols.js'

function answer (body: Buffer, type = 'audio/wav'): (res: ServerResponse) => void {
  return (res) => {
    res.writeHead(200, { 'content-type': type, 'content-length': body.length })
    res.end(body)
  }
}

t.test('with checkMagic, wrong first bytes give 502 and nothing of the body', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav', '.mp3', '.ogg'], checkMagic: true } })
  const html = Buffer.from('<html><body>Index of /medicall: 46709999999.wav</body></html>')
  const table: Array<[string, string, Buffer, number]> = [
    ['a WAV', '/medicall/a.wav', RECORDING, 200],
    ['an MP3 (MPEG frame sync)', '/medicall/a.mp3', toneMp3(), 200],
    ['an MP3 with an ID3 tag', '/medicall/b.mp3', Buffer.concat([Buffer.from('ID3\x04\x00\x00\x00\x00\x00\x00', 'latin1'), toneMp3()]), 200],
    ['an Ogg file', '/medicall/a.ogg', Buffer.concat([Buffer.from('OggS'), Buffer.alloc(60)]), 200],
    ['HTML labelled audio/wav', '/medicall/c.wav', html, 502],
    ['a ZIP labelled audio/wav', '/medicall/d.wav', Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(60)]), 502],
    ['a WAV served for an .mp3', '/medicall/e.mp3', RECORDING, 502],
    ['RIFF but not WAVE', '/medicall/f.wav', Buffer.concat([Buffer.from('RIFF\x00\x00\x00\x00AVI ', 'latin1'), Buffer.alloc(60)]), 502],
    ['three bytes', '/medicall/g.wav', Buffer.from('RIF'), 502]
  ]
  for (const [name, path, body, status] of table) {
    nas.handle((_req, res) => answer(body, path.endsWith('.mp3') ? 'audio/mpeg' : 'audio/wav')(res))
    const res = await get(gw, path, { headers: bearer(gw.token()) })
    t.equal(res.status, status, `${name}: ${status}`)
    if (status === 200) t.ok(res.body.equals(body), `${name}: the body arrives whole`)
    else {
      t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_LISTING', name)
      t.notOk(res.body.includes(body.subarray(0, 3)), `${name}: none of its bytes`)
    }
  }
})

t.test('without checkMagic (the default) the same HTML labelled audio passes: the check is what stops it', async (t) => {
  const nas = await startStubNas(t, (_req, res) => answer(Buffer.from('<html>not audio</html>'))(res))
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, '/medicall/c.wav', { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
})

t.test('a range that does not start at byte 0 is judged by the file\'s head, fetched once per version', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav'], checkMagic: true } })
  for (const proto of ['h1', 'h2'] as const) {
    const before = nas.requests.length
    const mid = await fetchAs(proto, gw, '/medicall/a.wav', { ...bearer(gw.token()), range: 'bytes=1000-1999' })
    t.equal(mid.status, 206, `${proto}: a mid-file range of a real recording is served`)
    t.ok(mid.body.equals(RECORDING.subarray(1000, 2000)), `${proto}: the right bytes`)
    const start = await fetchAs(proto, gw, '/medicall/a.wav', { ...bearer(gw.token()), range: 'bytes=0-99' })
    t.equal(start.status, 206, `${proto}: a short range from 0 is judged by the head and passes`)
    t.ok(start.body.equals(RECORDING.subarray(0, 100)), `${proto}: its bytes`)
    const heads = nas.requests.slice(before).filter((r) => r.headers.range === 'bytes=0-4095')
    t.equal(heads.length, proto === 'h1' ? 1 : 0, `${proto}: the head was fetched once for this ETag (${heads.length})`)
  }
})

t.test('a mid-file range of a file that is not its type is refused before a byte is sent (h1 and h2)', async (t) => {
  const doc = Buffer.from('Patient journal, call from +46701234567. '.repeat(200))
  let etag = '"doc-1"'
  const nas = await startStubNas(t, (req, res) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    const start = m ? Number(m[1]) : 0
    const end = m && m[2] !== '' ? Math.min(Number(m[2]), doc.length - 1) : doc.length - 1
    const h = { 'content-type': 'audio/wav', etag, 'accept-ranges': 'bytes' }
    if (!m) { res.writeHead(200, { ...h, 'content-length': doc.length }); res.end(doc); return }
    res.writeHead(206, { ...h, 'content-range': `bytes ${start}-${end}/${doc.length}`, 'content-length': end - start + 1 })
    res.end(doc.subarray(start, end + 1))
  })
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav'], checkMagic: true } })
  for (const proto of ['h1', 'h2'] as const) {
    for (const range of ['bytes=1-', 'bytes=100-199', 'bytes=0-1', 'bytes=4000-']) {
      const res = await fetchAs(proto, gw, '/medicall/journal.wav', { ...bearer(gw.token()), range })
      t.equal(res.status, 502, `${proto} ${range}: 502`)
      t.notOk(res.body.includes(Buffer.from('Patient')), `${proto} ${range}: none of the document`)
      t.equal(JSON.parse(res.body.toString()).error, 'NASGUARD_ERR_UPSTREAM_LISTING', `${proto} ${range}: named as not a recording`)
    }
  }
  // A new version of the file is judged again, not by the old verdict.
  etag = '"doc-2"'
  const before = nas.requests.length
  const again = await fetchAs('h1', gw, '/medicall/journal.wav', { ...bearer(gw.token()), range: 'bytes=1-' })
  t.equal(again.status, 502)
  t.equal(nas.requests.slice(before).filter((r) => r.headers.range === 'bytes=0-4095').length, 1, 'a new ETag fetches the head again')
})

t.test('with checkMagic, a range that starts at byte 0 in disguise is checked too, and a tiny body is judged, not crashed on', async (t) => {
  const html = Buffer.from('<html><body>Index of /medicall: 46709999999.wav</body></html>')
  const nas = await startStubNas(t, (req, res) => {
    // A NAS that honours ranges over an HTML body it labels audio.
    const m = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (!m) { answer(html)(res); return }
    const start = m[1] === '' ? Math.max(0, html.length - Number(m[2])) : Number(m[1])
    const end = m[1] === '' || m[2] === '' ? html.length - 1 : Number(m[2])
    res.writeHead(206, { 'content-type': 'audio/wav', 'content-range': `bytes ${start}-${end}/${html.length}`, 'content-length': end - start + 1 })
    res.end(html.subarray(start, end + 1))
  })
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav', '.mp3'], checkMagic: true } })
  for (const range of ['bytes=-100000', 'bytes=00-', 'bytes=0-10']) {
    const res = await get(gw, '/medicall/c.wav', { headers: { ...bearer(gw.token()), range } })
    t.equal(res.status, 502, `${range}: the answer starts at byte 0, so it is checked`)
    t.notOk(res.body.includes(Buffer.from('Index of')), `${range}: none of the listing`)
  }
  nas.handle((_req, res) => answer(Buffer.from('ID3\x04\x00', 'latin1'), 'audio/mpeg')(res))
  const tiny = await get(gw, '/medicall/t.mp3', { headers: bearer(gw.token()) })
  t.equal(tiny.status, 200, 'a 5-byte MP3 with an ID3 start is served, not a 500')
  t.equal(tiny.body.length, 5)
})
