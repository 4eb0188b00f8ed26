// One error line per failed audit record made 48,000 lines in 20 s on a full
// disk. Such lines go out at most once a second, each saying how many it
// stands for; the metric still counts every failure.
import t from 'tap'
import { mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LogThrottle } from '../../src/logging.js'
import { bearer, get, scrape, startStubNas, startTestGateway } from '../helpers/gateway.js'

t.test('LogThrottle: one line per interval, the next says how many were held back', async (t) => {
  const lines: number[] = []
  const throttle = new LogThrottle(1000)
  for (let ms = 0; ms < 2500; ms += 10) throttle.line((repeated) => lines.push(repeated), ms)
  t.same(lines, [0, 99, 99], 'three lines for 250 events over 2.5 s: the first, then one a second with what it stands for')
})

t.test('a storm of audit failures logs a few lines and counts every failure', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-storm-'))
  mkdirSync(join(dir, 'audit.jsonl')) // the trail cannot be written
  const gw = await startTestGateway(t, nas, { audit: { dir } })
  const n = 60
  const statuses = await Promise.all(Array.from({ length: n }, async () => (await get(gw, '/medicall/a.wav', { headers: bearer(gw.token()) })).status))
  t.ok(statuses.every((s) => s === 503), 'every request is refused: nothing is served unaudited')
  const failures = [...(await scrape(gw.adminUrl))].filter(([k]) => k.startsWith('nasguard_audit_failures_total')).reduce((a, [, v]) => a + v, 0)
  t.ok(failures >= n, `every failed record is counted (${failures})`)
  const lines = gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit record could not be written')
  t.ok(lines.length >= 1, 'the failure is logged')
  t.ok(lines.length < failures / 2, `far fewer lines (${lines.length}) than failures (${failures})`)
  const represented = lines.reduce((a, l) => a + 1 + Number(l.repeated ?? 0), 0)
  t.ok(represented <= failures, `the lines stand for no more than the failures (${represented})`)
})
