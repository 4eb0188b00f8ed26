import t from 'tap'
import { compileGlob, compileRules, decide, globMatches, scopesOf } from '../../src/policy/rules.js'
import { checkFileRequest } from '../../src/policy/listing-guard.js'

const segs = (p: string): string[] => p.slice(1).split('/')

t.test('globs: * within a segment, ** across segments, never into hidden segments', async (t) => {
  const table: Array<[string, string, boolean]> = [
    ['/medicall/**', '/medicall/2016/01/01/a.wav', true],
    ['/medicall/**', '/medicall', true],
    ['/medicall/**', '/medicallx/a.wav', false],
    ['/medicall/**', '/other/medicall/a.wav', false],
    ['/medicall/**', '/medicall/.private/a.wav', false],
    ['/medicall/*/a.wav', '/medicall/2016/a.wav', true],
    ['/medicall/*/a.wav', '/medicall/2016/01/a.wav', false],
    ['/medicall/*.wav', '/medicall/a.wav', true],
    ['/medicall/*.wav', '/medicall/.a.wav', false],
    ['/medicall/20*/**', '/medicall/2016/01/a.wav', true],
    ['/medicall/20*/**', '/medicall/1999/01/a.wav', false],
    ['/stockholm/**', '/stockholm/a.wav', true],
    ['/a/b.wav', '/a/b.wav', true],
    ['/a/b.wav', '/a/B.wav', false]
  ]
  for (const [glob, path, expected] of table) t.equal(globMatches(compileGlob(glob), segs(path)), expected, `${glob} ~ ${path}`)
  for (const bad of ['medicall/**', '/a//b', '/a/../b', '/a/x**/b']) t.throws(() => compileGlob(bad), bad)
})

t.test('decide: deny by default, any-of scopes, methods, required scopes reported', async (t) => {
  const rules = compileRules([
    { name: 'all', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] },
    { name: 'sthlm', path: '/medicall/stockholm/**', methods: ['GET'], scopes: ['recordings:read:stockholm', 'admin'] }
  ])
  t.same(decide(rules, 'GET', segs('/medicall/a.wav'), { scopes: new Set(['recordings:read']) }), { allow: true, rule: 'all' })
  t.same(decide(rules, 'GET', segs('/medicall/stockholm/a.wav'), { scopes: new Set(['admin']) }), { allow: true, rule: 'sthlm' })
  t.same(decide(rules, 'HEAD', segs('/medicall/stockholm/a.wav'), { scopes: new Set(['admin']) }), { allow: false, reason: 'insufficient_scope', required: ['recordings:read'], rule: 'all' }, 'the denial names the rule that matched')
  t.same(decide(rules, 'GET', segs('/other/a.wav'), { scopes: new Set(['recordings:read', 'admin']) }), { allow: false, reason: 'no_rule' })
  t.match(decide(rules, 'GET', segs('/medicall/a.wav'), { scopes: new Set(['recordings:read:stockholm']) }), { allow: false, reason: 'insufficient_scope', required: ['recordings:read'] })
  t.same(decide(rules, 'PUT', segs('/medicall/a.wav'), { scopes: new Set(['recordings:read']) }), { allow: false, reason: 'method' })
  t.match(decide(rules, 'GET', segs('/medicall/a.wav'), { scopes: new Set() }), { allow: false, reason: 'insufficient_scope', required: ['recordings:read'] })
  const withCerts = compileRules([
    { name: 'app', path: '/medicall/**', methods: ['GET'], certs: ['CN=callcenter-app-1'] },
    { name: 'people', path: '/medicall/**', methods: ['GET'], scopes: ['recordings:read'] }
  ])
  t.same(decide(withCerts, 'GET', segs('/medicall/a.wav'), { cert: 'CN=callcenter-app-1' }), { allow: true, rule: 'app' })
  t.match(decide(withCerts, 'GET', segs('/medicall/a.wav'), { cert: 'CN=callcenter-app-2' }), { allow: false, reason: 'insufficient_scope', required: ['recordings:read'] })
  t.match(decide(withCerts, 'GET', segs('/medicall/a.wav'), { scopes: new Set(['CN=callcenter-app-1']) }), { allow: false, reason: 'insufficient_scope', required: ['recordings:read'] }, 'a scope that looks like a cert subject grants nothing')
})

t.test('scopes come from scope (string) and scp (array or string), exactly', async (t) => {
  t.same([...scopesOf({ scope: 'a b  c' })], ['a', 'b', 'c'])
  t.same([...scopesOf({ scp: ['a', 'b'] })], ['a', 'b'])
  t.same([...scopesOf({ scp: 'a b' })], ['a', 'b'])
  t.same([...scopesOf({ scope: ['a'], scp: [1, 'b c', { x: 1 }] })], [])
  t.same([...scopesOf({ scope: 'recordings:read:stock' })], ['recordings:read:stock'])
})

t.test('listing guard: directories, hidden segments and unlisted types are refused', async (t) => {
  const ext = new Set(['.wav', '.mp3'])
  const table: Array<[string, ReturnType<typeof checkFileRequest>]> = [
    ['/medicall/a.wav', { ok: true, extension: '.wav' }],
    ['/medicall/a.WAV', { ok: true, extension: '.wav' }],
    ['/medicall/a.mp3', { ok: true, extension: '.mp3' }],
    ['/medicall/', { ok: false, reason: 'directory' }],
    ['/medicall/2016', { ok: false, reason: 'directory' }],
    ['/medicall/.env', { ok: false, reason: 'hidden' }],
    ['/medicall/.private/a.wav', { ok: false, reason: 'hidden' }],
    ['/medicall/index.html', { ok: false, reason: 'file_type' }],
    ['/medicall/a.wav.bak', { ok: false, reason: 'file_type' }],
    ['/medicall/a.wav~', { ok: false, reason: 'file_type' }]
  ]
  for (const [p, expected] of table) t.same(checkFileRequest(segs(p), ext), expected, p)
})
