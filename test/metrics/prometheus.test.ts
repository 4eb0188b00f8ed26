// What ships for Prometheus and Grafana holds up against a live gateway:
// promtool accepts a real scrape and the alert rules (and their unit tests
// fire the alerts), and every metric the rules and the dashboard name is one
// the gateway exports. promtool comes from Debian's prometheus package; CI
// installs it.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { bearer, get, rawPlain, startStubNas, startTestGateway, type Teardown } from '../helpers/gateway.js'
import { promOf } from '../../src/probe/output.js'
import { finding } from '../../src/probe/findings.js'

const PROMTOOL = spawnSync('sh', ['-c', 'command -v promtool']).stdout.toString().trim()
if (!PROMTOOL && process.env.CI) t.fail('promtool is not installed, and CI should have installed it (.ci/run)')
const skip = PROMTOOL ? false : 'promtool is not installed here (apt-get install prometheus)'

async function liveScrape (t: Teardown): Promise<string> {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  await get(gw, '/medicall/a.wav', { headers: bearer(gw.token()) })
  await get(gw, '/medicall/a.wav')
  await get(gw, '/medicall/%2e%2e/a.wav', { headers: bearer(gw.token()) })
  await get(gw, '/medicall/', { headers: bearer(gw.token()) })
  await rawPlain(gw, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  return (await fetch(gw.adminUrl + '/metrics')).text()
}

t.test('promtool check metrics passes on a live scrape', { skip }, async (t) => {
  const text = await liveScrape(t)
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' })
  t.equal(r.status, 0, `promtool check metrics: ${r.stdout}${r.stderr}`)
  t.equal((r.stdout + r.stderr).trim(), '', 'no lint findings')
})

t.test('the alert rules are valid and their unit tests fire the alerts', { skip }, async (t) => {
  const check = spawnSync(PROMTOOL, ['check', 'rules', 'deploy/prometheus/alerts.yml'], { encoding: 'utf8' })
  t.equal(check.status, 0, check.stdout + check.stderr)
  const unit = spawnSync(PROMTOOL, ['test', 'rules', 'deploy/prometheus/alerts.test.yml'], { encoding: 'utf8' })
  t.equal(unit.status, 0, unit.stdout + unit.stderr)
  const config = spawnSync(PROMTOOL, ['check', 'config', 'deploy/prometheus/prometheus.yml'], { encoding: 'utf8' })
  t.equal(config.status, 0, config.stdout + config.stderr)
})

t.test('every metric the alerts and the dashboard use is exported (by the gateway, or by nasguard probe --format prom)', async (t) => {
  const text = await liveScrape(t)
  const probe = await promOf([{ url: 'https://nas.example.org/', reached: true, time: new Date().toISOString(), findings: [finding('HIGH', 'listing', 'directory-listing', 'a listing', 'turn it off')] }])
  const exported = new Set((text + '\n' + probe).split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]))
  const used = (file: string): string[] => [...new Set((readFileSync(file, 'utf8').match(/nasguard_[a-z0-9_]+/g) ?? [])
    .map((m) => m.replace(/_(bucket|sum|count)$/, '')))]
  for (const file of ['deploy/prometheus/alerts.yml', 'deploy/grafana/nasguard.json']) {
    for (const m of used(file)) t.ok(exported.has(m), `${file}: ${m} is exported`)
  }
  const dash = JSON.parse(readFileSync('deploy/grafana/nasguard.json', 'utf8')) as { panels: Array<{ title: string }> }
  for (const want of ['Traffic', 'Refusals', 'Auth failures', 'Latency', 'Bytes', 'Audit', 'Certificate']) {
    t.ok(dash.panels.some((p) => p.title.includes(want)), `the dashboard has a ${want} panel`)
  }
})
