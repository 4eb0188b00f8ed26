// Plain HTTP (and other non-TLS bytes) sent to the TLS port: one fixed 400,
// the connection closed, nothing parsed, proxied or logged, and counted.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { RECORDING, bearer, get, rawPlain, scrape, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { parseRaw, poll } from '../helpers/raw-http.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const CODE = 'NASGUARD_ERR_PLAINTEXT_ON_TLS_PORT'

t.test('plaintext on the TLS port is answered 400 and closed, never proxied, logged or leaked', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token()
  const postBody = JSON.stringify({ grant: token, note: 'x'.repeat(2048) })

  const rows: Array<{ name: string, payload: string }> = [
    { name: 'GET with a valid Bearer token', payload: `GET ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n` },
    { name: 'POST with a body', payload: `POST ${PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(postBody)}\r\n\r\n${postBody}` },
    { name: 'HTTP/1.0 request', payload: `GET ${PATH} HTTP/1.0\r\nAuthorization: Bearer ${token}\r\n\r\n` },
    { name: 'HTTP/2 prior-knowledge preface', payload: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' },
    { name: 'a random non-HTTP line', payload: 'SSH-2.0-OpenSSH_9.6 hello ' + token + '\r\n' },
    { name: 'a lone newline', payload: '\n' }
  ]

  for (const row of rows) {
    const before = nas.requests.length
    const res = await rawPlain(gw, row.payload)
    t.ok(res.text.startsWith('HTTP/1.1 400 '), `${row.name}: answered HTTP/1.1 400 (got ${JSON.stringify(res.text.slice(0, 40))})`)
    t.ok(res.text.includes(CODE), `${row.name}: the answer names ${CODE}`)
    const parsed = parseRaw(res.text)
    t.equal(parsed.json?.error, CODE, `${row.name}: JSON body with the error code`)
    t.match(parsed.headers.connection ?? '', /close/i, `${row.name}: Connection: close`)
    t.equal(res.closed, true, `${row.name}: the connection was closed`)
    t.notOk(res.text.includes(token), `${row.name}: the answer does not echo the token`)
    t.equal(nas.requests.length - before, 0, `${row.name}: nothing reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.name}: the NAS has still seen nothing`)
  }

  const metrics = await scrape(gw.adminUrl)
  t.equal(metrics.get('nasguard_tls_plaintext_requests_total'), rows.length, 'every plaintext connection is counted once')

  // Refusals are recorded; none of them, and no log line, holds the token.
  await poll('a refusal record per plaintext connection', () =>
    gw.auditRecords().filter((r) => r.reason === CODE).length >= rows.length ? true : undefined)
  t.equal(gw.auditRecords().filter((r) => r.reason === CODE).length, rows.length, 'one refusal record per plaintext connection')
  const auditText = readFileSync(join(gw.auditDir, 'audit.jsonl'), 'utf8')
  t.notOk(auditText.includes(token), 'the audit trail does not hold the token')
  t.notOk(auditText.includes('Bearer'), 'the audit trail does not hold "Bearer"')
  t.ok(gw.logs.length > 0, 'the gateway logged something (the log check below is not vacuous)')
  t.equal(gw.logs.filter((l) => l.includes(token)).length, 0, 'no log line holds the token')
  t.equal(gw.logs.filter((l) => l.includes(token.split('.')[2])).length, 0, 'no log line holds the token signature')
  t.equal(gw.logs.filter((l) => l.includes('Bearer')).length, 0, 'no log line holds "Bearer"')
  t.equal(gw.logs.filter((l) => l.includes('46701234567')).length, 0, 'no log line holds the recording name')

  // The same port still speaks TLS.
  const ok = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(ok.status, 200, 'a TLS request on the same port is served afterwards')
  t.ok(ok.body.equals(RECORDING), 'with the recording')
  t.equal(nas.requests.length, 1, 'and only that request reached the NAS')
  const after = await scrape(gw.adminUrl)
  t.equal(after.get('nasguard_tls_plaintext_requests_total'), rows.length, 'the TLS request is not counted as plaintext')
})
