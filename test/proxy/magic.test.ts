// files.checkMagic: an answer whose first bytes are not a recording of the
// requested type is cut before the client sees a byte.
import t from 'tap'
import type { ServerResponse } from 'node:http'
import { toneMp3 } from '../../src/demo/recordings.js'
import { RECORDING, bearer, get, startStubNas, startTestGateway } from '../helpers/gateway.js'

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

t.test('a range that does not start at byte 0 is not judged by its first bytes', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { files: { extensions: ['.wav'], checkMagic: true } })
  const mid = await get(gw, '/medicall/a.wav', { headers: { ...bearer(gw.token()), range: 'bytes=1000-1999' } })
  t.equal(mid.status, 206)
  t.ok(mid.body.equals(RECORDING.subarray(1000, 2000)))
  const start = await get(gw, '/medicall/a.wav', { headers: { ...bearer(gw.token()), range: 'bytes=0-99' } })
  t.equal(start.status, 206, 'a range from 0 is checked and passes')
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
