// The sealing building blocks without sockets: names, periods, the age
// header's strict parsing, chunk geometry and spans, the keyring's rules.
import t from 'tap'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { decodeSegment, encodeSegment, plainPathOf, sealedPathOf } from '../../src/sealing/names.js'
import { compilePeriodPattern, periodOf } from '../../src/sealing/period.js'
import { encodeIdentity, newIdentity, openHeader, parseIdentity, parseRecipient, SealedIntegrityError, writeHeader } from '../../src/sealing/age.js'
import { CHUNK, geometry, NONCE_BYTES, SEALED_CHUNK, sealedSizeOf, spanOf } from '../../src/sealing/payload.js'
import { initKeyring, Keyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { planAnswer } from '../../src/sealing/answer-plan.js'

t.test('names: deterministic, bound to their directory, base32 lower case, and reveal nothing', async (t) => {
  const key = randomBytes(64)
  const a = encodeSegment(key, '/medicall/2026/11/29', '101500_46701234567.wav')
  t.equal(a, encodeSegment(key, '/medicall/2026/11/29', '101500_46701234567.wav'), 'deterministic')
  t.match(a, /^[a-z2-7]+\.age$/, 'base32, lower case, .age')
  t.notMatch(a, /4670|wav|1015/, 'no trace of the name')
  t.not(a, encodeSegment(key, '/medicall/2026/11/30', '101500_46701234567.wav'), 'the same name on another day is unrelated')
  t.equal(decodeSegment(key, '/medicall/2026/11/29', a), '101500_46701234567.wav')
  t.equal(decodeSegment(key, '/medicall/2026/11/30', a), undefined, 'moved to another directory, it does not decode')
  t.equal(decodeSegment(randomBytes(64), '/medicall/2026/11/29', a), undefined, 'another key')
  t.equal(decodeSegment(key, '/medicall/2026/11/29', a.toUpperCase().replace('.AGE', '.age')), '101500_46701234567.wav', 'a NAS that folds case gives it back in any case')
  const flipped = (a[3] === 'a' ? 'b' : 'a')
  t.equal(decodeSegment(key, '/medicall/2026/11/29', a.slice(0, 3) + flipped + a.slice(4)), undefined, 'altered')
  const segs = ['medicall', '2026', '11', '29', 'agent-7', '101500_46701234567.wav']
  const two = sealedPathOf(key, segs, 2)
  t.match(two, /^\/medicall\/2026\/11\/29\/[a-z2-7]+\.age\/[a-z2-7]+\.age$/, 'more segments by config, dates stay readable')
  t.equal(plainPathOf(key, two.split('/').slice(1), 2), '/' + segs.join('/'))
  t.throws(() => sealedPathOf(key, ['x', 'a'.repeat(200)], 1), /over the 255/)
})

t.test('periods from the path', async (t) => {
  const month = compilePeriodPattern('/medicall/{yyyy}/{mm}/**', 'month')
  t.equal(periodOf(month, ['medicall', '2026', '11', '29', 'x.wav']), '2026-11')
  t.equal(periodOf(month, ['medicall', '2026', '11', 'x.wav']), '2026-11')
  t.equal(periodOf(month, ['medicall', '2026', '11']), undefined, 'the pattern needs a recording after it')
  t.equal(periodOf(month, ['medicall', '2026', '13', 'x.wav']), undefined, 'month 13')
  t.equal(periodOf(month, ['other', '2026', '11', 'x.wav']), undefined)
  t.equal(periodOf(compilePeriodPattern('/medicall/{yyyy}/{mm}/{dd}/**', 'day'), ['medicall', '2026', '11', '29', 'x.wav']), '2026-11-29')
  for (const [p, unit, msg] of [['medicall/{yyyy}/**', 'year', /start with \//], ['/m/{yyyy}/{mm}', 'month', /end with/], ['/m/{yyyy}/**', 'month', /needs \{mm\}/], ['/m/{yyyy}/{yyyy}/{mm}/**', 'month', /twice/], ['/m/*/{yyyy}/{mm}/**', 'month', /neither/]] as const) {
    t.throws(() => compilePeriodPattern(p, unit), msg, `${p} is refused`)
  }
})

t.test('age header: strict parsing, and every refusal is a SealedIntegrityError', async (t) => {
  const id = newIdentity()
  const h = writeHeader([id.publicKey], '/medicall/a.wav')
  t.equal(h.bytes.length, 232, 'one recipient: 232 bytes')
  t.equal(openHeader(h.bytes, id, '/medicall/a.wav')?.length, 232)
  t.equal(openHeader(h.bytes.subarray(0, 100), id, '/medicall/a.wav'), undefined, 'partial: more is needed')
  const text = h.bytes.toString('latin1')
  const broken: Array<[string, string]> = [
    ['another version line', text.replace('v1', 'v2')],
    ['padding in base64', text.replace(/\n--- (\S+)\n/, (_m, mac: string) => `\n--- ${mac}=\n`)],
    ['a stanza body line over 64 columns', text.replace(/(-> X25519 \S+\n)(\S+)\n/, (_m, a: string, b: string) => `${a}${b}${'A'.repeat(30)}\n`)],
    ['a missing stanza body', text.replace(/(-> nasguard-path v1\n)\S+\n/, '$1')],
    ['another path binding', text]
  ]
  for (const [name, bad] of broken) {
    t.throws(() => openHeader(Buffer.from(bad, 'latin1'), id, name === 'another path binding' ? '/medicall/b.wav' : '/medicall/a.wav'), SealedIntegrityError, name)
  }
  t.throws(() => openHeader(h.bytes, newIdentity(), '/medicall/a.wav'), /not sealed to this period/, 'another identity')
  const noBinding = Buffer.from(text.replace(/-> nasguard-path v1\n\S+\n/, ''), 'latin1')
  t.throws(() => openHeader(noBinding, id, '/medicall/a.wav'), SealedIntegrityError, 'no binding (the MAC fails first, or the binding is missing)')
  t.throws(() => openHeader(Buffer.alloc(5000, 0x41), id, '/x'), /4096/, 'no header within 4 KiB')
  // Keys: age-keygen's own identity is read, and the encodings round-trip.
  t.equal(parseIdentity(encodeIdentity(id)).recipient, id.recipient)
  t.same(parseRecipient(id.recipient), id.publicKey)
  t.throws(() => parseRecipient(id.recipient.toUpperCase()), /lower case/)
  try {
    const out = execFileSync('age-keygen', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    const secret = out.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1')) as string
    const pub = /public key: (age1\S+)/.exec(out)?.[1]
    t.equal(parseIdentity(secret).recipient, pub, "age-keygen's identity gives age-keygen's recipient")
  } catch {
    t.comment('age-keygen is not installed')
  }
})

t.test('geometry and spans', async (t) => {
  for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 10 * CHUNK]) {
    const sealed = sealedSizeOf(232, size)
    const g = geometry(232, sealed)
    t.equal(g?.size, size, `${size}: size from the sealed size`)
    t.equal(g?.chunks, Math.max(1, Math.ceil(size / CHUNK)))
  }
  t.equal(geometry(232, 232 + NONCE_BYTES + 10), undefined, 'a last chunk shorter than a tag')
  t.equal(geometry(232, 232 + NONCE_BYTES + SEALED_CHUNK + 16), undefined, 'an empty last chunk after a full one')
  const g = geometry(232, sealedSizeOf(232, 3 * CHUNK + 7))!
  t.same(spanOf(g, 0, 0), { firstChunk: 0, lastChunk: 0, start: 248, end: 248 + SEALED_CHUNK - 1 })
  t.same(spanOf(g, CHUNK, 3 * CHUNK + 6), { firstChunk: 1, lastChunk: 3, start: 248 + SEALED_CHUNK, end: g.sealedSize - 1 })
  const empty = geometry(232, sealedSizeOf(232, 0))!
  t.same(spanOf(empty, 0, -1), { firstChunk: 0, lastChunk: 0, start: 248, end: 248 + 15 }, 'an empty file: its one empty chunk is still authenticated')
})

t.test('answers in plaintext terms', async (t) => {
  const v = { size: 1000, etag: '"e"', lastModified: 'Sun, 29 Nov 2026 10:15:00 GMT' }
  t.same(planAnswer(v, {}), { kind: 'body', status: 200, start: 0, end: 999 })
  t.same(planAnswer(v, { range: 'bytes=-10' }), { kind: 'body', status: 206, start: 990, end: 999 })
  t.same(planAnswer(v, { range: 'bytes=990-5000' }), { kind: 'body', status: 206, start: 990, end: 999 })
  t.same(planAnswer(v, { range: 'bytes=1000-' }), { kind: 'unsatisfiable' })
  t.same(planAnswer({ ...v, size: 0 }, { range: 'bytes=-5' }), { kind: 'unsatisfiable' })
  t.same(planAnswer(v, { range: 'bytes=0-1,5-6' }), { kind: 'body', status: 200, start: 0, end: 999 }, 'several ranges: the whole')
  t.same(planAnswer(v, { range: 'bytes=5-6', 'if-range': v.etag }), { kind: 'body', status: 206, start: 5, end: 6 }, 'the strong ETag: the range')
  t.same(planAnswer(v, { range: 'bytes=5-6', 'if-range': ` ${v.etag} ` }), { kind: 'body', status: 206, start: 5, end: 6 }, 'the strong ETag with spaces around it')
  t.same(planAnswer(v, { range: 'bytes=5-6', 'if-range': v.lastModified }), { kind: 'body', status: 200, start: 0, end: 999 }, 'a date (the NAS\'s, not authenticated) never matches: the whole')
  t.same(planAnswer(v, { range: 'bytes=5-6', 'if-range': 'W/"e"' }), { kind: 'body', status: 200, start: 0, end: 999 }, 'a weak If-Range never matches')
  t.same(planAnswer(v, { 'if-none-match': 'W/"e", "x"' }), { kind: 'not-modified' })
})

t.test('the keyring: 0700 and 0600, one key per period, never replaced', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-ring-')), 'ring')
  initKeyring(dir)
  const k = newPeriodKey(dir, 'month', '2026-11')
  t.match(k.keyId, /^2026-11:[0-9a-f]{16}$/)
  t.throws(() => newPeriodKey(dir, 'month', '2026-11'), /exists/, 'never replaced')
  t.throws(() => newPeriodKey(dir, 'month', '2026-13'), /invalid period/)
  t.equal(Keyring.load(dir).key('2026-11')?.keyId, k.keyId)
  chmodSync(join(dir, '2026-11.key'), 0o640)
  t.throws(() => Keyring.load(dir), /2026-11\.key is readable or writable by others \(mode 640\): chmod 600/)
  chmodSync(join(dir, '2026-11.key'), 0o600)
  chmodSync(dir, 0o755)
  t.throws(() => Keyring.load(dir), /chmod 700/)
  chmodSync(dir, 0o700)
  writeFileSync(join(dir, '2026-10.key'), 'AGE-SECRET-KEY-1NOTAKEY\n', { mode: 0o600 })
  t.throws(() => Keyring.load(dir), /2026-10\.key: not an age identity/)
})
