#!/usr/bin/env node
// npm run build && node test/bench/budget-checks.mjs: what one budget check
// costs by itself, in CPU per check: the book in memory (a take and a
// spend, as one process does per request), and a check a lease decides
// (src/budgets/lease.ts; what a worker does for most requests when the
// budgets are the primary's or Redis's). No sockets, no store round trips:
// test/bench/budgets.mjs measures those, with the whole gateway.
import { LocalBudgets } from '../../dist/budgets/store.js'
import { LeasedBudgets } from '../../dist/budgets/lease.js'
const B = { requestsPerMinute: 1000000, recordingsPerHour: 1000000, recordingsPerDay: 10000000, bytesPerHour: 1e15 }
const rec = '/medicall/2016/01/01/000001_46701234567.wav'
function timeIt (label, n, fn) {
  for (let i = 0; i < 20000; i++) fn(i)
  const c0 = process.cpuUsage(); const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) fn(i)
  const c = process.cpuUsage(c0); const ns = Number(process.hrtime.bigint() - t0)
  console.log(`${label}: ${(ns / n / 1000).toFixed(2)} µs wall, ${((c.user + c.system) / n).toFixed(2)} µs CPU per check`)
}
const local = new LocalBudgets(Date.now)
timeIt('in memory (take + spend)', 300000, () => { local.take({ subject: 't:x', recording: rec }, B); local.spend('t:x', 65536) })
// A lease over the book (answering at once): each round of 1000 checks within one lease, settled between rounds.
const remote = { take: (c, b, id) => local.take(c, b, id), settle: (s) => local.settle(s), reachable: () => true, spend: (l, n) => local.spend(l, n), usage: async (l) => local.usage(l), reset: async () => {}, near: async () => 0, close: async () => {} }
const leased = new LeasedBudgets(remote)
let cpu = 0; let n = 0
for (let round = 0; round < 300; round++) {
  await leased.take({ subject: 't:y', recording: rec }, B)
  const c0 = process.cpuUsage()
  for (let i = 0; i < 1000; i++) { const v = leased.take({ subject: 't:y', recording: rec }, B); if (v instanceof Promise) throw new Error('asked'); leased.spend('t:y', 65536) }
  const c = process.cpuUsage(c0); cpu += c.user + c.system; n += 1000
  await leased.usage('t:y')
}
console.log(`lease (take + spend, decided locally): ${(cpu / n).toFixed(2)} µs CPU per check`)
process.exit(0)
