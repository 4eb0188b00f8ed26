// `nasguard audit verify | search | summary`: for investigators. Every
// command walks the whole chain and verifies it; search and summary say so
// when what they read was not intact.
import { existsSync, lstatSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import { makeDir } from '../files/ownership.js'
import { hostname } from 'node:os'
import { basename, join } from 'node:path'
import { createKey, trailEntries } from './key.js'
import { byChainOrder, chainDirs, chainKey, CHAINS_FILE, isChainDir, legacyChainKey, OPS_CHAIN, readChains } from './chains.js'
import { releaseLock, takeLock } from './lock.js'
import { CHECKPOINT_FILE as CHECKPOINT_NAME, hasSingleProcessTrail, trailFiles, walkTrail, type Anchor, type Checkpoint, type Problem, type VerifyReport } from './verify.js'
import { AUDIT_FILE, AuditWriter } from './writer.js'

export interface TrailLocation { dir: string, key: Buffer }

export interface ChainReport { name: string, report: VerifyReport }

/** An anchor (src/audit/verify.ts) of one chain: `.`, worker-<i> or ops. */
export interface ChainAnchor extends Anchor { chain: string }

/** `[chain@]seq:hash`, as auditVerify prints it; undefined when malformed. */
export function parseAnchor (text: string): ChainAnchor | undefined {
  const m = /^(?:(\.|worker-\d{1,6}|ops)@)?(\d{1,15}):([0-9a-f]{64})$/.exec(text.trim())
  return m && Number(m[2]) > 0 ? { chain: m[1] ?? '.', seq: Number(m[2]), hash: m[3] } : undefined
}

/** Two anchors for one record with different hashes: the first such pair (they cannot both be this trail's). */
export function conflictingAnchors (anchors: ChainAnchor[]): [ChainAnchor, ChainAnchor] | undefined {
  const seen = new Map<string, ChainAnchor>()
  for (const a of anchors) {
    const k = `${a.chain}@${a.seq}`
    const b = seen.get(k)
    if (b && b.hash !== a.hash) return [b, a]
    seen.set(k, a)
  }
  return undefined
}

export const anchorText = (chain: string, r: VerifyReport): string => `${chain === '.' ? '' : `${chain}@`}${r.lastSeq}:${r.lastHash}`

/**
 * Walks every chain of a trail: audit.dir itself (one process), each
 * worker-<i> chain (workers), and ops (operator tools), checked against the
 * sealed list of chains. Returns the chains' reports and one report merging
 * them. onRecord is told which chain each record came from; with wants,
 * only records whose line it wants reach onRecord (src/audit/verify.ts).
 */
export async function walkAll (loc: TrailLocation, onRecord?: (r: Record<string, unknown>, chain: string) => void, opts: { fileStats?: boolean, anchors?: ChainAnchor[], wants?: (line: string) => boolean } = {}): Promise<{ chains: ChainReport[], merged: VerifyReport }> {
  const anchorsOf = (chain: string): Anchor[] => (opts.anchors ?? []).filter((a) => a.chain === chain)
  // A worker chain may start with records sealed with the audit key itself (written before chain keys).
  const walk = async (dir: string, name: string): Promise<VerifyReport> => await walkTrail(dir, chainKey(loc.key, name), onRecord && ((r) => onRecord(r, name)), { fileStats: opts.fileStats, anchors: anchorsOf(name), legacyKey: legacyChainKey(loc.key, name), wants: opts.wants })
  const listed = readChains(loc.dir, loc.key)
  const present = chainDirs(loc.dir)
  const problems: Problem[] = []
  const names = new Set(present)
  const topLevel = hasSingleProcessTrail(loc.dir)
  if (listed?.ok === false) problems.push({ kind: 'corrupt', file: CHAINS_FILE, line: 0, message: listed.reason })
  if (listed?.ok) {
    for (const c of listed.chains) {
      if (c === '.') {
        if (!existsSync(loc.dir) || trailFiles(loc.dir).length === 0) {
          problems.push({ kind: 'missing-file', file: AUDIT_FILE, line: 0, message: `the single-process trail in ${loc.dir} is listed in ${CHAINS_FILE} but its files are gone` })
        }
        continue
      }
      names.add(c)
      if (!existsSync(join(loc.dir, c)) || !statSync(join(loc.dir, c)).isDirectory() || trailFiles(join(loc.dir, c)).length === 0) {
        problems.push({ kind: 'missing-file', file: c, line: 0, message: `chain ${c} is listed in ${CHAINS_FILE} but its files are gone` })
      }
    }
    if (topLevel && !listed.chains.includes('.')) problems.push({ kind: 'inserted', file: AUDIT_FILE, line: 0, message: `a single-process trail in ${loc.dir} is not listed in ${CHAINS_FILE}` })
    for (const c of present) {
      if (!listed.chains.includes(c)) problems.push({ kind: 'inserted', file: c, line: 0, message: `chain ${c} is not listed in ${CHAINS_FILE}` })
    }
  } else if (listed === undefined && present.length > 0) {
    problems.push({ kind: 'missing-file', file: CHAINS_FILE, line: 0, message: `${CHAINS_FILE} is missing: the list of chains (${present.join(', ')}) cannot be checked` })
  }
  const chains: ChainReport[] = []
  if (topLevel || names.size === 0 || (listed?.ok === true && listed.chains.includes('.'))) {
    if (existsSync(loc.dir)) chains.push({ name: '.', report: await walk(loc.dir, '.') })
  }
  // Every chain is checked against itself only, so a chain replaced by a
  // copy of another (or a link to it) would verify: each must be a
  // directory of its own, and no two may start with the same record.
  const firsts = new Map<string, string>()
  for (const name of [...names].sort(byChainOrder)) {
    const dir = join(loc.dir, name)
    if (!existsSync(dir) || !statSync(dir).isDirectory()) continue
    if (lstatSync(dir).isSymbolicLink()) problems.push({ kind: 'inserted', file: name, line: 0, message: `chain ${name} is a symbolic link, not a chain of its own` })
    const first = firstLine(dir)
    const twin = first === undefined ? undefined : firsts.get(first)
    if (twin !== undefined) problems.push({ kind: 'inserted', file: name, line: 0, message: `chain ${name} starts with the same record as chain ${twin}: it is a copy, and its own records are gone` })
    else if (first !== undefined) firsts.set(first, name)
    chains.push({ name, report: await walk(dir, name) })
  }
  for (const a of opts.anchors ?? []) {
    if (!chains.some((c) => c.name === a.chain)) problems.push({ kind: 'missing-file', file: a.chain, line: 0, seq: a.seq, message: `an anchor names chain ${a.chain} at seq ${a.seq}, but the trail has no such chain: it was removed` })
  }
  const prefix = (name: string, s: string): string => (name === '.' ? s : `${name}/${s}`)
  const merged: VerifyReport = {
    lastHash: '',
    files: chains.flatMap((c) => c.report.files.map((f) => prefix(c.name, f))),
    records: chains.reduce((a, c) => a + c.report.records, 0),
    firstSeq: chains.length > 0 ? Math.min(...chains.map((c) => c.report.firstSeq)) : 0,
    lastSeq: Math.max(0, ...chains.map((c) => c.report.lastSeq)),
    problems: [...problems, ...chains.flatMap((c) => c.report.problems.map((p) => ({ ...p, file: prefix(c.name, p.file), message: c.name === '.' ? p.message : `${c.name}: ${p.message}` })))]
  }
  const torn = chains.find((c) => c.report.truncatedTail)
  if (torn?.report.truncatedTail) merged.truncatedTail = { ...torn.report.truncatedTail, file: prefix(torn.name, torn.report.truncatedTail.file) }
  const rotated = chains.find((c) => c.report.interruptedRotation !== undefined)
  if (rotated?.report.interruptedRotation !== undefined) merged.interruptedRotation = prefix(rotated.name, rotated.report.interruptedRotation)
  return { chains, merged }
}

/** The first line of a chain's oldest file, if any. */
function firstLine (dir: string): string | undefined {
  const files = trailFiles(dir)
  if (files.length === 0) return undefined
  const text = readFileSync(join(dir, files[0]), 'utf8')
  const end = text.indexOf('\n')
  return end > 0 ? text.slice(0, end) : undefined
}

export function problemsText (r: VerifyReport): string {
  const lines: string[] = []
  if (r.problems.length > 0) {
    const verdict = r.problems[0].kind === 'wrong-key' ? 'WRONG KEY OR TAMPERING' : 'TAMPERING'
    lines.push(`${verdict}: ${r.problems.length} problem(s); the first: ${r.problems[0].message}`)
    for (const p of r.problems.slice(1, 20)) lines.push(`  also: ${p.message}`)
    if (r.problems.length > 20) lines.push(`  … and ${r.problems.length - 20} more`)
  }
  if (r.truncatedTail) lines.push(`note: ${r.truncatedTail.file} ends in a truncated record (${r.truncatedTail.bytes} bytes): a crash while writing, not tampering; it was never acknowledged`)
  if (r.interruptedRotation !== undefined) lines.push(`note: audit.jsonl is the same file as ${r.interruptedRotation} (read once): a rotation cut short by a crash, not tampering; the gateway's next start finishes it`)
  return lines.join('\n')
}

/** Where a pruned chain's records start (1 when it was never pruned). */
export function firstOf (r: VerifyReport): number {
  return r.pruned && r.firstSeq > 0 ? r.firstSeq : 1
}

/** What verify says about a chain's prune checkpoint: when, what went, and an interrupted prune. */
export function prunedText (r: VerifyReport, indent = ''): string {
  const cp: Checkpoint | undefined = r.pruned
  if (!cp) return ''
  const lines = [`${indent}records before seq ${cp.seq} were pruned on ${cp.time.slice(0, 10)} (${cp.time}; audit prune --before ${cp.before} removed ${cp.records} record(s) in ${cp.files} file(s)); ${CHECKPOINT_NAME} holds the sealed checkpoint`]
  if (r.firstSeq > 0 && r.firstSeq < cp.seq) lines.push(`${indent}note: records ${r.firstSeq}..${cp.seq - 1} are still here: a prune was interrupted before it removed their files; run audit prune --before ${cp.before} again to finish it`)
  if ((r.lastPrune?.keptFrom ?? 0) < cp.seq) lines.push(`${indent}note: the prune of ${cp.time} left no prune record in the chain (interrupted); run audit prune again to write it`)
  return lines.join('\n') + '\n'
}

export async function auditVerify (loc: TrailLocation, out: (s: string) => void, anchors: ChainAnchor[] = []): Promise<number> {
  const { chains, merged: r } = await walkAll(loc, undefined, { anchors })
  if (r.files.length === 0 && r.problems.length === 0) { out(`no audit files in ${loc.dir}\n`); return 1 }
  if (chains.length === 1 && chains[0].name === '.') {
    out(`${r.records} records in ${r.files.length} file(s), seq ${firstOf(chains[0].report)}..${r.lastSeq}, ${loc.dir}\n`)
    out(prunedText(chains[0].report))
  } else {
    out(`${r.records} records in ${chains.length} chain(s), ${r.files.length} file(s), ${loc.dir}\n`)
    for (const c of chains) {
      out(`  ${c.name === '.' ? '(single process)' : c.name === OPS_CHAIN ? 'ops (operator tools)' : c.name}: ${c.report.records} records in ${c.report.files.length} file(s), seq ${firstOf(c.report)}..${c.report.lastSeq}\n`)
      out(prunedText(c.report, '    '))
    }
  }
  const text = problemsText(r)
  if (text) out(text + '\n')
  if (r.problems.length === 0) {
    out(`chain intact${anchors.length > 0 ? `, and it holds the ${anchors.length} anchored record(s)` : ''}\n`)
    // Kept off this host, they let a later verify see a rollback: an older
    // genuine audit.head put back and the records after it cut off.
    const held = chains.filter((c) => c.report.lastHash !== '')
    if (held.length > 0) out(`anchors (keep them off this host; pass them back with --anchor): ${held.map((c) => anchorText(c.name, c.report)).join(' ')}\n`)
  }
  return r.problems.length > 0 ? 1 : 0
}

export interface SearchFilter { sub?: string, pathPrefix?: string, since?: number, until?: number, event?: string }

function matches (r: Record<string, unknown>, f: SearchFilter): boolean {
  if (f.event && r.event !== f.event) return false
  if (f.sub !== undefined && r.subject !== f.sub) return false
  if (f.pathPrefix !== undefined && !(typeof r.path === 'string' && r.path.startsWith(f.pathPrefix))) return false
  if (f.since !== undefined || f.until !== undefined) {
    const t = Date.parse(String(r.time))
    if (f.since !== undefined && t < f.since) return false
    if (f.until !== undefined && t > f.until) return false
  }
  return true
}

export async function auditSearch (loc: TrailLocation, f: SearchFilter, json: boolean, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let n = 0
  const { merged: r } = await walkAll(loc, (rec) => {
    if (rec.event === 'recovery' || !matches(rec, f)) return
    n++
    if (json) {
      const { mac: _m, prev: _p, ...rest } = rec as Record<string, unknown>
      out(JSON.stringify(rest) + '\n')
    } else {
      out([rec.time, rec.event, rec.subject ?? '-', rec.status ?? '-', rec.outcome ?? countsText(rec.counts) ?? rec.reason ?? '-', rec.bytes ?? '-', rec.path ?? '-'].join('\t') + '\n')
    }
  })
  err(`${n} match(es) in ${r.records} verified records\n`)
  const text = problemsText(r)
  if (text) err(text + '\n')
  return r.problems.length > 0 ? 1 : 0
}

/** An operator tool run's counts as search prints them: `sealed=10 skipped=2 failed=0`. */
function countsText (counts: unknown): string | undefined {
  if (typeof counts !== 'object' || counts === null) return undefined
  return Object.entries(counts).map(([k, v]) => `${k}=${String(v)}`).join(' ') || undefined
}

interface SubjectSummary { files: Set<string>, fetches: number, bytes: number, first: string, last: string, refusals: number, budgets: Map<string, number> }

export async function auditSummary (loc: TrailLocation, f: SearchFilter, json: boolean, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const by = new Map<string, SubjectSummary>()
  const { merged: r } = await walkAll(loc, (rec) => {
    if (typeof rec.subject !== 'string' || !matches(rec, { ...f, event: undefined })) return
    let s = by.get(rec.subject)
    if (!s) { s = { files: new Set(), fetches: 0, bytes: 0, first: String(rec.time), last: String(rec.time), refusals: 0, budgets: new Map() }; by.set(rec.subject, s) }
    if (rec.event === 'fetch') {
      s.fetches++
      s.bytes += typeof rec.bytes === 'number' ? rec.bytes : 0
      if (typeof rec.path === 'string' && typeof rec.bytes === 'number' && rec.bytes > 0) s.files.add(rec.path)
    }
    if (rec.event === 'refusal') {
      s.refusals++
      // A per-subject budget that stopped it (429): what an investigator looks at first.
      if (typeof rec.budget === 'string') s.budgets.set(rec.budget, (s.budgets.get(rec.budget) ?? 0) + (typeof rec.count === 'number' ? rec.count : 1))
    }
    if (String(rec.time) < s.first) s.first = String(rec.time)
    if (String(rec.time) > s.last) s.last = String(rec.time)
  })
  const rows = [...by].sort((a, b) => b[1].bytes - a[1].bytes)
  const hit = (s: SubjectSummary): string => [...s.budgets].map(([b, n]) => `${b}:${n}`).join(',') || '-'
  if (json) {
    for (const [subject, s] of rows) out(JSON.stringify({ subject, files: s.files.size, fetches: s.fetches, bytes: s.bytes, refusals: s.refusals, budgetsHit: Object.fromEntries(s.budgets), first: s.first, last: s.last }) + '\n')
  } else {
    out(['subject', 'files', 'fetches', 'bytes', 'refusals', 'budgets hit', 'first', 'last'].join('\t') + '\n')
    for (const [subject, s] of rows) out([subject, s.files.size, s.fetches, s.bytes, s.refusals, hit(s), s.first, s.last].join('\t') + '\n')
  }
  err(`${rows.length} subject(s) in ${r.records} verified records\n`)
  const flagged = rows.filter(([, s]) => s.budgets.size > 0)
  if (flagged.length > 0) err(`${flagged.length} subject(s) hit a download budget: ${flagged.map(([subject, s]) => `${subject} (${hit(s)})`).join(', ')}\n`)
  const text = problemsText(r)
  if (text) err(text + '\n')
  return r.problems.length > 0 ? 1 : 0
}

/**
 * Takes the lock of audit.dir itself and of every chain directory in it
 * (worker-<i>, ops): a running gateway (or an operator tool recording its
 * event) holds one, and its trail must not be moved from under it. All or
 * none: refused naming the holder, with nothing changed.
 */
async function lockEveryChain (dir: string): Promise<{ own: { file: string, text: string }, chains: Map<string, { file: string, text: string }> }> {
  const chains = new Map<string, { file: string, text: string }>()
  let own: { file: string, text: string } | undefined
  try {
    own = await takeLock(dir)
    for (const e of readdirSync(dir, { withFileTypes: true })) if (isChainDir(e.name) && e.isDirectory()) chains.set(e.name, await takeLock(join(dir, e.name)))
    return { own, chains }
  } catch (err) {
    if (own !== undefined) await releaseLock(own)
    for (const lock of chains.values()) await releaseLock(lock)
    if ((err as NodeJS.ErrnoException).code !== 'EAUDITLOCKED') throw err
    throw new Error(`${(err as Error).message}. A gateway (or an operator tool) is writing this trail: stop it, every worker, before audit new-key; nothing was changed`)
  }
}

/**
 * `nasguard audit new-key`: the deliberate way to a new audit key once the
 * old one is lost. The trail sealed with the old key is moved, whole, into
 * retired-<time>/ inside the audit directory (it cannot be verified without
 * that key, and is kept for whoever finds it), a new key is made, and the
 * new chain's first record says so. Refused while the key exists.
 */
export async function auditNewKey (dir: string, keyFile: string, instance: string | undefined, out: (s: string) => void): Promise<number> {
  const exists = (): Error => new Error(`the audit key ${keyFile} exists: a new one would make the trail unverifiable; nothing was changed`)
  if (existsSync(keyFile)) throw exists()
  makeDir(dir)
  const locks = await lockEveryChain(dir)
  let writer: AuditWriter
  let entries: string[]
  let retired: string
  try {
    if (existsSync(keyFile)) throw exists()
    // A prune checkpoint belongs to the old trail (sealed with the lost key) and goes with it.
    entries = [...trailEntries(dir), ...(existsSync(join(dir, CHECKPOINT_NAME)) ? [CHECKPOINT_NAME] : [])]
    retired = `retired-${new Date().toISOString().replace(/[:.]/g, '-')}`
    if (entries.length > 0) {
      makeDir(join(dir, retired))
      for (const e of entries) renameSync(join(dir, e), join(dir, retired, e))
    }
    // A chain directory's lock moved with it: it is let go there.
    for (const [chain, lock] of locks.chains) await releaseLock({ ...lock, file: entries.includes(chain) ? join(dir, retired, chain, basename(lock.file)) : lock.file })
    const key = createKey(keyFile)
    writer = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key, instance: instance ?? hostname(), rotateBytes: 64 * 1024 * 1024, lock: locks.own })
  } catch (err) {
    await releaseLock(locks.own)
    for (const lock of locks.chains.values()) await releaseLock(lock)
    throw err
  }
  try {
    await writer.append({
      event: 'new-key',
      time: new Date().toISOString(),
      reason: entries.length > 0 ? `a new audit key; the trail sealed with the lost one (${entries.length} entries) is in ${retired}` : 'a new audit key; there was no trail'
    })
  } finally {
    await writer.close()
  }
  out(`new audit key ${keyFile}\n${entries.length > 0 ? `the old trail (${entries.join(', ')}) is in ${join(dir, retired)}\n` : ''}the new chain starts with a new-key record\n`)
  return 0
}
