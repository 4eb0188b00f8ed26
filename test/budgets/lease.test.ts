// Leases without sockets: several holders (workers, gateways) each decide
// most checks themselves, and the budgets stay exact across them. The
// shared store here is the book the primary keeps, behind an adapter that
// answers asynchronously and counts the round trips.
import t from 'tap'
import { HOLD_MS, type Budgets, type Charge, type Settlement, type Verdict } from '../../src/budgets/book.js'
import { LEASE_MS, LeasedBudgets } from '../../src/budgets/lease.js'
import { LocalBudgets, type LeasingStore, type LedgerUsage } from '../../src/budgets/store.js'

/** The primary's book, asked as a worker asks it: every answer on a later turn, and counted. */
class Remote implements LeasingStore {
  asked = 0
  settled: Settlement[] = []
  up = true
  /** Settlements dropped (a holder that died before it could send them). */
  drop = false
  constructor (readonly book: LocalBudgets) {}
  async take (c: Charge, b: Budgets, lease?: string): Promise<Verdict> {
    this.asked++
    if (!this.up) throw new Error('down')
    await new Promise((resolve) => setImmediate(resolve))
    return this.book.take(c, b, lease)
  }

  settle (s: Settlement): number {
    if (this.drop) return 0
    this.settled.push(s)
    return this.book.settle(s)
  }

  reachable (): boolean { return this.up }
  spend (ledger: string, bytes: number): void { this.book.spend(ledger, bytes) }
  async usage (ledger: string): Promise<LedgerUsage> { return await this.book.usage(ledger) }
  async reset (ledger: string): Promise<void> { await this.book.reset(ledger) }
  async near (): Promise<number> { return await this.book.near() }
  async close (): Promise<void> {}
}

function holders (n: number, clock = (): number => Date.now()): { book: LocalBudgets, remotes: Remote[], leased: LeasedBudgets[] } {
  const book = new LocalBudgets(clock)
  const remotes = Array.from({ length: n }, () => new Remote(book))
  return { book, remotes, leased: remotes.map((r) => new LeasedBudgets(r)) }
}

const rec = (i: number): string => `/medicall/2016/01/01/${String(i).padStart(6, '0')}_46701234567.wav`

t.test('a scraper dealt over three holders takes exactly its recordings, one after another or 8 at a time', async (t) => {
  for (const width of [1, 8]) {
    const { leased, book } = holders(3)
    t.teardown(async () => { for (const l of leased) await l.close() })
    const budgets = { recordingsPerHour: 40 }
    const verdicts: Verdict[] = new Array(100)
    let next = 0
    await Promise.all(Array.from({ length: width }, async () => {
      while (next < 100) {
        const i = next++
        verdicts[i] = await leased[i % 3].take({ subject: 't:scraper', recording: rec(i) }, budgets)
      }
    }))
    t.equal(verdicts.filter((v) => v.ok).length, 40, `${width} at a time: exactly 40 recordings are charged`)
    if (width === 1) t.ok(verdicts.slice(0, 40).every((v) => v.ok) && verdicts.slice(40).every((v) => !v.ok), 'one after another: the first 40, and none after')
    t.ok(verdicts.filter((v) => !v.ok).every((v) => !v.ok && v.budget === 'recordingsPerHour' && v.held === undefined), 'every refusal names its budget (and is not a held one)')
    for (const l of leased) await l.usage('t:scraper')
    const u = await book.usage('t:scraper')
    t.same([u.used.recordingsPerHour, u.held.recordings], [40, 0], 'settled: the book holds 40 recordings, nothing held')
  }
})

t.test('requests per minute: exactly the budget across holders, and the requests are charged when settled', async (t) => {
  const { leased, book } = holders(2)
  t.teardown(async () => { for (const l of leased) await l.close() })
  const budgets = { requestsPerMinute: 200 }
  const verdicts = await Promise.all(Array.from({ length: 300 }, async (_, i) => await leased[i % 2].take({ subject: 't:a' }, budgets)))
  t.equal(verdicts.filter((v) => v.ok).length, 200, '200 of 300 pass')
  for (const l of leased) await l.usage('t:a')
  t.equal((await book.usage('t:a')).used.requestsPerMinute, 200, 'and 200 are charged')
})

t.test('a listener seeking through one recording: every request passes, and nearly all are decided by the lease', async (t) => {
  const { leased, remotes } = holders(1)
  t.teardown(async () => await leased[0].close())
  const budgets = { recordingsPerHour: 1, requestsPerMinute: 100000, bytesPerHour: 1e12 }
  let passed = 0
  for (let i = 0; i < 500; i++) if ((await leased[0].take({ subject: 't:player', recording: rec(7) }, budgets)).ok) passed++
  t.equal(passed, 500, 'all 500 pass on a budget of one recording')
  t.ok(remotes[0].asked <= 5, `the store was asked ${remotes[0].asked} times for 500 checks`)
})

t.test('what another holder holds but did not use does not cut a budget short: the refusal is asked again after it settles', async (t) => {
  const { leased, remotes } = holders(2)
  t.teardown(async () => { for (const l of leased) await l.close() })
  const budgets = { recordingsPerHour: 8 }
  // Holder 0 takes one recording and a lease with slots for more it never uses.
  t.match(await leased[0].take({ subject: 't:b', recording: rec(0) }, budgets), { ok: true })
  const held = (await remotes[0].book.usage('t:b')).held.recordings
  t.ok(held > 0, `holder 0's lease holds ${held} slots`)
  // Holder 1 takes the rest: 7 more pass, though holder 0's slots were held when it asked.
  const rest: Verdict[] = []
  for (let i = 1; i <= 8; i++) rest.push(await leased[1].take({ subject: 't:b', recording: rec(i) }, budgets))
  t.same(rest.map((v) => v.ok), [true, true, true, true, true, true, true, false], 'recordings 2 to 8 pass, the ninth is refused')
})

t.test('a lease is not used while the store cannot be reached; ended responses count against its bytes', async (t) => {
  const { leased, remotes } = holders(1)
  t.teardown(async () => await leased[0].close())
  const budgets = { bytesPerHour: 1000 }
  t.ok((await leased[0].take({ subject: 't:c' }, budgets)).ok)
  remotes[0].up = false
  await t.rejects(Promise.resolve(leased[0].take({ subject: 't:c' }, budgets)), 'the store down: the check goes to it (and fails), the lease is not used')
  remotes[0].up = true
  t.ok((await leased[0].take({ subject: 't:c' }, budgets)).ok, 'the store back: served')
  // A subject of its own, for the bytes.
  t.ok((await leased[0].take({ subject: 't:f' }, budgets)).ok)
  const asked = remotes[0].asked
  t.equal((await remotes[0].book.usage('t:f')).held.bytes, 250, 'its lease holds 250 bytes: half of what is left under half the budget')
  leased[0].spend('t:f', 100)
  t.ok((await leased[0].take({ subject: 't:f' }, budgets)).ok, 'a response of 100 bytes ended: within the lease\'s 250')
  t.equal(remotes[0].asked, asked, 'decided by the lease')
  leased[0].spend('t:f', 1100)
  t.match(await leased[0].take({ subject: 't:f' }, budgets), { ok: false, budget: 'bytesPerHour' }, 'then 1100 more: the lease no longer covers the next check, and the store, sent the 1200 bytes with the settlement first, refuses it')
  t.equal(remotes[0].asked, asked + 1, 'that check went to the store')
})

t.test('a holder that dies: its hold is charged in full after HOLD_MS, never freed', async (t) => {
  let now = Date.UTC(2026, 10, 30, 9)
  const { leased, remotes, book } = holders(1, () => now)
  t.teardown(async () => await leased[0].close())
  const budgets = { requestsPerMinute: 100, recordingsPerHour: 40 }
  t.ok((await leased[0].take({ subject: 't:d', recording: rec(1) }, budgets)).ok)
  const u = await book.usage('t:d')
  remotes[0].drop = true
  const held = u.held
  t.ok(held.requests > 0 && held.recordings > 0, `the lease holds ${held.requests} requests and ${held.recordings} slots`)
  now += HOLD_MS
  const after = await book.usage('t:d')
  t.same(after.used, { requestsPerMinute: 1 + held.requests, recordingsPerHour: 1 + held.recordings, recordingsPerDay: 1 + held.recordings, bytesPerHour: 0 }, 'charged in full')
  t.same(after.held, { requests: 0, recordings: 0, bytes: 0 })
})

t.test('a lease is settled within LEASE_MS of its grant', async (t) => {
  const { leased, remotes } = holders(1)
  t.teardown(async () => await leased[0].close())
  const budgets = { requestsPerMinute: 1000 }
  t.ok((await leased[0].take({ subject: 't:e' }, budgets)).ok)
  for (let i = 0; i < 5; i++) await leased[0].take({ subject: 't:e' }, budgets)
  await new Promise((resolve) => setTimeout(resolve, LEASE_MS * 4))
  t.match(remotes[0].settled, [{ subject: 't:e', requests: 5 }], 'settled on its own, with the 5 requests it decided')
})

t.test('two rules with their own budgets on one subject: no lease while both are charged, and neither holds up the other', async (t) => {
  const { leased, book } = holders(2)
  t.teardown(async () => { for (const l of leased) await l.close() })
  const roomy = { recordingsPerHour: 200 }
  const strict = { recordingsPerHour: 20 }
  // Holder 0 plays 5 recordings under the roomy rule, with a lease of many slots.
  for (let i = 0; i < 5; i++) t.ok((await leased[0].take({ subject: 't:g', recording: rec(i) }, roomy)).ok)
  t.ok((await book.usage('t:g')).held.recordings > 15, 'the roomy rule\'s lease holds more slots than the strict rule has left')
  // Holder 1: the strict rule's 15 recordings left all pass, though the roomy lease held them when it first asked.
  const strictVerdicts: Verdict[] = []
  for (let i = 100; i < 116; i++) strictVerdicts.push(await leased[1].take({ subject: 't:g', recording: rec(i) }, strict))
  t.same(strictVerdicts.map((v) => v.ok), [...new Array(15).fill(true), false], 'the strict rule: 15 more pass (20 in all), the 16th is refused')
  // While both rules charge the subject, no lease is handed out: every check is the store's.
  t.ok((await leased[0].take({ subject: 't:g', recording: rec(0) }, roomy)).ok)
  t.same((await book.usage('t:g')).held, { requests: 0, recordings: 0, bytes: 0 }, 'no lease after the subject was charged under two budgets')
})

t.test('recordings are counted new once, by the store, however many leases a player goes through', async (t) => {
  const book = new LocalBudgets(() => Date.now())
  const remote = new Remote(book)
  let fresh = 0
  const leased = new LeasedBudgets(remote, { onFresh: (n) => { fresh += n } })
  t.teardown(async () => await leased.close())
  const budgets = { recordingsPerHour: 50 }
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 20; i++) {
      const v = await leased.take({ subject: 't:h', recording: rec(i % 2) }, budgets)
      if (v.ok && v.fresh) fresh++
    }
    // Each round in a lease of its own.
    await leased.usage('t:h')
  }
  t.equal(fresh, 2, 'two recordings, counted new twice in all')
})

t.test('a check that failed after the store charged it frees the lease it was given; a settlement the store could not take is sent again', async (t) => {
  const book = new LocalBudgets(() => Date.now())
  const remote = new Remote(book)
  const leased = new LeasedBudgets(remote)
  t.teardown(async () => await leased.close())
  const budgets = { recordingsPerHour: 40 }
  // The answer is lost after the store ran the check.
  const take = remote.take.bind(remote)
  remote.take = async (c, b, id) => { await take(c, b, id); throw new Error('the answer was lost') }
  await t.rejects(Promise.resolve(leased.take({ subject: 't:i', recording: rec(1) }, budgets)))
  t.same((await book.usage('t:i')).held, { requests: 0, recordings: 0, bytes: 0 }, 'the lease it was given is freed')
  remote.take = take
  t.ok((await leased.take({ subject: 't:i', recording: rec(2) }, budgets)).ok)
  t.ok((await leased.take({ subject: 't:i', recording: rec(3) }, budgets)).ok, 'a second recording under the lease')
  const settled = remote.settled.length
  remote.up = false
  // The lease runs out while the store cannot be reached; its settlement waits.
  await waitUntil(() => (leased as unknown as { leases: Map<string, unknown> }).leases.size === 0)
  t.equal(remote.settled.length, settled, 'nothing was settled while the store was down')
  t.ok((await book.usage('t:i')).held.recordings > 0, 'while the store is down the hold stays')
  remote.up = true
  await waitUntil(() => remote.settled.some((s) => s.recordings.includes(rec(3))))
  const u = await book.usage('t:i')
  t.same([u.used.recordingsPerHour, u.held.recordings], [3, 0], 'once it is back the settlement is sent: 3 recordings, nothing held')
})

async function waitUntil (ok: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !ok(); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  if (!ok()) throw new Error('not within 30 s')
}

t.test('a settlement the store never took in time: its hold is charged in full, then only the bytes beyond the hold are spent (none twice)', async (t) => {
  const { book, remotes: [remote], leased: [leased] } = holders(1)
  t.teardown(async () => await leased.close())
  const budgets = { bytesPerHour: 1000 }
  t.ok((await leased.take({ subject: 't:h' }, budgets)).ok)
  const held = (await book.usage('t:h')).held.bytes
  t.equal(held, 250, 'the lease holds 250 bytes')
  leased.spend('t:h', 400)
  remote.up = false
  // The lease ends; its settlement (400 bytes) cannot be sent until the hold has run out.
  await waitUntil(() => (leased as unknown as { leases: Map<string, unknown> }).leases.size === 0)
  let used = 0
  for (let i = 0; i < 600 && used < 400; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    used = (await book.usage('t:h')).used.bytesPerHour
  }
  await new Promise((resolve) => setTimeout(resolve, LEASE_MS * 3))
  t.equal((await book.usage('t:h')).used.bytesPerHour, 400, `charged 400 bytes: the hold's ${held} in full, and the 150 beyond it (not the 400 again)`)
})

t.test('a settlement the store answers only after the hold ran out (a slow store): the hold was charged in full, and the bytes beyond it are spent', async (t) => {
  let now = Date.UTC(2026, 10, 30, 9)
  const { book, remotes: [remote], leased: [leased] } = holders(1, () => now)
  t.teardown(async () => await leased.close())
  const budgets = { bytesPerHour: 1000 }
  t.ok((await leased.take({ subject: 't:j' }, budgets)).ok)
  t.equal((await book.usage('t:j')).held.bytes, 250, 'the lease holds 250 bytes')
  leased.spend('t:j', 400)
  // The store's clock passes the hold's end before the settlement reaches it.
  now += HOLD_MS + 1
  await waitUntil(() => remote.settled.some((s) => s.subject === 't:j'))
  await new Promise((resolve) => setTimeout(resolve, LEASE_MS * 2))
  t.equal((await book.usage('t:j')).used.bytesPerHour, 400, 'charged 400: the hold\'s 250 in full, and the 150 beyond it')
})
