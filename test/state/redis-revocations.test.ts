// Revocations shared through a real Redis (Debian's redis-server), by
// gateways in this process and by the built CLI:
// - a revocation through one gateway's config is refused by every gateway
//   following the same Redis, over HTTP/1.1 and HTTP/2, with the NAS never
//   asked;
// - a gateway started afterwards loads it (the persisted set);
// - a revocation published while a gateway was not subscribed is not missed
//   (it reloads on resubscribing);
// - Redis down, stopped dead (SIGSTOP: no RST, no answer) or not there at
//   start: every token request is 503 with the NAS untouched, /readyz says
//   why, and all comes back when Redis does.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { createSigner } from 'fast-jwt'
import { addSharedRevocation } from '../../src/auth/shared-revocations.js'
import { addRevocation, revocationEntry } from '../../src/auth/revocation.js'
import { loadConfig } from '../../src/config/load.js'
import { RECORDING, SECRET, bearer, post, scrape, startStubNas, startTestGateway, testCerts, type StubNas, type TestGateway, type Teardown } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { CLI, freePort } from '../helpers/process.js'
import { startRedis, type TestRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const signer = createSigner({ key: SECRET, algorithm: 'HS256' })
/** A token for a gateway run through the CLI (no TestGateway to mint it). */
const testToken = (claims: Record<string, unknown>): string => signer({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 600, ...claims })
const JWT = { maxLifetimeSec: 86400, clockToleranceSec: 30 }
/** Bounded polling on a gateway's state; never a timing assertion. */
const WAIT = { tries: 1200, intervalMs: 25 }

function now (): number {
  return Math.floor(Date.now() / 1000)
}

async function readyz (gw: TestGateway): Promise<{ status: number, revocation: string }> {
  const r = await fetch(`${gw.adminUrl}/readyz`)
  const body = await r.json() as { checks?: { revocation?: string } }
  return { status: r.status, revocation: body.checks?.revocation ?? '' }
}

interface Fleet { redis: TestRedis, nas: StubNas, gateways: TestGateway[] }

async function fleet (t: Teardown, count: number, redis?: TestRedis): Promise<Fleet> {
  redis ??= await startRedis(t)
  const nas = await startStubNas(t, async (_req, res) => { res.writeHead(200, { 'content-type': 'audio/wav' }); res.end(RECORDING) })
  const gateways: TestGateway[] = []
  for (let i = 0; i < count; i++) gateways.push(await startTestGateway(t, nas, { state: { redis: { url: redis.url } }, audit: { instance: `gw${i + 1}` } }))
  for (const gw of gateways) await waitFor('the gateway to follow Redis', async () => (await readyz(gw)).revocation === 'ok' ? true : undefined, WAIT)
  return { redis, nas, gateways }
}

function cliConfig (redisUrl: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-redis-cli-'))
  const file = join(dir, 'nasguard.yaml')
  const certs = testCerts()
  writeFileSync(file, JSON.stringify({
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: SECRET } },
    policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: join(dir, 'audit') },
    state: { redis: { url: redisUrl } }
  }))
  return file
}

t.test('a revocation made with one gateway\'s config reaches every gateway, h1 and h2, the NAS untouched', async (t) => {
  const { redis, nas, gateways } = await fleet(t, 2)
  for (const proto of PROTOCOLS) {
    const jti = `cli-${proto}-${now()}`
    const token = gateways[0].token({ jti })
    for (const gw of gateways) t.equal((await fetchAs(proto, gw, PATH, bearer(token))).status, 200, `${proto}: accepted before`)
    const before = nas.requests.length
    const r = spawnSync(process.execPath, [CLI, 'token', 'revoke', '--config', cliConfig(redis.url), '--jti', jti], { encoding: 'utf8' })
    t.equal(r.status, 0, r.stderr)
    t.match(r.stdout, /revoked token .*published to 2 gateway connections, which apply it at once/)
    t.notOk((r.stdout + r.stderr).includes(token), 'the CLI never prints the token')
    for (const gw of gateways) {
      await waitFor(`${proto}: the revocation on every gateway`, async () => (await fetchAs(proto, gw, PATH, bearer(token))).status === 401 ? true : undefined, WAIT)
    }
    t.equal(nas.requests.length, before, `${proto}: the NAS got no request for the revoked token`)
    t.equal((await fetchAs(proto, gateways[1], PATH, bearer(gateways[1].token()))).status, 200, `${proto}: other tokens still pass`)
  }
})

t.test('a grant minted on one gateway plays on another (grants.secret shared by config), and the minting token\'s revocation ends it on both', async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t, async (_req, res) => { res.writeHead(200, { 'content-type': 'audio/wav' }); res.end(RECORDING) })
  const grants = { grants: { secret: 'g'.repeat(64) } }
  const gateways = [
    await startTestGateway(t, nas, { state: { redis: { url: redis.url } }, authExtra: grants }),
    await startTestGateway(t, nas, { state: { redis: { url: redis.url } }, authExtra: grants })
  ]
  for (const gw of gateways) await waitFor('the gateway to follow Redis', async () => (await readyz(gw)).revocation === 'ok' ? true : undefined, WAIT)
  const token = gateways[0].token({ jti: 'grant-minter' })
  const minted = await post(gateways[0], '/_nasguard/grants', { path: PATH }, bearer(token))
  t.equal(minted.status, 201, 'minted on gateway 1')
  const url = String((JSON.parse(minted.body.toString()) as { url: string }).url)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gateways[1], url)).status, 200, `${proto}: the grant plays on gateway 2`)
  await addSharedRevocation({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 2000 }, (n) => revocationEntry(JWT, { jti: 'grant-minter' }, n), 30)
  for (const gw of gateways) await waitFor('the grant to be refused', async () => (await fetchAs('h1', gw, url)).status === 401 ? true : undefined, WAIT)
  const before = nas.requests.length
  for (const gw of gateways) for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, url)).status, 401, `${proto}: the grant of a revoked token is refused`)
  t.equal(nas.requests.length, before, 'the NAS untouched')
})

t.test('a gateway started after a revocation loads it; a subject revocation covers older tokens only', async (t) => {
  const redis = await startRedis(t)
  await addSharedRevocation({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 2000 }, (n) => revocationEntry(JWT, { jti: 'before-start' }, n), 30)
  await addSharedRevocation({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 2000 }, (n) => revocationEntry(JWT, { sub: 'mallory', issuedBefore: now() - 100 }, n), 30)
  const { nas, gateways: [gw] } = await fleet(t, 1, redis)
  const before = nas.requests.length
  t.equal((await fetchAs('h1', gw, PATH, bearer(gw.token({ jti: 'before-start' })))).status, 401, 'the persisted jti is refused')
  t.equal((await fetchAs('h2', gw, PATH, bearer(gw.token({ sub: 'mallory', iat: now() - 200 })))).status, 401, 'an older token of the subject is refused')
  t.equal(nas.requests.length, before, 'the NAS got neither')
  t.equal((await fetchAs('h2', gw, PATH, bearer(gw.token({ sub: 'mallory', iat: now() })))).status, 200, 'a token issued after the subject revocation passes')
})

t.test('a revocation published while a gateway is not subscribed is not missed', async (t) => {
  const { redis, nas, gateways: [gw] } = await fleet(t, 1)
  const admin = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => { admin.disconnect() })
  for (const proto of PROTOCOLS) {
    const jti = `missed-${proto}`
    const token = gw.token({ jti })
    t.equal((await fetchAs(proto, gw, PATH, bearer(token))).status, 200)
    const resyncs = (): number => gw.logs.filter((l) => l.includes('following the shared revocations')).length
    const resynced = resyncs()
    // Cut the gateway's subscription, and revoke before it is back: the
    // entry is published to nobody.
    await admin.client('KILL', 'TYPE', 'pubsub')
    await addSharedRevocation({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 2000 }, (n) => revocationEntry(JWT, { jti }, n), 30)
    const before = nas.requests.length
    // Whatever the gateway answers meanwhile (503 while it reconnects), it
    // must never serve the token again once it has come back.
    // Until the gateway has seen its connection go (a FIN in flight), it
    // cannot know: wait for the reload after the cut, not for a state.
    await waitFor('the gateway to have noticed the cut and followed Redis again', async () => resyncs() > resynced && (await readyz(gw)).revocation === 'ok' ? true : undefined, WAIT)
    t.equal((await fetchAs(proto, gw, PATH, bearer(token))).status, 401, `${proto}: refused after resubscribing`)
    t.equal(nas.requests.length, before, `${proto}: the NAS untouched`)
  }
})

t.test('Redis losing its data: every gateway fails closed until state init, and a running gateway keeps what it knew', async (t) => {
  const { redis, nas, gateways: [gw] } = await fleet(t, 1)
  const admin = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => { admin.disconnect() })
  const token = gw.token({ jti: 'lost-with-redis' })
  await addSharedRevocation({ url: redis.url, keyPrefix: 'nasguard:', timeoutMs: 2000 }, (n) => revocationEntry(JWT, { jti: 'lost-with-redis' }, n), 30)
  await waitFor('the revocation', async () => (await fetchAs('h1', gw, PATH, bearer(token))).status === 401 ? true : undefined, WAIT)
  // As a Redis restarted without persistence: empty, and every subscriber reconnects.
  await admin.flushall()
  await admin.client('KILL', 'TYPE', 'pubsub')
  await failsClosed(t, gw, nas, 'Redis emptied')
  t.ok(await waitFor('/readyz to say why', async () => /no epoch.*state init/.test((await readyz(gw)).revocation) ? true : undefined, WAIT), '/readyz says to run state init')
  const late = await startTestGateway(t, nas, { state: { redis: { url: redis.url } } })
  await failsClosed(t, late, nas, 'a gateway started after the loss')
  const refused = spawnSync(process.execPath, [CLI, 'token', 'revoke', '--config', cliConfig(redis.url), '--jti', 'x'], { encoding: 'utf8' })
  t.equal(refused.status, 1, 'a revoke into an emptied Redis is refused')
  t.match(refused.stderr, /state init.*nothing was revoked/)

  const init = spawnSync(process.execPath, [CLI, 'state', 'init', '--config', cliConfig(redis.url)], { encoding: 'utf8' })
  t.equal(init.status, 0, init.stderr)
  t.match(init.stdout, /initialised; 0 live revocations imported/)
  await recovers(t, gw, 'after state init')
  const before = nas.requests.length
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(token))).status, 401, `${proto}: the running gateway still refuses what it knew`)
  t.equal(nas.requests.length, before, 'the NAS untouched')
})

t.test('state init imports a denylist file, so moving from files to Redis revokes nothing less', async (t) => {
  const redis = await startRedis(t, { init: false })
  const config = cliConfig(redis.url)
  const file = join(mkdtempSync(join(tmpdir(), 'nasguard-import-')), 'revoked.jsonl')
  addRevocation(file, revocationEntry(JWT, { jti: 'from-the-file' }, now()))
  addRevocation(file, { type: 'jti', jti: 'lapsed', expiresAt: now() - 3600, at: now() - 90000 }, now() - 7200)
  const init = spawnSync(process.execPath, [CLI, 'state', 'init', '--config', config, '--import', file], { encoding: 'utf8' })
  t.equal(init.status, 0, init.stderr)
  t.match(init.stdout, /initialised; 1 live revocation imported/)
  const again = spawnSync(process.execPath, [CLI, 'state', 'init', '--config', config, '--import', file], { encoding: 'utf8' })
  t.match(again.stdout, /already initialised/)
  const { nas, gateways: [gw] } = await fleet(t, 1, redis)
  const before = nas.requests.length
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token({ jti: 'from-the-file' })))).status, 401, `${proto}: the imported revocation holds`)
  t.equal(nas.requests.length, before, 'the NAS untouched')
  t.throws(() => loadConfig({ file: config, env: {} }) && loadConfig({ object: { ...JSON.parse(readFileSync(config, 'utf8')), auth: { jwt: { secret: SECRET }, revocation: { file } } } }), /auth\.revocation\.file.*not read when state\.redis is set/, 'a denylist file beside state.redis is a config error')
})

async function failsClosed (t: Test, gw: TestGateway, nas: StubNas, what: string): Promise<void> {
  await waitFor(`${what}: the gateway to stop trusting its revocations`, async () => (await readyz(gw)).status === 503 ? true : undefined, WAIT)
  const before = nas.requests.length
  for (const proto of PROTOCOLS) {
    const r = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(r.status, 503, `${what}, ${proto}: a valid token gets 503`)
    t.equal(JSON.parse(r.body.toString()).error, 'NASGUARD_ERR_REVOCATION_UNAVAILABLE', `${what}, ${proto}: the error says why`)
  }
  t.equal(nas.requests.length, before, `${what}: the NAS untouched`)
  t.match((await readyz(gw)).revocation, /^failing \(/, `${what}: /readyz says the revocations are failing`)
  t.equal((await scrape(gw.adminUrl)).get('nasguard_revocations_trusted'), 0, `${what}: nasguard_revocations_trusted is 0`)
}

async function recovers (t: Test, gw: TestGateway, what: string): Promise<void> {
  await waitFor(`${what}: the gateway to follow Redis again`, async () => (await readyz(gw)).status === 200 ? true : undefined, WAIT)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, PATH, bearer(gw.token()))).status, 200, `${what}, ${proto}: served again`)
  t.equal((await scrape(gw.adminUrl)).get('nasguard_revocations_trusted'), 1, `${what}: nasguard_revocations_trusted is 1`)
}

t.test('Redis down, frozen or absent at start: fail closed, then recover', async (t) => {
  const { redis, nas, gateways: [gw] } = await fleet(t, 1)
  await redis.stop()
  await failsClosed(t, gw, nas, 'Redis killed')
  await redis.start()
  await recovers(t, gw, 'Redis back')

  // A frozen Redis sends no RST and no FIN: only the heartbeat notices.
  const probe = new Redis(redis.port, '127.0.0.1')
  const pid = Number((await probe.info('server')).match(/process_id:(\d+)/)?.[1])
  probe.disconnect()
  process.kill(pid, 'SIGSTOP')
  try {
    await failsClosed(t, gw, nas, 'Redis frozen')
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  await recovers(t, gw, 'Redis thawed')
})

t.test('a Redis never initialised is not trusted', async (t) => {
  const redis = await startRedis(t, { init: false })
  const nas = await startStubNas(t, async (_req, res) => { res.writeHead(200, { 'content-type': 'audio/wav' }); res.end(RECORDING) })
  const gw = await startTestGateway(t, nas, { state: { redis: { url: redis.url } } })
  await failsClosed(t, gw, nas, 'no epoch')
  const r = spawnSync(process.execPath, [CLI, 'token', 'revoke', '--config', cliConfig(redis.url), '--jti', 'x'], { encoding: 'utf8' })
  t.equal(r.status, 1)
  t.match(r.stderr, /state init/)
})

t.test('a gateway that starts while Redis is down serves nothing until it is up', async (t) => {
  const redis = await startRedis(t)
  await redis.stop()
  const nas = await startStubNas(t, async (_req, res) => { res.writeHead(200, { 'content-type': 'audio/wav' }); res.end(RECORDING) })
  const gw = await startTestGateway(t, nas, { state: { redis: { url: redis.url } } })
  await failsClosed(t, gw, nas, 'no Redis at start')
  t.ok(gw.logs.some((l) => /shared revocations cannot be trusted/.test(l)), 'the log says why')
  await redis.start()
  await recovers(t, gw, 'Redis up')
})

t.test('the CLI says when Redis cannot be reached, and revokes nothing', async (t) => {
  const redis = await startRedis(t)
  await redis.stop()
  const r = spawnSync(process.execPath, [CLI, 'token', 'revoke', '--config', cliConfig(redis.url), '--jti', 'x'], { encoding: 'utf8' })
  t.equal(r.status, 1)
  t.match(r.stderr, /state\.redis\.url: redis:\/\/127\.0\.0\.1:\d+ cannot be used: .*nothing was revoked/)
})

t.test('workers: 2 following Redis: a revocation reaches both workers, and both fail closed without Redis', async (t) => {
  const redis = await startRedis(t)
  const nas = await startStubNas(t, async (_req, res) => { res.writeHead(200, { 'content-type': 'audio/wav' }); res.end(RECORDING) })
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-redis-workers-'))
  const [port, adminPort] = [await freePort(), await freePort()]
  const certs = testCerts()
  const config = join(dir, 'g.yaml')
  writeFileSync(config, JSON.stringify({
    listen: { host: '127.0.0.1', port },
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: nas.url },
    auth: { jwt: { secret: SECRET } },
    policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: join(dir, 'audit') },
    admin: { host: '127.0.0.1', port: adminPort },
    state: { redis: { url: redis.url } },
    workers: 2,
    log: { level: 'error' }
  }))
  const child = spawn(process.execPath, [CLI, 'start', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'], env: { PATH: process.env.PATH } })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const gw = { port, adminUrl: `http://127.0.0.1:${adminPort}` }
  const ready = async (want: number): Promise<boolean | undefined> => (await fetch(`${gw.adminUrl}/readyz`).catch(() => undefined))?.status === want ? true : undefined
  await waitFor('both workers to follow Redis', async () => await ready(200), { tries: 2400, intervalMs: 50 })
  const sign = (jti: string): string => testToken({ jti })
  const token = sign('workers-revoked')
  // Every request on its own connection: the primary deals them out to both workers.
  for (let i = 0; i < 6; i++) t.equal((await fetchAs('h1', gw, PATH, bearer(token))).status, 200, `served before, connection ${i + 1}`)
  const rv = spawnSync(process.execPath, [CLI, 'token', 'revoke', '--config', config, '--jti', 'workers-revoked'], { encoding: 'utf8' })
  t.equal(rv.status, 0, rv.stderr)
  t.match(rv.stdout, /published to [2-9]\d* gateway connections/, 'both workers heard it')
  const before = nas.requests.length
  for (const proto of PROTOCOLS) for (let i = 0; i < 6; i++) t.equal((await fetchAs(proto, gw, PATH, bearer(token))).status, 401, `${proto}: refused on connection ${i + 1}`)
  t.equal(nas.requests.length, before, 'the NAS untouched')
  await redis.stop()
  await waitFor('the primary to report a worker failing closed', async () => await ready(503), WAIT)
  await waitFor('the metric to say so', async () => (await scrape(gw.adminUrl)).get('nasguard_revocations_trusted') === 0 ? true : undefined, WAIT)
  // Both workers: a run of connections, every one refused.
  await waitFor('both workers to fail closed', async () => {
    for (let i = 0; i < 6; i++) if ((await fetchAs('h1', gw, PATH, bearer(sign('any')))).status !== 503) return undefined
    return true
  }, WAIT)
  t.equal(nas.requests.length, before, 'the NAS untouched while Redis is down')
})

t.test('state.redis config errors name the key', async (t) => {
  const certs = testCerts()
  const base = { tls: { cert: certs.cert, key: certs.key }, upstream: { url: 'http://127.0.0.1:9' }, auth: { jwt: { secret: SECRET } }, policy: [{ name: 'r', path: '/medicall/**', scopes: ['x'] }], audit: { dir: join(tmpdir(), 'unused') } }
  const cases: Array<[unknown, RegExp]> = [
    [{ url: 'redis://:secret@127.0.0.1:6379' }, /state\.redis\.url.*must not carry credentials/],
    [{ url: 'http://127.0.0.1:6379' }, /state\.redis\.url.*redis:\/\/ or rediss:\/\//],
    [{ url: 'not a url' }, /state\.redis\.url.*not a URL/],
    [{ url: 'redis://127.0.0.1:6379/x' }, /state\.redis\.url.*database number/],
    [{ url: 'redis://127.0.0.1', caFile: '/etc/hostname' }, /state\.redis\.caFile.*rediss/],
    [{ url: 'redis://127.0.0.1', passwordFile: '/nonexistent/redis.pass' }, /state\.redis\.passwordFile/],
    [{ url: 'redis://127.0.0.1', keyPrefix: 'a b' }, /state\.redis\.keyPrefix/]
  ]
  for (const [redis, want] of cases) {
    t.throws(() => loadConfig({ object: { ...base, state: { redis } } }), want, JSON.stringify(redis))
  }
})
