// `nasguard audit verify | search | summary`, run as an investigator would:
// the built CLI (npm run build first) in a child process, against a trail a
// real gateway wrote, and against a large rotated trail sealed by hand.
import t from 'tap'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RECORDING, bearer, get, startStubNas, startTestGateway, testCerts, type Response } from '../helpers/gateway.js'
import { waitFor, clearOfUtcMidnight } from '../helpers/wait.js'
import { GENESIS, lineHash, seal } from '../../src/audit/chain.js'
import { AUDIT_FILE, HEAD_FILE, archiveName } from '../../src/audit/writer.js'
import { walkTrail } from '../../src/audit/verify.js'
import { runCli } from '../helpers/process.js'

// The audit writer rotates by the wall clock's UTC day; its trail is one file, so the whole file runs within one UTC day.
await clearOfUtcMidnight(60_000)

const cli = runCli

function jsonLines (s: string): Array<Record<string, unknown>> {
  return s.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
}

const A1 = '/medicall/2016/01/01/083012_46701234567.wav'
const A2 = '/medicall/2016/03/04/101500_46709876543.wav'
const A3 = '/medicall/2017/05/06/120000_46701111111.wav'

interface Sent { who: string, path: string, res: Response, batch: 1 | 2 }

t.test('verify, search and summary over a trail written by a real gateway', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const alice = gw.token({ sub: 'alice' })
  const bob = gw.token({ sub: 'bob' })
  const sent: Sent[] = []
  const send = async (who: string, path: string, headers: Record<string, string>, batch: 1 | 2): Promise<void> => {
    sent.push({ who, path, res: await get(gw, path, { headers }), batch })
  }
  const startedAt = new Date().toISOString()

  await send('alice', A1, bearer(alice), 1)
  await send('alice', A2, { ...bearer(alice), range: 'bytes=0-99' }, 1)
  await send('bob', A1, bearer(bob), 1)
  await send('-', A1, {}, 1) // no token: a refusal without a subject
  await send('alice', A2, bearer(gw.token({ sub: 'alice', scope: 'other' })), 1) // a refusal naming alice
  t.same(sent.map((s) => s.res.status), [200, 206, 200, 401, 403])
  const okIds = (batch: number): string[] => sent.filter((s) => s.batch === batch && s.res.status < 300).map((s) => String(s.res.headers['x-request-id']))
  await waitFor('the fetch records of batch 1', () =>
    okIds(1).every((id) => gw.auditRecords().some((r) => r.event === 'fetch' && r.requestId === id)) ? true : undefined)
  await waitFor('the refusal records of batch 1', () => gw.auditRecords().filter((r) => r.event === 'refusal').length === 2 ? true : undefined)

  // A whole-second boundary after everything of batch 1, then batch 2.
  const t1 = Math.max(...gw.auditRecords().map((r) => Date.parse(String(r.time))))
  const boundary = Math.floor(t1 / 1000) * 1000 + 1000
  await waitFor('the clock to pass the boundary', () => Date.now() > boundary + 5 ? true : undefined, { tries: 200, intervalMs: 20 })
  await send('alice', A3, bearer(alice), 2)
  await send('alice', A1, bearer(alice), 2)
  t.same(sent.filter((s) => s.batch === 2).map((s) => s.res.status), [200, 200])
  await waitFor('the fetch records of batch 2', () =>
    okIds(2).every((id) => gw.auditRecords().some((r) => r.event === 'fetch' && r.requestId === id)) ? true : undefined)
  await gw.gateway.close()
  const endedAt = new Date().toISOString()

  const dir = gw.auditDir
  const keyFile = `${dir}.key`
  const trail = gw.auditRecords()
  const N = trail.length
  t.equal(N, 5 * 2 + 2, 'an access and a fetch record per served request, one record per refusal')
  const loc = ['--dir', dir, '--key-file', keyFile]

  t.test('verify: intact', async (t) => {
    const r = await cli(['audit', 'verify', ...loc])
    t.equal(r.status, 0, r.stdout + r.stderr)
    t.match(r.stdout, `${N} records in 1 file(s), seq 1..${N}`)
    t.match(r.stdout, /chain intact/)
    t.notMatch(r.stdout, /TAMPERING/)
    // The key's default place is beside the directory, as the gateway made it.
    const byDefault = await cli(['audit', 'verify', '--dir', dir])
    t.equal(byDefault.status, 0, byDefault.stderr)
    t.match(byDefault.stdout, /chain intact/)
  })

  t.test('verify --config: the directory and the key come from the gateway config', async (t) => {
    const cdir = mkdtempSync(join(tmpdir(), 'nasguard-auditcli-'))
    t.teardown(() => rmSync(cdir, { recursive: true, force: true }))
    const certs = testCerts()
    const file = join(cdir, 'nasguard.yaml')
    writeFileSync(file, [
      'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
      'upstream: { url: "http://127.0.0.1:9" }',
      `auth: { jwt: { secret: "${'s'.repeat(40)}" } }`,
      'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
      `audit: { dir: ${JSON.stringify(dir)} }`
    ].join('\n'))
    const r = await cli(['audit', 'verify', '--config', file])
    t.equal(r.status, 0, r.stdout + r.stderr)
    t.match(r.stdout, /chain intact/)
  })

  t.test('verify: one edited line is TAMPERING at its file:line, exit 1', async (t) => {
    const copy = join(mkdtempSync(join(tmpdir(), 'nasguard-auditcli-')), 'audit')
    t.teardown(() => rmSync(copy, { recursive: true, force: true }))
    cpSync(dir, copy, { recursive: true })
    const f = join(copy, AUDIT_FILE)
    const lines = readFileSync(f, 'utf8').split('\n')
    t.match(lines[2], /"event":"(access|fetch)"/)
    // Hide which recording was fetched.
    lines[2] = lines[2].replace(/"path":"[^"]+"/, '"path":"/medicall/nothing.wav"')
    writeFileSync(f, lines.join('\n'))
    const r = await cli(['audit', 'verify', '--dir', copy, '--key-file', keyFile])
    t.equal(r.status, 1)
    t.match(r.stdout, /TAMPERING/)
    t.match(r.stdout, /the first: audit\.jsonl:3: the record was edited/)
    t.notMatch(r.stdout, /chain intact/)
  })

  t.test('verify of a directory that is not there, or without its key, says which', async (t) => {
    const kdir = mkdtempSync(join(tmpdir(), 'nasguard-auditcli-nokey-'))
    t.teardown(() => rmSync(kdir, { recursive: true, force: true }))
    const gone = await cli(['audit', 'verify', '--dir', join(kdir, 'missing')])
    t.equal(gone.status, 1)
    t.match(gone.stderr, /no audit trail at .*missing: the directory does not exist/)
    const keyless = await cli(['audit', 'verify', '--dir', kdir])
    t.equal(keyless.status, 1)
    t.match(keyless.stderr, /no audit key at .*\.key \(beside the trail by default; name it with --key-file\)/)
  })

  t.test('verify with a wrong key: said to be the likelier cause, exit 1', async (t) => {
    const kdir = mkdtempSync(join(tmpdir(), 'nasguard-auditcli-key-'))
    t.teardown(() => rmSync(kdir, { recursive: true, force: true }))
    const wrong = join(kdir, 'wrong.key')
    writeFileSync(wrong, 'f'.repeat(64) + '\n')
    const r = await cli(['audit', 'verify', '--dir', dir, '--key-file', wrong])
    t.equal(r.status, 1)
    t.match(r.stdout, /^0 records in 1 file/)
    t.match(r.stdout, `WRONG KEY OR TAMPERING: 2 problem(s); the first: not one of ${N} records has a MAC that holds under this key: it is not the key this trail was sealed with`, 'one problem for the records, one for audit.head')
    const report = await walkTrail(dir, Buffer.from('f'.repeat(64)))
    t.equal(report.records, 0)
    t.same(report.problems.map((p) => p.kind), ['wrong-key', 'edited'], 'the records as one wrong-key problem; audit.head edited')
  })

  t.test('search: --sub and --path-prefix print only the matching records', async (t) => {
    const r = await cli(['audit', 'search', ...loc, '--sub', 'alice', '--path-prefix', '/medicall/2016', '--json'])
    t.equal(r.status, 0, r.stderr)
    const found = jsonLines(r.stdout)
    const expectedIds = sent.filter((s) => s.who === 'alice' && s.path.startsWith('/medicall/2016/')).map((s) => String(s.res.headers['x-request-id']))
    t.equal(expectedIds.length, 4, 'alice asked for 2016 recordings four times (one refused)')
    t.ok(found.length > 0)
    for (const rec of found) {
      t.equal(rec.subject, 'alice', `seq ${String(rec.seq)}: subject`)
      t.ok(String(rec.path).startsWith('/medicall/2016'), `seq ${String(rec.path)}: path prefix`)
      t.equal(rec.mac, undefined, 'no mac in the output')
    }
    t.same(new Set(found.map((x) => x.requestId)), new Set(expectedIds), 'exactly alice\'s 2016 requests')
    t.same(found.map((x) => x.event).sort(), ['access', 'access', 'access', 'fetch', 'fetch', 'fetch', 'refusal'])
    t.same(found.map((x) => x.seq), trail.filter((x) => x.subject === 'alice' && String(x.path).startsWith('/medicall/2016')).map((x) => x.seq), 'in chain order')
    t.match(r.stderr, `${found.length} match(es) in ${N} verified records`)
  })

  t.test('search: --since and --until filter by time', async (t) => {
    const b = new Date(boundary).toISOString()
    const batchIds = (batch: number): Set<string> => new Set(sent.filter((s) => s.batch === batch).map((s) => String(s.res.headers['x-request-id'])))
    const since = await cli(['audit', 'search', ...loc, '--since', b, '--json'])
    t.equal(since.status, 0, since.stderr)
    const after = jsonLines(since.stdout)
    t.equal(after.length, 4, 'batch 2: two access and two fetch records')
    t.same(new Set(after.map((x) => x.requestId)), batchIds(2))
    for (const x of after) t.ok(Date.parse(String(x.time)) >= boundary, `${String(x.time)} is not before --since`)

    const until = await cli(['audit', 'search', ...loc, '--until', b, '--json'])
    t.equal(until.status, 0, until.stderr)
    const before = jsonLines(until.stdout)
    t.equal(before.length, N - 4)
    t.same(new Set(before.map((x) => x.requestId)), batchIds(1))
    for (const x of before) t.ok(Date.parse(String(x.time)) <= boundary, `${String(x.time)} is not after --until`)

    // Whole seconds around the test, combined with the other filters.
    const from = new Date(Math.floor(Date.parse(startedAt) / 1000) * 1000).toISOString()
    const to = new Date(Math.ceil(Date.parse(endedAt) / 1000) * 1000).toISOString()
    const window = await cli(['audit', 'search', ...loc, '--since', from, '--until', to, '--sub', 'alice', '--path-prefix', '/medicall/2017', '--json'])
    t.same(jsonLines(window.stdout).map((x) => [x.event, x.path]), [['access', A3], ['fetch', A3]])

    // Times as the trail writes them (milliseconds): --until a record's own time includes it.
    const last = trail[trail.length - 1]
    const exact = await cli(['audit', 'search', ...loc, '--until', String(last.time), '--json'])
    t.equal(exact.status, 0, exact.stderr)
    t.same(jsonLines(exact.stdout).map((x) => x.seq), trail.map((x) => x.seq), `--until ${String(last.time)} (the last record's own time) includes every record up to and including it`)
  })

  t.test('summary: per subject files, fetches, bytes, refusals, first and last', async (t) => {
    const r = await cli(['audit', 'summary', ...loc, '--json'])
    t.equal(r.status, 0, r.stderr)
    const rows = jsonLines(r.stdout)
    t.same(rows.map((x) => x.subject).sort(), ['alice', 'bob'], 'one row per authenticated subject')
    for (const who of ['alice', 'bob']) {
      const mine = sent.filter((s) => s.who === who)
      const served = mine.filter((s) => s.res.status < 300)
      const times = trail.filter((x) => x.subject === who).map((x) => String(x.time)).sort()
      const row = rows.find((x) => x.subject === who)
      t.match(row, {
        files: new Set(served.map((s) => s.path)).size,
        fetches: served.length,
        bytes: served.reduce((n, s) => n + s.res.body.length, 0),
        refusals: mine.length - served.length,
        first: times[0],
        last: times[times.length - 1]
      }, `${who}: what was fetched`)
      t.ok(String(row?.first) >= startedAt && String(row?.last) <= endedAt, `${who}: first and last within the test`)
    }
    t.match(rows.find((x) => x.subject === 'alice'), { files: 3, fetches: 4, bytes: 2 * RECORDING.length + 100 + RECORDING.length, refusals: 1 })
    t.match(rows.find((x) => x.subject === 'bob'), { files: 1, fetches: 1, bytes: RECORDING.length, refusals: 0 })
  })
})

t.test('verify at scale: 200,000 records sealed by hand into a rotated trail', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-auditcli-scale-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const dir = join(base, 'audit')
  mkdirSync(dir, { mode: 0o700 })
  const keyFile = join(base, 'audit.key')
  const keyText = '0123456789abcdef'.repeat(4)
  writeFileSync(keyFile, keyText + '\n', { mode: 0o600 })
  const key = Buffer.from(keyText)
  const TOTAL = 200_000
  const PER_FILE = 50_000
  const t0 = Date.now()
  let prev = GENESIS
  let seq = 0
  const files: string[] = []
  for (let first = 1; first <= TOTAL; first += PER_FILE) {
    const lines: string[] = []
    for (let i = 0; i < PER_FILE; i++) {
      seq++
      const time = new Date(t0 - (TOTAL - seq) * 10).toISOString()
      const line = seal({ event: seq % 2 === 1 ? 'access' : 'fetch', time, requestId: `req-${(seq + 1) >> 1}`, clientIp: '10.0.0.7', method: 'GET', path: `/medicall/2016/01/${String(seq % 28 + 1).padStart(2, '0')}/${String(seq).padStart(6, '0')}_46701234567.wav`, subject: `agent-${seq % 17}`, auth: 'jwt', rule: 'recordings', instance: 'scale' }, seq, prev, key)
      lines.push(line)
      prev = lineHash(line)
    }
    const name = first + PER_FILE > TOTAL ? AUDIT_FILE : archiveName(first)
    writeFileSync(join(dir, name), lines.join('\n') + '\n', { mode: 0o600 })
    files.push(name)
  }
  writeFileSync(join(dir, HEAD_FILE), seal({ event: 'head', time: new Date().toISOString(), instance: 'scale', hash: prev }, seq, prev, key) + '\n')
  t.comment(`sealed ${TOTAL} records into ${files.length} files in ${Date.now() - t0} ms`)

  const started = Date.now()
  const r = await cli(['audit', 'verify', '--dir', dir, '--key-file', keyFile])
  t.comment(`audit verify over ${TOTAL} records took ${Date.now() - started} ms`)
  t.equal(r.status, 0, r.stdout + r.stderr)
  t.match(r.stdout, `${TOTAL} records in 4 file(s), seq 1..${TOTAL}`)
  t.match(r.stdout, /chain intact/)

  // One record deep inside the third file edited: found, at its place.
  const third = join(dir, archiveName(100_001))
  const text = readFileSync(third, 'utf8')
  const lines = text.split('\n')
  lines[12_344] = lines[12_344].replace('"subject":"agent-', '"subject":"agent-x')
  writeFileSync(third, lines.join('\n'))
  const bad = await cli(['audit', 'verify', '--dir', dir, '--key-file', keyFile])
  t.equal(bad.status, 1)
  t.match(bad.stdout, `the first: ${archiveName(100_001)}:12345: the record was edited`)
})
