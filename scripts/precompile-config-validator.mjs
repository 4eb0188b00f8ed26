// Build step, after tsc: compiles the config schema (dist/config/schema.js)
// with Ajv into standalone code, dist/config/config-validator.js. A CLI
// process that loads a config then imports neither TypeBox nor Ajv's
// compiler and compiles nothing: about 0.3 s of CPU less per process, and
// the tests start the CLI hundreds of times. Generated from the schema on
// every build, never checked in; test/config/precompiled-validator.test.ts
// fails when it and src/config/schema.ts disagree.
import { writeFileSync } from 'node:fs'
import { Ajv } from 'ajv'
import standalone from 'ajv/dist/standalone/index.js'
import { ConfigSchema } from '../dist/config/schema.js'
import { HMAC_ALGORITHMS } from '../dist/auth/algorithms.js'
import { CONFIG_AJV_OPTIONS } from '../dist/config/ajv-options.js'

const out = new URL('../dist/config/config-validator.js', import.meta.url)
const ajv = new Ajv({ ...CONFIG_AJV_OPTIONS, code: { source: true, esm: true } })
const code = standalone.default(ajv, ajv.compile(ConfigSchema))

writeFileSync(out, [
  '// Generated at build time by scripts/precompile-config-validator.mjs from dist/config/schema.js: do not edit.',
  // Ajv's standalone code requires its runtime helpers (equal, ucs2length) even as ESM.
  'import { createRequire } from "node:module"',
  'const require = createRequire(import.meta.url)',
  code,
  `export const schema = ${JSON.stringify(ConfigSchema)}`,
  `export const hmacAlgorithms = ${JSON.stringify(HMAC_ALGORITHMS)}`,
  ''
].join('\n'))
