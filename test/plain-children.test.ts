// The processes a test starts run without tap's process tracker
// (test/helpers/plain-children.mjs): its --import costs about 0.3 s of CPU
// in every nasguard a test runs, and the suite's time under CI's limit
// depends on it. If a tap upgrade moves the hook, this fails.
import t from 'tap'
import { spawnSync } from 'node:child_process'

const printOptions = ['-e', 'process.stdout.write(JSON.stringify(process.env.NODE_OPTIONS ?? null))']

t.test('a child node has no processinfo --import, whatever env it is given', async (t) => {
  t.match(process.execArgv.join(' '), /@tapjs[\\/]processinfo/, 'this test itself runs under tap\'s tracker (else it proves nothing)')
  for (const [name, env] of [['the inherited env', undefined], ['an env of its own', { PATH: process.env.PATH }]] as const) {
    const out = spawnSync(process.execPath, printOptions, { env, encoding: 'utf8' })
    t.equal(out.status, 0, `${name}: the child ran`)
    t.notMatch(out.stdout, /processinfo/, `${name}: NODE_OPTIONS has no processinfo import: ${out.stdout}`)
  }
})

t.test('other NODE_OPTIONS stay', async (t) => {
  const out = spawnSync(process.execPath, printOptions, { env: { PATH: process.env.PATH, NODE_OPTIONS: '--max-old-space-size=100' }, encoding: 'utf8' })
  // tap's tracker quotes each option it passes on; node reads both alike.
  t.match(JSON.parse(out.stdout), /^"?--max-old-space-size=100"?$/)
})
