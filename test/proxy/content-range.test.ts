// Unit tests of the 206 check (src/proxy/content-range.ts): a partial answer
// from the NAS is accepted only when a Range was sent and its Content-Range
// is the span asked for (resolved against the file size; for several ranges
// one of them or their hull) with a matching Content-Length. Pure.
import t from 'tap'
import { checkPartialAnswer, parseContentRange } from '../../src/proxy/content-range.js'

const N = 8044

t.test('parseContentRange: well-formed values', async (t) => {
  t.same(parseContentRange('bytes 0-99/8044'), { start: 0, end: 99, total: N })
  t.same(parseContentRange('bytes 100-199/*'), { start: 100, end: 199, total: undefined }, 'an unknown total')
  t.same(parseContentRange('bytes 8043-8043/8044'), { start: 8043, end: 8043, total: N }, 'the last byte')
  t.same(parseContentRange('bytes 0-0/1'), { start: 0, end: 0, total: 1 })
  t.same(parseContentRange('Bytes 0-99/8044'), { start: 0, end: 99, total: N }, 'the unit is case-insensitive')
  t.same(parseContentRange(' bytes 0-99/8044 '), { start: 0, end: 99, total: N }, 'surrounding whitespace')
})

t.test('parseContentRange: malformed or unusable values', async (t) => {
  for (const v of [
    'bytes 100-99/8044', // end before start
    'bytes 0-8044/8044', // past the end
    'bytes 9000-9001/8044',
    'bytes */8044', // an unsatisfied-range answer, not a span
    'bytes=0-99/8044',
    'bytes 0-99',
    'bytes 0-/8044',
    'bytes -100/8044',
    'bytes -1-99/8044',
    'items 0-99/8044',
    'bytes 0-99/8044, bytes 100-199/8044',
    'bytes 0x0-99/8044',
    'bytes 1234567890123456-1234567890123457/*', // 16 digits
    ''
  ]) t.equal(parseContentRange(v), undefined, JSON.stringify(v))
  t.equal(parseContentRange(undefined), undefined, 'absent')
  t.equal(parseContentRange(['bytes 0-99/8044']), undefined, 'repeated (an array)')
  t.equal(parseContentRange(42), undefined, 'not a string')
})

t.test('checkPartialAnswer: a 206 must answer a Range that was sent', async (t) => {
  t.match(checkPartialAnswer(undefined, 'bytes 0-8043/8044', String(N)), { ok: false, reason: /without Range/ })
  t.match(checkPartialAnswer(['bytes=0-1', 'bytes=2-3'], 'bytes 0-1/8044', '2'), { ok: false }, 'two Range headers are no Range')
  t.match(checkPartialAnswer('bytes=100-199', undefined, '100'), { ok: false, reason: /Content-Range/ }, 'no Content-Range')
  t.match(checkPartialAnswer('bytes=100-199', 'bytes 100-99/8044', '100'), { ok: false, reason: /Content-Range/ }, 'a malformed Content-Range')
  t.match(checkPartialAnswer('bytes=100-199', 'bytes */8044', undefined), { ok: false }, 'an unsatisfied-range Content-Range on a 206')
})

t.test('checkPartialAnswer: the span must be the one asked for', async (t) => {
  const ok = (range: string, cr: string, cl?: string): void => {
    const r = checkPartialAnswer(range, cr, cl)
    t.ok(r.ok, `${range} answered ${cr}${cl === undefined ? '' : ` (${cl})`}: accepted`)
  }
  const no = (range: string, cr: string, cl?: string): void => {
    const r = checkPartialAnswer(range, cr, cl)
    t.notOk(r.ok, `${range} answered ${cr}${cl === undefined ? '' : ` (${cl})`}: refused`)
  }
  ok('bytes=100-199', 'bytes 100-199/8044', '100')
  ok('bytes=100-199', 'bytes 100-199/8044')
  ok('bytes=100-199', 'bytes 100-199/*', '100')
  ok('bytes=100-', 'bytes 100-8043/8044', '7944')
  ok('bytes=-100', 'bytes 7944-8043/8044', '100')
  ok('bytes=100-99999', 'bytes 100-8043/8044', '7944')
  ok('bytes=-100000', 'bytes 0-8043/8044', String(N))
  ok('bytes=0-0', 'bytes 0-0/8044', '1')
  ok('BYTES=100-199', 'bytes 100-199/8044', '100')

  no('bytes=100-199', 'bytes 0-99/8044', '100')
  no('bytes=100-199', 'bytes 100-150/8044', '51')
  no('bytes=100-199', 'bytes 100-200/8044', '101')
  no('bytes=100-199', 'bytes 101-199/8044', '99')
  no('bytes=100-', 'bytes 100-199/8044', '100')
  no('bytes=100-', 'bytes 0-8043/8044', String(N))
  no('bytes=-100', 'bytes 0-99/8044', '100')
  no('bytes=-100', 'bytes 7944-8043/*', '100')
  no('bytes=-100', 'bytes 7943-8043/8044', '101')
  no('items=100-199', 'bytes 100-199/8044', '100')
})

t.test('checkPartialAnswer: Content-Length must match the span', async (t) => {
  t.match(checkPartialAnswer('bytes=100-199', 'bytes 100-199/8044', '50'), { ok: false, reason: /Content-Length/ })
  t.match(checkPartialAnswer('bytes=100-199', 'bytes 100-199/8044', '101'), { ok: false })
  t.match(checkPartialAnswer('bytes=100-199', 'bytes 100-199/8044', 'abc'), { ok: false })
  t.match(checkPartialAnswer('bytes=100-199', 'bytes 100-199/8044', '100'), { ok: true, span: { start: 100, end: 199, total: N } })
})

t.test('checkPartialAnswer: several ranges: one of them, or their hull', async (t) => {
  const range = 'bytes=0-99,200-299'
  t.ok(checkPartialAnswer(range, 'bytes 0-99/8044', '100').ok, 'the first span')
  t.ok(checkPartialAnswer(range, 'bytes 200-299/8044', '100').ok, 'the second span')
  t.ok(checkPartialAnswer(range, 'bytes 0-299/8044', '300').ok, 'the hull (coalesced)')
  t.notOk(checkPartialAnswer(range, 'bytes 0-199/8044', '200').ok, 'neither a span nor the hull')
  t.notOk(checkPartialAnswer(range, 'bytes 100-299/8044', '200').ok)
  t.notOk(checkPartialAnswer(range, 'bytes 0-8043/8044', String(N)).ok, 'more than the hull')
  t.ok(checkPartialAnswer('bytes=0-99,-100', 'bytes 0-8043/8044', String(N)).ok, 'the hull of a span and a suffix')
  t.ok(checkPartialAnswer('bytes=0-99,-100', 'bytes 7944-8043/8044', '100').ok, 'the suffix of a list')
  t.notOk(checkPartialAnswer(range, undefined, undefined).ok, 'a multipart/byteranges answer has no Content-Range: refused')
})
