// Audit trails collected from several gateways: a directory with one
// subdirectory per instance, <collection>/<audit.instance>/, each a copy of
// that host's audit.dir (rsync, or a shipper that keeps files byte for
// byte). Every instance's trail is checked as `audit verify` checks one
// host's (its chains, their sealed list, heads, checkpoints); over the
// collection verify also checks that every record names the instance whose
// directory holds it (audit.instance is sealed into each record, so a trail
// filed under another host's name, or copied to a second name, shows), and,
// given the instances that must be there, that none is missing.
//
// What one cannot see here: a host whose whole directory is missing, unless
// the expected instances are given (--expect, or later a registry); a trail
// rolled back to an older genuine copy, unless anchors taken earlier are
// checked per instance (audit verify --dir <collection>/<instance> --anchor).
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { chainDirs, CHAINS_FILE, OPS_CHAIN } from './chains.js'
import { anchorText, firstOf, problemsText, prunedText, walkAll, type ChainReport, type TrailLocation } from './commands.js'
import { hasSingleProcessTrail, type Problem, type VerifyReport } from './verify.js'

/** audit.instance's pattern (src/config/schema.ts): a subdirectory named otherwise is no instance's. */
export const INSTANCE_NAME = /^[A-Za-z0-9._-]{1,128}$/

export interface InstanceReport {
  name: string
  chains: ChainReport[]
  /** The instance's chains merged, with the collection's own findings (records naming another instance) among its problems. */
  report: VerifyReport
}

export interface CollectionReport {
  dir: string
  instances: InstanceReport[]
  /** Expected instances with no directory here. */
  missing: string[]
  /** Findings about the collection itself: missing, unexpected or unreadable instances. */
  problems: Problem[]
  /** The expected instances, when given. */
  expected?: string[]
}

const isDir = (p: string): boolean => { try { return statSync(p).isDirectory() } catch { return false } }

/** dir is one host's audit directory: a single-process trail, chains, or their sealed list. */
export function isAuditDir (dir: string): boolean {
  return isDir(dir) && (hasSingleProcessTrail(dir) || chainDirs(dir).length > 0 || existsSync(join(dir, CHAINS_FILE)))
}

/**
 * dir is a collection: no trail of its own, and subdirectories that are
 * audit dirs (or, when the expected instances are given, possibly none:
 * a collection whose every host is missing is still one).
 */
export function isCollection (dir: string, opts: { expectGiven?: boolean } = {}): boolean {
  if (!isDir(dir) || isAuditDir(dir)) return false
  return opts.expectGiven === true || readdirSync(dir).some((f) => isAuditDir(join(dir, f)))
}

/** At most this many records naming another instance are listed per chain; the rest are counted. */
const LISTED = 3

/**
 * Walks every instance of the collection. expect: the instances that must
 * be there (from --expect, or a registry of the gateways that started);
 * without it a host whose directory is missing cannot be told.
 */
export async function walkCollection (loc: TrailLocation, opts: { expect?: string[] } = {}): Promise<CollectionReport> {
  const names = readdirSync(loc.dir).filter((f) => isDir(join(loc.dir, f))).sort()
  const problems: Problem[] = []
  const instances: InstanceReport[] = []
  for (const name of names) {
    const dir = join(loc.dir, name)
    if (!INSTANCE_NAME.test(name) || !isAuditDir(dir)) {
      problems.push({ kind: 'inserted', file: name, line: 0, message: `${name}/ is not an instance's audit directory (no trail, no chains${INSTANCE_NAME.test(name) ? '' : ', and not a valid audit.instance name'}): a copy that failed, or something else put here` })
      continue
    }
    // Records whose MAC holds but which name another instance, per chain.
    const foreign = new Map<string, { count: number, listed: Problem[] }>()
    const { chains, merged } = await walkAll({ dir, key: loc.key }, (r, chain) => {
      if (r.instance === name) return
      let f = foreign.get(chain)
      if (!f) { f = { count: 0, listed: [] }; foreign.set(chain, f) }
      f.count++
      if (f.listed.length < LISTED) {
        const what = typeof r.instance === 'string' ? `names instance ${r.instance}` : 'names no instance'
        f.listed.push({ kind: 'inserted', file: chain, line: 0, seq: Number(r.seq), message: `${chain === '.' ? '' : `${chain}: `}record seq ${String(r.seq)} ${what}, but it is filed under ${name}/: a trail filed under the wrong host, copied to a second name, or written before audit.instance was changed` })
      }
    })
    for (const [chain, f] of foreign) {
      merged.problems.push(...f.listed)
      if (f.count > f.listed.length) merged.problems.push({ kind: 'inserted', file: chain, line: 0, message: `${chain === '.' ? '' : `${chain}: `}${f.count - f.listed.length} more record(s) name another instance than ${name}` })
    }
    instances.push({ name, chains, report: merged })
  }
  const expected = opts.expect === undefined ? undefined : [...new Set(opts.expect)].sort()
  const missing = (expected ?? []).filter((e) => !instances.some((i) => i.name === e))
  for (const m of missing) problems.push({ kind: 'missing-file', file: m, line: 0, message: `instance ${m} is expected but ${m}/ is not in the collection: its trail was not collected, or was removed` })
  for (const i of instances) {
    if (expected && !expected.includes(i.name)) problems.push({ kind: 'inserted', file: i.name, line: 0, message: `instance ${i.name} is in the collection but not among the expected instances (${expected.join(', ')}): a gateway not on the list, or a trail put here under a made-up name` })
  }
  return { dir: loc.dir, instances, missing, problems, expected }
}

const chainLabel = (name: string): string => (name === '.' ? '(single process)' : name === OPS_CHAIN ? 'ops (operator tools)' : name)

/** `nasguard audit verify` over a collection: a verdict per instance, exit 1 on any finding. */
export async function verifyCollection (loc: TrailLocation, opts: { expect?: string[] }, out: (s: string) => void): Promise<number> {
  const c = await walkCollection(loc, opts)
  out(`collection ${c.dir}: ${c.instances.length} instance(s)${c.expected ? `, expected: ${c.expected.join(' ')}` : ''}\n`)
  const failed: string[] = []
  for (const i of c.instances) {
    const r = i.report
    const ok = r.problems.length === 0
    if (!ok) failed.push(i.name)
    out(`${i.name}: ${ok ? 'intact' : 'FAILED'}, ${r.records} records in ${i.chains.length} chain(s), ${r.files.length} file(s)\n`)
    for (const ch of i.chains) {
      out(`  ${chainLabel(ch.name)}: ${ch.report.records} records in ${ch.report.files.length} file(s), seq ${firstOf(ch.report)}..${ch.report.lastSeq}\n`)
      out(prunedText(ch.report, '    '))
    }
    const text = problemsText(r)
    if (text) out(text.split('\n').map((l) => `  ${l}`).join('\n') + '\n')
  }
  for (const p of c.problems) out(`${p.file}: ${p.kind === 'missing-file' ? 'MISSING' : 'FAILED'}: ${p.message}\n`)
  const bad = [...new Set([...failed, ...c.problems.map((p) => p.file)])]
  if (c.expected === undefined) out('note: no --expect given: a host whose whole directory is missing from the collection cannot be detected; list the instances that must be here with --expect\n')
  if (c.instances.length === 0 && c.problems.length === 0) { out(`no instance audit directories in ${c.dir}\n`); return 1 }
  if (bad.length > 0) {
    out(`TAMPERING or missing trails: ${bad.join(', ')}\n`)
    return 1
  }
  out(`all ${c.instances.length} instance(s) intact\n`)
  // As for one host: kept off the hosts, they let a later verify of that
  // instance (--dir <collection>/<instance> --anchor ...) see a rollback.
  const held = c.instances.map((i) => ({ name: i.name, anchors: i.chains.filter((ch) => ch.report.lastHash !== '').map((ch) => anchorText(ch.name, ch.report)) })).filter((i) => i.anchors.length > 0)
  if (held.length > 0) {
    out('anchors (keep them off the hosts; check an instance with audit verify --dir <collection>/<instance> --anchor ...):\n')
    for (const i of held) out(`  ${i.name}: ${i.anchors.join(' ')}\n`)
  }
  return 0
}
