// How the process logger (src/logging.ts) writes: request lines gathered
// into writes that hold whole lines and at most PIPE_BUF bytes, so
// processes sharing one stdout (the primary and its workers) never mix
// their lines; any other line goes out at once, so an operator sees a
// reload when it happens, and the lines before a hard death (SIGKILL, an
// event loop stuck in a loop) are not the ones left in memory.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const LOGGING = fileURLToPath(new URL('../dist/logging.js', import.meta.url))

/** A child that logs through createLogger to a pipe. */
function child (script: string) {
  return spawn(process.execPath, ['--input-type=module', '-e', `import { createLogger } from ${JSON.stringify(LOGGING)}\n${script}`], { stdio: ['ignore', 'pipe', 'inherit'] })
}

t.test('two processes writing bursts of lines of every size into one pipe never mix them', async (t) => {
  // Each logs 3000 lines of 10-3000 bytes as fast as it can, then exits
  // (its last lines flushed at exit); both have the same pipe as stdout.
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-log-writes-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'writer.mjs')
  writeFileSync(file, `import { createLogger } from ${JSON.stringify(LOGGING)}
const log = createLogger('info', { writer: process.argv[2] })
for (let i = 0; i < 3000; i++) log.info({ i, pad: 'x'.repeat((i * 7919) % 3000) }, i % 10 === 0 ? 'line' : 'request')\n`)
  const node = JSON.stringify(process.execPath)
  const both = spawn('sh', ['-c', `${node} ${file} a & ${node} ${file} b & wait`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  both.stdout.on('data', (b: Buffer) => { out += b.toString() })
  t.equal(await new Promise((resolve) => both.once('close', resolve)), 0, 'both exited')
  const lines = out.split('\n').filter((l) => l !== '')
  const broken = lines.filter((l) => { try { JSON.parse(l); return false } catch { return true } })
  t.equal(broken.length, 0, 'every line is whole JSON')
  for (const w of ['a', 'b']) {
    const seen = lines.filter((l) => !broken.includes(l)).map((l) => JSON.parse(l) as { writer: string, i: number }).filter((r) => r.writer === w).map((r) => r.i)
    t.same(seen, Array.from({ length: 3000 }, (_, i) => i), `all 3000 of ${w}'s lines, in order`)
  }
})

for (const [last, level] of [['the last line before the hang', 'warn'], ['config reloaded', 'info']] as const) {
  t.test(`a ${level} line that is not a request's (${last}) is written at once, with the request lines gathered before it, even if the process then hangs and is killed`, async (t) => {
    // The event loop never turns again after it: no timer, no exit handler can flush.
    const c = child(`const log = createLogger('info')
for (let i = 0; i < 5; i++) log.info({ i }, 'request')
log.${level}('${last}')
for (;;) {}`)
    t.teardown(() => { c.kill('SIGKILL') })
    let out = ''
    await new Promise<void>((resolve) => {
      c.stdout?.on('data', (b: Buffer) => { out += b.toString(); if (out.includes(last)) resolve() })
    })
    c.kill('SIGKILL')
    const lines = out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { msg: string, i?: number })
    t.same(lines.map((l) => l.msg), ['request', 'request', 'request', 'request', 'request', last], 'the request lines before it came with it')
  })
}

t.test('a request line is written without an exit or another line (at the latest by the periodic flush)', async (t) => {
  const c = child(`const log = createLogger('info')
log.info({ note: 'one quiet line' }, 'request')
setInterval(() => {}, 1000)`)
  t.teardown(() => { c.kill('SIGKILL') })
  let out = ''
  await new Promise<void>((resolve) => {
    c.stdout?.on('data', (b: Buffer) => { out += b.toString(); if (out.includes('one quiet line')) resolve() })
  })
  c.kill('SIGKILL')
  t.match(out, /"note":"one quiet line","msg":"request"/)
})
