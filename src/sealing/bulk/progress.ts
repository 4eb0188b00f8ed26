// What a bulk run prints. On a terminal: a progress bar (cli-progress, on
// stderr) with files, bytes, MB/s and ETA, then a summary and the failures.
// Otherwise: JSON lines on stdout, one per file result and one summary
// line, for scripts and logs. Files are named by their sealed path only.
import { SingleBar } from 'cli-progress'
import type { FileResult, Reporter, Summary } from './run.js'

const MB = 1e6

export function jsonLines (out: (s: string) => void): Reporter {
  return {
    begin: () => {},
    bytes: () => {},
    file: (r) => { out(JSON.stringify(r) + '\n') },
    end: (s) => { out(JSON.stringify({ summary: s }) + '\n') }
  }
}

export function summaryText (s: Summary): string {
  const rate = s.seconds > 0 ? s.bytes / MB / s.seconds : 0
  const verb = s.command === 'seal' ? (s.dryRun ? 'would seal' : 'sealed') : 're-sealed'
  let text = `${verb} ${s.sealed}, skipped ${s.skipped}, failed ${s.failed}; ${(s.bytes / MB).toFixed(1)} MB in ${s.seconds.toFixed(1)} s (${rate.toFixed(1)} MB/s)`
  if (s.tempsRemoved > 0) text += `; ${s.tempsRemoved} leftover temporary file(s) removed`
  if (s.retired) text += `\nretired the old identity ${s.retired}; period ${s.period ?? ''} now opens with its new one only`
  if (s.kept) text += `\nthe old identity of period ${s.period ?? ''} is kept: ${s.kept}`
  if (s.backups) text += `\n${s.backups}`
  return text + '\n'
}

/** The progress bar; at most `listed` failures are listed at the end (all are counted). */
export function progressBar (out: (s: string) => void, listed = 50): Reporter {
  const bar = new SingleBar({
    format: '{bar} {percentage}% | {files}/{totalFiles} files | {done}/{totalMb} MB | {speed} MB/s | ETA {eta_formatted}',
    hideCursor: true,
    etaBuffer: 50
  })
  const started = Date.now()
  let bytes = 0
  let files = 0
  const failures: FileResult[] = []
  const payload = (): Record<string, string | number> => ({
    files,
    done: (bytes / MB).toFixed(0),
    speed: (bytes / MB / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1)
  })
  return {
    begin: (total) => { bar.start(Math.max(1, total?.bytes ?? 1), 0, { ...payload(), totalFiles: total?.files ?? '?', totalMb: ((total?.bytes ?? 0) / MB).toFixed(0) }) },
    bytes: (n) => { bytes += n; bar.update(bytes, payload()) },
    file: (r) => {
      if (r.bytes !== undefined || r.result === 'failed') files++
      if (r.result === 'failed' && failures.length < listed) failures.push(r)
      bar.update(bytes, payload())
    },
    end: (s) => {
      bar.stop()
      out(summaryText(s))
      for (const f of failures) out(`failed: ${f.sealed ?? '(no sealed name)'}: ${f.reason ?? ''}\n`)
      if (s.failed > failures.length) out(`... and ${s.failed - failures.length} more\n`)
    }
  }
}
