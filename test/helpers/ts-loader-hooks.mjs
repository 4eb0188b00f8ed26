// Module hooks that run the tests' TypeScript (test/, src/) in Node: the
// same esbuild transform tsx makes, cached on disk, and nothing else.
// tsx's hooks also resolve and load every module of node_modules (and
// route all of fastify's require()s through the hooks thread): about 1.1 s
// of CPU per test process, and the suite starts a hundred of them. Here a
// relative `./x.js` imported from a .ts file is `./x.ts` when that exists
// (TypeScript's NodeNext convention), a .ts file is transformed, and every
// other module goes to Node untouched. Registered by ts-loader.mjs.
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// The esbuild that tsx depends on (a devDependency), so both transform alike.
const esbuild = createRequire(createRequire(import.meta.url).resolve('tsx/package.json'))('esbuild')

// As tsx does: the project's compilerOptions (class fields with ES2022's
// define semantics, as tsc builds dist), a target of this Node.
const tsconfig = JSON.parse(readFileSync(new URL('../../tsconfig.json', import.meta.url), 'utf8'))
const OPTIONS = {
  loader: 'ts',
  format: 'esm',
  target: `node${process.versions.node}`,
  sourcemap: 'inline',
  tsconfigRaw: { compilerOptions: tsconfig.compilerOptions }
}

/**
 * The cache directory, or undefined when it cannot be trusted: what it holds
 * is run, so it must be this user's own private directory (not a link, not
 * one another user made in the shared /tmp). Without it, every file is
 * transformed afresh.
 */
function cacheDir () {
  const dir = join(tmpdir(), `nasguard-ts-${process.getuid?.() ?? 0}`)
  try {
    mkdirSync(dir, { mode: 0o700 })
  } catch (err) {
    if (err.code !== 'EEXIST') return undefined
  }
  const st = lstatSync(dir)
  return st.isDirectory() && st.uid === (process.getuid?.() ?? st.uid) && (st.mode & 0o077) === 0 ? dir : undefined
}

const CACHE = cacheDir()
const SALT = JSON.stringify([esbuild.version, OPTIONS])

// @sinclair/typebox's ES module build is some 200 modules, and through these
// hooks each costs about 3 ms of CPU (0.6 s in every test process that loads
// the config schema): tests load the CommonJS build of the same version,
// whose require()s the hooks do not see. Its markers (Kind, Hint) are
// Symbol.for() keys, the same in both builds.
const COMMONJS_BUILD = /^@sinclair\/typebox(\/|$)/

export async function resolve (specifier, context, next) {
  if (COMMONJS_BUILD.test(specifier)) {
    return next(specifier, { ...context, conditions: context.conditions.map((c) => c === 'import' ? 'require' : c) })
  }
  const parent = context.parentURL
  if (parent?.startsWith('file:') && parent.endsWith('.ts') && /^\.\.?\//.test(specifier) && specifier.endsWith('.js')) {
    const ts = new URL(specifier.slice(0, -3) + '.ts', parent)
    if (existsSync(fileURLToPath(ts))) return { url: ts.href, format: 'module', shortCircuit: true }
  }
  return next(specifier, context)
}

export async function load (url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context)
  const file = fileURLToPath(url)
  const source = readFileSync(file, 'utf8')
  if (!CACHE) return { format: 'module', source: await transform(source, file), shortCircuit: true }
  // Keyed by the content, the path (the source map names it) and the options.
  const cached = join(CACHE, createHash('sha256').update(SALT).update('\0').update(file).update('\0').update(source).digest('hex') + '.js')
  let code
  try {
    code = readFileSync(cached, 'utf8')
  } catch {
    code = await transform(source, file)
    // Another test process may write the same entry: whole files only.
    const tmp = `${cached}.${process.pid}.tmp`
    writeFileSync(tmp, code, { mode: 0o600 })
    renameSync(tmp, cached)
  }
  return { format: 'module', source: code, shortCircuit: true }
}

async function transform (source, file) {
  return (await esbuild.transform(source, { ...OPTIONS, sourcefile: file })).code
}
