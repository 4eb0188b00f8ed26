// Unit tests of what an audit record may hold (src/audit/record-bounds.ts):
// every string field is cut to its bound and the cut is named, token-shaped
// runs (JWTs, playback grants, also percent-encoded) never survive in the
// User-Agent, and a refused target keeps no query, path parameters or
// tokens; counts and sha256 (filled by nasguard, not by clients) are
// checked, and a malformed one refuses the record. Pure: no sockets.
import t from 'tap'
import { FIELD_BOUNDS, boundRecord, redactTokens, refusedTarget } from '../../src/audit/record-bounds.js'
import type { AuditRecord } from '../../src/audit/writer.js'

// A JWT and a playback grant as they look on the wire (base64url JSON).
const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url')
const JWT = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'alice', scope: 'recordings:read' })}.${'s'.repeat(43)}`
const GRANT = `${b64({ p: '/medicall/a.wav', s: 'alice', r: 'recordings', i: 1, e: 2 })}.${'M'.repeat(43)}`
const pct = (s: string): string => [...Buffer.from(s)].map((b) => '%' + b.toString(16).padStart(2, '0').toUpperCase()).join('')

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

function base (extra: Partial<AuditRecord> = {}): AuditRecord {
  return { event: 'access', time: '2026-01-01T00:00:00.000Z', requestId: 'r-1', clientIp: '127.0.0.1', method: 'GET', path: '/medicall/a.wav', subject: 'alice', jti: 'j-1', status: 200, bytes: 10, ...extra }
}

t.test('the bounds the issue names', async (t) => {
  t.match(FIELD_BOUNDS, { subject: 256, jti: 128, userAgent: 256, path: 4096, reason: 256, range: 256 })
})

t.test('a record within every bound is returned as is, without truncated', async (t) => {
  const r = base({ userAgent: 'curl/8.5.0' })
  const out = boundRecord(r)
  t.equal(out, r, 'the same object')
  t.equal(out.truncated, undefined)
})

t.test('oversized fields are cut to their bound and named in truncated; other fields are untouched', async (t) => {
  const big = 'x'.repeat(12 * 1024)
  const r = base({ subject: big, jti: big, userAgent: big, path: '/' + big + big, reason: big, range: 'bytes=' + big })
  const out = boundRecord(r)
  t.equal(out.subject?.length, 256)
  t.equal(out.jti?.length, 128)
  t.equal(out.userAgent?.length, 256)
  t.equal(out.path?.length, 4096)
  t.equal(out.reason?.length, 256)
  t.equal(out.range?.length, 256)
  t.ok(big.startsWith(out.subject ?? '-'), 'the kept value is a prefix')
  t.ok(r.path?.startsWith(out.path ?? '-'), 'the kept path is a prefix')
  t.same([...(out.truncated ?? [])].sort(), ['jti', 'path', 'range', 'reason', 'subject', 'userAgent'])
  t.match(out, { event: 'access', requestId: 'r-1', clientIp: '127.0.0.1', method: 'GET', status: 200, bytes: 10 }, 'short and non-string fields are kept')
  t.equal(r.subject, big, 'the input record is not modified')
  t.equal(r.truncated, undefined)
})

t.test('a value exactly at its bound is not cut; one over it is', async (t) => {
  const at = boundRecord(base({ subject: 's'.repeat(256), jti: 'j'.repeat(128) }))
  t.equal(at.subject?.length, 256)
  t.equal(at.truncated, undefined)
  const over = boundRecord(base({ subject: 's'.repeat(257), jti: 'j'.repeat(129) }))
  t.equal(over.subject?.length, 256)
  t.equal(over.jti?.length, 128)
  t.same(over.truncated, ['subject', 'jti'])
})

t.test('a field without its own bound gets the default (256)', async (t) => {
  const out = boundRecord({ ...base(), outcome: 'complete', instance: 'i'.repeat(1000) })
  t.equal(out.instance?.length, 128, 'instance has its own bound')
  t.same(out.truncated, ['instance'])
  const odd = boundRecord({ ...base(), extra: 'e'.repeat(1000) } as unknown as AuditRecord) as unknown as Record<string, unknown>
  t.equal((odd.extra as string).length, 256)
  t.same(odd.truncated, ['extra'])
})

t.test('a cut never leaves half of a surrogate pair', async (t) => {
  const subject = 'a'.repeat(255) + '\u{1F600}'.repeat(100)
  const out = boundRecord(base({ subject }))
  t.ok((out.subject?.length ?? 0) <= 256)
  t.notMatch(out.subject ?? '', LONE_SURROGATE, 'well-formed UTF-16')
  t.ok(subject.startsWith(out.subject ?? '-'))
  t.same(out.truncated, ['subject'])
  const even = boundRecord(base({ subject: 'a'.repeat(254) + '\u{1F600}'.repeat(100) }))
  t.equal(even.subject?.length, 256, 'a whole pair at the end is kept')
  t.notMatch(even.subject ?? '', LONE_SURROGATE)
})

t.test('token-shaped runs in the User-Agent are removed (not named in truncated when nothing was cut)', async (t) => {
  for (const [label, ua] of [
    ['a JWT', `player/1 ${JWT} (x)`],
    ['a grant', `player/1 ${GRANT} (x)`],
    ['a percent-encoded grant', `player/1 ${pct(GRANT)} (x)`],
    ['a grant with only its first bytes encoded', `player/1 %65%79%4A${GRANT.slice(3)} (x)`],
    ['a lower-case percent-encoding', `player/1 %65%79%4a${GRANT.slice(3)} (x)`]
  ] as const) {
    const out = boundRecord(base({ userAgent: ua }))
    t.equal(out.userAgent, 'player/1 [token removed] (x)', label)
    t.equal(out.truncated, undefined, `${label}: nothing was cut`)
  }
  const two = boundRecord(base({ userAgent: `${JWT} and ${GRANT}` }))
  t.equal(two.userAgent, '[token removed] and [token removed]', 'every run')
})

t.test('a 12 KB User-Agent is bounded; a token near or past the cut is gone too', async (t) => {
  const out = boundRecord(base({ userAgent: 'u'.repeat(12 * 1024) }))
  t.equal(out.userAgent?.length, 256)
  t.same(out.truncated, ['userAgent'])
  const late = boundRecord(base({ userAgent: 'u'.repeat(250) + GRANT + 'u'.repeat(12 * 1024) }))
  t.ok((late.userAgent?.length ?? 0) <= 256)
  t.notOk(late.userAgent?.includes('eyJ'), 'no token prefix kept at the cut')
  t.notOk(late.userAgent?.includes(GRANT.slice(0, 6)))
  t.same(late.truncated, ['userAgent'])
})

t.test('redactTokens', async (t) => {
  t.equal(redactTokens(JWT), '[token removed]')
  t.equal(redactTokens(GRANT), '[token removed]')
  t.equal(redactTokens(pct(GRANT)), '[token removed]')
  t.equal(redactTokens(`/medicall/${GRANT}.wav`), '/medicall/[token removed]', 'the run takes the rest of the token-shaped characters')
  t.notOk(redactTokens(`/medicall/${JWT}/x.wav`).includes(JWT.split('.')[1]), 'a token followed by more path is gone')
  t.equal(redactTokens('/medicall/2016/01/01/083012_46701234567.wav'), '/medicall/2016/01/01/083012_46701234567.wav', 'an ordinary path is unchanged')
  t.equal(redactTokens('Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0'), 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0', 'an ordinary User-Agent is unchanged')
  t.notOk(redactTokens(`a ${GRANT} b`).includes(GRANT.split('.')[1]), 'the MAC goes with the payload')
})

t.test('refusedTarget: no query, no path parameters, no token-shaped runs', async (t) => {
  t.equal(refusedTarget('/medicall/a.wav'), '/medicall/a.wav')
  t.equal(refusedTarget(`/medicall/a.wav?grant=${GRANT}`), '/medicall/a.wav')
  t.equal(refusedTarget('/medicall/a.wav?x=1?y=2'), '/medicall/a.wav')
  t.equal(refusedTarget(`/medicall/a.wav;grant=${GRANT}`), '/medicall/a.wav;[parameters removed]')
  t.equal(refusedTarget(`/medicall;v=1/a.wav?grant=${GRANT}`), '/medicall;[parameters removed]')
  t.equal(refusedTarget(`/medicall/${GRANT}.wav`), '/medicall/[token removed]')
  t.equal(refusedTarget(`/medicall/${pct(GRANT)}.wav`), '/medicall/[token removed]')
  t.equal(refusedTarget(`/medicall/${JWT}.wav`), '/medicall/[token removed]')
  t.equal(refusedTarget('localhost:443'), 'localhost:443', 'a CONNECT authority is kept')
  for (const u of [`/m/${GRANT}`, `/m;g=${GRANT}`, `/m?g=${GRANT}`, `/m/${pct(GRANT)}`]) {
    const out = refusedTarget(u)
    t.notOk(out.includes(GRANT.split('.')[0]), `${u.slice(0, 12)}...: no grant payload`)
    t.notOk(out.includes(GRANT.split('.')[1]), `${u.slice(0, 12)}...: no grant MAC`)
  }
})

t.test('counts and sha256 are filled by nasguard, not clients: checked, and a malformed one refuses the record naming the field; period is bounded', async (t) => {
  const digest = 'ab'.repeat(32)
  const ok = base({ event: 'ingest', sha256: digest, counts: { sealed: 0, skipped: 2, failed: 0, bytes: 2 ** 40, files: 3 } })
  t.equal(boundRecord(ok), ok, 'well-formed: returned as is')
  for (const [label, extra, message] of [
    ['upper-case hex', { sha256: digest.toUpperCase() }, /sha256 must be 64 lowercase hex digits/],
    ['a short digest', { sha256: digest.slice(2) }, /sha256 must be 64 lowercase hex digits/],
    ['a negative count', { counts: { failed: -1 } }, /counts\.failed must be a whole number from 0, not -1/],
    ['a fraction', { counts: { bytes: 1.5 } }, /counts\.bytes must be a whole number/],
    ['NaN (JSON would write null)', { counts: { sealed: NaN } }, /counts\.sealed must be a whole number/],
    ['a count no record holds', { counts: { extra: 'x'.repeat(10_000) } }, /counts\.extra is not a count a record holds/],
    ['not an object', { counts: 3 }, /counts must be an object/]
  ] as const) {
    t.throws(() => boundRecord(base(extra as unknown as Partial<AuditRecord>)), { message: message }, label)
  }
  t.equal(FIELD_BOUNDS.period, 32)
  const long = boundRecord(base({ period: '2016-01'.repeat(10) }))
  t.equal(long.period?.length, 32)
  t.same(long.truncated, ['period'])
})
