// A client that sends its request headers slowly (slowloris) is answered
// 408 NASGUARD_ERR_REQUEST_TIMEOUT (it got 400), counted and audited, and
// the connection closes close to limits.headersTimeoutMs: Node checks that
// timeout every connectionsCheckingInterval, 30 s unless set, so a 10 s
// setting fired at 26-37 s. The bound here is generous (a busy machine) but
// far under those 30 s.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { scrape, startStubNas, startTestGateway, statusOf, testCerts } from '../helpers/gateway.js'
import { parseRaw } from '../helpers/raw-http.js'
import { waitFor } from '../helpers/wait.js'

t.test('slow headers: 408, counted, audited, closed well before Node\'s 30 s check', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { headersTimeoutMs: 1000 } })
  const started = Date.now()
  const outcome = await new Promise<{ text: string, closedAfterMs: number }>((resolve) => {
    let text = ''
    const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: readFileSync(testCerts().ca) }, () => {
      // The request line and one header, then nothing more: the headers never end.
      socket.write('GET /medicall/a.wav HTTP/1.1\r\nHost: localhost\r\n')
    })
    socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => resolve({ text, closedAfterMs: Date.now() - started }))
  })
  t.equal(statusOf(outcome.text), 408, `answered 408 (${JSON.stringify(outcome.text.slice(0, 40))})`)
  t.equal(parseRaw(outcome.text).json?.error, 'NASGUARD_ERR_REQUEST_TIMEOUT')
  t.ok(outcome.closedAfterMs < 15000, `closed after ${outcome.closedAfterMs} ms, not at Node's 30 s check`)
  t.equal(nas.requests.length, 0, 'nothing reached the NAS')
  const counted = await waitFor('the refusal to be counted', async () => {
    const v = [...await scrape(gw.adminUrl)].find(([k]) => k.startsWith('nasguard_refusals_total{') && k.includes('reason="request_timeout"'))?.[1] ?? 0
    return v >= 1 ? v : undefined
  })
  t.equal(counted, 1, 'refusals{reason="request_timeout"} 1')
  const record = await waitFor('the refusal record', () => gw.auditRecords().find((r) => r.reason === 'NASGUARD_ERR_REQUEST_TIMEOUT'))
  t.match(record, { event: 'refusal', status: 408, clientIp: '127.0.0.1' }, 'audited with the client address')
})
