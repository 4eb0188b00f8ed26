// Reading the trail back: every file in chain order, every record's MAC,
// sequence and previous-hash checked. `nasguard audit verify` reports what
// it finds; `audit search` and `audit summary` read through the same walk,
// so what they print comes from a verified chain.
import { closeSync, createReadStream, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { GENESIS, open as openLine } from './chain.js'
import { ARCHIVE, AUDIT_FILE, HEAD_FILE } from './writer.js'

export type ProblemKind = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'missing-file' | 'corrupt' | 'missing-tail'

export interface Problem { kind: ProblemKind, file: string, line: number, seq?: number, message: string }

export interface VerifyReport {
  files: string[]
  records: number
  lastSeq: number
  problems: Problem[]
  /** A last line cut by a crash: reported, and not tampering. */
  truncatedTail?: { file: string, bytes: number }
}

function lastByte (path: string): number {
  const fd = openSync(path, 'r')
  try {
    const { size } = fstatSync(fd)
    if (size === 0) return -1
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, size - 1)
    return b[0]
  } finally {
    closeSync(fd)
  }
}

/** The trail's files, oldest first: archives by first sequence number, then the active file. */
export function trailFiles (dir: string): string[] {
  const archives = readdirSync(dir).filter((f) => ARCHIVE.test(f)).sort()
  return [...archives, ...(existsSync(join(dir, AUDIT_FILE)) ? [AUDIT_FILE] : [])]
}

/** A growable bit set of sequence numbers seen. */
class SeqSet {
  private bits = new Uint8Array(1 << 16)
  has (n: number): boolean { return n < this.bits.length * 8 && (this.bits[n >> 3] & (1 << (n & 7))) !== 0 }
  add (n: number): void {
    while (n >= this.bits.length * 8) { const b = new Uint8Array(this.bits.length * 2); b.set(this.bits); this.bits = b }
    this.bits[n >> 3] |= 1 << (n & 7)
  }
}

/**
 * Walks the trail, calling onRecord for each record whose MAC holds, and
 * returns what was wrong. Gaps whose missing records turn up later are
 * reordered records; a sequence number seen twice is an inserted record.
 */
export async function walkTrail (dir: string, key: Buffer, onRecord?: (r: Record<string, unknown>) => void): Promise<VerifyReport> {
  const files = trailFiles(dir)
  const report: VerifyReport = { files, records: 0, lastSeq: 0, problems: [] }
  const seen = new SeqSet()
  const gaps: Array<{ problem: Problem, from: number, to: number }> = []
  let expectedSeq = 1
  let prevHash = GENESIS
  let prevUnknown = false
  for (let fi = 0; fi < files.length; fi++) {
    const file = files[fi]
    const path = join(dir, file)
    const endsWithNewline = lastByte(path) !== -1 ? lastByte(path) === 0x0a : true
    const rl = createInterface({ input: createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 20 }), crlfDelay: Infinity })
    let lineNo = 0
    let firstInFile = true
    // Lines are handled one behind the reader, so the file's last line is
    // known as such (a torn last line is a crash, not tampering).
    let pending: string | null = null
    const it = rl[Symbol.asyncIterator]()
    for (;;) {
      const next = await it.next()
      if (pending === null) {
        if (next.done) break
        pending = next.value
        continue
      }
      const line: string = pending
      pending = next.done ? null : next.value
      lineNo++
      const isLast = fi === files.length - 1 && next.done === true
      // Verify alone reads only the chain fields; search and summary need the record.
      const opened = openLine(line, key, onRecord !== undefined)
      if (!opened.ok) {
        // Only an unparsable fragment at the very end is a crash; a complete
        // line with a wrong MAC is an edit, newline or not.
        if (isLast && !endsWithNewline && opened.reason === 'unparsable') {
          report.truncatedTail = { file, bytes: Buffer.byteLength(line) }
          continue
        }
        // An edited record still says which seq it claims: step past it, and
        // let the next record's link to it (made over the original) go.
        if (opened.reason === 'bad-mac') {
          const claimed = Number(/"seq":(\d+)/.exec(line)?.[1])
          if (claimed === expectedSeq) {
            seen.add(claimed)
            expectedSeq = claimed + 1
            prevUnknown = true
          }
        }
        report.problems.push({
          kind: opened.reason === 'bad-mac' ? 'edited' : 'corrupt',
          file,
          line: lineNo,
          message: opened.reason === 'bad-mac'
            ? `${file}:${lineNo}: the record was edited (its MAC does not match its content)`
            : `${file}:${lineNo}: not a sealed audit record`
        })
        continue
      }
      const { record, hash } = opened.value
      const seq = record.seq
      if (seen.has(seq)) {
        report.problems.push({ kind: 'inserted', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} appears a second time (a copy was inserted)` })
      } else if (seq > expectedSeq) {
        const problem: Problem = firstInFile && fi > 0
          ? { kind: 'missing-file', file, line: lineNo, seq, message: `records seq ${expectedSeq}..${seq - 1} are missing before ${file} (a file of the trail was removed)` }
          : fi === 0 && firstInFile
            ? { kind: 'missing-file', file, line: lineNo, seq, message: `the trail starts at seq ${seq}: records 1..${seq - 1} are missing (older files removed)` }
            : { kind: 'deleted', file, line: lineNo, seq, message: `${file}:${lineNo}: records seq ${expectedSeq}..${seq - 1} were deleted (seq ${seq} follows seq ${expectedSeq - 1})` }
        report.problems.push(problem)
        gaps.push({ problem, from: expectedSeq, to: seq - 1 })
      } else if (seq < expectedSeq) {
        report.problems.push({ kind: 'reordered', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} comes after seq ${expectedSeq - 1} (records were reordered)` })
      } else if (record.prev !== prevHash && !prevUnknown) {
        report.problems.push({ kind: 'edited', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} does not follow the record before it (the chain was rewritten)` })
      }
      seen.add(seq)
      prevUnknown = false
      if (seq >= expectedSeq) {
        expectedSeq = seq + 1
        prevHash = hash
      }
      report.records++
      report.lastSeq = Math.max(report.lastSeq, seq)
      firstInFile = false
      onRecord?.(record)
      if (next.done) break
    }
  }
  // A gap filled later in the walk was a move, not a deletion.
  for (const g of gaps) {
    let filled = true
    for (let n = g.from; n <= g.to && filled; n++) filled = seen.has(n)
    if (filled && g.problem.kind === 'deleted') {
      g.problem.kind = 'reordered'
      g.problem.message = `${g.problem.file}:${g.problem.line}: record seq ${g.problem.seq ?? '?'} comes before seq ${g.from}..${g.to} (records were reordered)`
    }
  }
  const headPath = join(dir, HEAD_FILE)
  if (!existsSync(headPath) && report.records > 0) {
    report.problems.push({ kind: 'missing-tail', file: HEAD_FILE, line: 0, message: `${HEAD_FILE} is missing: records may have been removed from the end of the trail` })
  }
  if (existsSync(headPath)) {
    const opened = openLine(readFileSync(headPath, 'utf8').trim(), key)
    if (!opened.ok) {
      report.problems.push({ kind: 'edited', file: HEAD_FILE, line: 1, message: `${HEAD_FILE} was edited` })
    } else if (opened.value.record.seq > report.lastSeq) {
      report.problems.push({ kind: 'missing-tail', file: HEAD_FILE, line: 1, seq: opened.value.record.seq, message: `the trail ends at seq ${report.lastSeq}, but ${HEAD_FILE} records seq ${opened.value.record.seq}: records ${report.lastSeq + 1}..${opened.value.record.seq} were removed from the end` })
    }
  }
  // Report problems in trail order.
  report.problems.sort((a, b) => files.indexOf(a.file) - files.indexOf(b.file) || a.line - b.line)
  return report
}
