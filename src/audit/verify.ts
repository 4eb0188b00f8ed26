// Reading the trail back: every file in chain order, every record's MAC,
// sequence and previous-hash checked. `nasguard audit verify` reports what
// it finds; `audit search` and `audit summary` read through the same walk,
// so what they print comes from a verified chain.
//
// A trail pruned by `nasguard audit prune` starts after seq 1: audit.pruned,
// a line sealed like audit.head, names the first seq kept and the hash its
// record must carry as prev (that of the last record pruned). With a valid
// checkpoint the trail may start there (or earlier: files an interrupted
// prune had not removed yet); anything else missing is still a removal.
import { closeSync, createReadStream, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { GENESIS, open as openLine } from './chain.js'
import { ARCHIVE, AUDIT_FILE, HEAD_FILE } from './writer.js'

export type ProblemKind = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'missing-file' | 'corrupt' | 'missing-tail' | 'wrong-key'

export interface Problem { kind: ProblemKind, file: string, line: number, seq?: number, message: string }

export interface VerifyReport {
  files: string[]
  records: number
  /** The first seq read (0 when none). */
  firstSeq: number
  lastSeq: number
  /** The hash of the record at lastSeq (an anchor to keep off the host), '' when none was read. */
  lastHash: string
  problems: Problem[]
  /** A last line cut by a crash: reported, and not tampering. */
  truncatedTail?: { file: string, bytes: number }
  /** audit.jsonl is this archive's very file: a rotation cut short by a crash (read once). */
  interruptedRotation?: string
  /** The valid prune checkpoint of this chain, if it has one. */
  pruned?: Checkpoint
  /** The newest prune record read in the chain: its seq, and the first seq it kept. */
  lastPrune?: { seq: number, keptFrom: number }
  /** With fileStats: per file, in trail order. */
  fileStats?: FileStat[]
}

/** What one file of the trail holds (records whose MAC holds). */
export interface FileStat {
  file: string
  records: number
  firstSeq: number
  lastSeq: number
  /** SHA-256 of the file's last record line: the prev of the record after it. */
  lastHash: string
  /** The newest record time, in ms; NaN when a record's time cannot be read. */
  newest: number
}

/** The prune checkpoint of a chain, beside audit.head. */
export const CHECKPOINT_FILE = 'audit.pruned'
/** The event of the checkpoint line: one no record of the chain carries, so no record or head can pass for it. */
export const CHECKPOINT_EVENT = 'prune-checkpoint'

/** Records before `seq` were pruned; the record at `seq` carries `prev`. `time`: when; `before`: the cut-off; records and files: what that prune removed. */
export interface Checkpoint { seq: number, prev: string, time: string, before: string, records: number, files: number }

export type CheckpointRead = { ok: true, checkpoint: Checkpoint } | { ok: false, reason: string }

/** The chain's checkpoint, if there is one (undefined when absent), checked against the key. */
export function readCheckpoint (dir: string, key: Buffer): CheckpointRead | undefined {
  let text: string
  try {
    text = readFileSync(join(dir, CHECKPOINT_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    return { ok: false, reason: `${CHECKPOINT_FILE} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})` }
  }
  const opened = openLine(text.trim(), key)
  if (!opened.ok) {
    return { ok: false, reason: opened.reason === 'bad-mac' ? `${CHECKPOINT_FILE} was edited or forged (its MAC does not match its content under this key)` : `${CHECKPOINT_FILE} is not a sealed checkpoint` }
  }
  const r = opened.value.record
  const count = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0
  if (r.event !== CHECKPOINT_EVENT || typeof r.time !== 'string' || typeof r.before !== 'string' || !count(r.records) || !count(r.files) || !Number.isInteger(r.seq) || r.seq < 2) {
    return { ok: false, reason: `${CHECKPOINT_FILE} is sealed, but is not a prune checkpoint (another sealed line was put in its place)` }
  }
  return { ok: true, checkpoint: { seq: r.seq, prev: r.prev, time: r.time, before: r.before, records: r.records, files: r.files } }
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
  // Regular files only: anything else in a trail file's place (a directory,
  // a FIFO) is not read, so the records it should hold show as missing.
  const isFile = (f: string): boolean => { try { return statSync(join(dir, f)).isFile() } catch { return false } }
  const archives = readdirSync(dir).filter((f) => ARCHIVE.test(f) && isFile(f)).sort()
  const active = isFile(AUDIT_FILE) && interruptedRotation(dir, archives) === undefined ? [AUDIT_FILE] : []
  return [...archives, ...active]
}

/**
 * The archive that audit.jsonl is the very file of (one inode, two names):
 * a rotation links the active file to its archive name, then unlinks
 * audit.jsonl, and a crash between the two leaves both (the next start
 * finishes it). Read once, under its archive name.
 */
export function interruptedRotation (dir: string, archives = readdirSync(dir).filter((f) => ARCHIVE.test(f))): string | undefined {
  let active
  try { active = statSync(join(dir, AUDIT_FILE)) } catch { return undefined }
  return archives.find((a) => {
    try {
      const st = statSync(join(dir, a))
      return st.ino === active.ino && st.dev === active.dev
    } catch {
      return false
    }
  })
}

/** audit.dir holds a trail written by a single process (the chain `.`, beside any chain directories). */
export function hasSingleProcessTrail (dir: string): boolean {
  return existsSync(dir) && (trailFiles(dir).length > 0 || existsSync(join(dir, HEAD_FILE)))
}

/** The chain's checkpoint, sealed with its key, or with the legacy key (a prune run before the upgrade to chain keys). */
export function readChainCheckpoint (dir: string, key: Buffer, legacyKey?: Buffer): CheckpointRead | undefined {
  const read = readCheckpoint(dir, key)
  if (read?.ok !== false || !legacyKey) return read
  const old = readCheckpoint(dir, legacyKey)
  return old?.ok === true ? old : read
}

/**
 * A record's seq and line hash, as `audit verify` printed it, kept off the
 * host (a ticket, a log server, a printout). The trail must still hold that
 * record: a trail cut back to an older genuine audit.head verifies on its
 * own, but not against an anchor taken after the cut records.
 */
export interface Anchor { seq: number, hash: string }

export interface WalkOptions { fileStats?: boolean, anchors?: Anchor[], legacyKey?: Buffer, wants?: (line: string) => boolean }

/**
 * Longer than any record can be (record-bounds.ts bounds every field): a
 * line past this many characters is cut here, and reads as no record. A
 * file with no line break (junk put into the audit directory) then costs a
 * walk linear time and bounded memory, not a copy of the growing line per
 * chunk read.
 */
export const MAX_LINE = 1 << 20

/** Where the first line break in `text` from `from` is, and where the text after it starts; undefined when there is none yet. */
function afterBreak (text: string, from: number): number | undefined {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x0a) return i + 1
    if (c === 0x0d) return text.charCodeAt(i + 1) === 0x0a ? i + 2 : i + 1
  }
  return undefined
}

/**
 * A file's lines, split where readline splits them (\n, \r\n, or a lone
 * \r; no empty line after a final newline), without readline's cost per
 * line, which was a fifth of a walk over a million records. A line longer
 * than `maxLine` is yielded cut to it, and the rest of it skipped.
 */
export async function * linesOf (path: string, maxLine = MAX_LINE): AsyncGenerator<string> {
  let rest = ''
  let skipping = false
  for await (const chunk of createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 20 })) {
    let text = rest + (chunk as string)
    rest = ''
    if (skipping) {
      const from = afterBreak(text, 0)
      if (from === undefined) continue
      text = text.slice(from)
      skipping = false
    }
    const cr = text.includes('\r')
    let start = 0
    for (;;) {
      const nl = text.indexOf('\n', start)
      const r = cr ? text.indexOf('\r', start) : -1
      if (r !== -1 && (nl === -1 || r < nl)) {
        // A \r last in the text may be the first half of a \r\n.
        if (r === text.length - 1) break
        yield text.slice(start, Math.min(r, start + maxLine))
        start = text.charCodeAt(r + 1) === 0x0a ? r + 2 : r + 1
        continue
      }
      if (nl === -1) break
      yield text.slice(start, Math.min(nl, start + maxLine))
      start = nl + 1
    }
    rest = text.slice(start)
    if (rest.length > maxLine) {
      yield rest.slice(0, maxLine)
      rest = ''
      skipping = true
    }
  }
  if (rest !== '') yield rest.endsWith('\r') ? rest.slice(0, -1) : rest
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
 * With wants, a line for which it returns false is still verified whole,
 * but not parsed, and not passed to onRecord: a reader that looks for a few
 * records among millions says which lines may hold them (a test on the
 * line's text that every line it wants passes).
 */
export async function walkTrail (dir: string, key: Buffer, onRecord?: (r: Record<string, unknown>) => void, opts: WalkOptions = {}): Promise<VerifyReport> {
  const files = trailFiles(dir)
  const report: VerifyReport = { files, records: 0, firstSeq: 0, lastSeq: 0, lastHash: '', problems: [] }
  const rotated = interruptedRotation(dir)
  if (rotated !== undefined) report.interruptedRotation = rotated
  const anchors = new Map((opts.anchors ?? []).map((a) => [a.seq, a.hash]))
  let legacy = opts.legacyKey
  const seen = new SeqSet()
  const gaps: Array<{ problem: Problem, from: number, to: number }> = []
  let expectedSeq = 1
  let prevHash = GENESIS
  let prevUnknown = false
  const read = readChainCheckpoint(dir, key, opts.legacyKey)
  if (read?.ok === false) report.problems.push({ kind: 'edited', file: CHECKPOINT_FILE, line: 1, message: `${read.reason}: records missing from the start of the trail cannot be told from pruned ones` })
  const cp = read?.ok === true ? read.checkpoint : undefined
  if (cp) {
    report.pruned = cp
    // Nothing kept at all would still be a removal (see below).
    report.lastSeq = cp.seq - 1
  }
  const full = onRecord !== undefined || opts.fileStats === true
  if (opts.fileStats) report.fileStats = []
  const macFailures = new Set<Problem>()
  for (let fi = 0; fi < files.length; fi++) {
    const file = files[fi]
    const stat: FileStat = { file, records: 0, firstSeq: 0, lastSeq: 0, lastHash: '', newest: -Infinity }
    report.fileStats?.push(stat)
    const path = join(dir, file)
    const endsWithNewline = lastByte(path) !== -1 ? lastByte(path) === 0x0a : true
    let lineNo = 0
    let firstInFile = true
    // Lines are handled one behind the reader, so the file's last line is
    // known as such (a torn last line is a crash, not tampering).
    let pending: string | null = null
    const it = linesOf(path)
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
      // Verify alone reads only the chain fields; search, summary and prune need the record.
      const whole = full && (opts.wants === undefined || opts.fileStats === true || opts.wants(line))
      let opened = openLine(line, key, whole)
      // A worker chain from before chain keys: records sealed with the audit
      // key itself, but only before the first record sealed with the chain's.
      if (!opened.ok && opened.reason === 'bad-mac' && legacy) opened = openLine(line, legacy, whole)
      else if (opened.ok) legacy = undefined
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
        const problem: Problem = {
          kind: opened.reason === 'bad-mac' ? 'edited' : 'corrupt',
          file,
          line: lineNo,
          message: opened.reason === 'bad-mac'
            ? `${file}:${lineNo}: the record was edited (its MAC does not match its content)`
            : `${file}:${lineNo}: not a sealed audit record`
        }
        report.problems.push(problem)
        if (opened.reason === 'bad-mac') macFailures.add(problem)
        continue
      }
      const { record, hash } = opened.value
      const seq = record.seq
      const firstOfTrail = report.firstSeq === 0
      if (firstOfTrail) {
        report.firstSeq = seq
        // A pruned trail starts at the checkpoint, or before it (files an
        // interrupted prune had yet to remove: their first record's
        // predecessor is gone, so its prev cannot be checked).
        if (cp && seq > 1 && seq <= cp.seq) { expectedSeq = seq; prevUnknown = seq < cp.seq }
        if (cp && seq > cp.seq) expectedSeq = cp.seq
      }
      if (seen.has(seq)) {
        report.problems.push({ kind: 'inserted', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} appears a second time (a copy was inserted)` })
      } else if (seq > expectedSeq) {
        const problem: Problem = firstOfTrail && cp
          ? { kind: 'missing-file', file, line: lineNo, seq, message: `the trail starts at seq ${seq}, but ${CHECKPOINT_FILE} says only records before seq ${cp.seq} were pruned: records ${cp.seq}..${seq - 1} are missing (a file of the trail was removed)` }
          : firstInFile && fi > 0
          ? { kind: 'missing-file', file, line: lineNo, seq, message: `records seq ${expectedSeq}..${seq - 1} are missing before ${file} (a file of the trail was removed)` }
          : fi === 0 && firstInFile
            ? { kind: 'missing-file', file, line: lineNo, seq, message: `the trail starts at seq ${seq}: records 1..${seq - 1} are missing (older files removed)` }
            : { kind: 'deleted', file, line: lineNo, seq, message: `${file}:${lineNo}: records seq ${expectedSeq}..${seq - 1} were deleted (seq ${seq} follows seq ${expectedSeq - 1})` }
        report.problems.push(problem)
        gaps.push({ problem, from: expectedSeq, to: seq - 1 })
      } else if (seq < expectedSeq) {
        report.problems.push({ kind: 'reordered', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} comes after seq ${expectedSeq - 1} (records were reordered)` })
      } else if (cp && seq === cp.seq && record.prev !== cp.prev) {
        report.problems.push({ kind: 'edited', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} does not follow the last pruned record named by ${CHECKPOINT_FILE} (the checkpoint is not this trail's)` })
      } else if (record.prev !== prevHash && !prevUnknown && !(cp && seq === cp.seq && firstOfTrail)) {
        report.problems.push({ kind: 'edited', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} does not follow the record before it (the chain was rewritten)` })
      }
      // A prune record (the pattern cannot occur inside a JSON string
      // value). Read whole even when only the chain fields are: it is rare.
      if (line.includes('"event":"prune"')) {
        let r: Record<string, unknown> = record
        if (!whole) { try { r = JSON.parse(line) as Record<string, unknown> } catch { r = {} } }
        if (r.event === 'prune' && typeof r.keptFrom === 'number' && seq > (report.lastPrune?.seq ?? 0)) report.lastPrune = { seq, keptFrom: r.keptFrom }
      }
      if (report.fileStats) {
        if (stat.records === 0) stat.firstSeq = seq
        stat.records++
        stat.lastSeq = seq
        stat.lastHash = hash
        const t = typeof record.time === 'string' ? Date.parse(record.time) : NaN
        stat.newest = Number.isNaN(t) || Number.isNaN(stat.newest) ? NaN : Math.max(stat.newest, t)
      }
      const anchored = anchors.get(seq)
      if (anchored !== undefined) anchors.delete(seq)
      if (anchored !== undefined && anchored !== hash) {
        report.problems.push({ kind: 'edited', file, line: lineNo, seq, message: `${file}:${lineNo}: record seq ${seq} is not the record anchored as ${anchored.slice(0, 16)}…: the trail was cut back and written again from there` })
      }
      seen.add(seq)
      prevUnknown = false
      if (seq >= expectedSeq) {
        expectedSeq = seq + 1
        prevHash = hash
      }
      if (seq >= report.lastSeq) report.lastHash = hash
      report.records++
      report.lastSeq = Math.max(report.lastSeq, seq)
      firstInFile = false
      if (whole) onRecord?.(record)
      if (next.done) break
    }
  }
  // Not one record opens: the key is not this trail's, far likelier than every record edited.
  if (report.records === 0 && macFailures.size > 0) {
    report.problems = report.problems.filter((p) => !macFailures.has(p))
    report.problems.unshift({ kind: 'wrong-key', file: files[0], line: 1, message: `not one of ${macFailures.size} record${macFailures.size === 1 ? '' : 's'} has a MAC that holds under this key: it is not the key this trail was sealed with (check --key-file or audit.keyFile), or every record was altered` })
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
  if (cp && report.lastSeq < cp.seq) {
    report.problems.push({ kind: 'missing-tail', file: CHECKPOINT_FILE, line: 1, seq: cp.seq, message: `${CHECKPOINT_FILE} says records from seq ${cp.seq} on were kept, but the trail holds none of them (its files were removed)` })
  }
  // Every prune leaves a record in the chain after its checkpoint was
  // written: a checkpoint older than that record was put back, and a
  // missing one was removed.
  if (report.lastPrune && report.lastPrune.keptFrom > 1) {
    const { seq, keptFrom } = report.lastPrune
    if (read === undefined) {
      report.problems.push({ kind: 'missing-file', file: CHECKPOINT_FILE, line: 0, message: `${CHECKPOINT_FILE} is missing, but record seq ${seq} says records before seq ${keptFrom} were pruned: the checkpoint was removed` })
    } else if (cp && cp.seq < keptFrom) {
      report.problems.push({ kind: 'edited', file: CHECKPOINT_FILE, line: 1, message: `${CHECKPOINT_FILE} names seq ${cp.seq}, but record seq ${seq} says a later prune kept records from seq ${keptFrom} on: an old checkpoint was put back` })
    }
  }
  // Anchors whose record was not read: past the end (a rollback), the last
  // pruned record (checked against the checkpoint), or gone otherwise. An
  // anchor that cannot be checked is never counted as held.
  for (const [seq, hash] of anchors) {
    if (seq > report.lastSeq) {
      report.problems.push({ kind: 'missing-tail', file: HEAD_FILE, line: 0, seq, message: `the trail ends at seq ${report.lastSeq}, but an anchor says record seq ${seq} was written: records ${report.lastSeq + 1}..${seq} were removed from the end (the trail was rolled back)` })
    } else if (cp && seq === cp.seq - 1) {
      if (hash !== cp.prev) report.problems.push({ kind: 'edited', file: CHECKPOINT_FILE, line: 1, seq, message: `the last pruned record, seq ${seq}, is not the record anchored as ${hash.slice(0, 16)}…: the trail was cut back and written again before it was pruned` })
    } else if (cp && seq < cp.seq) {
      report.problems.push({ kind: 'missing-file', file: CHECKPOINT_FILE, line: 0, seq, message: `an anchor names seq ${seq}, but records before seq ${cp.seq} were pruned: it cannot be checked (use an anchor taken after the prune, or seq ${cp.seq - 1})` })
    } else {
      report.problems.push({ kind: 'deleted', file: HEAD_FILE, line: 0, seq, message: `an anchor names record seq ${seq}, which the trail does not hold` })
    }
  }
  const headPath = join(dir, HEAD_FILE)
  if (!existsSync(headPath) && report.records > 0) {
    report.problems.push({ kind: 'missing-tail', file: HEAD_FILE, line: 0, message: `${HEAD_FILE} is missing: records may have been removed from the end of the trail` })
  }
  if (existsSync(headPath)) {
    const headLine = readFileSync(headPath, 'utf8').trim()
    let opened = openLine(headLine, key)
    // The head of a chain with no record sealed with its own key yet (written before the upgrade).
    if (!opened.ok && opened.reason === 'bad-mac' && legacy) opened = openLine(headLine, legacy)
    if (!opened.ok) {
      report.problems.push({ kind: 'edited', file: HEAD_FILE, line: 1, message: `${HEAD_FILE} was edited` })
    } else if (opened.value.record.event !== 'head') {
      // A record line or a checkpoint is sealed with the same key: copied
      // over the head, it would make any seq look like the end.
      report.problems.push({ kind: 'edited', file: HEAD_FILE, line: 1, message: `${HEAD_FILE} holds a ${String(opened.value.record.event)} line, not a head: it was replaced` })
    } else if (opened.value.record.seq > report.lastSeq) {
      report.problems.push({ kind: 'missing-tail', file: HEAD_FILE, line: 1, seq: opened.value.record.seq, message: `the trail ends at seq ${report.lastSeq}, but ${HEAD_FILE} records seq ${opened.value.record.seq}: records ${report.lastSeq + 1}..${opened.value.record.seq} were removed from the end` })
    }
  }
  // Report problems in trail order, a key that opens nothing first.
  const rank = (p: Problem): number => p.kind === 'wrong-key' ? -2 : files.indexOf(p.file)
  report.problems.sort((a, b) => rank(a) - rank(b) || a.line - b.line)
  return report
}
