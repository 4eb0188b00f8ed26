// The retention status the gateway reads at every scrape, as whoever can
// write audit.dir may leave it: a FIFO or a link to /dev/zero must not hang
// or exhaust the gateway, and a sweep "from the future" must not keep the
// stale-sweep alert quiet. Each reads as no status (the gauges are dropped,
// the stale alert fires); a sound one reads back.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readRetentionStatus, STATUS_FILE, writeRetentionStatus } from '../../src/retention/status.js'

const NOW = Date.parse('2026-12-01T12:00:00Z')
const sound = { time: NOW - 3600_000, overdueRecordings: 2, overduePeriods: 1, undeterminedPeriods: 0, applied: false }

t.test('a sound status reads back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-status-'))
  writeRetentionStatus(dir, sound)
  t.same(readRetentionStatus(dir, NOW), sound)
})

t.test('what reads as no status, without blocking', async (t) => {
  const cases: Array<[string, (file: string) => void]> = [
    ['a FIFO (a read would block the gateway)', (f) => { t.equal(spawnSync('mkfifo', [f]).status, 0, 'mkfifo') }],
    ['a link to /dev/zero (a read would never end)', (f) => { symlinkSync('/dev/zero', f) }],
    ['a link to a sound status elsewhere', (f) => { const other = mkdtempSync(join(tmpdir(), 'nasguard-status-')); writeRetentionStatus(other, sound); symlinkSync(join(other, STATUS_FILE), f) }],
    ['a file of 1 MiB', (f) => { writeFileSync(f, JSON.stringify({ ...sound, pad: 'x'.repeat(1 << 20) })) }],
    ['a sweep a day in the future', (f) => { writeFileSync(f, JSON.stringify({ ...sound, time: NOW + 86_400_000 })) }],
    ['a share walk in the future', (f) => { writeFileSync(f, JSON.stringify({ ...sound, recordingsTime: 9e15 })) }],
    ['a negative count', (f) => { writeFileSync(f, JSON.stringify({ ...sound, overduePeriods: -1 })) }],
    ['a count as a string', (f) => { writeFileSync(f, JSON.stringify({ ...sound, overdueRecordings: '2' })) }],
    ['not JSON', (f) => { writeFileSync(f, '{') }]
  ]
  for (const [name, make] of cases) {
    const dir = mkdtempSync(join(tmpdir(), 'nasguard-status-'))
    make(join(dir, STATUS_FILE))
    t.equal(readRetentionStatus(dir, NOW), undefined, name)
    rmSync(dir, { recursive: true, force: true })
  }
})
