// `node --import=./test/helpers/plain-children.mjs`: the processes a test
// starts (the CLI, gateways, their workers) run as an operator runs them,
// without tap's process tracker.
//
// tap runs each test file with @tapjs/processinfo, which hooks every spawn
// (through process-on-spawn) and puts its own --import into the child's
// NODE_OPTIONS, even when the child is given an env of its own. In a child
// on Node 20 that import starts a module-hooks thread and writes a JSON file
// at exit: about 0.3 s of CPU for each `nasguard` run, and the suite starts
// some 430 of them. It serves tap's coverage and --changed, which this
// project does not use (coverage is disabled in package.json).
//
// This listener runs after the tracker's (it is registered later) and takes
// that one --import back out of NODE_OPTIONS; anything else there stays.
const SPAWN_HOOKS = Symbol.for('process-on-spawn@*:singletonId')
const TRACKER = /"--import=[^"]*@tapjs[\\/]processinfo[^"]*"|--import=\S*@tapjs[\\/]processinfo\S*/g

const hooks = globalThis[SPAWN_HOOKS]
if (hooks !== undefined) {
  hooks.listeners.push((child) => {
    const options = child.env.NODE_OPTIONS
    const rest = options?.replace(TRACKER, '').trim()
    if (rest === undefined || rest === options) return
    if (rest === '') delete child.env.NODE_OPTIONS
    else child.env.NODE_OPTIONS = rest
  })
}
