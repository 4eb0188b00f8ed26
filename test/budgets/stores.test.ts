// The budgets kept in Redis (one Lua script per check) answer exactly as
// the book in memory does: the same random run of charges, spends, resets
// and clock steps (seconds to hours) is played against both, on a real
// redis-server, and every verdict (charged, refused, which budget, when it
// frees up, whether the recording was new), every usage and the near count
// must be equal. Also: the Redis store refuses (rejects) while Redis is
// down and answers again once it is back.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { LeasedBudgets } from '../../src/budgets/lease.js'
import { RedisBudgets } from '../../src/budgets/redis-store.js'
import { LEDGER_KINDS, LocalBudgets, ledgerKey, StoreMisconfigured, type LeasingStore } from '../../src/budgets/store.js'
import { answerBudget, PrimaryBudgets, type Channel } from '../../src/budgets/ipc-store.js'
import { chargerOf } from '../../src/budgets/charger.js'
import { GatewayMetrics } from '../../src/metrics/registry.js'
import type { FastifyBaseLogger } from 'fastify'
import type { Budgets } from '../../src/budgets/book.js'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis.js'

/** A small seeded PRNG (mulberry32): the same run every time, and another seed for another run. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const LEDGERS = ['alice', 'bob', 'CN=carol', 'dave'].flatMap((s) => LEDGER_KINDS.map((k) => ledgerKey(k, s)))
// What rules may ask: tight budgets, so that every one of them is hit often.
const BUDGET_SETS: Budgets[] = [
  { recordingsPerHour: 4 },
  { recordingsPerHour: 6, recordingsPerDay: 9, requestsPerMinute: 12 },
  { requestsPerMinute: 5 },
  { bytesPerHour: 50_000 },
  { recordingsPerDay: 7, bytesPerHour: 120_000 },
  { recordingsPerHour: 3, requestsPerMinute: 30, bytesPerHour: 80_000 },
  // Roomy enough for leases with recording slots.
  { requestsPerMinute: 60, recordingsPerHour: 24, recordingsPerDay: 40, bytesPerHour: 400_000 }
]

t.test('Redis and the book in memory give the same verdicts, usage and near count over a random run', async (t) => {
  const redis = await startRedis(t, { init: false })
  for (const seed of [1, 2, 3]) {
    const rand = prng(seed)
    let now = Date.UTC(2026, 10, 30, 8, 0, 0)
    const clock = (): number => now
    const local = new LocalBudgets(clock)
    const shared: LeasingStore = new RedisBudgets({ url: redis.url, keyPrefix: `diff${seed}:`, timeoutMs: 5000 }, { key: randomBytes(32), clock, onSpendError: (err) => { throw err } })
    t.teardown(async () => await shared.close())
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]
    let mismatches = 0
    const tally = { charged: 0, refused: new Map<string, number>(), spends: 0, resets: 0, steps: 0, leases: 0, settled: 0, held: 0 }
    const outstanding: Array<{ subject: string, id: string, requests: number, slots: number, bytes?: number }> = []
    const path = (): string => `/medicall/2016/01/01/${Math.floor(rand() * 30)}_4670.wav`
    const same = (what: string, a: unknown, b: unknown): void => {
      if (canon(a) === canon(b)) return
      if (++mismatches <= 5) t.fail(`seed ${seed}: ${what}: memory ${JSON.stringify(a)}, Redis ${JSON.stringify(b)}`)
    }
    for (let op = 0; op < 2500; op++) {
      const r = rand()
      if (r < 0.12) {
        // Time passes: mostly seconds, sometimes minutes, now and then hours.
        const u = rand()
        now += u < 0.7 ? Math.floor(rand() * 5_000) : u < 0.95 ? Math.floor(rand() * 600_000) : Math.floor(rand() * 7_200_000)
        tally.steps++
      } else if (r < 0.8) {
        const charge = { subject: pick(LEDGERS), ...(rand() < 0.85 ? { recording: path() } : {}) }
        const budgets = pick(BUDGET_SETS)
        // A third of the takes ask for a lease as well.
        const id = rand() < 0.33 ? `w1.${op}` : undefined
        const a = await local.take(charge, budgets, id)
        const b = await shared.take(charge, budgets, id)
        same(`take #${op} ${JSON.stringify(charge)} under ${JSON.stringify(budgets)}${id ? ' with a lease' : ''}`, a, b)
        if (a.ok) tally.charged++
        else tally.refused.set(a.budget, (tally.refused.get(a.budget) ?? 0) + 1)
        if (!a.ok && a.held) tally.held++
        if (a.ok && a.lease && id) {
          outstanding.push({ subject: charge.subject, id, ...a.lease })
          tally.leases++
        }
      } else if (r < 0.84 && outstanding.length > 0) {
        // A lease is settled: some of its requests used (now and then more than it held), recordings old and new.
        const [l] = outstanding.splice(Math.floor(rand() * outstanding.length), 1)
        const requests = Math.floor(rand() * (l.requests + 2))
        const recordings = [...new Set(Array.from({ length: Math.min(requests, Math.floor(rand() * (l.slots + 3))) }, path))]
        const bytes = l.bytes === undefined || rand() < 0.3 ? 0 : Math.floor(rand() * (l.bytes * 1.5))
        const s = { subject: l.subject, id: l.id, requests, recordings, bytes }
        same(`settle #${op} ${JSON.stringify(s)}`, local.settle(s), await shared.settle(s))
        tally.settled++
      } else if (r < 0.95) {
        const ledger = pick(LEDGERS)
        const bytes = 1 + Math.floor(rand() * 30_000)
        local.spend(ledger, bytes)
        shared.spend(ledger, bytes)
        tally.spends++
      } else if (r < 0.96) {
        const ledger = pick(LEDGERS)
        await local.reset(ledger)
        await shared.reset(ledger)
        tally.resets++
      } else {
        for (const ledger of LEDGERS) same(`usage of ${ledger} at #${op}`, await local.usage(ledger), await shared.usage(ledger))
        same(`near at #${op}`, await local.near(), await shared.near())
      }
    }
    t.equal(mismatches, 0, `seed ${seed}: every verdict, usage and near count agree (${tally.charged} charged, refused ${JSON.stringify(Object.fromEntries(tally.refused))}, ${tally.spends} spends, ${tally.resets} resets, ${tally.steps} clock steps, ${tally.leases} leases, ${tally.settled} settled, ${tally.held} refused while held)`)
    t.ok(tally.leases > 20 && tally.settled > 20 && tally.held > 0, `seed ${seed}: leases were handed out, settled, ran out unsettled and held budgets`)
    // The run must have met every budget, or it proved little.
    t.same([...tally.refused.keys()].sort(), ['bytesPerHour', 'recordingsPerDay', 'recordingsPerHour', 'requestsPerMinute'], `seed ${seed}: every budget refused something`)
  }
})

t.test('while Redis is down the store rejects; once it is back it answers again', async (t) => {
  const redis = await startRedis(t, { init: false })
  let now = Date.UTC(2026, 10, 30, 8, 0, 0)
  const lost: Error[] = []
  const store = new RedisBudgets({ url: redis.url, keyPrefix: 'down:', timeoutMs: 1000 }, { key: randomBytes(32), clock: () => now, onSpendError: (err) => lost.push(err) })
  t.teardown(async () => await store.close())
  const budgets = { recordingsPerHour: 2 }
  t.same(await store.take({ subject: 't:x', recording: '/a.wav' }, budgets), { ok: true, fresh: true })
  await redis.stop()
  await t.rejects(async () => await store.take({ subject: 't:x', recording: '/b.wav' }, budgets), 'a check while Redis is down rejects')
  store.spend('t:x', 100)
  await t.resolves(async () => await new Promise<void>((resolve) => { const i = setInterval(() => { if (lost.length > 0) { clearInterval(i); resolve() } }, 20) }), 'a spend while Redis is down is reported lost')
  await redis.start()
  now += 1000
  const back = await waitForOk(async () => await store.take({ subject: 't:x', recording: '/b.wav' }, budgets))
  t.same(back, { ok: true, fresh: true }, 'after Redis is back (AOF kept the first charge), the second recording is charged')
  t.match(await store.take({ subject: 't:x', recording: '/c.wav' }, budgets), { ok: false, budget: 'recordingsPerHour' }, 'and a third is refused: the first charge survived the restart')
})

/** JSON with every object's keys sorted: equal values, equal text. */
function canon (v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a < b ? -1 : 1)) : x)
}

/** Retries fn until it resolves (Redis reconnecting), up to 30 s. */
async function waitForOk<T> (fn: () => Promise<T>): Promise<T> {
  let last: unknown
  for (let i = 0; i < 300; i++) {
    try {
      return await fn()
    } catch (err) {
      last = err
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  throw last
}

t.test('a gateway that closes settles its leases first: nothing is left held in Redis to be charged in full', async (t) => {
  const redis = await startRedis(t, { init: false })
  const key = randomBytes(32)
  const cfg = { url: redis.url, keyPrefix: 'close:', timeoutMs: 5000 }
  const leased = new LeasedBudgets(new RedisBudgets(cfg, { key, onSpendError: (err) => { throw err } }))
  const budgets = { recordingsPerHour: 40, requestsPerMinute: 400, bytesPerHour: 1e9 }
  for (let i = 0; i < 5; i++) t.ok((await leased.take({ subject: 't:z', recording: `/medicall/${i}.wav` }, budgets)).ok)
  leased.spend('t:z', 5000)
  const reader = new RedisBudgets(cfg, { key, onSpendError: () => {} })
  t.teardown(async () => await reader.close())
  t.ok((await reader.usage('t:z')).held.requests > 0, 'a lease is held while the gateway runs')
  await leased.close()
  const u = await reader.usage('t:z')
  t.same(u.held, { requests: 0, recordings: 0, bytes: 0 }, 'closed: nothing held')
  t.same(u.used, { requestsPerMinute: 5, recordingsPerHour: 5, recordingsPerDay: 5, bytesPerHour: 5000 }, 'and what it used was charged')
})

/** A gateway's budgets in the test's Redis, with an audit key of its own, closed at the end. */
function gatewayStore (t: Test, cfg: ConstructorParameters<typeof RedisBudgets>[0]): RedisBudgets {
  const store = new RedisBudgets(cfg, { key: randomBytes(32), onSpendError: () => {} })
  t.teardown(async () => await store.close())
  return store
}

t.test('a store set up wrong (another audit key on the shared Redis) stays so through the workers\' channel, and is refused under onStoreError: open', async (t) => {
  const redis = await startRedis(t, { init: false })
  const cfg = { url: redis.url, keyPrefix: 'keys:', timeoutMs: 5000 }
  const budgets = { recordingsPerHour: 5 }
  const fleet = gatewayStore(t, cfg)
  t.ok((await fleet.take({ subject: 't:a', recording: '/r.wav' }, budgets)).ok, 'the fleet\'s key is the one the budgets are written with')
  // The primary of a gateway with another key, and one of its workers asking it over a channel.
  const stranger = gatewayStore(t, cfg)
  const listeners: Array<(m: unknown) => void> = []
  const channel: Channel = {
    send: (m) => { void answerBudget(stranger, m, (r) => { for (const l of listeners) l(r) }); return true },
    connected: () => true,
    onMessage: (fn) => { listeners.push(fn) }
  }
  const worker = new PrimaryBudgets(channel)
  await t.rejects(worker.take({ subject: 't:a', recording: '/r.wav' }, budgets), StoreMisconfigured, 'the worker gets the mistake as one')
  const log = { warn: () => {} } as unknown as FastifyBaseLogger
  const charge = chargerOf(new LeasedBudgets(worker), new GatewayMetrics(), () => 'open', () => log)
  await t.rejects(async () => await charge({ subject: 't:a', recording: '/s.wav' }, budgets), { code: 'NASGUARD_ERR_BUDGETS_UNAVAILABLE' }, 'refused (503) under onStoreError: open')
  const outage = chargerOf({ take: () => { throw new Error('connection refused') } } as unknown as LeasedBudgets, new GatewayMetrics(), () => 'open', () => log)
  t.same(await outage({ subject: 't:a', recording: '/s.wav' }, budgets), { ok: true }, 'while an outage under open passes, as documented')
})

t.test('after Redis lost its data, a gateway with another audit key that joins does not get ledgers of its own: the key is checked at every take', async (t) => {
  const redis = await startRedis(t, { init: false })
  const cfg = { url: redis.url, keyPrefix: 'lost:', timeoutMs: 5000 }
  const budgets = { recordingsPerHour: 5 }
  const running = gatewayStore(t, cfg)
  t.ok((await running.take({ subject: 't:a', recording: '/0.wav' }, budgets)).ok, 'a gateway of the fleet runs')
  const admin = new Redis(redis.port, '127.0.0.1')
  t.teardown(async () => { await admin.quit() })
  await admin.flushall()
  // Another key joins while the marker is gone, and takes first: the budgets are now written with its key.
  const joining = gatewayStore(t, cfg)
  t.ok((await joining.take({ subject: 't:a', recording: '/1.wav' }, budgets)).ok, 'the first to take after the loss sets the key')
  await t.rejects(running.take({ subject: 't:a', recording: '/2.wav' }, budgets), StoreMisconfigured, 'the running gateway with the other key is refused at its next take, not given a second ledger')
  await t.rejects(running.usage('t:a'), StoreMisconfigured, 'and the refusal is remembered by its other operations')
  // Its key made the budgets' again (here: the marker gone, and it takes first): the refusal clears without a reconnect.
  const marker = (await admin.keys('lost:*key'))
  t.equal(marker.length, 1, 'one key marker')
  await admin.del(marker[0])
  t.ok((await running.take({ subject: 't:a', recording: '/3.wav' }, budgets)).ok, 'served again')
  t.ok((await running.usage('t:a')).used.requestsPerMinute >= 1, 'and its other operations work again')
})
