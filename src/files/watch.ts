// Watching files that operators replace: the directories are watched, not
// the files, because renewals and editors usually replace a file (write a
// new one, rename it over the old), which a watch on the file would lose.
// Changes that come together (a certificate and its key) are taken as one.
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'

/** Calls onChange (at most once per burst of changes) when any of the files changes; returns stop(). */
export function watchFiles (files: readonly string[], onChange: () => void, settleMs = 200): () => void {
  const names = new Set(files.map((f) => basename(f)))
  return watchNames([...new Set(files.map((f) => dirname(f)))], (name) => names.has(name), onChange, settleMs)
}

/** Calls onChange (at most once per burst) when a name in the directories that `accept`s changes; returns stop(). */
export function watchNames (dirs: readonly string[], accept: (name: string) => boolean, onChange: () => void, settleMs = 200): () => void {
  const watchers: FSWatcher[] = []
  let debounce: NodeJS.Timeout | null = null
  for (const dir of dirs) {
    try {
      const w = watch(dir, (_event, file) => {
        if (file && !accept(file.toString())) return
        if (debounce) clearTimeout(debounce)
        debounce = setTimeout(() => { debounce = null; onChange() }, settleMs)
        debounce.unref()
      })
      w.on('error', () => {})
      w.unref()
      watchers.push(w)
    } catch {
      // A directory that cannot be watched still reloads on SIGHUP.
    }
  }
  return () => {
    for (const w of watchers) w.close()
    if (debounce) clearTimeout(debounce)
  }
}
