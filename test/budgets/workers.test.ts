// Budgets with `workers: 2`, through the real CLI: without state.redis the
// primary keeps one book that both workers ask; with it, Redis. Either
// way the requests are dealt out over several connections, so both
// workers serve them, and still a scraper walking 1,000 recordings gets
// exactly its budget from the NAS (not twice it), a listener's 500 Range
// requests are never stopped, and `nasguard quota show` (through the
// primary's admin listener) sees everything both workers charged. Over
// HTTP/1.1 and HTTP/2.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { bearer, scrape } from '../helpers/gateway-client.js'
import { runCli } from '../helpers/process.js'
import { PROTOCOLS, keepAliveClient } from '../helpers/protocols.js'
import { startRedis } from '../helpers/redis.js'
import { startStubNas } from '../helpers/stub-nas.js'
import { JWT_SECRET, startGateway } from '../fleet/gateways.js'
import { listenerIsNotStopped, recording, roundRobin, scraperIsStopped } from './scenarios.js'

const BUDGET = 25
const WALK = 1000
/** Connections per protocol: the primary deals them out to the workers in turn. */
const CONNECTIONS = 4
const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256' })
const token = (sub: string): string => sign({ sub, scope: 'recordings:read', jti: randomBytes(8).toString('hex'), exp: Math.floor(Date.now() / 1000) + 600 })

/** The fetch records in worker i's audit chain. */
function fetchesOf (auditDir: string, i: number): number {
  return readFileSync(join(auditDir, `worker-${i}`, 'audit.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"event":"fetch"')).length
}

for (const keeper of ['the primary', 'Redis'] as const) {
  t.test(`workers: 2, budgets kept by ${keeper}: exactly the budget across both workers, and a listener never stopped`, async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'nasguard-budget-workers-'))
    t.teardown(() => rmSync(base, { recursive: true, force: true }))
    const nas = await startStubNas(t)
    const redis = keeper === 'Redis' ? await startRedis(t) : undefined
    const auditKeyFile = join(base, 'audit.key')
    writeFileSync(auditKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
    const adminTokenFile = join(base, 'admin.token')
    writeFileSync(adminTokenFile, randomBytes(24).toString('hex') + '\n', { mode: 0o600 })
    const gw = await startGateway(t, {
      base,
      name: 'gw',
      nasUrl: nas.url,
      ...(redis ? { redisUrl: redis.url } : {}),
      auditKeyFile,
      adminTokenFile,
      direct: true,
      batched: true,
      config: { workers: 'workers: 2', limits: `limits: { perSubject: { recordingsPerHour: ${BUDGET} } }` }
    })
    t.teardown(() => { if (!t.passing()) console.error(gw.output().slice(-3000)) })
    for (const proto of PROTOCOLS) {
      const send = roundRobin(Array.from({ length: CONNECTIONS }, () => keepAliveClient(t, proto, gw).send))
      await scraperIsStopped(t, `${proto}, ${CONNECTIONS} connections`, { send, auth: bearer(token(`scraper-${proto}`)), nas, budget: BUDGET, walk: WALK, first: proto === 'h1' ? 0 : 5000 })
      await listenerIsNotStopped(t, `${proto}, ${CONNECTIONS} connections`, { send, auth: bearer(token(`listener-${proto}`)), nas, path: recording(7) })
    }
    // Not one worker serving everything: each served some of the recordings.
    const served = [0, 1].map((i) => fetchesOf(gw.auditDir, i))
    t.ok(served.every((n) => n > 0), `both workers served recordings (${served.join(' and ')})`)

    const shown = await runCli(['quota', 'show', '--config', gw.config, '--sub', 'scraper-h2', '--json'])
    t.equal(shown.status, 0, shown.stderr)
    t.match(JSON.parse(shown.stdout || '{}'), { subject: 'scraper-h2', token: { used: { recordingsPerHour: BUDGET }, budgets: { recordingsPerHour: BUDGET } } }, '`quota show` through the primary sees what both workers charged')
    const m = await scrape(`http://127.0.0.1:${gw.adminPort}`, { authorization: `Bearer ${readFileSync(adminTokenFile, 'utf8').trim()}` })
    t.equal(m.get('nasguard_quota_subjects_near_limit'), 2, 'the near gauge counts the two scrapers once (not once per worker)')
    const reset = await runCli(['quota', 'reset', '--config', gw.config, '--sub', 'scraper-h2'])
    t.equal(reset.status, 0, reset.stderr)
    const again = roundRobin(Array.from({ length: 2 }, () => keepAliveClient(t, 'h1', gw).send))
    const after = [await again(recording(9000), bearer(token('scraper-h2'))), await again(recording(9001), bearer(token('scraper-h2')))]
    t.same(after.map((r) => r.status), [200, 200], 'after `quota reset` the scraper fetches again, on either worker')
  })
}
