// Watching files that operators replace: the directories are watched, not
// the files, because renewals and editors usually replace a file (write a
// new one, rename it over the old), which a watch on the file would lose.
// Changes that come together (a certificate and its key) are taken as one.
import { readdirSync, watch, type FSWatcher } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { basename, dirname } from 'node:path'

/** Calls onChange (at most once per burst of changes) when any of the files changes; returns stop(). */
export function watchFiles (files: readonly string[], onChange: () => void, settleMs = 200): () => void {
  const names = new Set(files.map((f) => basename(f)))
  return watchNames([...new Set(files.map((f) => dirname(f)))], (name) => names.has(name), onChange, settleMs)
}

/**
 * How else a watch is kept: pollMs also lists the directories that often
 * and calls onChange when the accepted names in them changed (inotify does
 * not see a change another host makes on a network file system, and a
 * watch can fail); onError hears of a directory that cannot be watched.
 */
export interface WatchOptions { pollMs?: number, onError?: (dir: string, err: Error) => void }

/** Calls onChange (at most once per burst) when a name in the directories that `accept`s changes; returns stop(). */
export function watchNames (dirs: readonly string[], accept: (name: string) => boolean, onChange: () => void, settleMs = 200, o: WatchOptions = {}): () => void {
  const watchers: FSWatcher[] = []
  let debounce: NodeJS.Timeout | null = null
  const changed = (): void => {
    if (debounce) clearTimeout(debounce)
    debounce = setTimeout(() => { debounce = null; onChange() }, settleMs)
    debounce.unref()
  }
  for (const dir of dirs) {
    try {
      const w = watch(dir, (_event, file) => {
        if (file && !accept(file.toString())) return
        changed()
      })
      w.on('error', (err) => o.onError?.(dir, err))
      w.unref()
      watchers.push(w)
    } catch (err) {
      // A directory that cannot be watched still reloads on SIGHUP (and by the poll, if any).
      o.onError?.(dir, err as Error)
    }
  }
  const poll = o.pollMs === undefined ? undefined : pollNames(dirs, accept, changed, o.pollMs)
  return () => {
    for (const w of watchers) w.close()
    if (poll) clearInterval(poll)
    if (debounce) clearTimeout(debounce)
  }
}

/** A directory's accepted names as one text (or the error that kept them from being listed). */
function namesText (names: string[], accept: (name: string) => boolean): string {
  return names.filter(accept).sort().join('/')
}

function listingError (err: NodeJS.ErrnoException): string {
  return `! ${err.code ?? ''}`
}

/**
 * Lists the directories every ms, and calls changed when the accepted names
 * differ from the last listing. The first listing is taken at once, before
 * this returns: taken later (in the thread pool), it could already hold a
 * change made meanwhile, which no later listing would differ by.
 */
function pollNames (dirs: readonly string[], accept: (name: string) => boolean, changed: () => void, ms: number): NodeJS.Timeout {
  const listing = async (): Promise<string> => {
    const all = await Promise.all(dirs.map(async (d) => await readdir(d).then((names) => namesText(names, accept), listingError)))
    return all.join('\n')
  }
  const first = dirs.map((d) => { try { return namesText(readdirSync(d), accept) } catch (err) { return listingError(err as NodeJS.ErrnoException) } })
  let last: Promise<string> = Promise.resolve(first.join('\n'))
  const timer = setInterval(() => {
    last = Promise.all([last, listing()]).then(([before, now]) => { if (now !== before) changed(); return now })
  }, ms)
  timer.unref()
  return timer
}
