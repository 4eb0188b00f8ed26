// Watching a directory: a burst of changes is one call; a directory that
// cannot be watched is said (onError), and the poll (pollMs) still sees a
// change the watch cannot: here the directory did not exist when the watch
// began, as a keyring on a network mount that was not mounted yet.
import t from 'tap'
import { pbkdf2 } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { watchNames } from '../../src/files/watch.js'
import { waitFor } from '../helpers/wait.js'

const keyish = (name: string): boolean => name.endsWith('.key') || name.endsWith('.erased')

t.test('a change in a watched directory calls onChange once per burst, and only for accepted names', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-watch-'))
  let calls = 0
  const stop = watchNames([dir], keyish, () => { calls++ }, 50)
  t.teardown(stop)
  writeFileSync(join(dir, 'notes.txt'), 'x')
  writeFileSync(join(dir, '2016-01.erased'), 'x')
  writeFileSync(join(dir, '2016-02.erased'), 'x')
  const seen = await waitFor('the change to be seen', () => calls > 0 ? calls : undefined, { tries: 500, intervalMs: 20 })
  // The watch reports each write as one or two events (six or more here); a burst comes as fewer calls than writes.
  t.ok(seen >= 1 && seen < 3, `the burst of writes came as ${seen} call(s), fewer than the accepted writes`)
})

t.test('a directory that cannot be watched is said, and its poll sees the change', async (t) => {
  const parent = mkdtempSync(join(tmpdir(), 'nasguard-watch-'))
  const dir = join(parent, 'keyring')
  const errors: string[] = []
  let calls = 0
  // The thread pool busy (as under load): a first listing taken there would
  // run only after the directory and its tombstone were made just below,
  // and so would already hold the change.
  const busy = Array.from({ length: Number(process.env.UV_THREADPOOL_SIZE) || 4 }, async () => await new Promise((resolve) => pbkdf2('x', 'y', 300_000, 32, 'sha256', resolve)))
  const stop = watchNames([dir], keyish, () => { calls++ }, 20, { pollMs: 50, onError: (d, err) => errors.push(`${d}: ${(err as NodeJS.ErrnoException).code ?? err.message}`) })
  t.teardown(stop)
  t.same(errors, [`${dir}: ENOENT`], 'the watch that could not start is said')
  mkdirSync(dir)
  writeFileSync(join(dir, '2016-01.erased'), 'x')
  await Promise.all(busy)
  await waitFor('the poll to see the tombstone', () => calls > 0 ? true : undefined, { tries: 500, intervalMs: 20 })
  const seen = calls
  writeFileSync(join(dir, 'notes.txt'), 'x')
  rmSync(join(dir, 'notes.txt'))
  writeFileSync(join(dir, '2016-02.erased'), 'x')
  const after = await waitFor('the poll to see the second tombstone', () => calls > seen ? calls : undefined, { tries: 500, intervalMs: 20 })
  t.equal(after, seen + 1, 'one call for the one change of accepted names (the note written and removed is not one)')
})
