// `nasguard hold init|add|list|release` and `nasguard retention sweep`:
// legal holds and the erasure of what is past its retention. Every change
// to the holds and every erasure is an audit event in the ops chain, made
// durable before the command says it is done; a change that could not be
// recorded is reported (exit 1), never dropped.
import { closeSync, constants, lstatSync, openSync, realpathSync, unlinkSync } from 'node:fs'
import { userInfo } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { loadAuditKey } from '../audit/key.js'
import { recordOperatorEvent } from '../audit/operator-events.js'
import { auditKeyFile } from '../config/derived.js'
import type { Config } from '../config/schema.js'
import { inPlace } from '../sealing/bulk/durable.js'
import { eraseBackupKey, eraseKey, holdsPeriodKey, KeyringBusyError, lockCopy, lockKeyring } from '../sealing/keyring.js'
import { auditedGeneration } from './audited-generation.js'
import { changeHolds, holdsKeyOf, holdsOn, HoldsProblem, inForce, loadHolds, prefixProblem, type Hold, type HoldsDoc } from './holds.js'
import { holdsStoreOf } from './holds-redis.js'
import { compileRetention } from './rules.js'
import { sweptStatus, writeRetentionStatus } from './status.js'
import { confirmationOf, erasedUnderHold, holdsOnPeriod, overdueOf, planPeriods, toErase, walkShare, type PeriodFinding, type PlainFile, type SweepPlan } from './sweep.js'
import { isIsoTime } from '../time-arg.js'

/** A mistake in what the operator asked (exit 2). */
export class HoldUsageError extends Error {}

function keyOf (c: Readonly<Config>): Buffer {
  return holdsKeyOf(loadAuditKey(auditKeyFile(c), c.audit.dir))
}

function operator (): string {
  try { return userInfo().username } catch { return `uid ${process.getuid?.() ?? '?'}` }
}


const CASE = /^[\p{L}\p{N}][\p{L}\p{N} ._:/#-]{0,127}$/u

export interface HoldRequest { prefix: string, case: string, reason: string, until?: string }

/** What is wrong with `hold add`'s options, naming the option; undefined when nothing is. */
export function holdRequestProblem (c: Readonly<Config>, h: HoldRequest, now: number): string | undefined {
  const p = prefixProblem(h.prefix, c.upstream.fileSystem)
  if (p) return `--path-prefix: ${p}`
  if (!CASE.test(h.case)) return '--case: 1 to 128 letters, digits, spaces and . _ : / # -, starting with a letter or digit'
  if (h.reason.trim() === '' || h.reason.length > 512 || /[\x00-\x1f\x7f]/.test(h.reason)) return '--reason: 1 to 512 printable characters (why the recordings must be kept)'
  if (h.until !== undefined && (!isIsoTime(h.until, { timeRequired: true }) || !(Date.parse(h.until) > now))) return '--until: a time in the future, ISO 8601 with its time zone (e.g. 2028-12-31T23:59:59Z)'
  return undefined
}

async function record (c: Readonly<Config>, r: Parameters<typeof recordOperatorEvent>[1]): Promise<void> {
  await recordOperatorEvent(c.audit, r)
}

/** `hold init`: the empty document, so that a sweep knows there are no holds rather than none it could read. */
export async function holdInit (c: Readonly<Config>, out: (s: string) => void): Promise<number> {
  const store = holdsStoreOf(c)
  const key = keyOf(c)
  if (await loadHolds(store, key) !== undefined) { out(`${store.where} holds the legal holds already: nothing to do\n`); return 0 }
  const { after } = await changeHolds(store, key, (doc) => doc)
  await record(c, { event: 'hold', reason: 'init: an empty legal holds document', counts: { generation: after.generation } })
  out(`${store.where}: an empty legal holds document (generation ${after.generation})\n`)
  return 0
}

export async function holdAdd (c: Readonly<Config>, h: HoldRequest, out: (s: string) => void): Promise<number> {
  const problem = holdRequestProblem(c, h, Date.now())
  if (problem) throw new HoldUsageError(problem)
  const until = h.until === undefined ? undefined : new Date(Date.parse(h.until)).toISOString()
  const hold: Hold = { case: h.case, prefix: h.prefix, reason: h.reason, ...(until ? { until } : {}), at: new Date().toISOString(), by: operator() }
  const store = holdsStoreOf(c)
  // One case may hold several prefixes; the same case and prefix again replaces its reason and end.
  const { after } = await changeHolds(store, keyOf(c), (doc) => ({ ...doc, holds: [...doc.holds.filter((x) => !(x.case === h.case && x.prefix === h.prefix)), hold] }))
  await record(c, { event: 'hold', case: h.case, path: h.prefix, reason: `add: ${h.reason}`, ...(until ? { until } : {}), counts: { generation: after.generation } })
  out(`hold placed: case ${h.case} on ${h.prefix}${until ? ` until ${until}` : ' until released'} (generation ${after.generation})\n`)
  const gone = erasedUnderHold(c, hold, Date.now())
  if (gone.length > 0) out(`note: period(s) ${gone.join(', ')} under it were erased already (their identity destroyed): this hold cannot bring back what they held\n`)
  return 0
}

export async function holdRelease (c: Readonly<Config>, caseId: string, out: (s: string) => void): Promise<number> {
  const store = holdsStoreOf(c)
  const key = keyOf(c)
  const doc = await loadHolds(store, key)
  const mine = doc?.holds.filter((h) => h.case === caseId) ?? []
  if (mine.length === 0) throw new HoldUsageError(`--case: no hold of case ${JSON.stringify(caseId)} (nasguard hold list)`)
  const { after } = await changeHolds(store, key, (d) => ({ ...d, holds: d.holds.filter((h) => h.case !== caseId) }))
  try {
    for (const h of mine) await record(c, { event: 'hold', case: caseId, path: h.prefix, reason: 'release', counts: { generation: after.generation } })
  } catch (err) {
    // A release the trail does not show would let the sweep erase what the case kept: undone.
    await changeHolds(store, key, (d) => ({ ...d, holds: [...d.holds, ...mine.filter((h) => !d.holds.some((x) => x.case === h.case && x.prefix === h.prefix))] }))
      .catch((undo: Error) => { throw new Error(`${(err as Error).message}; and the release could not be undone (${undo.message}): case ${caseId} is released without a record`) })
    throw new Error(`${(err as Error).message}; the release was undone: case ${caseId} still holds`)
  }
  out(`released: case ${caseId}, ${mine.length} prefix(es) (generation ${after.generation})\n`)
  return 0
}

export async function holdList (c: Readonly<Config>, o: { json: boolean, all: boolean }, out: (s: string) => void): Promise<number> {
  const store = holdsStoreOf(c)
  const doc = await loadHolds(store, keyOf(c))
  const now = Date.now()
  const holds = (doc?.holds ?? []).filter((h) => o.all || inForce(h, now))
  if (o.json) { out(JSON.stringify({ where: store.where, generation: doc?.generation ?? null, holds }) + '\n'); return 0 }
  if (!doc) { out(`no legal holds document at ${store.where} (nasguard hold init makes an empty one)\n`); return 0 }
  out(`${store.where}, generation ${doc.generation}: ${holds.length} hold(s)${o.all ? '' : ' in force'}\n`)
  for (const h of holds) out(`${h.case}\t${h.prefix}\t${h.until ?? 'until released'}${inForce(h, now) ? '' : ' (lapsed)'}\t${h.at} by ${h.by}\t${h.reason}\n`)
  return 0
}

// ---- retention sweep ------------------------------------------------------------------------------

export interface SweepOptions {
  source?: string
  apply: boolean
  /** The confirmation, typed (from a terminal) or given with --confirm. */
  confirm: (expected: string) => Promise<string | undefined>
  json: boolean
  /** The clock: tests and `--at` previews move it (never with --apply). */
  now: number
  /** How long an erasure waits for the uploads being sealed to the keyring to finish; default a minute. */
  drainMs?: number
  /** A preview at another time (--at): its findings are not the present's, so neither the metrics' status nor the trail gets them. */
  preview?: boolean
}

async function sweepPlan (c: Readonly<Config>, doc: HoldsDoc, o: SweepOptions): Promise<SweepPlan> {
  const rules = compileRetention(c.retention)
  const share = o.source ? await walkShare(c, o.source, rules, doc, o.now) : undefined
  return { now: o.now, periods: planPeriods(c, rules, doc, o.now, share?.sealed), plain: share?.plain }
}

const day = (ms: number | undefined): string => ms === undefined ? '-' : new Date(ms).toISOString().slice(0, 10)

function planText (plan: SweepPlan, doc: HoldsDoc | undefined, apply: boolean): string {
  const lines = [`retention sweep at ${new Date(plan.now).toISOString()}${apply ? '' : ' (dry run: nothing is changed; --apply erases)'}`]
  const held = (doc?.holds ?? []).filter((h) => inForce(h, plan.now))
  lines.push(doc ? `legal holds: generation ${doc.generation}, ${held.length} in force${held.length ? ` (cases ${[...new Set(held.map((h) => h.case))].join(', ')})` : ''}` : 'legal holds: no document yet (nasguard hold init): --apply refuses until there is one')
  if (plan.periods.length > 0) {
    lines.push('', 'period      state         retained to  files  rules                holds             key id / why')
    for (const p of plan.periods) {
      lines.push(`${p.period.padEnd(10)}  ${p.state.padEnd(12)}  ${day(p.expiresAt).padEnd(11)}  ${String(p.files ?? '-').padEnd(5)}  ${(p.rules.join(',') || '-').padEnd(19)}  ${(p.holds.join(',') || '-').padEnd(16)}  ${p.why ?? p.keyId ?? '-'}`)
    }
  }
  if (plan.plain) {
    const f = plan.plain
    lines.push('', `plaintext recordings: ${f.expired.length} past retention, ${f.held} held past retention, ${f.kept} within retention, ${f.unruled} under no rule${f.undatable ? `, ${f.undatable} modified in the future (their age cannot be told: not deleted, refused by the gateway; check the NAS's clock)` : ''}${f.unreadable ? `, ${f.unreadable} unreadable director${f.unreadable === 1 ? 'y' : 'ies'} not judged` : ''}`)
    // Directories only: file names hold phone numbers.
    const byDir = new Map<string, number>()
    for (const e of f.expired) { const d = e.path.slice(0, e.path.lastIndexOf('/') + 1); byDir.set(d, (byDir.get(d) ?? 0) + 1) }
    for (const [d, n] of [...byDir].sort()) lines.push(`  ${d}  ${n} past retention`)
  }
  lines.push('', `to erase: ${confirmationOf(plan)}`)
  return lines.join('\n') + '\n'
}

const KEYRING_DRAIN_MS = 60_000

/**
 * Erases one period: the keyring (unless done already), then every backup
 * copy; the erasure event names what was reached. Whether every copy was;
 * undefined when the keyring stayed busy and nothing was destroyed.
 */
async function erasePeriod (c: Readonly<Config>, p: PeriodFinding, problems: string[], drainMs: number, heldNow: () => Promise<boolean>): Promise<boolean | undefined | 'held'> {
  const { period, rules } = p
  const backups = c.sealing.keyBackups.length
  // Recorded before anything is destroyed: a crash midway (or a trail that cannot be written) never leaves a destroyed identity without a record.
  await record(c, { event: 'erasure', period, keyId: p.keyId, reason: `retention (${rules.join(', ')}): destroying the identity in ${p.state === 'erased' ? 'the backups left' : 'the keyring'}${backups ? ` and ${backups} backup(s)` : ''}; the next erasure record of this period says what was done (none: the sweep stopped midway, rerun it)` })
  const keyring = c.sealing.keyring as string
  // Erased already: what a crash or a restore left beside the keyring's tombstone, if anything.
  // Uploads being sealed to the period finish first (a minute at most); new ones get 503 meanwhile.
  const drain = { drainMs }
  // The keyring is locked (its uploads drained) only when it still holds an identity of the period.
  const inRing = p.state !== 'erased' || holdsPeriodKey(keyring, period)
  let keyId: string | undefined
  let unlock = (): void => {}
  try {
    if (inRing) unlock = lockKeyring(keyring, 'exclusive', drain)
  } catch (err) {
    if (!(err instanceof KeyringBusyError)) throw err
    problems.push(`period ${period}: NOT erased: ${err.message}`)
    await record(c, { event: 'erasure', period, keyId: p.keyId, reason: `retention (${rules.join(', ')}): NOT destroyed, the keyring stayed busy (${err.message})` })
    return undefined
  }
  try {
    // The holds once more, now that the uploads have drained (up to a minute): one placed meanwhile wins.
    if (await heldNow()) {
      await record(c, { event: 'erasure', period, keyId: p.keyId, reason: `retention (${rules.join(', ')}): NOT destroyed, a legal hold placed since the plan meets the period` })
      return 'held'
    }
    const locked = { locked: true }
    keyId = !inRing ? undefined : p.state !== 'erased' ? eraseKey(keyring, period, locked) : eraseBackupKey(keyring, keyring, period, locked)
  } finally {
    unlock()
  }
  const inKeyring = keyId !== undefined
  const missed: string[] = []
  const held: string[] = []
  for (const dir of c.sealing.keyBackups) {
    // Each copy locked (its own uploads drained, up to a minute), and the holds read once more under that lock.
    let unlockCopy: () => void
    try {
      unlockCopy = lockCopy(keyring, dir, drainMs)
    } catch (err) { missed.push(dir); problems.push(`period ${period}: the key backup ${dir} could not be reached (${(err as Error).message}): its copy of the key was NOT destroyed; rerun the sweep once it is mounted`); continue }
    try {
      if (await heldNow()) { held.push(dir); continue }
      const destroyed = eraseBackupKey(keyring, dir, period, { locked: true })
      keyId ??= destroyed
    } catch (err) { missed.push(dir); problems.push(`period ${period}: the key backup ${dir} could not be erased (${(err as Error).message}): its copy of the key was NOT destroyed; rerun the sweep`) } finally { unlockCopy() }
  }
  const reached = c.sealing.keyBackups.length - missed.length - held.length
  await record(c, { event: 'erasure', period, keyId, reason: `retention (${rules.join(', ')}): identity destroyed in ${inKeyring ? 'the keyring' : 'the backups left (the keyring\'s was already)'}${c.sealing.keyBackups.length ? ` and ${reached} of ${c.sealing.keyBackups.length} backup(s)` : ''}${missed.length ? `; NOT in ${missed.join(', ')}` : ''}${held.length ? `; NOT in ${held.join(', ')}: a legal hold placed since the plan meets the period` : ''}` })
  if (held.length > 0) return 'held'
  return missed.length === 0
}

/**
 * Deletes one expired plaintext recording, recorded before it is deleted
 * (a crash between the two never leaves a deletion without a record), and
 * again if it then could not be. Whether it was deleted.
 */
async function deleteRecorded (c: Readonly<Config>, root: string, f: PlainFile, problems: string[], heldNow: () => Promise<boolean>): Promise<boolean | 'held'> {
  const swapped = 'a directory on its path was replaced since the plan (a symbolic link?)'
  if (!inPlace(root, f.file, f.path.slice(1).split('/'))) { problems.push(`a recording was not deleted: ${swapped}`); return false }
  try {
    if (!lstatSync(f.file).isFile()) return false
  } catch {
    return false
  }
  await record(c, { event: 'erasure', path: f.path, reason: `retention (${f.rule}): deleted from the NAS` })
  const recordNotDeleted = async (why: string): Promise<void> => {
    await record(c, { event: 'erasure', path: f.path, reason: `retention (${f.rule}): NOT deleted from the NAS after all (${why})` })
  }
  const notDeleted = async (why: string): Promise<false> => {
    problems.push(`a recording was not deleted: ${why}`)
    await recordNotDeleted(why)
    return false
  }
  // The holds once more, after the record: one placed while it was written wins. Unreadable now: not deleted, and said.
  let heldSince: boolean
  try {
    heldSince = await heldNow()
  } catch (err) {
    await recordNotDeleted(`the legal holds could not be read again: ${(err as Error).message}`)
    throw err
  }
  if (heldSince) {
    await recordNotDeleted('a legal hold placed since meets it')
    return 'held'
  }
  // The deletion goes through the directory opened and checked, not through the path again: its directory is
  // still where the walk found it (a directory swapped for a link since would send the deletion onto
  // another file), and a swap after the check changes nothing the unlink resolves.
  const why = unlinkInPlace(root, f)
  return why === undefined ? true : await notDeleted(why === 'swapped' ? swapped : why)
}

/**
 * Unlinks a planned file through its opened directory (/proc/self/fd/N/name):
 * only if that directory's real path is the one the walk found, and the name
 * is a file. Undefined when deleted (or gone already); else why not.
 */
function unlinkInPlace (root: string, f: PlainFile): string | undefined {
  let fd: number
  try {
    fd = openSync(dirname(f.file), constants.O_RDONLY | constants.O_DIRECTORY)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'swapped' : (e as Error).message.replace(dirname(f.file), '<directory>')
  }
  try {
    const dir = `/proc/self/fd/${fd}`
    if (realpathSync(dir) !== join(root, ...f.path.slice(1).split('/').slice(0, -1))) return 'swapped'
    const target = join(dir, basename(f.file))
    if (!lstatSync(target).isFile()) return 'it is no longer a file'
    unlinkSync(target)
    return undefined
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    // Never the file's name (it holds a phone number) in what is said.
    return (e as Error).message.split(f.file).join('<file>').split(basename(f.file)).join('<file>').replace(/\/proc\/self\/fd\/\d+/g, '<directory>')
  } finally {
    closeSync(fd)
  }
}

/**
 * Dry run: the plan, and the status the metrics read. --apply: the plan,
 * the typed confirmation (which names exactly what it destroys), then, with
 * the holds read again just before, each period and file.
 */
export async function retentionSweep (c: Readonly<Config>, o: SweepOptions, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const store = holdsStoreOf(c)
  const key = keyOf(c)
  const doc = await loadHolds(store, key)
  const plan = await sweepPlan(c, doc ?? { version: 1, generation: 0, holds: [] }, o)
  out(o.json ? JSON.stringify({ ...plan, plain: plan.plain && { ...plan.plain, expired: plan.plain.expired.length } }) + '\n' : planText(plan, doc, o.apply))
  if (!o.apply && o.preview === true) return 0
  if (!o.apply) {
    const overdue = overdueOf(plan)
    writeRetentionStatus(c.audit.dir, sweptStatus(c.audit.dir, overdue, false))
    // The generation read is recorded: a later --apply here refuses an older document, whichever host changed it.
    await record(c, { event: 'retention-sweep', reason: 'dry run', counts: { overdue: (overdue.recordings ?? 0) + overdue.periods, ...(doc ? { generation: doc.generation } : {}) } })
    return 0
  }
  if (!doc) { err(`--apply: no legal holds document at ${store.where}: erasing without one could destroy what a lost hold protected. If there are truly no holds, run nasguard hold init (audited), then sweep again\n`); return 1 }
  const audited = await auditedGeneration(c)
  if (typeof audited === 'string') { err(`--apply: ${audited}; nothing was changed\n`); return 1 }
  if (doc.generation < audited) { err(`--apply: ${store.where} is at generation ${doc.generation}, but this host's audit trail records a hold change at generation ${audited}: an older document was put back (a rollback can drop holds). Restore the newest one; nothing was changed\n`); return 1 }
  const expected = confirmationOf(plan)
  const typed = await o.confirm(expected)
  if (typed !== expected) { err(`not confirmed: type exactly "${expected}" (or pass --confirm "${expected}"); nothing was changed\n`); return 2 }
  return await applyPlan(c, plan, { generation: doc.generation, drainMs: o.drainMs ?? KEYRING_DRAIN_MS }, store, key, out, err)
}

async function applyPlan (c: Readonly<Config>, plan: SweepPlan, { generation, drainMs }: { generation: number, drainMs: number }, store: ReturnType<typeof holdsStoreOf>, key: Buffer, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const problems: string[] = []
  // Read again before each erasure: a hold placed since the plan wins, and a document gone since is no "no holds".
  const fresh = async (): Promise<HoldsDoc> => {
    const doc = await loadHolds(store, key)
    if (!doc) throw new HoldsProblem(`${store.where} is gone since the plan was made: nothing more is erased until it is restored`)
    return doc
  }
  let erased = 0
  let deleted = 0
  let heldBack = 0
  for (const p of toErase(plan)) {
    const heldNow = async (): Promise<boolean> => holdsOnPeriod(c, p.period, (await fresh()).holds, Date.now()).length > 0
    if (await heldNow()) { heldBack++; out(`period ${p.period}: held since the plan; kept\n`); continue }
    const done = await erasePeriod(c, p, problems, drainMs, heldNow)
    if (done === 'held') { heldBack++; out(`period ${p.period}: held since the plan (placed while uploads drained); kept\n`); continue }
    // The next periods would wait as long again, uploads turned away meanwhile: left for a rerun.
    if (done === undefined) { out(`period ${p.period}: NOT erased, the keyring stayed busy; the periods after it are left for a rerun\n`); break }
    if (done) erased++
    out(`period ${p.period}: identity destroyed${p.keyId ? ` (${p.keyId})` : ' in the backups left'}\n`)
  }
  if (plan.plain && plan.plain.expired.length > 0) {
    let now = await fresh()
    let dir = ''
    for (const f of plan.plain.expired) {
      // Read again for each directory: a long deletion does not run on holds read at its start.
      const here = f.path.slice(0, f.path.lastIndexOf('/'))
      if (here !== dir) { now = await fresh(); dir = here }
      const segments = f.path.slice(1).split('/')
      if (holdsOn(now.holds, segments, c.upstream.fileSystem, Date.now()).length > 0) { heldBack++; continue }
      const done = await deleteRecorded(c, plan.plain.root, f, problems, async () => holdsOn((await fresh()).holds, segments, c.upstream.fileSystem, Date.now()).length > 0)
      if (done === 'held') heldBack++
      else if (done) deleted++
    }
  }
  await record(c, { event: 'retention-sweep', counts: { erased, deleted, held: heldBack, failed: problems.length, generation }, reason: problems.length ? 'incomplete' : 'applied' })
  const overdue = overdueOf(plan)
  writeRetentionStatus(c.audit.dir, sweptStatus(c.audit.dir, { ...overdue, recordings: overdue.recordings === undefined ? undefined : overdue.recordings - deleted, periods: overdue.periods - erased }, true))
  out(`erased ${erased} period(s), deleted ${deleted} file(s)${heldBack ? `, ${heldBack} kept by holds placed since the plan` : ''}\n`)
  for (const p of problems) err(p + '\n')
  return problems.length > 0 ? 1 : 0
}
