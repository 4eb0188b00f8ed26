// Every payload of test/fixtures/traversal-payloads.json (traversal and
// encoding variants built from the classes the gateway refuses) is sent raw
// over TLS with a valid token: each is answered 400, 403 or 404, and none
// reaches the NAS.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { rawTls, startStubNas, startTestGateway, statusOf } from '../helpers/gateway.js'

const payloads = JSON.parse(readFileSync('test/fixtures/traversal-payloads.json', 'utf8')) as Array<{ class: string, path: string }>

t.test('the fixture holds at least 150 variants over every class', async (t) => {
  t.ok(payloads.length >= 150, `${payloads.length} variants`)
  t.ok(new Set(payloads.map((p) => p.class)).size >= 12, 'at least 12 classes')
  t.equal(new Set(payloads.map((p) => p.path)).size, payloads.length, 'no duplicates')
})

t.test('every variant is refused and none reaches the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token()
  const byClass = new Map<string, number>()
  for (const p of payloads) {
    const res = await rawTls(gw, `GET ${p.path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`)
    const status = statusOf(res.text)
    t.ok([400, 403, 404].includes(status), `${p.class}: ${p.path.slice(0, 80)} → ${status}`)
    byClass.set(p.class, (byClass.get(p.class) ?? 0) + 1)
  }
  t.equal(nas.requests.length, 0, `the NAS saw nothing (${nas.requests.map((r) => r.url).join(' ')})`)
  t.comment([...byClass].map(([c, n]) => `${c}: ${n}`).join(', '))
})
