// The gate's order is declared once (src/gate/stages.ts); the README's
// "What a request goes through" must list the same stages in the same order.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { RECORDING_GATE } from '../../src/gate/stages.js'

t.test('the README lists the gate\'s stages in the declared order, one numbered step each, in a row', async (t) => {
  const readme = readFileSync('README.md', 'utf8')
  const section = readme.slice(readme.indexOf('### What a request goes through'), readme.indexOf('### Timeouts and limits'))
  const steps = [...section.matchAll(/^\d+\. \*\*([^*.]+?)\.?\*\*/gm)].map((m) => m[1].toLowerCase())
  const names = RECORDING_GATE.map((s) => s.name)
  const first = steps.indexOf(names[0])
  t.ok(first >= 0, `"${names[0]}" is a step: ${steps.join(' | ')}`)
  t.same(steps.slice(first, first + names.length), names)
})
