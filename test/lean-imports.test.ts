// What a gateway process loads: the worker and the server module it runs
// (the single-process gateway's too) leave out what only the demo, the
// certificate commands and config loading need. node-forge, @fastify/static
// and TypeBox cost 10 to 13 MB of RSS each in every process; importing
// dist/worker.js took 97 MB with them and 88 MB without (median of five).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** A loader hook that writes every module URL it loads, ESM and the CommonJS entries ESM imports alike. */
const HOOK = `import { appendFileSync } from 'node:fs'
export async function load (url, context, next) { appendFileSync(process.env.LOADED_LIST, url + '\\n'); return next(url, context) }`
const REGISTER = `import { register } from 'node:module'; register(${JSON.stringify('data:text/javascript,' + encodeURIComponent(HOOK))})`

function loadedBy (module: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-lean-'))
  try {
    const list = join(dir, 'loaded.txt')
    const run = spawnSync(process.execPath, ['--import', 'data:text/javascript,' + encodeURIComponent(REGISTER), '-e', `await import(${JSON.stringify(pathToFileURL(resolve(module)).href)})`], { env: { ...process.env, LOADED_LIST: list }, encoding: 'utf8', input: '' })
    if (run.status !== 0) throw new Error(`importing ${module} failed: ${run.stderr}`)
    return readFileSync(list, 'utf8').split('\n').filter(Boolean)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const NOT_IN_A_GATEWAY: Array<[string, RegExp]> = [
  ['node-forge (certificate commands)', /node_modules\/node-forge\//],
  ['@fastify/static (the demo NAS)', /node_modules\/@fastify\/static\//],
  ['TypeBox (the config schema)', /node_modules\/@sinclair\/typebox\//],
  ['the demo', /\/dist\/demo\//],
  ['the config schema', /\/dist\/config\/schema\.js$/],
  ['the certificate tooling', /\/dist\/tls\/(certificates|cert-commands)\.js$/]
]

for (const module of ['dist/worker.js', 'dist/server.js']) {
  t.test(`importing ${module} loads nothing only the demo or the commands need`, async (t) => {
    const loaded = loadedBy(module)
    t.ok(loaded.some((u) => u.endsWith('/dist/app.js')), 'the gateway itself is loaded (else this proves nothing)')
    t.ok(loaded.some((u) => /node_modules\/fastify\//.test(u)), 'and its packages are seen')
    for (const [what, re] of NOT_IN_A_GATEWAY) t.same(loaded.filter((u) => re.test(u)), [], `not ${what}`)
  })
}
