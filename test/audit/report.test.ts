// `nasguard audit report` (GDPR art. 15), run as an investigator would: the
// built CLI in a child process, over a trail the real AuditWriter sealed
// with a real key. Which paths hold a number (its spellings, and longer
// numbers that hold its digits), each output format, a tampered trail.
import t from 'tap'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createKey } from '../../src/audit/key.js'
import { AuditWriter, type AuditRecord } from '../../src/audit/writer.js'
import { trailFiles } from '../../src/audit/verify.js'
import { csvCell, normalisePhone, phoneMatcher } from '../../src/audit/report.js'
import { runCli } from '../helpers/process.js'

const D = '/medicall/2016/01/01'
const P = {
  plain: `${D}/083012_46701234567.wav`,
  plus: `${D}/+46701234567.wav`,
  zeros: `${D}/0046701234567.wav`,
  spaced: `${D}/+46%2070-123%2045%2067.wav`,
  national: `${D}/2016-01-01%20(070)%20123%2045%2067.wav`,
  inDir: '/medicall/46701234567/call.wav',
  longer: `${D}/101500_467012345670.wav`,
  longerBefore: `${D}/101500_146701234567.wav`,
  other: `${D}/101500_46709876543.wav`
}
const EVIL = '=HYPERLINK("http://x.example/?a,b")'

// One record per row: which event, who, which path, and when (minutes after 10:00).
const ROWS: Array<[AuditRecord['event'], string, string, number]> = [
  ['fetch', 'alice', P.plain, 1],
  ['access', 'bob', P.plus, 2],
  ['refusal', 'carol', P.zeros, 3],
  ['grant', 'alice', P.spaced, 4],
  ['ingest', 'dave', P.national, 5],
  ['access', 'erin', P.inDir, 6],
  ['fetch', 'alice', P.longer, 7],
  ['fetch', 'alice', P.longerBefore, 8],
  ['fetch', 'erin', P.other, 9],
  ['check', 'alice', P.plain, 10],
  ['fetch', EVIL, P.plain, 11],
  ['fetch', 'alice', P.plain, 30]
]
const at = (min: number): string => new Date(Date.UTC(2026, 10, 20, 10, min)).toISOString()

async function writeTrail (dir: string, key: Buffer): Promise<void> {
  const w = await AuditWriter.open({ dir, durability: 'batched', batchMs: 50, key, instance: 'gw1', rotateBytes: 1 << 20 })
  for (const [event, subject, path, min] of ROWS) {
    await w.append({ event, time: at(min), requestId: `r${min}`, clientIp: '192.0.2.7', method: 'GET', path, subject, rule: 'recordings', ...(event === 'fetch' ? { status: 200, bytes: 1000 + min, outcome: 'complete' as const } : event === 'refusal' ? { status: 403, reason: 'insufficient_scope' } : {}) })
  }
  await w.close()
}

/** RFC 4180 rows (quoted fields may hold commas, quotes and line breaks). */
function parseCsv (text: string): string[][] {
  const rows: string[][] = []
  let row: string[] = []
  let cell = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++ } else if (c === '"') quoted = false
      else cell += c
    } else if (c === '"') quoted = true
    else if (c === ',') { row.push(cell); cell = '' } else if (c === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i++ } else cell += c
  }
  return rows
}

interface Doc { chain: { intact: boolean, records: number, problems: string[] }, query: { phones: string[] }, accesses: Array<Record<string, unknown>> }

t.test('phone numbers: spellings that match, longer numbers that do not', async (t) => {
  t.same(['+46 70-123 45 67', '0046701234567', '46701234567', '(+46) 701 234 567'].map((q) => normalisePhone(q)), Array(4).fill({ ok: true, digits: '46701234567' }))
  for (const bad of ['12345', '46 70 abc', '+46 70 123 45 67 ext', '4670;1234567', '']) {
    const r = normalisePhone(bad)
    t.ok(!r.ok && r.reason.includes('--phone'), `${JSON.stringify(bad)} refused, naming --phone`)
  }
  const { holds, lineMayHold } = phoneMatcher(['46701234567'])
  // A record line as the writer seals it: the path among other fields with digits.
  const line = (path: string): string => JSON.stringify({ event: 'fetch', time: at(1), requestId: 'r1', clientIp: '192.0.2.7', path, subject: 'a"b', seq: 12, prev: '0'.repeat(64) })
  for (const p of [P.plain, P.plus, P.zeros, P.spaced, P.inDir, `${D}/46-70-123-45-67.wav`, `${D}/call%20+46%20(0)70%20123%2045%2067.wav`, `${D}/2016-01-01%2008.30.12%20+46%2070%20123%2045%2067.wav`, `${D}/0830-46701234567-x.wav`, `${D}/00%2046%2070%20123%2045%2067.wav`, `${D}/%FF%ZZ_+46%2070%20123%2045%2067.wav`, `${D}/4670123_4567.wav`, `${D}/+46_70_123_45_67.wav`, `${D}/+46%2070%E2%80%93123%2045%2067.wav`, `${D}/46%C2%A070%20123%2045%2067.wav`, `${D}/%EF%BC%94%EF%BC%96%EF%BC%97%EF%BC%90%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96%EF%BC%97.wav`]) {
    t.ok(holds(p), `${p} holds it`)
    t.ok(lineMayHold(line(p)) && lineMayHold(line(p).replace('a\\"b', 'ab')), `${p}: its record line is parsed`)
  }
  for (const p of [P.longer, P.longerBefore, P.other, P.national, `${D}/4670123456.wav`, `${D}/+46%2070-123%2045%20670.wav`, `${D}/1046701234567.wav`, `${D}/+1%20046701234567.wav`, `${D}/46701%2F234567.wav`]) t.notOk(holds(p), `${p} does not`)
  t.notOk(lineMayHold(line(P.other).replace('a\\"b', 'ab')), 'a line whose path cannot hold it is not parsed')
  const national = phoneMatcher(['0701234567'])
  t.ok(national.holds(P.national), 'the national spelling, asked for as such')
  t.ok(national.holds(`${D}/+46%20(0)70%20123%2045%2067.wav`), '(0) is the trunk prefix of the national number')
  t.notOk(national.holds(`${D}/00701234567.wav`), 'no 00 before a national number')
  t.equal(csvCell('-1+2'), "'-1+2")
  t.equal(csvCell('\tx'), "'\\u0009x", 'a control character is written as \\u0009, never raw')
  t.equal(csvCell('a\u001b[31mb\u202e'), 'a\\u001b[31mb\\u202e', 'no terminal escape or bidi override reaches the terminal')
  // Many "(0)" groups (a path a client can plant in a refusal record): judged at once, not in exponential time.
  t.notOk(holds(`${D}/${'(0)'.repeat(1300)}.wav`), 'a path of 1300 "(0)" groups is judged (and does not hold it)')
  t.equal(csvCell('a"b'), '"a""b"')
  t.equal(csvCell(-1), '-1', 'numbers are written as numbers')
})

t.test('audit report over a sealed trail', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-report-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const dir = join(base, 'audit')
  const keyFile = join(base, 'audit.key')
  await writeTrail(dir, createKey(keyFile))
  const loc = ['--dir', dir, '--key-file', keyFile]
  const report = async (...args: string[]): Promise<{ status: number | null, stdout: string, stderr: string }> => await runCli(['audit', 'report', ...loc, ...args])
  const pathsOf = (d: Doc): unknown[] => d.accesses.map((a) => a.path)

  t.test('table: every spelling of the number, nothing longer, the chain intact', async (t) => {
    const r = await report('--phone', '+46 70-123 45 67')
    t.equal(r.status, 0, r.stderr)
    for (const p of [P.plain, P.plus, P.zeros, P.spaced, P.inDir]) t.match(r.stdout, p)
    for (const p of [P.longer, P.longerBefore, P.other, P.national]) t.notMatch(r.stdout, p)
    t.match(r.stdout, /^TIME +EVENT +SUBJECT +RULE +STATUS +OUTCOME +BYTES +CLIENT +INSTANCE +PATH$/m)
    t.match(r.stdout, /2026-11-20T10:01:00\.000Z +fetch +alice +recordings +200 +complete +1001 +192\.0\.2\.7 +gw1 +\/medicall/)
    t.match(r.stdout, /refusal +carol +recordings +403 +insufficient_scope/)
    t.notMatch(r.stdout, at(10), 'a check record is not an access')
    t.match(r.stdout, `chain intact: ${ROWS.length} records verified in 1 chain(s)`)
  })

  t.test('--json: one document; --phone repeated takes the national spelling too', async (t) => {
    const r = await report('--phone', '0046701234567', '--phone', '070-123 45 67', '--json')
    t.equal(r.status, 0, r.stderr)
    const d = JSON.parse(r.stdout) as Doc
    t.same(d.query.phones, ['46701234567', '0701234567'])
    t.same(d.chain, { intact: true, records: ROWS.length, chains: ['.'], problems: [] })
    t.same(pathsOf(d), [P.plain, P.plus, P.zeros, P.spaced, P.national, P.inDir, P.plain, P.plain])
    t.same(d.accesses.map((a) => a.event), ['fetch', 'access', 'refusal', 'grant', 'ingest', 'access', 'fetch', 'fetch'])
    t.match(d.accesses[0], { time: at(1), subject: 'alice', rule: 'recordings', status: 200, bytes: 1001, outcome: 'complete', instance: 'gw1', chain: '.', clientIp: '192.0.2.7', requestId: 'r1' })
    t.match(r.stderr, /chain intact/)
  })

  t.test('--subject, --since and --until', async (t) => {
    const r = await report('--subject', 'alice', '--json')
    t.equal(r.status, 0, r.stderr)
    t.same(pathsOf(JSON.parse(r.stdout) as Doc), [P.plain, P.spaced, P.longer, P.longerBefore, P.plain], 'every recording access of alice, no check record')
    const w = await report('--subject', 'alice', '--phone', '46701234567', '--since', at(2), '--until', at(20), '--json')
    t.equal(w.status, 0, w.stderr)
    t.same(pathsOf(JSON.parse(w.stdout) as Doc), [P.spaced], 'both filters, within the window')
  })

  t.test('--csv: RFC 4180, and no cell a spreadsheet would run', async (t) => {
    const r = await report('--phone', '46701234567', '--csv')
    t.equal(r.status, 0, r.stderr)
    t.ok(r.stdout.endsWith('\r\n'))
    const rows = parseCsv(r.stdout)
    const head = rows[0]
    t.same(head.slice(0, 4), ['time', 'event', 'subject', 'rule'])
    t.equal(rows.length, 1 + 7)
    const subjects = rows.slice(1).map((c) => c[head.indexOf('subject')])
    t.ok(subjects.includes(`'${EVIL}`), 'the formula cell starts with a quote')
    t.notOk(subjects.some((s) => /^[=+\-@]/.test(s)), 'no cell starts a formula')
    t.match(r.stdout, `"'=HYPERLINK(""http://x.example/?a,b"")"`, 'quoted, quotes doubled')
    t.match(r.stderr, /chain intact/)
  })

  t.test('usage errors name --phone', async (t) => {
    for (const args of [['--phone', '46 70 abc'], ['--phone', '12345'], [], ['--phone', '46701234567', '--json', '--csv']]) {
      const r = await report(...args)
      t.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
      t.equal(r.stdout, '')
    }
    t.match((await report('--phone', '12345')).stderr, /invalid --phone "12345": it has fewer than 6 digits/)
  })

  t.test('a tampered trail: what verifies is listed, the chain is not intact, exit 1', async (t) => {
    const copy = join(mkdtempSync(join(tmpdir(), 'nasguard-report-')), 'audit')
    t.teardown(() => rmSync(join(copy, '..'), { recursive: true, force: true }))
    cpSync(dir, copy, { recursive: true })
    // The records are of a past day: the writer gave each its own file.
    const file = trailFiles(copy).find((f) => readFileSync(join(copy, f), 'utf8').includes('"subject":"bob"'))
    t.ok(file)
    const f = join(copy, String(file))
    const lines = readFileSync(f, 'utf8').split('\n')
    const n = lines.findIndex((l) => l.includes('"subject":"bob"'))
    // One byte: bob becomes cob.
    lines[n] = lines[n].replace('"subject":"bob"', '"subject":"cob"')
    writeFileSync(f, lines.join('\n'))
    const args = ['audit', 'report', '--dir', copy, '--key-file', keyFile, '--phone', '46701234567']
    const r = await runCli(args)
    t.equal(r.status, 1)
    t.match(r.stdout, /CHAIN NOT INTACT/)
    t.match(r.stdout, `TAMPERING: 1 problem(s); the first: ${String(file)}:${n + 1}: the record was edited`)
    t.notMatch(r.stdout, /chain intact/)
    t.match(r.stderr, /not intact/)
    t.match(r.stdout, P.plain, 'the records that verify are listed')
    t.notMatch(r.stdout, /cob|bob/, 'the edited record is not')
    const j = await runCli([...args, '--json'])
    t.equal(j.status, 1)
    const d = JSON.parse(j.stdout) as Doc
    t.equal(d.chain.intact, false)
    t.equal(d.chain.problems.length, 1)
    t.equal(d.accesses.length, 6)
  })
})
