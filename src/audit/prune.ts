// `nasguard audit prune --before T`: retention without breaking `audit
// verify`. Whole rotated files (audit-<first seq>.jsonl) whose every record
// is older than T are removed, oldest first and only as a prefix of the
// chain (a file with a record at or after T, and everything after it, is
// kept; audit.jsonl always is). Before anything is removed, the chain's
// checkpoint audit.pruned is written: a line sealed like audit.head (see
// src/audit/chain.ts) naming the first seq kept and the hash its record
// carries as prev (that of the last record removed), when, the cut-off,
// and how many records and files went. After the removal the prune is
// recorded in the chain itself (event `prune`), through the chain's own
// writer. Every chain of the trail (audit.dir itself, each worker-<i>, and
// the operator tools' ops) is pruned the same way, each with its own
// checkpoint.
//
// Order, for crash safety: checkpoint (temp file, fsync, rename, directory
// fsync), then the files, then the record. A crash before the rename
// changes nothing; after it, the files still there start before the
// checkpoint, which verify accepts (and says, naming the prune to finish);
// a missing record is written by the next run. A second run with the same
// T removes nothing and writes nothing.
//
// A running gateway: the record must go through the one writer of the
// chain, and audit.lock says a gateway is that writer. Prune takes every
// lock it needs before changing anything, and refuses while a gateway
// holds one: stop the gateway, prune, start it. (--dry-run takes no lock.)
// ops is locked only while an operator tool records its event: a prune
// refused for it can simply run again (a tool waits for prune's lock).
import { closeSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { seal } from './chain.js'
import { chainKey, legacyChainKey } from './chains.js'
import { problemsText, walkAll, type ChainAnchor, type TrailLocation } from './commands.js'
import { CHECKPOINT_EVENT, CHECKPOINT_FILE, readChainCheckpoint, type Checkpoint, type FileStat, type VerifyReport } from './verify.js'
import { AUDIT_FILE, AuditWriter, type AuditRecord } from './writer.js'
import { holdsGeneration } from '../retention/audited-generation.js'

export interface PruneOptions {
  /** The cut-off, in ms: files whose every record is older go. */
  before: number
  dryRun: boolean
  /** For the prune record: audit.instance (default the host name). */
  instance?: string
  /** audit.rotateBytes (default 64 MiB). */
  rotateBytes?: number
  /** Anchors kept off the host (audit verify --anchor): a trail that does not hold them is not pruned. */
  anchors?: ChainAnchor[]
}

/** The record a prune leaves in the chain. keptFrom: the first seq kept (the checkpoint's). */
interface PruneRecord extends AuditRecord {
  event: 'prune'
  keptFrom: number
  before: string
  records: number
  files: number
}

interface Plan {
  /** `.` (audit.dir itself), worker-<i> or ops. */
  name: string
  dir: string
  /** Files to remove, oldest first. */
  remove: FileStat[]
  /** Each file's identity (inode, size) when planned: checked again under the lock. */
  ids: Map<string, string>
  /** The checkpoint the plan was made against. */
  current?: Checkpoint
  /** The checkpoint this prune writes (none when it removes only files the current one covers). */
  next?: Checkpoint
  /** An interrupted prune whose record is missing, written now. */
  complete?: Checkpoint
  /** An interrupted prune this T cannot finish. */
  unfinished?: string
}

class Refused extends Error {}

function fileId (path: string): string {
  try {
    const s = statSync(path)
    return `${s.ino}:${s.size}`
  } catch {
    return 'gone'
  }
}

function plan (name: string, dir: string, report: VerifyReport, before: number, now: string): Plan {
  const stats = report.fileStats ?? []
  const archives = stats.filter((f) => f.file !== AUDIT_FILE)
  const liveRecords = stats.find((f) => f.file === AUDIT_FILE)?.records ?? 0
  const remove: FileStat[] = []
  for (const f of archives) {
    // A prefix of the chain only: the first file holding a record at or
    // after T (or one whose times cannot be read, or an empty one) stops it.
    if (f.records === 0 || !(f.newest < before)) break
    remove.push(f)
  }
  // A writer starting on an empty audit.jsonl resumes the chain from the
  // newest archive: that one stays.
  if (liveRecords === 0 && remove.length > 0 && remove.length === archives.length) remove.pop()
  const current = report.pruned
  const last = remove[remove.length - 1]
  const next: Checkpoint | undefined = last && (!current || last.lastSeq + 1 > current.seq)
    ? { seq: last.lastSeq + 1, prev: last.lastHash, time: now, before: new Date(before).toISOString(), records: remove.reduce((n, f) => n + f.records, 0), files: remove.length }
    : undefined
  const recordMissing = current !== undefined && (report.lastPrune?.keptFrom ?? 0) < current.seq
  const leftAfter = archives.filter((f) => !remove.includes(f) && current !== undefined && f.lastSeq < current.seq)
  const p: Plan = { name, dir, remove, ids: new Map(remove.map((f) => [f.file, fileId(join(dir, f.file))])), current, next }
  if (recordMissing && leftAfter.length === 0) p.complete = current
  if (recordMissing && leftAfter.length > 0 && current) {
    p.unfinished = `an interrupted prune (${current.time}, --before ${current.before}) left ${leftAfter.length} file(s) before seq ${current.seq} that hold records at or after ${new Date(before).toISOString()}: run audit prune --before ${current.before} to finish it`
  }
  return p
}

function syncDir (dir: string): void {
  const d = openSync(dir, 'r')
  try { fsyncSync(d) } finally { closeSync(d) }
}

/** audit.pruned, atomically and durably: temp file, fsync, rename, directory fsync. */
function writeCheckpoint (dir: string, key: Buffer, cp: Checkpoint, instance: string): void {
  const line = seal({ event: CHECKPOINT_EVENT, time: cp.time, instance, before: cp.before, records: cp.records, files: cp.files }, cp.seq, cp.prev, key)
  const file = join(dir, CHECKPOINT_FILE)
  const tmp = join(dir, `${CHECKPOINT_FILE}.${process.pid}.tmp`)
  const fd = openSync(tmp, 'w', 0o600)
  try {
    writeSync(fd, line + '\n')
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
  syncDir(dir)
}

/** `generation`: the highest legal holds generation the chain recorded before the prune (0: none), carried into its record. */
function pruneRecord (cp: Checkpoint, note: string, generation: number): PruneRecord {
  return {
    ...(generation > 0 ? { counts: { generation } } : {}),
    event: 'prune',
    time: new Date().toISOString(),
    keptFrom: cp.seq,
    before: cp.before,
    records: cp.records,
    files: cp.files,
    reason: `${note}${cp.records} record(s) in ${cp.files} file(s) older than ${cp.before} pruned; the chain now starts at seq ${cp.seq}`
  }
}

const sameCheckpoint = (a: Checkpoint | undefined, b: Checkpoint | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.seq === b.seq && a.prev === b.prev && a.time === b.time)

const describe = (f: FileStat): string => `seq ${f.firstSeq}..${f.lastSeq} (${f.records} record(s), newest ${new Date(f.newest).toISOString()})`

export async function auditPrune (loc: TrailLocation, o: PruneOptions, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const cutoff = new Date(o.before).toISOString()
  const instance = o.instance ?? hostname()
  // The highest holds generation each chain records (the ops chain's hold
  // changes and sweeps): its prune record carries it, so that what the
  // gateways and the sweep check a holds document against is not lowered.
  const generations = new Map<string, number>()
  const { chains, merged } = await walkAll(loc, (r, chain) => { generations.set(chain, Math.max(generations.get(chain) ?? 0, holdsGeneration(r))) }, { fileStats: true, anchors: o.anchors })
  if (merged.files.length === 0 && merged.problems.length === 0) { err(`no audit files in ${loc.dir}\n`); return 1 }
  if (merged.problems.length > 0) {
    err(`${problemsText(merged)}\naudit prune refuses: the trail does not verify, and what it would remove may be evidence; nothing was pruned (see nasguard audit verify)\n`)
    return 1
  }
  const now = new Date().toISOString()
  const plans = chains.map((c) => plan(c.name, c.name === '.' ? loc.dir : join(loc.dir, c.name), c.report, o.before, now))
  const label = (p: Plan, file = ''): string => (p.name === '.' ? file : `${p.name}/${file}`)
  const work = plans.filter((p) => p.remove.length > 0 || p.complete)

  if (o.dryRun) {
    out(`audit prune --before ${cutoff}, dry run: nothing is removed\n`)
    for (const p of plans) {
      for (const f of p.remove) out(`would remove ${label(p, f.file)}: ${describe(f)}\n`)
      if (p.next) out(`${label(p) || 'the trail'}: would keep records from seq ${p.next.seq} on, write ${label(p, CHECKPOINT_FILE)} and a prune record\n`)
      if (p.complete) out(`${label(p) || 'the trail'}: would write the missing record of the prune of ${p.complete.time}\n`)
      if (p.unfinished) out(`${label(p) || 'the trail'}: ${p.unfinished}\n`)
    }
    if (work.length === 0) out(`nothing to prune: no rotated file holds only records before ${cutoff}\n`)
    return 0
  }

  if (work.length === 0) {
    out(`nothing to prune: no rotated file holds only records before ${cutoff}\n`)
    for (const p of plans) if (p.unfinished) out(`${label(p) || 'the trail'}: ${p.unfinished}\n`)
    return 0
  }

  const writers = new Map<Plan, AuditWriter>()
  try {
    try {
      // Every lock first: all chains or none.
      for (const p of work) {
        const w = await AuditWriter.open({ dir: p.dir, durability: 'strict', batchMs: 100, key: chainKey(loc.key, p.name), legacyKey: legacyChainKey(loc.key, p.name), instance, rotateBytes: o.rotateBytes ?? 64 * 1024 * 1024 })
        writers.set(p, w)
        if (w.startupError) throw new Refused(`cannot open ${join(p.dir, AUDIT_FILE)} to record the prune (${w.startupError.message})`)
      }
      // Still what was planned? (A gateway that ran between the walk and
      // the lock, or another prune, may have changed the trail.)
      for (const p of work) {
        for (const f of p.remove) {
          if (fileId(join(p.dir, f.file)) !== p.ids.get(f.file)) throw new Refused(`${label(p, f.file)} changed while prune was reading the trail`)
        }
        const read = readChainCheckpoint(p.dir, chainKey(loc.key, p.name), legacyChainKey(loc.key, p.name))
        if (!sameCheckpoint(read?.ok === true ? read.checkpoint : undefined, p.current)) throw new Refused(`${label(p, CHECKPOINT_FILE)} changed while prune was reading the trail`)
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'EAUDITLOCKED') {
        err(`audit prune: ${(e as Error).message}\nA running gateway (or, for ops, an operator tool recording its event) holds the trail, and the prune record must go into its chain through its one writer: stop the gateway (every worker), run audit prune, then start it again. (audit prune --dry-run works while it runs.) Nothing was pruned.\n`)
        return 1
      }
      if (e instanceof Refused) { err(`audit prune: ${e.message}; nothing was pruned (run it again)\n`); return 1 }
      throw e
    }

    for (const p of work) {
      if (p.next) writeCheckpoint(p.dir, chainKey(loc.key, p.name), p.next, instance)
      for (const f of p.remove) {
        unlinkSync(join(p.dir, f.file))
        out(`removed ${label(p, f.file)}: ${describe(f)}\n`)
      }
      if (p.remove.length > 0) syncDir(p.dir)
      const w = writers.get(p) as AuditWriter
      if (p.complete) {
        await w.append(pruneRecord(p.complete, `completes the prune interrupted at ${p.complete.time}: `, generations.get(p.name) ?? 0))
        out(`${label(p) || 'the trail'}: recorded the interrupted prune of ${p.complete.time} (record seq ${w.lastSeq})\n`)
      }
      if (p.next) {
        await w.append(pruneRecord(p.next, '', generations.get(p.name) ?? 0))
        out(`${label(p) || 'the trail'}: records before seq ${p.next.seq} pruned (${p.next.records} record(s) in ${p.next.files} file(s)); checkpoint ${label(p, CHECKPOINT_FILE)}; prune record seq ${w.lastSeq}\n`)
      }
      if (p.unfinished) out(`${label(p) || 'the trail'}: ${p.unfinished}\n`)
    }
    return 0
  } finally {
    for (const w of writers.values()) await w.close().catch(() => {})
  }
}
