// Legal holds in a real Redis (state.redis), shared by two gateways in this
// process (one audit key between them, as a fleet has: the holds key is
// derived from it):
// - a hold placed through redisHoldsStore is honoured by both, over
//   HTTP/1.1 and HTTP/2, and survives a Redis restart; deleted after it
//   was seen, it is a problem (503), not "no holds";
// - Redis stopped, or emptied (no `state init` epoch): an expired
//   recording is 503 NASGUARD_ERR_HOLDS_UNAVAILABLE on both, never served
//   and never treated as "no holds"; a young one is still served to a
//   client certificate (which asks nothing of Redis), while a token is 503
//   NASGUARD_ERR_REVOCATION_UNAVAILABLE for any recording (revocations
//   fail closed first);
// - a gateway with another audit key does not trust the document.
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { createKey } from '../../src/audit/key.js'
import { changeHolds, holdsKeyOf, type Hold } from '../../src/retention/holds.js'
import { holdsKey, redisHoldsStore } from '../../src/retention/holds-redis.js'
import { DAY_MS } from '../../src/retention/rules.js'
import { createCa, issueClientCert, type KeyAndCert } from '../../src/tls/certificates.js'
import { RECORDING, bearer, startStubNas, startTestGateway, type Response, type StubNas, type TestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs, type Protocol } from '../helpers/protocols.js'
import { startRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

const EXPIRED = 'NASGUARD_ERR_RETENTION_EXPIRED'
const HOLDS_UNAVAILABLE = 'NASGUARD_ERR_HOLDS_UNAVAILABLE'
const REVOCATION_UNAVAILABLE = 'NASGUARD_ERR_REVOCATION_UNAVAILABLE'

const OLD = '/medicall/2016/01/01/083012_46701234567.wav'
const OLD_EXPIRES = Date.UTC(2016, 0, 2) + 30 * DAY_MS
const YOUNG = '/medicall/2016/03/01/090000_46709999999.wav'
const RULES = [{ name: 'calls', path: '/medicall/{yyyy}/{mm}/{dd}/**', keepDays: 30 }]
const CLIENT = 'callcenter-app-1'
const POLICY = [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'], certs: [`CN=${CLIENT}`] }]
const WAIT = { tries: 1500, intervalMs: 25 }

const dir = mkdtempSync(join(tmpdir(), 'nasguard-redis-holds-'))
const clientCa = createCa('nasguard client CA')
const client = issueClientCert(clientCa, CLIENT)
const caFile = join(dir, 'client-ca.crt')
writeFileSync(caFile, clientCa.certPem)

/** One request with the client certificate (no token) on a fresh connection. */
async function withCert (proto: Protocol, gw: { port: number }, path: string, cert: KeyAndCert = client): Promise<Response> {
  return await fetchAs(proto, gw, path, {}, 'GET', cert)
}

function errorOf (res: Response): unknown {
  return /^application\/json/.test(String(res.headers['content-type'])) ? (JSON.parse(res.body.toString()) as { error?: unknown }).error : undefined
}

/** Every protocol on every gateway: the status and code wanted (code undefined: 200 with the recording); the NAS asked only for 200s. */
async function expectAll (t: Test, nas: StubNas, gateways: TestGateway[], send: (proto: Protocol, gw: TestGateway) => Promise<Response>, status: number, code: string | undefined, what: string): Promise<void> {
  for (const [i, gw] of gateways.entries()) {
    for (const proto of PROTOCOLS) {
      const n = nas.requests.length
      const res = await send(proto, gw)
      const where = `${what}, gateway ${i + 1}, ${proto}`
      t.equal(res.status, status, `${where}: ${status}`)
      if (code === undefined) {
        t.same(res.body, RECORDING, `${where}: the recording`)
        t.equal(nas.requests.length, n + 1, `${where}: from the NAS`)
      } else {
        t.equal(errorOf(res), code, `${where}: ${code}`)
        t.equal(nas.requests.length, n, `${where}: the NAS not asked`)
      }
    }
  }
}

/** Polls (over HTTP/1.1, with the certificate) until every gateway answers `status` for `path`. */
async function settle (gateways: TestGateway[], path: string, status: number, what: string): Promise<void> {
  for (const [i, gw] of gateways.entries()) {
    await waitFor(`${what} (gateway ${i + 1})`, async () => (await withCert('h1', gw, path)).status === status ? true : undefined, WAIT)
  }
}

function hold (o: Partial<Hold>): Hold {
  return { case: 'CASE-1', prefix: '/medicall/2016/01/', reason: 'litigation', at: new Date().toISOString(), by: 'test', ...o }
}

t.test('two gateways on one Redis: a hold is honoured by both; Redis down or emptied fails closed for expired recordings only', async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t)
  const keyFile = join(dir, 'audit.key')
  const auditKey = createKey(keyFile)
  const clock = { now: OLD_EXPIRES }
  const start = async (instance: string, auditKeyFile = keyFile): Promise<TestGateway> => await startTestGateway(t, nas, {
    retention: RULES,
    policy: POLICY,
    clock: () => clock.now,
    tls: { clientAuth: 'optional', clientCa: caFile },
    state: { redis: { url: redis.url } },
    audit: { keyFile: auditKeyFile, instance }
  })
  const gateways = [await start('gw1'), await start('gw2')]
  const byCert = (path: string) => async (proto: Protocol, gw: TestGateway): Promise<Response> => await withCert(proto, gw, path)
  const byToken = (path: string) => async (proto: Protocol, gw: TestGateway): Promise<Response> => await fetchAs(proto, gw, path, bearer(gw.token()))
  for (const gw of gateways) await waitFor('the gateway to follow Redis', async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 200 ? true : undefined, WAIT)

  await expectAll(t, nas, gateways, byCert(OLD), 410, EXPIRED, 'expired, no holds document')
  await expectAll(t, nas, gateways, byToken(OLD), 410, EXPIRED, 'expired, no holds document, token')
  await expectAll(t, nas, gateways, byCert(YOUNG), 200, undefined, 'young')

  // Placed through the store the command line uses, sealed with the fleet's audit key.
  const store = redisHoldsStore({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 5000 })
  await changeHolds(store, holdsKeyOf(auditKey), (d) => ({ ...d, holds: [hold({ case: 'CASE-1', prefix: '/medicall/2016/01/01/' })] }))
  await settle(gateways, OLD, 200, 'the hold to be seen')
  await expectAll(t, nas, gateways, byCert(OLD), 200, undefined, 'held')
  await expectAll(t, nas, gateways, byToken(OLD), 200, undefined, 'held, token')

  // A gateway with an audit key of its own cannot verify the fleet's document: 503, not "no holds".
  const otherKey = join(dir, 'other.key')
  createKey(otherKey)
  const stranger = await start('gw3', otherKey)
  await expectAll(t, nas, [stranger], byCert(OLD), 503, HOLDS_UNAVAILABLE, 'another audit key')
  await expectAll(t, nas, [stranger], byCert(YOUNG), 200, undefined, 'another audit key, young')

  // Redis killed: holds cannot be read. Expired: 503 by certificate; young: still served by certificate.
  await redis.stop()
  await settle(gateways, OLD, 503, 'Redis down to be seen')
  await expectAll(t, nas, gateways, byCert(OLD), 503, HOLDS_UNAVAILABLE, 'Redis down, expired')
  await expectAll(t, nas, gateways, byCert(YOUNG), 200, undefined, 'Redis down, young')
  // A token: the revocations fail closed first, for any recording.
  for (const gw of gateways) await waitFor('the revocations to fail closed', async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 503 ? true : undefined, WAIT)
  await expectAll(t, nas, gateways, byToken(YOUNG), 503, REVOCATION_UNAVAILABLE, 'Redis down, young, token')
  await expectAll(t, nas, gateways, byToken(OLD), 503, REVOCATION_UNAVAILABLE, 'Redis down, expired, token')

  // Back with its data (AOF): the hold holds again.
  await redis.start()
  await settle(gateways, OLD, 200, 'Redis back to be seen')
  await expectAll(t, nas, gateways, byCert(OLD), 200, undefined, 'Redis back, held')

  // The document deleted after it was seen: not "no holds". Put back, the hold holds again.
  const admin = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => { admin.disconnect() })
  const key = holdsKey({ keyPrefix: 'nasguard:', url: redis.url })
  const text = await admin.get(key)
  t.ok(text, `the document is at ${key}`)
  await admin.del(key)
  await settle(gateways, OLD, 503, 'the deleted document to be seen')
  await expectAll(t, nas, gateways, byCert(OLD), 503, HOLDS_UNAVAILABLE, 'document deleted, expired')
  await admin.set(key, text as string)
  await settle(gateways, OLD, 200, 'the document put back')

  // Emptied (a Redis restarted without persistence): no epoch, so no trust in "no holds".
  await admin.flushall()
  await settle(gateways, OLD, 503, 'the emptied Redis to be seen')
  await expectAll(t, nas, gateways, byCert(OLD), 503, HOLDS_UNAVAILABLE, 'no epoch, expired')
  await expectAll(t, nas, gateways, byCert(YOUNG), 200, undefined, 'no epoch, young')
  await t.rejects(changeHolds(store, holdsKeyOf(auditKey), (d) => d), /state init/, 'no hold can be written into an emptied Redis')
  t.ok(gateways.every((gw) => gw.logs.every((l) => !l.includes('46701234567'))), 'no log line names a recording')
})
