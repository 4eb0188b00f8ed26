// The CLI validates configs with the Ajv standalone code that the build
// generates from the schema (dist/config/config-validator.js); tests through
// tsx compile the schema at run time. Both must be the same validator: this
// fails when dist was built from another schema (run npm run build) or when
// the generation step changes what a validator says.
import t from 'tap'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Ajv, type ValidateFunction } from 'ajv'
import { ConfigSchema } from '../../src/config/schema.js'
import { HMAC_ALGORITHMS } from '../../src/auth/algorithms.js'
import { CONFIG_AJV_OPTIONS } from '../../src/config/ajv-options.js'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { testCerts } from '../helpers/certs.js'
import { runCli } from '../helpers/process.js'

const GENERATED = resolve('dist/config/config-validator.js')

interface Precompiled { validate: ValidateFunction, schema: unknown, hmacAlgorithms: string[] }

const certs = testCerts()

function base (): Record<string, any> {
  return {
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: 'x'.repeat(32) } },
    policy: [{ name: 'r', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: '/tmp/nasguard-audit' }
  }
}

// One input per kind of schema error (and valid ones, for the defaults).
const CASES: Array<[string, (c: Record<string, any>) => void]> = [
  ['valid, defaults filled in', () => {}],
  ['valid, every section given', (c) => { c.listen = { port: 9443, trustedProxies: ['10.0.0.0/8'] }; c.workers = 'auto'; c.files = { extensions: ['.wav'] }; c.auth.jwt.algorithms = ['HS512', 'HS256'] }],
  ['not an object', (c) => { c.listen = 'x' }],
  ['type: integer', (c) => { c.listen = { port: 'abc' } }],
  ['maximum', (c) => { c.listen = { port: 70000 } }],
  ['minimum', (c) => { c.auth.jwt.maxLifetimeSec = 5 }],
  ['additionalProperties', (c) => { c.listen = { prot: 1 }; c.extra = true }],
  ['required', (c) => { delete c.upstream; delete c.tls.key }],
  ['union of literals', (c) => { c.tls.profile = 'old'; c.audit.durability = 'none'; c.log = { level: 'loud' } }],
  ['union of a range and a literal', (c) => { c.workers = 0 }],
  ['union of a range and a literal, a word', (c) => { c.workers = 'many' }],
  ['array items: a union', (c) => { c.auth.jwt.algorithms = ['none', 'HS256'] }],
  ['uniqueItems', (c) => { c.auth.jwt.algorithms = ['HS256', 'HS256'] }],
  ['minItems', (c) => { c.policy = [] }],
  ['pattern', (c) => { c.policy[0].path = 'medicall/**'; c.policy[0].name = 'a b'; c.policy[0].scopes = ['a"b'] }],
  ['minLength', (c) => { c.upstream.url = ''; c.policy[0].name = '' }],
  ['maxLength', (c) => { c.policy[0].name = 'n'.repeat(65) }],
  ['nested array of objects', (c) => { c.auth.jwt.keys = [{ algorithms: [] }, { kid: 1, algorithms: ['RS256'], bogus: 1 }] }],
  ['null and booleans', (c) => { c.admin = null; c.tls.watch = 'yes' }]
]

t.test('the generated validator is the schema compiled with the same options', async (t) => {
  t.ok(existsSync(GENERATED), `${GENERATED} exists (npm run build generates it)`)
  const precompiled = await import(pathToFileURL(GENERATED).href) as Precompiled
  t.same(precompiled.schema, JSON.parse(JSON.stringify(ConfigSchema)), 'dist/config/config-validator.js was generated from src/config/schema.ts as it is now (else: npm run build)')
  t.same(precompiled.hmacAlgorithms, HMAC_ALGORITHMS)

  const compiled = new Ajv(CONFIG_AJV_OPTIONS).compile(ConfigSchema)
  let invalid = 0
  for (const [name, mutate] of CASES) {
    const a = base()
    mutate(a)
    const b = structuredClone(a)
    const okA = compiled(a)
    const okB = precompiled.validate(b)
    t.equal(okB, okA, `${name}: same verdict`)
    t.same(JSON.parse(JSON.stringify(precompiled.validate.errors ?? null)), JSON.parse(JSON.stringify(compiled.errors ?? null)), `${name}: same errors, with their schema and data`)
    t.same(b, a, `${name}: same defaults filled in`)
    if (!okA) invalid++
  }
  t.equal(invalid, CASES.length - 2, 'every case but the valid ones is refused')
})

t.test('the built CLI says what loadConfig from src says', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-precompiled-'))
  const file = join(dir, 'bad.yaml')
  const c = base()
  // Many kinds of schema error in one file (YAML is a superset of JSON).
  const combined = ['type: integer', 'minimum', 'union of literals', 'union of a range and a literal', 'array items: a union', 'pattern', 'maxLength', 'nested array of objects', 'required']
  for (const [name, mutate] of CASES) if (combined.includes(name)) mutate(c)
  c.extra = true
  writeFileSync(file, JSON.stringify(c))
  let expected = ''
  try {
    loadConfig({ file })
  } catch (err) {
    t.type(err, ConfigError)
    expected = (err as Error).message
  }
  t.ok(expected.split('\n').length >= 10, 'many problems at once')
  const r = await runCli(['config', 'check', file])
  t.equal(r.status, 1)
  t.equal(r.stderr.trim(), expected, 'the same problems, in the same order, in the same words')
})
