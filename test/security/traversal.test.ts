// Path traversal and non-canonical paths, sent as raw request lines over TLS
// so no client normalises them. Every one is refused with a valid token in
// hand, never reaches the NAS, and a 400 BAD_PATH refusal is audited.
import t from 'tap'
import { rawTls, startStubNas, startTestGateway, statusOf } from '../helpers/gateway.js'
import { parseRaw, poll } from '../helpers/raw-http.js'

const BAD_PATH = 'NASGUARD_ERR_BAD_PATH'
const BAD_REQUEST = 'NASGUARD_ERR_BAD_REQUEST'
const NO_RULE = 'NASGUARD_ERR_NO_RULE'
const HIDDEN = 'NASGUARD_ERR_HIDDEN_PATH'

interface Row {
  /** What the row is about. */
  name: string
  /** The request target exactly as it goes on the request line. */
  target: string
  /** Accepted [status, error code] pairs. Default: 400 BAD_PATH only. */
  allow?: Array<[number, string]>
}

const LONG = 'a'.repeat(1100)

const rows: Row[] = [
  // Raw dot segments.
  { name: 'raw ..', target: '/medicall/../etc/passwd.wav' },
  { name: 'raw .. twice', target: '/medicall/2016/../../secret/x.wav' },
  { name: 'raw .. at the end', target: '/medicall/2016/..' },
  { name: 'raw . then ..', target: '/medicall/./../secret/x.wav' },
  // Encoded dots.
  { name: '%2e%2e', target: '/medicall/%2e%2e/etc/passwd.wav' },
  { name: '%2E%2E', target: '/medicall/%2E%2E/secret/x.wav' },
  { name: '.%2e', target: '/medicall/.%2e/secret/x.wav' },
  { name: '%2e.', target: '/medicall/%2e./secret/x.wav' },
  { name: '%2E. upper case', target: '/medicall/2016/%2E./../secret/x.wav' },
  { name: '%2e single dot segment', target: '/medicall/%2e/a.wav' },
  // Double encoding.
  { name: '%252e%252e (double encoding)', target: '/medicall/%252e%252e/secret/x.wav' },
  { name: '%252E%252E%252F (double encoding with slash)', target: '/medicall/%252E%252E%252Fsecret%252Fx.wav' },
  { name: '%25 alone (encoded percent)', target: '/medicall/%25/x.wav' },
  // Overlong UTF-8 and Unicode look-alikes of dot and slash.
  { name: '%c0%ae%c0%ae (overlong UTF-8 dots)', target: '/medicall/%c0%ae%c0%ae/secret/x.wav' },
  { name: '%C0%AE%C0%AE upper case', target: '/medicall/%C0%AE%C0%AE/secret/x.wav' },
  { name: '%e0%80%ae (3-byte overlong dot)', target: '/medicall/%e0%80%ae%e0%80%ae/secret/x.wav' },
  { name: '%c0%af (overlong slash)', target: '/medicall/..%c0%afsecret/x.wav' },
  { name: '%ef%bc%8e%ef%bc%8e (full-width dots)', target: '/medicall/%ef%bc%8e%ef%bc%8e/secret/x.wav' },
  { name: 'full-width dots and full-width solidus', target: '/medicall/%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret%EF%BC%8Fx.wav' },
  { name: '%e2%80%a4%e2%80%a4 (one-dot leaders)', target: '/medicall/%e2%80%a4%e2%80%a4/secret/x.wav' },
  { name: '%ef%b9%92 (small full stop)', target: '/medicall/%ef%b9%92%ef%b9%92/secret/x.wav' },
  { name: '%uff0e (IIS-style %u)', target: '/medicall/%uff0e%uff0e/secret/x.wav' },
  { name: '%u002e%u002e', target: '/medicall/%u002e%u002e/secret/x.wav' },
  // Encoded separators.
  { name: '..%2f', target: '/medicall/..%2fsecret/x.wav' },
  { name: '..%2F', target: '/medicall/..%2Fsecret/x.wav' },
  { name: '%2e%2e%2f', target: '/medicall/%2e%2e%2fsecret%2fx.wav' },
  { name: '%2F inside a name', target: '/medicall/2016%2F..%2F..%2Fsecret/x.wav' },
  { name: '..%5c', target: '/medicall/..%5csecret/x.wav' },
  { name: '%5C%2e%2e%5C', target: '/medicall/%5C%2e%2e%5Csecret%5Cx.wav' },
  // Raw backslashes (the parser may refuse them first; either way 400).
  { name: 'raw backslash ..\\', target: '/medicall/..\\secret/x.wav', allow: [[400, BAD_PATH], [400, BAD_REQUEST]] },
  { name: 'raw backslashes only', target: '/medicall\\..\\secret\\x.wav', allow: [[400, BAD_PATH], [400, BAD_REQUEST]] },
  // Path parameters.
  { name: ';x=1 path parameter', target: '/medicall/a.wav;x=1' },
  { name: '..;/ (Tomcat-style)', target: '/medicall/..;/secret/x.wav' },
  { name: ';/ on the first segment', target: '/medicall;/../secret/x.wav' },
  // Decodes to the name `..;`: canonical, but a hidden name no rule opens.
  { name: '%3b encoded semicolon', target: '/medicall/..%3b/secret/x.wav', allow: [[403, NO_RULE], [403, HIDDEN]] },
  // NUL and other control characters.
  { name: '%00 after the extension', target: '/medicall/x.wav%00.txt' },
  { name: '%00 in a dot segment', target: '/medicall/..%00/secret/x.wav' },
  { name: '%0a', target: '/medicall/a%0a.wav' },
  { name: '%0d%0a (header injection)', target: '/medicall/a.wav%0d%0aX-Evil:%201' },
  { name: '%0d', target: '/medicall/a%0d.wav' },
  { name: '%09', target: '/medicall/a%09.wav' },
  { name: '%7f (DEL)', target: '/medicall/a%7f.wav' },
  { name: '%c2%85 (C1 control, NEL)', target: '/medicall/a%c2%85.wav' },
  // Empty and single-dot segments.
  { name: '// run', target: '/medicall//../secret/x.wav' },
  { name: '// at the start', target: '//secret/x.wav' },
  { name: '/// run inside', target: '/medicall/2016///a.wav' },
  { name: '/./', target: '/medicall/./a.wav' },
  { name: '/. at the end', target: '/medicall/.' },
  // Broken percent-encoding and invalid UTF-8.
  { name: '%ff (invalid UTF-8)', target: '/medicall/%ff.wav' },
  { name: '%c3 (truncated UTF-8)', target: '/medicall/%c3.wav' },
  { name: '%ed%a0%80 (UTF-16 surrogate)', target: '/medicall/%ed%a0%80.wav' },
  { name: '%zz', target: '/medicall/%zz.wav' },
  { name: '%4 (one hex digit)', target: '/medicall/%4.wav' },
  { name: '% at the end', target: '/medicall/a.wav%' },
  // Unicode normalisation.
  { name: 'e%CC%81 (combining acute, not NFC)', target: '/medicall/e%CC%81.wav' },
  { name: 'caf + e + combining acute', target: '/medicall/2016/cafe%cc%81/a.wav' },
  { name: '%ef%ac%81 (fi ligature, not NFKC)', target: '/medicall/%ef%ac%81le.wav' },
  // Length, forms of request target, odd characters.
  { name: 'path longer than 1024 bytes', target: `/medicall/${LONG}.wav` },
  { name: 'long path that climbs out', target: `/medicall/${'a/'.repeat(520)}${'../'.repeat(521)}secret/x.wav` },
  { name: 'absolute form http://evil', target: 'http://evil/medicall/a.wav' },
  { name: 'absolute form with traversal', target: 'https://localhost/medicall/../secret/x.wav' },
  { name: 'asterisk form', target: '*' },
  { name: 'no leading slash', target: 'medicall/a.wav', allow: [[400, BAD_PATH], [400, BAD_REQUEST]] },
  { name: 'fragment that climbs out', target: '/medicall/a.wav#/../../secret/x.wav' },
  // Canonical, but refused by policy: hidden and dot-only names.
  // Not dot segments but hidden names; a folding NAS (the default) strips their trailing dots: 400.
  { name: '... is a hidden name, not a dot segment', target: '/medicall/.../secret/x.wav', allow: [[403, NO_RULE], [403, HIDDEN], [400, BAD_PATH]] },
  { name: '.... is a hidden name', target: '/medicall/..../x.wav', allow: [[403, NO_RULE], [403, HIDDEN], [400, BAD_PATH]] },
  { name: 'outside every rule', target: '/secret/x.wav', allow: [[403, NO_RULE]] }
]

function rawGet (target: string, token: string): string {
  return `GET ${target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`
}

t.test('traversal and non-canonical paths are refused before the NAS, and audited', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  t.ok(rows.length >= 40, `at least 40 variants (${rows.length})`)

  const badPath: Array<{ name: string, target: string, id: string | undefined }> = []
  for (const row of rows) {
    const before = nas.requests.length
    const { text } = await rawTls(gw, rawGet(row.target, gw.token()))
    const res = parseRaw(text)
    const allow = row.allow ?? [[400, BAD_PATH]]
    const code = String(res.json?.error)
    t.equal(statusOf(text), res.status, `${row.name}: status line parsed`)
    t.ok(allow.some(([s, c]) => s === res.status && c === code),
      `${row.name}: answered one of ${allow.map(([s, c]) => `${s} ${c}`).join(' | ')} (got ${res.status} ${code})`)
    t.equal(nas.requests.length - before, 0, `${row.name}: nothing reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.name}: the NAS has still seen nothing`)
    // Every answer of the TLS listener carries HSTS; answers made by the
    // app (not the raw parser) also carry the request id that ties them to
    // the audit record, and the other response-hardening headers.
    const hardening = code === BAD_REQUEST
      ? { hsts: /^max-age=\d+/.test(res.headers['strict-transport-security'] ?? '') }
      : {
          hsts: /^max-age=\d+/.test(res.headers['strict-transport-security'] ?? ''),
          requestId: /^[0-9a-f-]{36}$/.test(res.headers['x-request-id'] ?? ''),
          nosniff: res.headers['x-content-type-options'] === 'nosniff',
          noStore: res.headers['cache-control'] === 'no-store'
        }
    t.same(hardening, Object.fromEntries(Object.keys(hardening).map((k) => [k, true])), `${row.name}: the refusal carries the hardening headers`)
    if (res.status === 400 && code === BAD_PATH) badPath.push({ name: row.name, target: row.target, id: res.headers['x-request-id'] })
  }

  t.ok(badPath.length >= 40, `at least 40 variants answered 400 BAD_PATH (${badPath.length})`)
  // Refusals are appended to the audit trail after the answer: wait until
  // there is one per BAD_PATH answer. A record is found by the response's
  // request id, or (when the answer lacks one) by the raw path it holds.
  const refusals = (): Array<Record<string, unknown>> => gw.auditRecords().filter((r) => r.reason === BAD_PATH)
  await poll('one refusal record per BAD_PATH answer', () => refusals().length >= badPath.length ? true : undefined).catch(() => {})
  const records = gw.auditRecords()
  for (const { name, target, id } of badPath) {
    const rec = records.find((r) => id !== undefined ? r.requestId === id : r.path === target.slice(0, 2048))
    t.ok(rec, `${name}: the refusal is in the audit trail`)
    t.equal(rec?.event, 'refusal', `${name}: audited as a refusal`)
    t.equal(rec?.reason, BAD_PATH, `${name}: audited with reason ${BAD_PATH}`)
    t.equal(rec?.status, 400, `${name}: audited with status 400`)
  }
  t.equal(records.filter((r) => r.event === 'access' || r.event === 'fetch').length, 0, 'no access or fetch record was written')
  t.equal(nas.requests.length, 0, 'the NAS saw nothing at all')
})

t.test('positive control: canonical paths reach the NAS re-encoded one fixed way, without the query string', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const cases: Array<{ target: string, upstream: string }> = [
    { target: '/medicall/2016/01/01/a%20b.wav', upstream: '/medicall/2016/01/01/a%20b.wav' },
    { target: '/medicall/2016/01/01/a%20b.wav?access_token=x&path=../../etc/passwd', upstream: '/medicall/2016/01/01/a%20b.wav' },
    { target: '/medicall/%41.wav', upstream: '/medicall/A.wav' },
    { target: '/medicall/%41.wav?x=1', upstream: '/medicall/A.wav' },
    { target: '/medicall/caf%c3%a9.wav?', upstream: '/medicall/caf%C3%A9.wav' },
    { target: '/medicall/2016/01/01/083012_46701234567.wav?download=1', upstream: '/medicall/2016/01/01/083012_46701234567.wav' }
  ]
  for (const c of cases) {
    const before = nas.requests.length
    const { text } = await rawTls(gw, rawGet(c.target, gw.token()))
    t.equal(statusOf(text), 200, `${c.target}: served`)
    t.equal(nas.requests.length - before, 1, `${c.target}: exactly one request reached the NAS`)
    const seen = nas.requests[nas.requests.length - 1]?.url
    t.equal(seen, c.upstream, `${c.target}: the NAS saw ${c.upstream} byte for byte`)
    t.notOk(seen?.includes('?'), `${c.target}: no query string was forwarded`)
  }
})
