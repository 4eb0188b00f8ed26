// Per-subject budgets end to end (issue 20): real TLS, real signed tokens,
// a stub NAS that counts what reaches it, every case over HTTP/1.1 and
// HTTP/2. A scraper walking distinct recordings is stopped at its
// recordingsPerHour, and the NAS never sees the request past it; a player
// seeking through one recording is not; windows slide (an injected clock);
// requestsPerMinute counts HEADs, bytesPerHour counts ended responses;
// grants spend their minter's budget; a rule's own perSubject overrides
// limits.perSubject budget by budget; a token and a client certificate of
// the same name keep separate ledgers. (Shared budgets: shared.test.ts and
// workers.test.ts.)
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { createCa, issueClientCert } from '../../src/tls/certificates.js'
import { RECORDING, bearer, post, scrape, startStubNas, startTestGateway, testCerts, type GatewayOverrides, type Response, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { HOUR_SEC, QUOTA, isQuota, listenerIsNotStopped, recording, retryAfter, scraperIsStopped } from './scenarios.js'
import { PROTOCOLS, fetchAs, keepAliveClient } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'
import { baseHeaders, h2Raw } from '../helpers/h2-raw.js'

const GRANT_SECRET = 'grant-secret-'.padEnd(48, 'x')
/** Recordings a scraper walks per protocol. */
const WALK = 1000
const BUDGET = 25

/** nasguard_quota_exceeded_total for that rule and budget (0 when never counted). */
async function quotaCount (gw: TestGateway, rule: string, budget: string): Promise<number> {
  const m = await scrape(gw.adminUrl)
  for (const [k, v] of m) {
    if (k.startsWith('nasguard_quota_exceeded_total{') && k.includes(`rule="${rule}"`) && k.includes(`budget="${budget}"`)) return v
  }
  return 0
}

/** Waits until the audit trail holds `n` records matching `match`, then returns them. */
async function records (gw: TestGateway, what: string, n: number, match: (r: Record<string, unknown>) => boolean): Promise<Array<Record<string, unknown>>> {
  return await waitFor(what, () => {
    const found = gw.auditRecords().filter(match)
    return found.length >= n ? found : undefined
  })
}

async function gateway (t: Test, o: GatewayOverrides): Promise<{ nas: StubNas, gw: TestGateway }> {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, o)
  return { nas, gw }
}

t.test(`a scraper walking ${WALK} distinct recordings is stopped at recordingsPerHour: the NAS sees exactly the budget`, async (t) => {
  const { nas, gw } = await gateway(t, { limits: { perSubject: { recordingsPerHour: BUDGET } } })
  let refusedSoFar = 0
  for (const proto of PROTOCOLS) {
    const subject = `scraper-${proto}`
    const auth = bearer(gw.token({ sub: subject }))
    const c = keepAliveClient(t, proto, gw)
    await scraperIsStopped(t, proto, { send: c.send, auth, nas, budget: BUDGET, walk: WALK })

    const refusals = await records(gw, `${proto}: the refusal records`, WALK - BUDGET, (r) => r.event === 'refusal' && r.subject === subject)
    t.equal(refusals.length, WALK - BUDGET, `${proto}: one refusal record per 429`)
    t.ok(refusals.every((r) => r.reason === QUOTA && r.budget === 'recordingsPerHour' && r.status === 429 && r.rule === 'recordings'), `${proto}: each with reason ${QUOTA}, budget recordingsPerHour, rule recordings`)
    refusedSoFar += WALK - BUDGET
    t.equal(await quotaCount(gw, 'recordings', 'recordingsPerHour'), refusedSoFar, `${proto}: nasguard_quota_exceeded_total{rule="recordings",budget="recordingsPerHour"} counts them`)
  }
  const metrics = await scrape(gw.adminUrl)
  t.equal(metrics.get('nasguard_quota_subjects_near_limit'), 2, 'both scrapers are near (at) their limit: a count')
})

t.test('a listener seeking through one recording with 500 Range requests is not stopped; another subject has its own budget', async (t) => {
  const { nas, gw } = await gateway(t, { limits: { perSubject: { recordingsPerHour: BUDGET } } })
  const one = recording(7)
  for (const proto of PROTOCOLS) {
    const c = keepAliveClient(t, proto, gw)
    const listener = bearer(gw.token({ sub: `listener-${proto}` }))
    await listenerIsNotStopped(t, proto, { send: c.send, auth: listener, nas, path: one })

    // Another subject spends its whole budget: the listener is untouched, and so is the next subject.
    const busy = bearer(gw.token({ sub: `busy-${proto}` }))
    const spent = []
    for (let i = 0; i <= BUDGET; i++) spent.push((await c.send(recording(100 + i), busy)).status)
    t.same(spent, [...new Array(BUDGET).fill(200), 429], `${proto}: another subject takes its own ${BUDGET} and is refused the next`)
    t.equal((await c.send(one, { ...listener, range: 'bytes=0-9' })).status, 206, `${proto}: the listener still plays`)
    const fresh = bearer(gw.token({ sub: `fresh-${proto}` }))
    t.equal((await c.send(recording(100 + BUDGET), fresh)).status, 200, `${proto}: a third subject gets the recording the busy one was refused`)
  }
})

t.test('windows slide: an hour after each recording its slot frees up, and Retry-After says when (injected clock)', async (t) => {
  let now = Date.UTC(2026, 0, 1, 12, 0, 0)
  const { nas, gw } = await gateway(t, { limits: { perSubject: { recordingsPerHour: 3 } }, clock: () => now })
  const MIN = 60_000
  for (const proto of PROTOCOLS) {
    const c = keepAliveClient(t, proto, gw)
    const auth = bearer(gw.token({ sub: `scraper-${proto}` }))
    const t0 = now
    const at = (ms: number): void => { now = t0 + ms }
    const fetch = async (i: number): Promise<Response> => await c.send(recording(200 + i), auth)

    at(0); t.equal((await fetch(1)).status, 200)
    at(10 * MIN + 250); t.equal((await fetch(2)).status, 200)
    at(20 * MIN + 500); t.equal((await fetch(3)).status, 200)
    at(30 * MIN + 100)
    let r = await fetch(4)
    t.ok(isQuota(r, HOUR_SEC), `${proto}: the fourth recording within the hour is refused`)
    // The first recording leaves the window at t0 + 60 min: 29 min 59.9 s from now, rounded up.
    t.ok(Math.abs(retryAfter(r) - (30 * 60 - 0.1)) <= 1, `${proto}: Retry-After ${retryAfter(r)} s is the time left until the first recording's hour ends`)
    at(60 * MIN - 1)
    r = await fetch(4)
    t.ok(isQuota(r, 1), `${proto}: a millisecond before the hour it is still refused, Retry-After 1 s`)
    const asked = nas.requests.length
    at(60 * MIN)
    t.equal((await fetch(4)).status, 200, `${proto}: once the first recording's hour has passed, a new one is served`)
    t.equal(nas.requests.length, asked + 1)
    // Sliding, not a fixed hour: only the first slot freed; the next frees an hour after the second recording.
    at(61 * MIN)
    r = await fetch(5)
    t.ok(isQuota(r, HOUR_SEC), `${proto}: the next one is refused again (a sliding window, not a reset)`)
    t.ok(Math.abs(retryAfter(r) - (70 * 60 + 0.25 - 61 * 60)) <= 1, `${proto}: Retry-After ${retryAfter(r)} s is the time left until the second recording's hour ends`)
    at(70 * MIN + 250)
    t.equal((await fetch(5)).status, 200, `${proto}: and is served when it said`)
    // The next protocol starts well past every window of this one.
    now = t0 + 3 * 60 * MIN
  }
})

t.test('requestsPerMinute counts every request (HEAD too); bytesPerHour lets responses through until the ended ones pass it', async (t) => {
  const L = RECORDING.length
  const { nas, gw } = await gateway(t, {
    limits: { perSubject: { requestsPerMinute: 3 } },
    policy: [
      { name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] },
      // bytesPerHour on a rule of its own, so requestsPerMinute does not get in the way.
      { name: 'stockholm', path: '/stockholm/**', scopes: ['recordings:read'], perSubject: { requestsPerMinute: 1000, bytesPerHour: 2 * L + 100 } }
    ]
  })
  for (const proto of PROTOCOLS) {
    const c = keepAliveClient(t, proto, gw)
    const auth = bearer(gw.token({ sub: `player-${proto}` }))
    const one = recording(300)
    const heads = []
    for (let i = 0; i < 3; i++) heads.push((await c.send(one, auth, 'HEAD')).status)
    t.same(heads, [200, 200, 200], `${proto}: three HEADs within the minute`)
    const asked = nas.requests.length
    let r = await c.send(one, auth)
    t.ok(isQuota(r, 60), `${proto}: the fourth request (a GET) is 429 with Retry-After within the minute`)
    r = await c.send(one, auth, 'HEAD')
    t.equal(r.status, 429, `${proto}: and so is a fifth (a HEAD)`)
    t.equal(retryAfter(r) > 0 && retryAfter(r) <= 60, true, `${proto}: HEAD's 429 carries Retry-After ${retryAfter(r)}`)
    t.equal(nas.requests.length, asked, `${proto}: neither reached the NAS`)
    const refusals = await records(gw, `${proto}: requestsPerMinute refusals`, 2, (x) => x.event === 'refusal' && x.subject === `player-${proto}`)
    t.ok(refusals.every((x) => x.reason === QUOTA && x.budget === 'requestsPerMinute'), `${proto}: audited with budget requestsPerMinute`)

    // bytesPerHour: 2 L + 100. Two whole recordings (2 L) and a 100-byte range (2 L + 100) pass; then it is spent.
    const sub = `listener-${proto}`
    const bytesAuth = bearer(gw.token({ sub }))
    const sthlm = recording(301, '/stockholm')
    const ended = async (n: number): Promise<void> => {
      // A response's bytes count once it ended: its fetch record is written in the same step.
      await records(gw, `${proto}: ${n} fetch records`, n, (x) => x.event === 'fetch' && x.subject === sub)
    }
    r = await c.send(sthlm, bytesAuth)
    t.equal(r.status, 200); await ended(1)
    r = await c.send(sthlm, bytesAuth)
    t.equal(r.status, 200, `${proto}: a second whole recording (2 L of ${2 * L + 100} bytes)`); await ended(2)
    r = await c.send(sthlm, { ...bytesAuth, range: 'bytes=0-99' })
    t.equal(r.status, 206, `${proto}: under the budget by 100 bytes, a 100-byte range still goes`); await ended(3)
    const before = nas.requests.length
    r = await c.send(sthlm, { ...bytesAuth, range: 'bytes=0-0' })
    t.ok(isQuota(r, HOUR_SEC), `${proto}: at ${2 * L + 100} bytes sent, the next request is 429`)
    t.equal(nas.requests.length, before, `${proto}: and did not reach the NAS`)
    const refusal = await records(gw, `${proto}: the bytesPerHour refusal`, 1, (x) => x.event === 'refusal' && x.subject === sub)
    t.match(refusal[0], { reason: QUOTA, budget: 'bytesPerHour', rule: 'stockholm' }, `${proto}: audited with budget bytesPerHour`)
  }
  t.equal(await quotaCount(gw, 'recordings', 'requestsPerMinute'), 4, 'nasguard_quota_exceeded_total{budget="requestsPerMinute"}')
  t.equal(await quotaCount(gw, 'stockholm', 'bytesPerHour'), 2, 'nasguard_quota_exceeded_total{budget="bytesPerHour"}')
})

t.test("grants spend their minter's recordingsPerHour; then the minter's own token is refused a new recording", async (t) => {
  const { nas, gw } = await gateway(t, {
    limits: { perSubject: { recordingsPerHour: 4 } },
    authExtra: { grants: { secret: GRANT_SECRET, ttlSec: 300 } }
  })
  for (const proto of PROTOCOLS) {
    const c = keepAliveClient(t, proto, gw)
    const minter = `minter-${proto}`
    const token = gw.token({ sub: minter })
    const urls: string[] = []
    for (let i = 0; i < 5; i++) {
      const res = await post(gw, '/_nasguard/grants', { path: recording(400 + i) }, bearer(token))
      t.equal(res.status, 201, `${proto}: grant ${i + 1} minted (minting takes no recording)`)
      urls.push((JSON.parse(res.body.toString()) as { url: string }).url)
    }
    const asked = nas.requests.length
    const used = []
    for (const url of urls.slice(0, 4)) used.push((await c.send(url)).status)
    t.same(used, [200, 200, 200, 200], `${proto}: four grants for four recordings are redeemed`)
    const fifth = await c.send(urls[4])
    t.ok(isQuota(fifth, HOUR_SEC), `${proto}: the fifth grant is refused: the minter's budget is spent`)
    const own = await c.send(recording(500), bearer(token))
    t.ok(isQuota(own, HOUR_SEC), `${proto}: and so is the minter's own token, for a new recording`)
    t.equal((await c.send(recording(400), bearer(token))).status, 200, `${proto}: a recording already taken through a grant costs nothing more`)
    t.equal(nas.requests.length - asked, 5, `${proto}: the NAS saw the four grants and the repeat only`)
    const refusals = await records(gw, `${proto}: the grant refusals`, 2, (x) => x.event === 'refusal' && x.subject === minter)
    t.same(refusals.map((x) => [x.reason, x.budget]), [[QUOTA, 'recordingsPerHour'], [QUOTA, 'recordingsPerHour']], `${proto}: both charged to the minter, audited with the budget`)
    // Another subject is not charged for the minter's grants.
    t.equal((await c.send(recording(500), bearer(gw.token({ sub: `other-${proto}` })))).status, 200, `${proto}: another subject gets the recording`)
  }
})

t.test("a rule's own perSubject overrides limits.perSubject for that rule only, budget by budget", async (t) => {
  const { gw } = await gateway(t, {
    limits: { perSubject: { recordingsPerHour: 2, requestsPerMinute: 8 } },
    policy: [
      { name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'], perSubject: { recordingsPerHour: 5 } },
      { name: 'stockholm', path: '/stockholm/**', scopes: ['recordings:read'] }
    ]
  })
  for (const proto of PROTOCOLS) {
    const c = keepAliveClient(t, proto, gw)
    // One subject per rule: a subject's recordings are counted across rules (see the README).
    const m = bearer(gw.token({ sub: `m-${proto}` }))
    const statuses = []
    for (let i = 0; i < 6; i++) statuses.push((await c.send(recording(600 + i), m)).status)
    t.same(statuses, [200, 200, 200, 200, 200, 429], `${proto}: the rule's own recordingsPerHour (5) applies to it, not limits' 2`)
    // requestsPerMinute comes from limits (the rule did not set it): 5 taken, 3 more, then refused.
    const repeats = []
    for (let i = 0; i < 4; i++) repeats.push((await c.send(recording(600), m)).status)
    t.same(repeats, [200, 200, 200, 429], `${proto}: limits' requestsPerMinute (8) still applies under the rule`)
    const s = bearer(gw.token({ sub: `s-${proto}` }))
    const other = []
    for (let i = 0; i < 3; i++) other.push((await c.send(recording(700 + i, '/stockholm'), s)).status)
    t.same(other, [200, 200, 429], `${proto}: the other rule keeps limits' recordingsPerHour (2)`)
  }
  t.equal(await quotaCount(gw, 'recordings', 'recordingsPerHour'), 2)
  t.equal(await quotaCount(gw, 'recordings', 'requestsPerMinute'), 2)
  t.equal(await quotaCount(gw, 'stockholm', 'recordingsPerHour'), 2)
})

t.test('a token whose sub is "CN=alice" and the certificate CN=alice keep separate ledgers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-ledgers-'))
  const ca = createCa('nasguard client CA')
  const alice = issueClientCert(ca, 'alice')
  const caFile = join(dir, 'client-ca.crt')
  writeFileSync(caFile, ca.certPem)
  const { nas, gw } = await gateway(t, {
    limits: { perSubject: { recordingsPerHour: 2 } },
    tls: { clientAuth: 'optional', clientCa: caFile },
    policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'], certs: ['CN=alice'] }]
  })
  for (const proto of PROTOCOLS) {
    const base = proto === 'h1' ? 800 : 900
    const token = bearer(gw.token({ sub: 'CN=alice' }))
    const byToken = []
    for (let i = 0; i < 3; i++) byToken.push((await fetchAs(proto, gw, recording(base + i), token)).status)
    t.same(byToken, [200, 200, 429], `${proto}: the token with sub "CN=alice" spends its own 2`)
    const asked = nas.requests.length
    const byCert = []
    for (let i = 0; i < 3; i++) byCert.push((await fetchAs(proto, gw, recording(base + 10 + i), {}, 'GET', alice)).status)
    t.same(byCert, [200, 200, 429], `${proto}: the certificate CN=alice still has its own 2, and is stopped at them`)
    t.equal(nas.requests.length - asked, 2, `${proto}: the NAS saw the certificate's two`)
    // The quota reset of a subject name resets both ledgers.
    await gw.gateway.quota.reset('CN=alice', 'test')
  }
  t.match(await gw.gateway.quota.usage('CN=alice'), { token: { used: { recordingsPerHour: 0 } }, certificate: { used: { recordingsPerHour: 0 } } }, 'a reset empties both ledgers')
})

t.test('config: budgets load with workers and with state.redis; limits.onStoreError is checked', async (t) => {
  const certs = testCerts()
  const base = (o: Record<string, unknown>): Record<string, unknown> => ({
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: 'x'.repeat(32) } },
    policy: [{ name: 'r', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: '/tmp/nasguard-audit' },
    ...o
  })
  const problems = (o: Record<string, unknown>): Array<{ key: string, reason: string }> => {
    try {
      loadConfig({ object: base(o), env: {} })
    } catch (err) {
      if (err instanceof ConfigError) return err.problems
      throw err
    }
    return []
  }
  const perSubject = { recordingsPerHour: 25 }
  t.same(problems({ limits: { perSubject } }), [], 'one process')
  t.same(problems({ workers: 2, limits: { perSubject } }), [], 'workers: the primary keeps them')
  t.same(problems({ state: { redis: { url: 'redis://127.0.0.1:6379' } }, limits: { perSubject, onStoreError: 'open' } }), [], 'state.redis, onStoreError open')
  t.equal(loadConfig({ object: base({ limits: { perSubject } }), env: {} }).limits.onStoreError, 'closed', 'onStoreError is closed by default')
  t.match(problems({ limits: { perSubject, onStoreError: 'maybe' } }), [{ key: 'limits.onStoreError' }], 'a wrong onStoreError names the key')
  t.match(problems({ limits: { perSubject: { recordingsPerHour: 0 } } }), [{ key: 'limits.perSubject.recordingsPerHour' }], 'a zero budget names the key')
})

// A client that takes part of each answer and leaves, then asks for the rest by Range. Over HTTP/2 it
// picks a stream window just short of the gateway's 64 KiB writes: a write completes only once all of
// it is sent, so the bytes it got were never confirmed, and a budget charged with confirmed bytes
// only would let it walk the whole recording for nothing. Over HTTP/1.1 it reads as much and closes.
const TAKE = 65000

/** Over HTTP/1.1: the status, and the body bytes read (at most `take`) before the client closed. */
function h1Take (gw: { port: number }, path: string, headers: Record<string, string>, take: number): Promise<{ status: number, bytes: number }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca), ALPNProtocols: ['http/1.1'] }, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
    })
    let got = Buffer.alloc(0)
    const done = (): void => {
      const end = got.indexOf('\r\n\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(got.toString('latin1'))?.[1] ?? 0)
      socket.destroy()
      resolve({ status, bytes: Math.min(take, end < 0 ? 0 : got.length - end - 4) })
    }
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      const end = got.indexOf('\r\n\r\n')
      if (end >= 0 && (got.length - end - 4 >= take || !got.subarray(0, 12).toString('latin1').includes('206'))) done()
    })
    socket.on('end', done)
    socket.on('error', reject)
  })
}

t.test('bytesPerHour: a client that takes part of each answer and asks for the rest by Range is stopped by its budget', async (t) => {
  const FILE = Buffer.alloc(4 * 1024 * 1024, 0x55)
  FILE.write('RIFF', 0, 'latin1')
  FILE.write('WAVE', 8, 'latin1')
  const nas = await startStubNas(t, (req, res) => {
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''))
    const start = m ? Number(m[1]) : 0
    res.writeHead(m ? 206 : 200, { 'content-type': 'audio/wav', 'content-length': String(FILE.length - start), ...(m ? { 'content-range': `bytes ${start}-${FILE.length - 1}/${FILE.length}` } : {}) })
    res.on('error', () => {})
    res.end(FILE.subarray(start))
  })
  const BYTES = 200_000
  const gw = await startTestGateway(t, nas, { limits: { perSubject: { bytesPerHour: BYTES } } })
  const path = recording(7)
  for (const proto of PROTOCOLS) {
    const subject = `walker-${proto}`
    const token = gw.token({ sub: subject })
    let received = 0
    let refused: number | undefined
    let served = 0
    for (let i = 0; i < 40 && refused === undefined; i++) {
      const range = `bytes=${received}-`
      const r = proto === 'h2'
        ? await h2Raw(gw, [{ headers: baseHeaders(path, [['authorization', `Bearer ${token}`], ['range', range]]) }], { windows: TAKE, leaveAfterBytes: TAKE, hangUp: 'reset', discardBody: true }).then((c) => ({ status: c.streams[0].status ?? 0, bytes: c.streams[0].bytes }))
        : await h1Take(gw, path, { authorization: `Bearer ${token}`, range }, TAKE)
      if (r.status === 429) refused = i
      else {
        t.equal(r.status, 206, `${proto}: ${range} is served until the budget is spent`)
        received += r.bytes
        served++
      }
    }
    t.ok(refused !== undefined, `${proto}: refused with 429 after ${String(refused)} answers (${received} bytes taken)`)
    // Each answer is charged at least what the client got; the last one let through may carry one more.
    t.ok(received <= BYTES + TAKE, `${proto}: the client took ${received} bytes, within the budget (${BYTES}) and one answer`)
    const fetches = await waitFor(`${proto}: the fetch records`, () => {
      const found = gw.auditRecords().filter((r) => r.event === 'fetch' && r.subject === subject)
      return found.length >= served ? found : undefined
    })
    const bound = fetches.reduce((a, r) => a + Number(r.bytes) + Number(r.unconfirmedBytes ?? 0), 0)
    t.ok(bound >= received, `${proto}: the records' bytes and unconfirmedBytes (${bound}) cover what the client took (${received})`)
  }
})
