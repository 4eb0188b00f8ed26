// Budgets shared by two gateways through one real Redis (state.redis):
// a scraper dealing its requests out over both gateways is stopped at its
// budget, and the NAS sees exactly the budget; a listener seeking over
// both is never stopped; what one gateway charged, the other's `quota`
// shows. While Redis is down, limits.onStoreError decides: closed (the
// default) refuses budgeted requests with 503 and the NAS is not asked;
// open lets them through, counted. Every case over HTTP/1.1 and HTTP/2.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCa, issueClientCert } from '../../src/tls/certificates.js'
import { RECORDING, bearer, scrape, startStubNas, startTestGateway, type Response, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs, keepAliveClient, type Protocol } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'
import { startRedis, type TestRedis } from '../helpers/redis.js'
import { json, listenerIsNotStopped, recording, roundRobin, scraperIsStopped, type Send } from './scenarios.js'

const BUDGET = 25
const WALK = 1000
const UNAVAILABLE = 'NASGUARD_ERR_BUDGETS_UNAVAILABLE'
// While Redis is down the shared revocations fail closed for tokens, so that case is told with a client certificate.
const dir = mkdtempSync(join(tmpdir(), 'nasguard-shared-budgets-'))
const clientCa = createCa('nasguard client CA')
const agent = issueClientCert(clientCa, 'agent')
const caFile = join(dir, 'client-ca.crt')
writeFileSync(caFile, clientCa.certPem)
const FLEET_KEY = join(dir, 'audit.key')
writeFileSync(FLEET_KEY, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })

/** Two gateways on one Redis; the rule "recordings" under `budgets`, the rule "open" under none. */
async function twoGateways (t: Test, redis: TestRedis, nas: StubNas, budgets: Record<string, number>, limits: Record<string, unknown> = {}): Promise<TestGateway[]> {
  return [await oneGateway(t, redis, nas, budgets, limits, 'gw1'), await oneGateway(t, redis, nas, budgets, limits, 'gw2')]
}

/** A gateway of the fleet: the fleet's audit key (the budgets' digests are keyed by it), unless given another. */
async function oneGateway (t: Test, redis: TestRedis, nas: StubNas, budgets: Record<string, number>, limits: Record<string, unknown>, instance: string, keyFile = FLEET_KEY): Promise<TestGateway> {
  return await startTestGateway(t, nas, {
    limits,
    policy: [
      { name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'], certs: ['CN=agent'], perSubject: budgets },
      { name: 'open', path: '/stockholm/**', scopes: ['recordings:read'], certs: ['CN=agent'] }
    ],
    tls: { clientAuth: 'optional', clientCa: caFile },
    state: { redis: { url: redis.url } },
    audit: { instance, keyFile }
  })
}

/** Keep-alive clients to every gateway, in turn. */
function overBoth (t: Test, proto: Protocol, gateways: TestGateway[]): Send {
  return roundRobin(gateways.map((gw) => keepAliveClient(t, proto, gw).send))
}

t.test(`two gateways on one Redis: a scraper walking ${WALK} recordings over both gets exactly ${BUDGET}; a listener over both is never stopped`, async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t)
  const gateways = await twoGateways(t, redis, nas, { recordingsPerHour: BUDGET })
  const [gw1, gw2] = gateways
  for (const proto of PROTOCOLS) {
    const send = overBoth(t, proto, gateways)
    await scraperIsStopped(t, `${proto}, over both gateways`, { send, auth: bearer(gw1.token({ sub: `scraper-${proto}` })), nas, budget: BUDGET, walk: WALK, first: proto === 'h1' ? 0 : 5000 })
    await listenerIsNotStopped(t, `${proto}, over both gateways`, { send, auth: bearer(gw1.token({ sub: `listener-${proto}` })), nas, path: recording(7) })
  }
  const shown = await gw2.gateway.quota.usage('scraper-h1')
  t.match(shown, { token: { used: { recordingsPerHour: BUDGET }, budgets: { recordingsPerHour: BUDGET } } }, "gateway 2's quota shows what the scraper took through both")
  t.equal((await scrape(gw1.adminUrl)).get('nasguard_quota_subjects_near_limit'), 2, 'the near gauge counts both scrapers once, on either gateway')
  t.equal((await scrape(gw2.adminUrl)).get('nasguard_quota_subjects_near_limit'), 2)
  // A reset through one gateway frees the scraper on both.
  t.equal(await gw1.gateway.quota.reset('scraper-h1', 'test'), true)
  const after = await Promise.all(gateways.map(async (gw, i) => (await keepAliveClient(t, 'h1', gw).send(recording(2000 + i), bearer(gw1.token({ sub: 'scraper-h1' })))).status))
  t.same(after, [200, 200], 'after a reset through gateway 1 the scraper fetches again through both')

  // A gateway with another audit key would keep ledgers of its own (a budget per key): it refuses instead.
  // Under onStoreError: open too: a mistake in the setup is no outage, and letting requests pass would switch the budgets off.
  for (const onStoreError of ['closed', 'open']) {
    const stranger = await oneGateway(t, redis, nas, { recordingsPerHour: BUDGET }, { onStoreError }, `gw3-${onStoreError}`, join(dir, `another-${onStoreError}.key`))
    const asked = nas.requests.length
    for (const proto of PROTOCOLS) {
      const res = await fetchAs(proto, stranger, recording(3000), {}, 'GET', agent)
      t.equal(res.status, 503, `${proto}, onStoreError ${onStoreError}: a gateway with another audit key answers 503`)
      t.equal(json(res).error, UNAVAILABLE, `${proto}: ${UNAVAILABLE}`)
    }
    t.equal(nas.requests.length, asked, 'and asks the NAS nothing')
    t.ok(stranger.logs.some((l) => l.includes('audit.keyFile')), 'its log says to give every gateway the same audit.keyFile')
  }
})

t.test('Redis down: onStoreError closed refuses budgeted requests with 503 and asks the NAS nothing; open lets them through, counted', async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t)
  const closed = await twoGateways(t, redis, nas, { recordingsPerHour: BUDGET })
  const open = await twoGateways(t, redis, nas, { recordingsPerHour: BUDGET }, { onStoreError: 'open' })
  const send = async (proto: Protocol, gw: TestGateway, path: string): Promise<Response> => await fetchAs(proto, gw, path, {}, 'GET', agent)
  for (const gw of [...closed, ...open]) t.equal((await send('h1', gw, recording(1))).status, 200, 'served while Redis is up')
  await redis.stop()
  let i = 10
  for (const proto of PROTOCOLS) {
    for (const [n, gw] of closed.entries()) {
      const asked = nas.requests.length
      const res = await send(proto, gw, recording(i++))
      t.equal(res.status, 503, `${proto}, closed gateway ${n + 1}: 503`)
      t.equal(json(res).error, UNAVAILABLE, `${proto}, closed gateway ${n + 1}: ${UNAVAILABLE}`)
      t.ok(Number(res.headers['retry-after']) > 0, `${proto}: with Retry-After`)
      t.equal(nas.requests.length, asked, `${proto}, closed gateway ${n + 1}: the NAS was not asked`)
      // A rule without budgets is not held up by the budgets' store.
      const free = await send(proto, gw, recording(i++, '/stockholm'))
      t.equal(free.status, 200, `${proto}, closed gateway ${n + 1}: a rule without budgets is still served`)
    }
    for (const [n, gw] of open.entries()) {
      const res = await send(proto, gw, recording(i++))
      t.equal(res.status, 200, `${proto}, open gateway ${n + 1}: served uncounted`)
      t.ok(res.body.equals(RECORDING))
    }
  }
  t.equal((await scrape(closed[0].adminUrl)).get('nasguard_budget_store_errors_total{outcome="refused"}'), 2, 'closed: counted as refused')
  t.equal((await scrape(open[0].adminUrl)).get('nasguard_budget_store_errors_total{outcome="allowed"}'), 2, 'open: counted as allowed')
  const refusals = closed[0].auditRecords().filter((r) => r.event === 'refusal' && r.reason === UNAVAILABLE)
  t.equal(refusals.length, 2, 'each 503 is audited')
  t.ok(closed[0].logs.some((l) => /the budgets cannot be checked/.test(l)), 'and logged')
  t.notOk(closed[0].logs.some((l) => l.includes('46701234567')), 'the log names no recording')
  await redis.start()
  const back = await waitFor('the closed gateway to serve again', async () => {
    const r = await send('h1', closed[1], recording(i++))
    return r.status === 200 ? r : undefined
  })
  t.equal(back.status, 200, 'once Redis is back, the closed gateway serves again')
})
