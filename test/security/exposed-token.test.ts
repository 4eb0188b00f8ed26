// A bearer token that verifies, sent in plain HTTP to the TLS port, crossed
// the network in the clear: it is revoked at once (auth.revocation.
// revokeExposed, on by default). The 400 says so; the token is refused over
// TLS right after, over HTTP/1.1 and HTTP/2, by this gateway and by another
// sharing Redis; a token without a jti goes by its subject and issue time;
// a token that is not ours revokes nothing; with revokeExposed off nothing
// is revoked. The token is never logged or audited (its jti and subject
// are, in a token-exposed record).
import { readFileSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createSigner } from 'fast-jwt'
import { denylistEntries } from '../../src/auth/revocation.js'
import type { AuditRecord } from '../../src/audit/writer.js'
import { SECRET, bearer, rawPlain, scrape, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { startRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const CODE = 'NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT'
const REVOKED = /is now revoked/

/** The plaintext request a misconfigured client (http:// on port 443) sends. */
function plain (token: string): string {
  return `GET ${PATH} HTTP/1.1\r\nHost: nas.example\r\nUser-Agent: agent-app\r\nAuthorization: Bearer ${token}\r\nAccept: */*\r\n\r\n`
}

/** The body of a raw answer. */
function bodyOf (text: string): { error?: string, message?: string } {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { error?: string, message?: string }
}

/** Status of a TLS request with the token, over each protocol. */
async function overTls (gw: TestGateway, token: string): Promise<number[]> {
  return await Promise.all(PROTOCOLS.map(async (p) => (await fetchAs(p, gw, PATH, bearer(token))).status))
}

function noTokenIn (t: Test, gw: TestGateway, token: string): void {
  const audit = readFileSync(join(gw.auditDir, 'audit.jsonl'), 'utf8')
  t.notOk(audit.includes(token), 'the audit trail does not hold the token')
  t.notOk(audit.includes(token.split('.')[2]), 'nor its signature')
  t.equal(gw.logs.filter((l) => l.includes(token.split('.')[2])).length, 0, 'no log line holds the token')
}

t.test('a valid token sent in plain HTTP is revoked: refused over TLS right after, over HTTP/1.1 and HTTP/2; the subject\'s other tokens go on', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const exposed = gw.token({ jti: 'exposed-1' })
  const other = gw.token({ jti: 'kept-1' })
  t.same(await overTls(gw, exposed), [200, 200], 'control: the token is good over TLS before')

  const res = await rawPlain(gw, plain(exposed))
  t.ok(res.text.startsWith('HTTP/1.1 400 '), 'plain HTTP is answered 400')
  const body = bodyOf(res.text)
  t.equal(body.error, CODE)
  t.match(body.message ?? '', REVOKED, `the answer says the token is revoked (${body.message})`)
  t.notOk(res.text.includes(exposed), 'and does not echo it')

  t.same(await overTls(gw, exposed), [401, 401], 'right after, the token is refused over TLS (h1, h2)')
  t.same(await overTls(gw, other), [200, 200], "the subject's other token (another jti) is still served")
  const record = await waitFor('the token-exposed record', () => gw.auditRecords().find((r) => r.event === 'token-exposed'))
  t.match(record, { event: 'token-exposed', subject: 'alice', jti: 'exposed-1', reason: /revoked/ }, 'audited with its subject and jti')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_exposed_tokens_total{outcome="revoked"}'), 1, 'counted')
  noTokenIn(t, gw, exposed)
  t.equal(nas.requests.filter((r) => r.headers.authorization !== undefined && String(r.headers.authorization).includes(exposed)).length, 0, 'the NAS never saw it')
})

t.test('a token without a jti goes by its subject and issue time; one that is not ours, or malformed, revokes nothing', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const now = Math.floor(Date.now() / 1000)
  const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
  const old = sign({ sub: 'bob', scope: 'recordings:read', iat: now - 30, exp: now + 600 })
  const newer = sign({ sub: 'bob', scope: 'recordings:read', iat: now, exp: now + 600 })
  t.match(bodyOf((await rawPlain(gw, plain(old))).text).message ?? '', REVOKED, 'a token without a jti is revoked too')
  t.same(await overTls(gw, old), [401, 401], 'it is refused over TLS')
  t.same(await overTls(gw, newer), [200, 200], "the subject's token issued after it is still served")
  t.same(await overTls(gw, gw.token({ sub: 'carol' })), [200, 200], 'another subject is untouched')

  const forged = createSigner({ key: 'another-secret-that-is-long-enough-xxxxxxxx', algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', jti: 'forged', exp: now + 600 })
  const expired = sign({ sub: 'dave', scope: 'recordings:read', jti: 'old', iat: now - 7200, exp: now - 3600 })
  const rows = [
    ['a token signed with another key', plain(forged)],
    ['an expired token', plain(expired)],
    ['a malformed token', plain('not.a.token')],
    ['a request without a token', `GET ${PATH} HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a token in a header that is not Authorization', `GET ${PATH} HTTP/1.1\r\nX-Authorization: Bearer ${gw.token({ jti: 'x-header' })}\r\n\r\n`]
  ] as const
  for (const [name, payload] of rows) {
    const r = await rawPlain(gw, payload)
    t.equal(bodyOf(r.text).error, CODE, `${name}: 400 ${CODE}`)
    t.notMatch(bodyOf(r.text).message ?? '', REVOKED, `${name}: nothing is said revoked`)
  }
  const m = await scrape(gw.adminUrl)
  t.equal(m.get('nasguard_exposed_tokens_total{outcome="revoked"}'), 1, 'only the one token was revoked')
  // A fetch's access record is durable before its answer, and the trail keeps
  // order: every record queued before it (a token-exposed one is queued
  // before the client is answered) is on disk once it has been served.
  t.same(await overTls(gw, gw.token({ jti: 'x-header' })), [200, 200], 'the token in another header was not revoked')
  t.equal(gw.auditRecords().filter((r) => r.event === 'token-exposed').length, 1, 'and audited')
})

t.test('auth.revocation.revokeExposed: false revokes nothing', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { authExtra: { revocation: { revokeExposed: false } } })
  const token = gw.token({ jti: 'kept' })
  const r = await rawPlain(gw, plain(token))
  t.equal(bodyOf(r.text).error, CODE)
  t.notMatch(bodyOf(r.text).message ?? '', REVOKED)
  t.same(await overTls(gw, token), [200, 200], 'the token is still served')
})

t.test('two gateways on one Redis: a token sent in plain HTTP to one is refused by the other', async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t)
  const [gw1, gw2] = [await startTestGateway(t, nas, { state: { redis: { url: redis.url } } }), await startTestGateway(t, nas, { state: { redis: { url: redis.url } } })]
  const token = gw1.token({ jti: 'shared-exposed' })
  await waitFor('both gateways to trust Redis', async () => (await overTls(gw1, token)).concat(await overTls(gw2, token)).every((s) => s === 200) ? true : undefined)
  t.match(bodyOf((await rawPlain(gw1, plain(token))).text).message ?? '', REVOKED, 'gateway 1 revokes it')
  const refused = await waitFor('gateway 2 to refuse it', async () => (await overTls(gw2, token)).every((s) => s === 401) ? true : undefined, { tries: 100, intervalMs: 20 })
  t.ok(refused, 'gateway 2 refuses it over TLS (h1, h2): published through Redis')
  t.same(await overTls(gw1, token), [401, 401], 'and so does gateway 1')
})

t.test('a replayed token is revoked once; a half-closing client is answered; a damaged denylist is never rewritten by the gateway', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const file = join(gw.auditDir, 'revoked.jsonl')
  const token = gw.token({ jti: 'replayed' })
  // The same token on 20 connections, 5 at a time: one entry, one record.
  for (let i = 0; i < 20; i += 5) {
    const answers = await Promise.all(Array.from({ length: 5 }, async () => await rawPlain(gw, plain(token))))
    t.ok(answers.every((a) => REVOKED.test(bodyOf(a.text).message ?? '')), `sends ${i + 1}-${i + 5}: each answer says revoked`)
  }
  t.equal(denylistEntries(file).length, 1, 'the denylist holds one entry for it, not 20')
  // Served after every answer above: the records queued before those answers are on disk.
  t.same(await overTls(gw, gw.token({ jti: 'after-the-replays' })), [200, 200], 'a fetch after the replays is served')
  t.equal(gw.auditRecords().filter((r) => r.event === 'token-exposed').length, 1, 'one token-exposed record')

  // printf '...' | nc: the request, then FIN at once.
  const halfClosed = await new Promise<string>((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port: gw.port }, () => { s.end(plain(gw.token({ jti: 'half-closed' }))) })
    let text = ''
    s.on('data', (c: Buffer) => { text += c.toString('latin1') })
    s.on('close', () => resolve(text))
    s.on('error', reject)
  })
  t.match(bodyOf(halfClosed).message ?? '', REVOKED, 'a client that half-closed after its request is answered, and its token revoked')

  // A damaged denylist: every token request fails closed (503); a token sent in plain HTTP must not make the gateway "repair" it.
  const revokedBefore = gw.token({ jti: 'revoked-before' })
  const other = gw.token({ jti: 'exposed-while-damaged' })
  await rawPlain(gw, plain(revokedBefore))
  writeFileSync(file, readFileSync(file).subarray(0, 40))
  await waitFor('the gateway to fail closed on the damaged denylist', async () => (await overTls(gw, gw.token())).every((s) => s === 503) ? true : undefined)
  const r = await rawPlain(gw, plain(other))
  t.notMatch(bodyOf(r.text).message ?? '', REVOKED, 'the exposed token is not said revoked')
  t.equal(readFileSync(file).length, 40, 'the damaged denylist was not rewritten')
  t.same(await overTls(gw, revokedBefore), [503, 503], 'the token revoked before is still refused (503: closed), not served')
  t.equal((await scrape(gw.adminUrl)).get('nasguard_exposed_tokens_total{outcome="failed"}'), 1, 'counted as failed')
  t.ok(gw.logs.some((l) => /could NOT be revoked/.test(l)), 'and logged as an error')
})

t.test('a token-exposed record the trail refuses when it comes is kept, and written once the trail takes records again', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const audit = gw.gateway.audit
  const refusing = { on: true }
  const append = audit.append.bind(audit)
  audit.append = async (record: AuditRecord) => {
    if (refusing.on && record.event === 'token-exposed') throw Object.assign(new Error('no space left (simulated)'), { code: 'ENOSPC' })
    return await append(record)
  }
  const token = gw.token({ jti: 'exposed-while-full' })
  t.match(bodyOf((await rawPlain(gw, plain(token))).text).message ?? '', REVOKED, 'revoked: the denylist took it')
  await waitFor('the failure in the log', () => gw.logs.some((l) => l.includes('audit record could not be written')) ? true : undefined)
  t.notOk(gw.auditRecords().some((r) => r.event === 'token-exposed'), 'not in the trail yet')
  refusing.on = false
  const record = await waitFor('the token-exposed record, written late', () => gw.auditRecords().find((r) => r.event === 'token-exposed'), { tries: 100, intervalMs: 50 })
  t.match(record, { subject: 'alice', jti: 'exposed-while-full', reason: /revoked/ }, 'with its subject and jti')
  noTokenIn(t, gw, token)
})
