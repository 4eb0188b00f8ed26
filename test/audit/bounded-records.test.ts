// Bounded audit records over real sockets, HTTP/1.1 and HTTP/2: a client
// controls a token's sub and jti, the User-Agent and the request target, and
// none of them can make an audit line grow past its bounds (each cut field is
// named in `truncated`). And no grant value (nor a bearer token) put where
// it does not belong (path parameters, a path segment, percent-encoded, a
// User-Agent) is ever stored in the audit trail.
import t, { type Test } from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { bearer, post, startStubNas, startTestGateway, type Response, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const GRANT_SECRET = 'grant-secret-'.padEnd(48, 'x')
const KB12 = 12 * 1024
const MAX_LINE = 4096


function errorOf (res: Response): unknown {
  try {
    return (JSON.parse(res.body.toString()) as Record<string, unknown>).error
  } catch {
    return undefined
  }
}

/** Every line of every audit file (the trail's .jsonl files), raw. */
function auditLines (gw: TestGateway): string[] {
  return readdirSync(gw.auditDir)
    .filter((f) => f.endsWith('.jsonl') && statSync(join(gw.auditDir, f)).isFile())
    .flatMap((f) => readFileSync(join(gw.auditDir, f), 'utf8').split('\n').filter(Boolean))
}

/** Everything in the audit directory, every file, as text. */
function auditText (gw: TestGateway): string {
  return readdirSync(gw.auditDir)
    .filter((f) => statSync(join(gw.auditDir, f)).isFile())
    .map((f) => readFileSync(join(gw.auditDir, f), 'latin1')).join('\n')
}

async function recordOf (gw: TestGateway, event: string, requestId: unknown): Promise<Record<string, unknown>> {
  return await waitFor(`the ${event} record of ${String(requestId)}`, () =>
    gw.auditRecords().find((r) => r.event === event && r.requestId === requestId))
}

function allLinesBounded (t: Test, gw: TestGateway, what: string): void {
  const lines = auditLines(gw)
  t.ok(lines.length > 0, `${what}: there are audit lines`)
  const longest = Math.max(...lines.map((l) => Buffer.byteLength(l)))
  t.ok(longest < MAX_LINE, `${what}: every audit line is under 4 KB (longest ${longest} bytes)`)
}

/** A sub/jti (each) far past their bounds whose token still fits the gateway's 16 KiB header limit (larger headers get 431). */
const H1_CLAIM = 5 * 1024

function claimSize (_proto: Protocol): number {
  return H1_CLAIM
}

t.test('a token with a huge sub and jti (allowed, 200): the access and fetch records are bounded', async (t) => {
  for (const proto of PROTOCOLS) {
    await t.test(proto, async (t) => {
      const nas = await startStubNas(t)
      const gw = await startTestGateway(t, nas)
      const n = claimSize(proto)
      const sub = 'S'.repeat(n)
      const jti = 'J'.repeat(n)
      const res = await fetchAs(proto, gw, PATH, bearer(gw.token({ sub, jti })))
      t.equal(res.status, 200, `a ${n}-character sub and jti: 200`)
      t.equal(nas.requests.length, 1)
      const id = res.headers['x-request-id']
      for (const event of ['access', 'fetch']) {
        const r = await recordOf(gw, event, id)
        t.equal((r.subject as string).length, 256, `${event}: subject cut to 256`)
        t.equal((r.jti as string).length, 128, `${event}: jti cut to 128`)
        t.ok(sub.startsWith(r.subject as string), `${event}: the subject kept is a prefix`)
        t.ok(Array.isArray(r.truncated), `${event}: truncated is a list`)
        t.ok((r.truncated as string[]).includes('subject'), `${event}: truncated names subject`)
        t.ok((r.truncated as string[]).includes('jti'), `${event}: truncated names jti`)
        t.match(r, { path: PATH, rule: 'recordings', auth: 'jwt' }, `${event}: the rest of the record is intact`)
      }
      allLinesBounded(t, gw, proto)
    })
  }
})

t.test('a token with a huge sub and jti that is refused (no rule, 403): the refusal record is bounded', async (t) => {
  for (const proto of PROTOCOLS) {
    await t.test(proto, async (t) => {
      const nas = await startStubNas(t)
      const gw = await startTestGateway(t, nas)
      const n = claimSize(proto)
      const res = await fetchAs(proto, gw, '/nowhere/2016/a.wav', bearer(gw.token({ sub: 'S'.repeat(n), jti: 'J'.repeat(n) })))
      t.equal(res.status, 403)
      t.equal(errorOf(res), 'NASGUARD_ERR_NO_RULE')
      t.equal(nas.requests.length, 0, 'the NAS was not asked')
      const r = await recordOf(gw, 'refusal', res.headers['x-request-id'])
      t.equal((r.subject as string).length, 256, 'subject cut to 256')
      t.equal((r.jti as string).length, 128, 'jti cut to 128')
      t.ok((r.truncated as string[] | undefined)?.includes('subject'), 'truncated names subject')
      t.ok((r.truncated as string[] | undefined)?.includes('jti'), 'truncated names jti')
      t.match(r, { status: 403, reason: 'NASGUARD_ERR_NO_RULE', path: '/nowhere/2016/a.wav' })
      allLinesBounded(t, gw, proto)
    })
  }
})

t.test('a 12 KB User-Agent is bounded and named in truncated (allowed and refused requests)', async (t) => {
  for (const proto of PROTOCOLS) {
    await t.test(proto, async (t) => {
      const nas = await startStubNas(t)
      const gw = await startTestGateway(t, nas)
      const ua = 'U'.repeat(KB12)
      const ok = await fetchAs(proto, gw, PATH, { ...bearer(gw.token()), 'user-agent': ua })
      t.equal(ok.status, 200)
      const refused = await fetchAs(proto, gw, PATH, { 'user-agent': ua })
      t.equal(refused.status, 401)
      t.equal(nas.requests.length, 1, 'only the allowed request reached the NAS')
      for (const [event, id] of [['access', ok.headers['x-request-id']], ['fetch', ok.headers['x-request-id']], ['refusal', refused.headers['x-request-id']]] as const) {
        const r = await recordOf(gw, event, id)
        t.equal((r.userAgent as string).length, 256, `${event}: userAgent cut to 256`)
        t.same(r.truncated, ['userAgent'], `${event}: truncated names userAgent`)
      }
      allLinesBounded(t, gw, proto)
    })
  }
})

t.test('no grant value, and no bearer token, is ever stored in the audit trail', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { authExtra: { grants: { secret: GRANT_SECRET, ttlSec: 120 } } })
  const minted = await post(gw, '/_nasguard/grants', { path: PATH }, bearer(gw.token({ sub: 'alice' })))
  t.equal(minted.status, 201, `grant minted: ${minted.body.toString()}`)
  const url = (JSON.parse(minted.body.toString()) as { url: string }).url
  const grant = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('grant') ?? ''
  const [payload, mac] = grant.split('.')
  t.ok(payload?.startsWith('eyJ') && mac?.length === 43, 'a grant: payload.mac')
  t.equal((await fetchAs('h1', gw, url)).status, 200, 'control: the grant works where it belongs')
  const served = nas.requests.length

  // Every byte percent-encoded (dots too: refused as an encoded dot), and
  // everything but the dot (decodes to a canonical path holding the grant).
  const pct = (s: string): string => [...Buffer.from(s)].map((b) => '%' + b.toString(16).padStart(2, '0').toUpperCase()).join('')
  const pctButDots = grant.split('.').map(pct).join('.')
  const bearerToken = gw.token({ sub: 'alice', jti: 'jti-in-path' })
  const [, jwtPayload, jwtSig] = bearerToken.split('.')
  const token = bearer(gw.token({ sub: 'bob' }))

  const table: Array<{ what: string, path: string, headers?: Record<string, string>, status: number, error: string }> = [
    { what: 'path parameters', path: `${PATH};grant=${grant}`, status: 400, error: 'NASGUARD_ERR_BAD_PATH' },
    { what: 'path parameters, with a token', path: `${PATH};grant=${grant}`, headers: token, status: 400, error: 'NASGUARD_ERR_BAD_PATH' },
    { what: 'percent-encoded path segment', path: `/medicall/2016/01/01/${pct(grant)}.wav`, status: 400, error: 'NASGUARD_ERR_BAD_PATH' },
    { what: 'percent-encoded path segment (dot left)', path: `/medicall/2016/01/01/${pctButDots}.wav`, status: 401, error: 'NASGUARD_ERR_TOKEN_MISSING' },
    { what: 'percent-encoded segment of a path no rule matches, with a token', path: `/nowhere/${pctButDots}.wav`, headers: token, status: 403, error: 'NASGUARD_ERR_NO_RULE' },
    { what: 'a path segment of a path no rule matches', path: `/nowhere/${grant}.wav`, status: 401, error: 'NASGUARD_ERR_TOKEN_MISSING' },
    { what: 'a path segment of a path no rule matches, with a token', path: `/nowhere/${grant}.wav`, headers: token, status: 403, error: 'NASGUARD_ERR_NO_RULE' },
    { what: 'a grant in the query of a path no rule matches, with a token', path: `/nowhere/a.wav?grant=${grant}`, headers: token, status: 403, error: 'NASGUARD_ERR_NO_RULE' },
    { what: 'the User-Agent of a refused request', path: PATH, headers: { 'user-agent': `player/1 ${grant}` }, status: 401, error: 'NASGUARD_ERR_TOKEN_MISSING' },
    { what: 'the User-Agent of a refused request (percent-encoded)', path: PATH, headers: { 'user-agent': `player/1 ${pct(grant)}` }, status: 401, error: 'NASGUARD_ERR_TOKEN_MISSING' },
    { what: 'a bearer token in the path, no auth', path: `/medicall/${bearerToken}.wav`, status: 401, error: 'NASGUARD_ERR_TOKEN_MISSING' }
  ]
  const ids: unknown[] = []
  for (const proto of PROTOCOLS) {
    for (const row of table) {
      const res = await fetchAs(proto, gw, row.path, row.headers ?? {})
      t.equal(res.status, row.status, `${proto} ${row.what}: ${row.status}`)
      t.equal(errorOf(res), row.error, `${proto} ${row.what}: ${row.error}`)
      ids.push(res.headers['x-request-id'])
    }
  }
  t.equal(nas.requests.length, served, 'none of them reached the NAS')
  // The refusal records are written after the answers: wait for all of them.
  const refusals = await waitFor('every refusal record', () => {
    const r = gw.auditRecords().filter((r) => r.event === 'refusal' && ids.includes(r.requestId))
    return r.length >= ids.length ? r : undefined
  })
  t.equal(refusals.length, ids.length, 'each refusal is audited')

  const text = auditText(gw)
  t.ok(text.length > 0)
  t.notOk(text.includes(payload), 'the grant\'s payload is nowhere in the audit files')
  t.notOk(text.includes(mac), 'the grant\'s MAC is nowhere in the audit files')
  t.notOk(text.includes(pct(payload).slice(0, 60)), 'nor its percent-encoded payload')
  t.notOk(text.includes(jwtPayload), 'the bearer token\'s payload is nowhere in the audit files')
  t.notOk(text.includes(jwtSig), 'the bearer token\'s signature is nowhere in the audit files')
  t.notOk(text.includes('grant='), 'no grant= parameter')
  const logs = gw.logs.join('\n')
  t.notOk(logs.includes(payload) || logs.includes(mac), 'nor in the log')
  t.notOk(logs.includes(jwtPayload) || logs.includes(jwtSig), 'no bearer token in the log')
})
