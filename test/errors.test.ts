import t from 'tap'
import { readFileSync } from 'node:fs'
import { Errors, errorBody, isNasguardError, specFor } from '../src/errors.js'

t.test('every error code is unique, prefixed, and documented in the README', async (t) => {
  const specs = Object.values(Errors).map((E) => E.spec)
  const codes = specs.map((s) => s.code)
  t.equal(new Set(codes).size, codes.length, 'codes are unique')
  t.equal(new Set(specs.map((s) => s.reason)).size, specs.length, 'metric reasons are unique')
  const readme = readFileSync('README.md', 'utf8')
  for (const s of specs) {
    t.match(s.code, /^NASGUARD_ERR_[A-Z_]+$/)
    t.ok(s.status >= 400 && s.status < 600, `${s.code} has an error status`)
    t.ok(readme.includes(`| \`${s.code}\` | ${s.status} | ${s.reason} | ${s.doc} |`), `${s.code} is in the README's error table as in src/errors.ts`)
  }
})

t.test('errors carry code, status and a body of exactly { error, message }', async (t) => {
  const e = new Errors.BadPath('dot segment in path')
  t.ok(isNasguardError(e))
  t.equal(e.statusCode, 400)
  t.same(errorBody(e), { error: 'NASGUARD_ERR_BAD_PATH', message: 'the request path is not canonical: dot segment in path' })
  t.equal(specFor('NASGUARD_ERR_BAD_PATH')?.reason, 'bad_path')
  t.notOk(isNasguardError(new Error('x')))
})
