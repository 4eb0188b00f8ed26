// The verdict on a NAS answer, before any body byte (src/proxy/answer.ts): no sockets.
import t from 'tap'
import { judgeAnswer, passedHeaders } from '../../src/proxy/answer.js'

const audio = { 'content-type': 'audio/wav' }

t.test('a recording passes with its allow-listed headers, and only those', async (t) => {
  const a = judgeAnswer(200, { ...audio, 'content-length': '10', etag: '"x"', 'set-cookie': ['a=b'], server: 'nas', 'x-nas-path': '/share/4670' }, undefined)
  t.same(a, { kind: 'recording', headers: { 'content-length': '10', etag: '"x"' }, declared: 10, start: 0, whole: true })
})

t.test('a 206 is held to the span that was asked for', async (t) => {
  const ok = judgeAnswer(206, { ...audio, 'content-range': 'bytes 100-199/1000', 'content-length': '100' }, 'bytes=100-199')
  t.match(ok, { kind: 'recording', declared: 100, start: 100, whole: false })
  const chunked = judgeAnswer(206, { ...audio, 'content-range': 'bytes 900-999/1000' }, 'bytes=900-')
  t.match(chunked, { kind: 'recording', headers: { 'content-length': '100' }, declared: 100, whole: true }, 'a chunked 206 is given its span length')
  const table: Array<[string, Record<string, string>, string | undefined]> = [
    ['another span', { 'content-range': 'bytes 0-99/1000', 'content-length': '100' }, 'bytes=100-199'],
    ['no Range was sent', { 'content-range': 'bytes 0-99/1000' }, undefined],
    ['no Content-Range', { 'content-length': '100' }, 'bytes=0-99'],
    ['a length that is not the span', { 'content-range': 'bytes 0-99/1000', 'content-length': '500' }, 'bytes=0-99']
  ]
  for (const [name, h, range] of table) t.match(judgeAnswer(206, { ...audio, ...h }, range), { kind: 'refused', upstreamKind: 'range' }, name)
})

t.test('anything that does not say it is audio or binary is a listing', async (t) => {
  for (const ct of ['text/html', 'application/json', 'application/xml', 'text/plain; charset=utf-8', undefined]) {
    t.match(judgeAnswer(200, ct === undefined ? {} : { 'content-type': ct }, undefined), { kind: 'refused', upstreamKind: 'listing', err: { statusCode: 502 } }, String(ct))
  }
  t.match(judgeAnswer(200, { 'content-type': 'application/octet-stream', 'content-length': '10' }, undefined), { kind: 'recording' })
  t.match(judgeAnswer(200, { 'content-type': ['audio/wav', 'audio/wav'] } as never, undefined), { kind: 'refused' }, 'a repeated Content-Type says nothing')
})

t.test('a whole file must say where it ends: a length or chunks; a HEAD has no body to end', async (t) => {
  t.match(judgeAnswer(200, { ...audio }, undefined), { kind: 'refused', upstreamKind: 'body', err: { statusCode: 502 }, reason: 'no length' }, 'neither: its end is the NAS closing, a failure included')
  t.match(judgeAnswer(200, { ...audio, 'transfer-encoding': 'chunked' }, undefined), { kind: 'recording' }, 'chunks')
  t.match(judgeAnswer(200, { ...audio, 'content-length': '10' }, undefined), { kind: 'recording', declared: 10 }, 'a length')
  t.match(judgeAnswer(200, { ...audio }, undefined, false, true), { kind: 'recording' }, 'a HEAD')
  t.match(judgeAnswer(200, { 'content-type': 'text/plain' }, undefined, true), { kind: 'refused', upstreamKind: 'body' }, 'a sealed file too')
  for (const te of ['identity', 'gzip', 'chunked, identity', 'gzip, chunked', '', 'chunked, chunked', 'chunked\t', 'chunked\u00a0', '\u00a0chunked', 'chunked\x0b', 'chunked ']) {
    t.match(judgeAnswer(200, { ...audio, 'transfer-encoding': te }, undefined), { kind: 'refused', upstreamKind: 'body' }, `Transfer-Encoding: ${JSON.stringify(te)}`)
    t.match(judgeAnswer(206, { ...audio, 'transfer-encoding': te, 'content-range': 'bytes 0-9/100' }, 'bytes=0-9'), { kind: 'refused', upstreamKind: 'body' }, `a 206 with Transfer-Encoding: ${JSON.stringify(te)}`)
  }
  t.match(judgeAnswer(200, { ...audio, 'transfer-encoding': 'Chunked' }, undefined), { kind: 'recording' }, 'chunked in any case')
  for (const ce of ['gzip', 'br', 'identity, gzip']) t.match(judgeAnswer(200, { ...audio, 'content-length': '10', 'content-encoding': ce }, undefined), { kind: 'refused', upstreamKind: 'body' }, `Content-Encoding: ${ce}`)
  t.match(judgeAnswer(200, { ...audio, 'content-length': '10', 'content-encoding': 'identity' }, undefined), { kind: 'recording' }, 'identity is no coding')
  t.match(judgeAnswer(200, { ...audio, 'content-length': '10', 'content-encoding': 'gzip' }, undefined, false, true), { kind: 'refused', upstreamKind: 'body' }, 'a HEAD too: its Content-Length would be the compressed size')
  t.match(judgeAnswer(200, { ...audio, 'transfer-encoding': 'identity' }, undefined, false, true), { kind: 'recording' }, 'a HEAD has no body whose framing matters')
  t.same(judgeAnswer(200, { ...audio, 'content-length': '10', 'content-range': 'bytes 0-9/1000' }, 'bytes=0-9'), { kind: 'recording', headers: { 'content-length': '10' }, declared: 10, start: 0, whole: true }, 'a 200 is no part of a file: no Content-Range')
})

t.test('a 416 passes on a Content-Range that states a size, and nothing else', async (t) => {
  for (const cr of ['bytes */1000; path=/medicall/x.wav', 'bytes */', 'bytes */-1', 'bytes */01', 'bytes 0-1/1000', 'bytes */1000\r\nx: y', 'bytes */99999999999999999', 'Bytes */1000']) {
    t.same(judgeAnswer(416, { 'content-range': cr }, 'bytes=5000-'), { kind: 'unsatisfiable' }, JSON.stringify(cr))
  }
  t.same(judgeAnswer(416, { 'content-range': 'bytes */0' }, 'bytes=5000-'), { kind: 'unsatisfiable', contentRange: 'bytes */0' })
})

t.test('other statuses', async (t) => {
  t.same(judgeAnswer(304, { etag: '"x"', 'content-length': '0' }, undefined), { kind: 'not-modified', headers: { etag: '"x"' } })
  t.same(judgeAnswer(416, { 'content-range': 'bytes */1000' }, 'bytes=5000-'), { kind: 'unsatisfiable', contentRange: 'bytes */1000' })
  t.match(judgeAnswer(404, {}, undefined), { kind: 'refused', upstreamKind: null, err: { statusCode: 404 } })
  t.match(judgeAnswer(410, {}, undefined), { kind: 'refused', upstreamKind: null, err: { statusCode: 404 } })
  t.match(judgeAnswer(301, { location: '/x/' }, undefined), { kind: 'refused', upstreamKind: 'redirect' })
  t.match(judgeAnswer(401, {}, undefined), { kind: 'refused', upstreamKind: 'auth' })
  t.match(judgeAnswer(403, {}, undefined), { kind: 'refused', upstreamKind: 'auth' })
  t.match(judgeAnswer(500, {}, undefined), { kind: 'refused', upstreamKind: 'status_5xx' })
  t.match(judgeAnswer(418, {}, undefined), { kind: 'refused', upstreamKind: 'status_4xx' })
})

t.test('a repeated NAS header is not passed on', async (t) => {
  t.same(passedHeaders({ etag: ['"a"', '"b"'] as unknown as string, 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' }), { 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' })
})

t.test('the passed headers are held to their own grammar, whatever the NAS writes in them', async (t) => {
  const table: Array<[string, Record<string, string>, Record<string, string>]> = [
    ['plain values pass', { 'accept-ranges': 'bytes', etag: '"abc-123"', 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT', 'content-length': '10' }, { 'accept-ranges': 'bytes', etag: '"abc-123"', 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT', 'content-length': '10' }],
    ['whitespace around a value is dropped', { 'accept-ranges': ' bytes\t', etag: '\t"x" ', 'content-length': '10\t' }, { 'accept-ranges': 'bytes', etag: '"x"', 'content-length': '10' }],
    ['Accept-Ranges: only bytes or none', { 'accept-ranges': 'bytes; file=/volume1/a_46701234567.wav' }, {}],
    ['Accept-Ranges: none passes, lower-cased', { 'accept-ranges': 'NONE' }, { 'accept-ranges': 'none' }],
    ['a weak ETag passes', { etag: 'W/"5f-1a2b"' }, { etag: 'W/"5f-1a2b"' }],
    ['an ETag with text after it', { etag: '"x" /volume1/a_46701234567.wav' }, {}],
    ['an ETag without quotes', { etag: '/volume1/a_46701234567.wav' }, {}],
    ['an ETag with a space or a quote inside', { etag: '"a b"' }, {}],
    ['an ETag with bytes beyond ASCII', { etag: '"\u00ff\u00fe/volume1"' }, {}],
    ['an ETag longer than 256', { etag: `"${'a'.repeat(257)}"` }, {}],
    ['a Last-Modified that is no date', { 'last-modified': 'see /volume1/a_46701234567.wav' }, {}],
    ['a Last-Modified a lenient parser would take for a date', { 'last-modified': '1' }, {}],
    ['a Last-Modified with a numeric zone (not an HTTP date)', { 'last-modified': 'Sun, 29 Nov 2026 10:15:00 +0000' }, {}],
    ['a Last-Modified with text after the date', { 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT /volume1' }, {}],
    ['a Last-Modified on a day its month lacks', { 'last-modified': 'Thu, 31 Apr 2026 10:15:00 GMT' }, {}],
    ['a Last-Modified in RFC 850 form, verbatim', { 'last-modified': 'Sunday, 29-Nov-26 10:15:00 GMT' }, { 'last-modified': 'Sunday, 29-Nov-26 10:15:00 GMT' }],
    ['a Last-Modified in asctime form, verbatim', { 'last-modified': 'Sun Nov  6 08:49:37 1994' }, { 'last-modified': 'Sun Nov  6 08:49:37 1994' }],
    ['a length with leading zeros', { 'content-length': '0010' }, { 'content-length': '0010' }],
    ['a date that cannot be (day 39, hour 29)', { 'last-modified': 'Sun, 39 Nov 2026 29:59:69 GMT' }, {}],
    ['asctime with a two-digit day, verbatim', { 'last-modified': 'Fri Nov 06 10:15:00 2026' }, { 'last-modified': 'Fri Nov 06 10:15:00 2026' }],
    ['a leap second, verbatim', { 'last-modified': 'Wed, 31 Dec 2026 23:59:60 GMT' }, { 'last-modified': 'Wed, 31 Dec 2026 23:59:60 GMT' }],
    ['a Content-Range is never among them', { 'content-range': 'bytes 0-9/10' }, {}]
  ]
  for (const [name, headers, want] of table) t.same(passedHeaders(headers), want, name)
  t.match(judgeAnswer(200, { ...audio, 'content-length': '+10' }, undefined), { kind: 'refused', upstreamKind: 'body', reason: 'a malformed length' }, 'a length with a sign is refused')
  t.match(judgeAnswer(206, { ...audio, 'content-range': 'BYTES 100-199/1000\t', 'content-length': '100' }, 'bytes=100-199'), { kind: 'recording', headers: { 'content-range': 'bytes 100-199/1000', 'content-length': '100' } }, "a 206's Content-Range is written anew from the checked span")
})
