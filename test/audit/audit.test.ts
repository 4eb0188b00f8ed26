// The audit trail: an access record made durable before the NAS is asked,
// a fetch record when the response ends, a refusal record for every refused
// attempt, all JSON lines in a 0600 file in a 0700 directory; and when the
// trail cannot be written, nothing is served.
import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RECORDING, bearer, get, scrape, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

t.test('a 200 fetch leaves an access record, then a fetch record with the same requestId', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const token = gw.token({ jti: 'jti-audit-1' })
  const res = await get(gw, PATH, { headers: { ...bearer(token), 'user-agent': 'audit-test/1' } })
  t.equal(res.status, 200)
  const requestId = res.headers['x-request-id']
  t.type(requestId, 'string')

  const fetch = await waitFor('the fetch record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  const records = gw.auditRecords()
  const mine = records.filter((r) => r.requestId === requestId)
  t.same(mine.map((r) => r.event), ['access', 'fetch'], 'access precedes fetch in file order, one of each')
  const access = mine[0]

  t.match(access, { event: 'access', requestId, subject: 'alice', jti: 'jti-audit-1', method: 'GET', path: PATH, rule: 'recordings', clientIp: '127.0.0.1', userAgent: 'audit-test/1' })
  t.equal(access.range, undefined, 'no range when none was sent')
  t.equal(access.status, undefined, 'the access record is written before there is a status')

  t.equal(fetch.event, 'fetch')
  t.type(fetch.time, 'string')
  t.equal(new Date(fetch.time as string).toISOString(), fetch.time, 'time is an ISO-8601 timestamp')
  t.equal(fetch.requestId, requestId)
  t.equal(fetch.subject, 'alice')
  t.equal(fetch.jti, 'jti-audit-1')
  t.equal(fetch.clientIp, '127.0.0.1')
  t.equal(fetch.method, 'GET')
  t.equal(fetch.path, PATH, 'the canonical path')
  t.equal(fetch.range, undefined)
  t.equal(fetch.status, 200)
  t.equal(fetch.bytes, res.body.length, 'bytes is the body length')
  t.equal(fetch.bytes, RECORDING.length)
  t.type(fetch.durationMs, 'number')
  t.ok((fetch.durationMs as number) >= 0, 'durationMs is not negative')
  t.equal(fetch.outcome, 'complete')
  t.equal(fetch.rule, 'recordings')
})

t.test('the path recorded is the canonical one, and the range is recorded when sent', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  // Percent-encoded unreserved characters are decoded by canonicalisation.
  const res = await get(gw, '/medicall/2016/01/01/%30%383012_46701234567.wav', { headers: { ...bearer(gw.token()), range: 'bytes=0-99' } })
  t.equal(res.status, 206)
  const requestId = res.headers['x-request-id']
  const fetch = await waitFor('the fetch record', () =>
    gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === requestId))
  t.equal(fetch.path, PATH)
  t.equal(nas.requests[0].url, PATH)
  t.equal(fetch.range, 'bytes=0-99')
  t.equal(fetch.status, 206)
  t.equal(fetch.bytes, 100)
  const access = gw.auditRecords().find((r) => r.event === 'access' && r.requestId === requestId)
  t.equal(access?.range, 'bytes=0-99')
})

t.test('each refused attempt leaves one refusal record and no access or fetch record', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const cases = [
    { name: 'no token', headers: {} as Record<string, string>, path: PATH, status: 401, reason: 'NASGUARD_ERR_TOKEN_MISSING' },
    { name: 'wrong scope', headers: bearer(gw.token({ scope: 'other' })), path: PATH, status: 403, reason: 'NASGUARD_ERR_INSUFFICIENT_SCOPE' },
    { name: 'directory', headers: bearer(gw.token()), path: '/medicall/2016/01/01/', status: 403, reason: 'NASGUARD_ERR_DIRECTORY' }
  ]
  for (const c of cases) {
    const res = await get(gw, c.path, { headers: c.headers })
    t.equal(res.status, c.status, `${c.name}: status`)
    t.equal((JSON.parse(res.body.toString()) as { error: string }).error, c.reason, `${c.name}: error code`)
    const requestId = res.headers['x-request-id']
    t.type(requestId, 'string', `${c.name}: has a request id`)
    await waitFor(`${c.name}: the refusal record`, () =>
      gw.auditRecords().find((r) => r.event === 'refusal' && r.requestId === requestId))
    const mine = gw.auditRecords().filter((r) => r.requestId === requestId)
    t.equal(mine.length, 1, `${c.name}: exactly one record`)
    t.match(mine[0], { event: 'refusal', status: c.status, reason: c.reason, clientIp: '127.0.0.1', method: 'GET' }, `${c.name}: the refusal record`)
    t.equal(new Date(mine[0].time as string).toISOString(), mine[0].time, `${c.name}: ISO time`)
  }
  const events = gw.auditRecords().map((r) => r.event)
  t.same(events, ['refusal', 'refusal', 'refusal'], 'no access or fetch record at all')
  t.equal(nas.requests.length, 0, 'the NAS was never asked')
  const wrongScope = gw.auditRecords()[1]
  t.equal(wrongScope.subject, 'alice', 'a refusal after authentication names the subject')
})

t.test('every audit line is JSON; file 0600, directory 0700', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  await get(gw, PATH, { headers: bearer(gw.token()) })
  await get(gw, PATH)
  await get(gw, PATH, { headers: { ...bearer(gw.token()), range: 'bytes=0-9' } })
  await waitFor('5 audit records', () => gw.auditRecords().length >= 5 ? true : undefined)
  const file = join(gw.auditDir, 'audit.jsonl')
  const text = readFileSync(file, 'utf8')
  t.ok(text.endsWith('\n'), 'the file ends with a complete line')
  const lines = text.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 5)
  for (const [i, line] of lines.entries()) {
    let parsed: unknown
    t.doesNotThrow(() => { parsed = JSON.parse(line) }, `line ${i + 1} parses`)
    t.type(parsed, 'object', `line ${i + 1} is an object`)
    t.match(parsed, { event: /^(access|fetch|refusal)$/, time: String, requestId: String }, `line ${i + 1} has the common fields`)
  }
  t.equal(statSync(file).mode & 0o777, 0o600, 'audit file is 0600')
  t.equal(statSync(gw.auditDir).mode & 0o777, 0o700, 'audit dir is 0700')
})

t.test('a directory the writer creates itself is 0700, its file 0600', async (t) => {
  const nas = await startStubNas(t)
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-audit-new-')), 'nested', 'audit')
  const gw = await startTestGateway(t, nas, { audit: { dir } })
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  const file = join(dir, 'audit.jsonl')
  await waitFor('the fetch record', () => readFileSync(file, 'utf8').includes('"event":"fetch"') ? true : undefined)
  t.equal(statSync(file).mode & 0o777, 0o600, 'audit file is 0600')
  t.equal(statSync(dir).mode & 0o777, 0o700, 'audit dir is 0700')
})

t.test('fail closed: an audit trail that cannot be written serves nothing', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-audit-full-'))
  symlinkSync('/dev/full', join(dir, 'audit.jsonl'))
  // A planted symlink is never followed (O_NOFOLLOW): the writer neither
  // writes through it nor changes its target's mode.
  const devFullMode = statSync('/dev/full').mode & 0o7777

  const gw = await startTestGateway(t, nas, { audit: { dir } })
  const before = await scrape(gw.adminUrl)
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 503)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal((JSON.parse(res.body.toString()) as { error: string }).error, 'NASGUARD_ERR_AUDIT_UNAVAILABLE')
  t.equal(res.body.includes(RECORDING.subarray(0, 44)), false, 'no recording bytes')
  t.equal(nas.requests.length, 0, 'the NAS was never asked')
  const after = await scrape(gw.adminUrl)
  const key = 'nasguard_audit_failures_total{event="access"}'
  t.equal((after.get(key) ?? 0) - (before.get(key) ?? 0), 1, 'one access-record failure counted')
  t.equal(after.get(key), 1)
  t.equal(after.get('nasguard_active_streams'), 0, 'no stream was started')
  t.equal(statSync('/dev/full').mode & 0o7777, devFullMode, 'the symlink target was not touched')
})

t.test('fail closed, then recovery without a restart once the trail is writable again', async (t) => {
  const nas = await startStubNas(t)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-audit-blocked-'))
  mkdirSync(join(dir, 'audit.jsonl')) // something that is not a file sits where the trail goes
  const gw = await startTestGateway(t, nas, { audit: { dir } })
  const refused = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(refused.status, 503)
  t.equal(nas.requests.length, 0, 'nothing fetched unaudited')
  rmdirSync(join(dir, 'audit.jsonl'))
  const served = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(served.status, 200, 'served again once the access record can be written')
  t.equal(nas.requests.length, 1)
  t.equal(statSync(join(dir, 'audit.jsonl')).mode & 0o777, 0o600)
})
