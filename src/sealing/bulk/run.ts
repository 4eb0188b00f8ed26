// A bulk run over a mounted share: the walk, a bounded number of files at a
// time (--jobs), each file's result to a reporter, and the summary. What
// is done to one file is the job's: sealing (seal.ts) or re-sealing to a
// new identity (rotate.ts). Results name a file only by its sealed path:
// a plaintext path or name (a caller's phone number) is never printed, so
// an error is reported by its code, never by its message (Node's messages
// hold the path).
import { unlinkSync } from 'node:fs'
import { lstat } from 'node:fs/promises'
import { SealedIntegrityError } from '../age.js'
import { walk, type Found } from './walk.js'

export type Outcome = 'sealed' | 'skipped' | 'failed' | 'would-seal'

export interface FileResult {
  result: Outcome
  /** Why it was skipped or failed; never holds a plaintext path. */
  reason?: string
  /** The NAS path of the sealed file, when the file has one. */
  sealed?: string
  /** The plaintext's size, for a file the run looked at. */
  bytes?: number
  /** The plaintext was removed (--remove-plaintext). */
  removed?: boolean
}

export interface Counts { sealed: number, skipped: number, failed: number, bytes: number }

export interface Summary extends Counts {
  command: 'seal' | 'rotate'
  dryRun: boolean
  seconds: number
  /** Leftover temporary files of an interrupted run, removed. */
  tempsRemoved: number
  period?: string
  /** keys rotate: the key id retired, once every file opens with the new one. */
  retired?: string
  /** keys rotate: why the old identity was kept. */
  kept?: string
  /** keys rotate: retired in the keyring, but still in these key backups. */
  backups?: string
}

/** What the audit trail records of a run (the operator-event API takes it). */
export interface SealRunRecord { event: 'seal' | 'rotate', reason: string, counts: Counts, period?: string }

export function sealRunRecord (s: Summary): SealRunRecord {
  const what = s.command === 'seal' ? `seal${s.period ? ` period ${s.period}` : ''}${s.dryRun ? ' (dry run)' : ''}` : `keys rotate period ${s.period ?? ''}${s.retired ? `, retired ${s.retired}` : ', old identity kept'}${s.backups ? `; ${s.backups}` : ''}`
  return { event: s.command === 'seal' ? 'seal' : 'rotate', reason: `${what}: ${s.failed === 0 ? 'ok' : `${s.failed} failed`}`, counts: { sealed: s.sealed, skipped: s.skipped, failed: s.failed, bytes: s.bytes }, ...(s.period ? { period: s.period } : {}) }
}

/** A failure this module words itself: its message holds no path. */
export class FileFailure extends Error {
  override name = 'FileFailure'
}

/** The words for an error that may print: never an unknown error's message, which can hold a path. */
export function reasonOf (err: unknown): string {
  if (err instanceof FileFailure) return err.message
  if (err instanceof SealedIntegrityError) return `integrity: ${err.reason}`
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' ? code : `error (${(err as Error | undefined)?.name ?? typeof err})`
}

export interface Reporter {
  begin: (total?: { files: number, bytes: number }) => void
  /** Plaintext bytes read (live progress). */
  bytes: (n: number) => void
  file: (r: FileResult) => void
  end: (s: Summary) => void
}

export interface Job {
  /** Pure: whether the run looks at a file, from its decoded segments; else why not. */
  wants: (segments: string[]) => true | string
  /** Does the file's work; never throws (a failure is a result). */
  handle: (file: string, segments: string[], progress: (n: number) => void) => Promise<FileResult>
}

/** The temporary files being written now: a walk that meets one leaves it. */
export type ActiveTemps = Set<string>

/** The files and bytes a run will look at (for a progress bar's ETA). */
export async function survey (root: string, job: Job): Promise<{ files: number, bytes: number }> {
  let files = 0
  let bytes = 0
  for await (const f of walk(root)) {
    if (f.kind !== 'file' || job.wants(f.segments) !== true) continue
    files++
    try { bytes += (await lstat(f.file)).size } catch {}
  }
  return { files, bytes }
}

export interface RunOptions { root: string, jobs: number, job: Job, reporter: Reporter, active: ActiveTemps, command: Summary['command'], dryRun: boolean, period?: string }

/** Walks the root and runs the job on each file, --jobs at a time; the summary. */
export async function runBulk (o: RunOptions): Promise<Summary> {
  const started = Date.now()
  const s: Summary = { command: o.command, dryRun: o.dryRun, sealed: 0, skipped: 0, failed: 0, bytes: 0, seconds: 0, tempsRemoved: 0, period: o.period }
  const found = walk(o.root)
  const one = async (f: Found): Promise<FileResult | undefined> => {
    switch (f.kind) {
      case 'temp':
        // Checked and removed without yielding: a job registers its temp before it makes it.
        if (o.dryRun || o.active.has(f.file)) return undefined
        try { unlinkSync(f.file); s.tempsRemoved++ } catch {}
        return undefined
      case 'other': return { result: 'skipped', reason: f.reason }
      case 'unreadable': return { result: 'failed', reason: `unreadable directory (${f.code})` }
      case 'file': {
        const wanted = o.job.wants(f.segments)
        if (wanted !== true) return { result: 'skipped', reason: wanted }
        let seen = 0
        const r = await o.job.handle(f.file, f.segments, (n) => { seen += n; o.reporter.bytes(n) })
        // Bytes not streamed (a file found done) still count towards the total.
        if (r.bytes !== undefined && r.bytes > seen) o.reporter.bytes(r.bytes - seen)
        return r
      }
    }
  }
  const worker = async (): Promise<void> => {
    for (;;) {
      const next = await found.next()
      if (next.done === true) return
      const r = await one(next.value)
      if (r === undefined) continue
      if (r.result === 'sealed') { s.sealed++; s.bytes += r.bytes ?? 0 } else if (r.result === 'would-seal') { s.sealed++; s.bytes += r.bytes ?? 0 } else if (r.result === 'skipped') s.skipped++
      else s.failed++
      o.reporter.file(r)
    }
  }
  await Promise.all(Array.from({ length: o.jobs }, worker))
  s.seconds = (Date.now() - started) / 1000
  return s
}
