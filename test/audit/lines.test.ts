// The audit trail's line reader (src/audit/verify.ts linesOf): lines split
// as readline splits them, and a line longer than any record can be is cut
// to MAX_LINE with the rest of it skipped, so junk with no line break put
// into an audit directory costs a walk bounded memory and linear time.
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { linesOf, MAX_LINE, walkTrail } from '../../src/audit/verify.js'

async function lines (text: string, maxLine?: number): Promise<string[]> {
  const file = join(mkdtempSync(join(tmpdir(), 'nasguard-lines-')), 'audit.jsonl')
  writeFileSync(file, text)
  const out: string[] = []
  for await (const line of linesOf(file, maxLine)) out.push(line)
  return out
}

t.test('split as readline splits: \\n, \\r\\n, a lone \\r, no empty line after a final newline', async (t) => {
  t.same(await lines('a\nb\r\nc\rd\n'), ['a', 'b', 'c', 'd'])
  t.same(await lines('a\nb'), ['a', 'b'], 'a last line without a newline')
  t.same(await lines('a\n\nb\n'), ['a', '', 'b'], 'an empty line in the middle')
  t.same(await lines(''), [])
})

t.test('a line longer than the bound is cut to it and the rest of it skipped, across chunk reads', async (t) => {
  t.same(await lines(`a\n${'x'.repeat(50)}\nb\n`, 10), ['a', 'x'.repeat(10), 'b'], 'cut within one read')
  t.same(await lines(`a\n${'x'.repeat(50)}\r\nb\n`, 10), ['a', 'x'.repeat(10), 'b'], 'ended by \\r\\n')
  t.same(await lines(`a\n${'x'.repeat(50)}`, 10), ['a', 'x'.repeat(10)], 'the last line, without a newline')
  // Several 1 MiB reads into one line: the bound holds across them.
  const long = 'y'.repeat(3 * MAX_LINE + 17)
  const got = await lines(`a\n${long}\nb\n${long}`)
  t.same(got.map((l) => l.length), [1, MAX_LINE, 1, MAX_LINE], 'each long line is MAX_LINE characters, the lines after it intact')
  t.equal(got[2], 'b')
})

t.test('a trail file of junk with no line break: the walk ends, says the file does not verify, and holds no copy of it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-junk-'))
  writeFileSync(join(dir, 'audit-000000000001.jsonl'), 'z'.repeat(8 * MAX_LINE))
  writeFileSync(join(dir, 'audit.jsonl'), '')
  let seen = 0
  const report = await walkTrail(dir, Buffer.alloc(32, 1), () => { seen++ })
  t.equal(seen, 0, 'no record')
  t.ok(report.problems.length > 0 || report.truncatedTail !== undefined, 'the junk is reported, not taken for records')
})
