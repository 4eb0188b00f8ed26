// Metrics: a scripted scenario on one gateway, and exact counter deltas.
// Labels stay bounded: never a path, a subject, an address or a number.
import t from 'tap'
import { RECORDING, bearer, get, rawPlain, scrape, startStubNas, startTestGateway, statusOf } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

type Metrics = Map<string, number>

/**
 * The change of a metric between two scrapes, summed over every series whose
 * labels include the ones in `key` (`name{a="x"}` matches `name{a="x",b="y"}`).
 */
function delta (before: Metrics, after: Metrics, key: string): number {
  const m = /^([^{]+)(?:\{(.*)\})?$/.exec(key)
  const name = m?.[1] ?? key
  const want = (m?.[2] ?? '').split(/,(?=[a-z_]+=")/).filter(Boolean)
  const sum = (metrics: Metrics): number => {
    let total = 0
    for (const [k, v] of metrics) {
      const km = /^([^{]+)(?:\{(.*)\})?$/.exec(k)
      if (km?.[1] !== name) continue
      const have = (km[2] ?? '').split(/,(?=[a-z_]+=")/)
      if (want.every((w) => have.includes(w))) total += v
    }
    return total
  }
  return sum(after) - sum(before)
}

t.test('a scripted scenario moves each counter by exactly what happened', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const before = await scrape(gw.adminUrl)

  for (let i = 0; i < 2; i++) {
    const ok = await get(gw, PATH, { headers: bearer(gw.token()) })
    t.equal(ok.status, 200, `fetch ${i + 1}`)
    t.equal(ok.body.length, RECORDING.length)
  }
  t.equal((await get(gw, PATH)).status, 401, 'no token')
  t.equal((await get(gw, PATH, { headers: bearer(gw.token({ scope: 'other' })) })).status, 403, 'wrong scope')
  t.equal((await get(gw, '/medicall/2016/01/01/', { headers: bearer(gw.token()) })).status, 403, 'directory')
  const plain = await rawPlain(gw, `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n`)
  t.equal(statusOf(plain.text), 400, 'plaintext answered 400')
  t.ok(plain.closed, 'and closed')
  nas.handle((req) => { req.socket.destroy() })
  const outage = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(outage.status, 502, 'NAS outage')

  // Counters move when responses close and audit lines land; nothing emits
  // that, so poll (bounded) until the last of them has moved.
  const after = await waitFor('the counters to settle', async () => {
    const m = await scrape(gw.adminUrl)
    const settled =
      delta(before, m, 'nasguard_http_requests_total{method="GET",status_class="5xx"}') >= 1 &&
      delta(before, m, 'nasguard_http_requests_total{method="GET",status_class="4xx"}') >= 3 &&
      delta(before, m, 'nasguard_http_requests_total{method="GET",status_class="2xx"}') >= 2
    return settled ? m : undefined
  })

  const expected: Array<[string, number]> = [
    ['nasguard_http_requests_total{method="GET",status_class="2xx"}', 2],
    ['nasguard_http_requests_total{method="GET",status_class="4xx"}', 3],
    ['nasguard_http_requests_total{method="GET",status_class="5xx"}', 1],
    ['nasguard_refusals_total{reason="token_missing"}', 1],
    ['nasguard_refusals_total{reason="insufficient_scope"}', 1],
    ['nasguard_refusals_total{reason="directory"}', 1],
    ['nasguard_refusals_total{reason="plaintext_on_tls_port"}', 1],
    ['nasguard_tls_plaintext_requests_total', 1],
    ['nasguard_upstream_errors_total{kind="unreachable"}', 1],
    ['nasguard_http_response_body_bytes_total', 2 * RECORDING.length],
    ['nasguard_http_requests_total{status_class="2xx",rule="recordings"}', 2],
    ['nasguard_refusals_total{class="auth"}', 1],
    ['nasguard_refusals_total{class="policy"}', 1],
    ['nasguard_refusals_total{class="listing"}', 1],
    ['nasguard_refusals_total{class="plaintext"}', 1],
    ['nasguard_auth_failures_total{reason="token_missing"}', 1],
    ['nasguard_policy_denials_total{rule="recordings"}', 1],
    ['nasguard_upstream_response_seconds_count', 2],
    ['nasguard_http_time_to_first_byte_seconds_count', 6]
  ]
  for (const [key, want] of expected) t.equal(delta(before, after, key), want, key)

  // Nothing else was refused, and no other kind of NAS failure was counted.
  const refusals = [...after.keys()].filter((k) => k.startsWith('nasguard_refusals_total{'))
  t.equal(refusals.reduce((n, k) => n + delta(before, after, k), 0), 4, 'four refusals in all')
  const upstream = [...after.keys()].filter((k) => k.startsWith('nasguard_upstream_errors_total{'))
  t.equal(upstream.reduce((n, k) => n + delta(before, after, k), 0), 1, 'one NAS failure in all')
  t.equal(after.get('nasguard_active_streams'), 0, 'no stream left open')
  t.equal(nas.requests.length, 4, 'the NAS saw the two fetches and the failed one, asked twice (a reset before an answer is retried once)')
})

t.test('metric labels never hold a path, a subject, an address or a number', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  await get(gw, PATH, { headers: bearer(gw.token()) })
  await get(gw, PATH)
  await get(gw, '/medicall/2016/01/01/', { headers: bearer(gw.token()) })
  await get(gw, '/stockholm/x.wav', { headers: bearer(gw.token()) })
  nas.handle((_req, res) => { res.writeHead(404); res.end() })
  await get(gw, PATH, { headers: bearer(gw.token()) })
  await rawPlain(gw, `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n`)

  const text = await (await fetch(gw.adminUrl + '/metrics')).text()
  const labelSets = text.split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => /\{(.*)\}/.exec(l)?.[1] ?? '')
    .filter((l) => l !== '')
  t.ok(labelSets.length > 10, 'there are labelled series to look at')
  for (const needle of ['/medicall', 'alice', '127.0.0.1', '46701234567']) {
    t.same(labelSets.filter((l) => l.includes(needle)), [], `no label holds ${needle}`)
  }
  t.same(labelSets.filter((l) => /\d{6,}/.test(l)), [], 'no label holds a long number (a phone number)')
  t.notOk(text.includes('46701234567'), 'the phone number is nowhere in the exposition')
  t.notOk(text.includes('/medicall'), 'the path is nowhere in the exposition')
})

t.test('the admin listener is its own port; the TLS port does not serve it', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const adminPort = Number(new URL(gw.adminUrl).port)
  t.not(adminPort, gw.port, 'admin and TLS ports differ')

  const health = await fetch(gw.adminUrl + '/healthz')
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok' })

  const metrics = await fetch(gw.adminUrl + '/metrics')
  t.equal(metrics.status, 200)
  t.match(await metrics.text(), /^# HELP nasguard_/m)

  for (const path of ['/metrics', '/healthz']) {
    const res = await get(gw, path, { headers: bearer(gw.token()) })
    t.equal(res.status, 403, `${path} on the TLS port is refused`)
    t.equal((JSON.parse(res.body.toString()) as { error: string }).error, 'NASGUARD_ERR_NO_RULE', `${path}: no rule`)
    t.notMatch(res.body.toString(), /nasguard_/, `${path}: no metrics leak`)
  }
  t.equal(nas.requests.length, 0, 'nor are they proxied to the NAS')
})
