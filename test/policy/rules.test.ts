import t from 'tap'
import { claimSegment, compileGlob, compileRules, decide, globMatches, scopesOf } from '../../src/policy/rules.js'
import { foldName } from '../../src/policy/file-system.js'
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
  t.same(decide(rules, 'PUT', segs('/medicall/a.wav'), { scopes: new Set(['recordings:read']) }), { allow: false, reason: 'method', allowed: ['GET', 'HEAD'] })
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

t.test('decide (folding): rules match by case fold; a match only through folding is a case variant', async (t) => {
  const rules = compileRules([
    { name: 'stockholm', path: '/medicall/stockholm/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read:stockholm'] },
    { name: 'home', path: '/home/{sub}/**', methods: ['GET', 'HEAD'], scopes: ['files:read'] },
    { name: 'calls', path: '/calls/call-*.wav', methods: ['GET'], scopes: ['calls:read'] },
    { name: 'street', path: '/stra\u00DFe/**', methods: ['GET'], scopes: ['street:read'] }
  ])
  const sthlm = { scopes: new Set(['recordings:read:stockholm']) }
  const home = (sub: string): { scopes: Set<string>, claims: Record<string, unknown> } => ({ scopes: new Set(['files:read']), claims: { sub } })
  const table: Array<[string, string, Parameters<typeof decide>[3], ReturnType<typeof decide>]> = [
    ['exact name', '/medicall/stockholm/a.wav', sthlm, { allow: true, rule: 'stockholm' }],
    ['upper case', '/MEDICALL/STOCKHOLM/a.wav', sthlm, { allow: false, reason: 'case_variant' }],
    ['one segment in another case', '/medicall/Stockholm/a.wav', sthlm, { allow: false, reason: 'case_variant' }],
    ['long s folds to s', '/medicall/\u017Ftockholm/a.wav', sthlm, { allow: false, reason: 'case_variant' }],
    ['a case variant is refused before the scopes are looked at', '/MEDICALL/stockholm/a.wav', { scopes: new Set() }, { allow: false, reason: 'case_variant' }],
    ['a case variant is refused before the method is looked at', '/CALLS/call-1.wav', { scopes: new Set(['calls:read']) }, { allow: false, reason: 'case_variant' }],
    ['pattern, exact', '/calls/call-1.wav', { scopes: new Set(['calls:read']) }, { allow: true, rule: 'calls' }],
    ['pattern, upper case', '/calls/CALL-1.WAV', { scopes: new Set(['calls:read']) }, { allow: false, reason: 'case_variant' }],
    ['sharp s literal, exact', '/stra\u00DFe/a.wav', { scopes: new Set(['street:read']) }, { allow: true, rule: 'street' }],
    ['sharp s literal, met by ss', '/strasse/a.wav', { scopes: new Set(['street:read']) }, { allow: false, reason: 'case_variant' }],
    ['no rule in any case', '/OTHER/a.wav', sthlm, { allow: false, reason: 'no_rule' }],
    ['** never into a hidden segment, in any case', '/medicall/stockholm/.PRIVATE/x.wav', sthlm, { allow: false, reason: 'no_rule' }],
    ['own home', '/home/alice/a.wav', home('alice'), { allow: true, rule: 'home' }],
    ['own home in upper case', '/home/ALICE/a.wav', home('alice'), { allow: false, reason: 'case_variant' }],
    ['own home, dotless i', '/home/al\u0131ce/a.wav', home('alice'), { allow: false, reason: 'case_variant' }],
    ['bob in upper case', '/home/BOB/b.wav', home('bob'), { allow: false, reason: 'case_variant' }],
    ['sub ALICE, alice\'s home', '/home/alice/a.wav', home('ALICE'), { allow: false, reason: 'no_rule' }],
    ['sub ALICE, its own spelling', '/home/ALICE/a.wav', home('ALICE'), { allow: false, reason: 'no_rule' }],
    ['sub Alice', '/home/Alice/a.wav', home('Alice'), { allow: false, reason: 'no_rule' }],
    ['sub al\u0131ce, alice\'s home', '/home/alice/a.wav', home('al\u0131ce'), { allow: false, reason: 'no_rule' }],
    ['sub al\u0131ce, its own spelling', '/home/al\u0131ce/a.wav', home('al\u0131ce'), { allow: false, reason: 'no_rule' }],
    ['sub alice.', '/home/alice/a.wav', home('alice.'), { allow: false, reason: 'no_rule' }],
    ['sub "alice "', '/home/alice/a.wav', home('alice '), { allow: false, reason: 'no_rule' }],
    ['a certificate has no claims', '/home/alice/a.wav', { cert: 'CN=alice' }, { allow: false, reason: 'no_rule' }]
  ]
  for (const [name, path, who, expected] of table) t.same(decide(rules, 'GET', segs(path), who, 'folding'), expected, `${name}: ${path}`)
  t.same(decide(rules, 'HEAD', segs('/calls/call-1.wav'), { scopes: new Set(['calls:read']) }, 'folding'), { allow: false, reason: 'method', allowed: ['GET'] }, 'an exact name still meets the method check')
  t.match(decide(rules, 'GET', segs('/medicall/stockholm/a.wav'), { scopes: new Set(['other']) }, 'folding'), { allow: false, reason: 'insufficient_scope', rule: 'stockholm' }, 'an exact name still meets the scope check')

  // posix: names are exact bytes; no case variants, claims taken as they are.
  t.same(decide(rules, 'GET', segs('/MEDICALL/STOCKHOLM/a.wav'), sthlm, 'posix'), { allow: false, reason: 'no_rule' })
  t.same(decide(rules, 'GET', segs('/MEDICALL/STOCKHOLM/a.wav'), sthlm), { allow: false, reason: 'no_rule' }, 'posix is decide\'s default')
  t.same(decide(rules, 'GET', segs('/home/ALICE/a.wav'), home('alice'), 'posix'), { allow: false, reason: 'no_rule' })
  t.same(decide(rules, 'GET', segs('/home/ALICE/a.wav'), home('ALICE'), 'posix'), { allow: true, rule: 'home' })
  t.same(decide(rules, 'GET', segs('/home/alice./a.wav'), home('alice.'), 'posix'), { allow: true, rule: 'home' })
})

t.test('claimSegment (folding): a claim value must be its own fold and free of folding hazards', async (t) => {
  const usable = ['alice', 'bob', 'carol-1', 'alice.smith', '42', '\u00E4rla', 'stockholm_annex']
  const refused = [
    'ALICE', 'Alice', 'al\u0131ce', '\u017Fam', 'stra\u00DFe', '\u212Aista',
    'alice.', 'alice ', 'ALICE~1', 'alice~1', 'a~b', 'con', 'nul', 'com1', 'lpt1.x', 'a:b', 'a<b', 'a>b', 'a"b', 'a|b',
    // refused in any mode
    '', '.alice', 'a/b', 'a\\b', 'a*b', 'a%2e', 'a?b', 'a#b', 'a..b', 'a\u0000b', 'e\u0301', 'x'.repeat(256), 42, undefined, null, ['alice']
  ]
  for (const v of usable) t.equal(claimSegment(v, 'folding'), v, `folding: ${JSON.stringify(v)} is usable`)
  for (const v of refused) t.equal(claimSegment(v, 'folding'), undefined, `folding: ${JSON.stringify(v)} is refused`)
  // posix: case and trailing dots are only bytes.
  for (const v of ['ALICE', 'Alice', 'al\u0131ce', 'alice.', 'alice ', 'ALICE~1', 'con', 'a:b']) t.equal(claimSegment(v, 'posix'), v, `posix: ${JSON.stringify(v)} is usable`)
  t.equal(claimSegment('ALICE'), 'ALICE', 'posix is the default')
})

t.test('globMatches with fold keys: literals, patterns and claims compare folded', async (t) => {
  const fold = (p: string): string[] => segs(p).map(foldName)
  const table: Array<[string, string, Record<string, unknown> | undefined, boolean, boolean]> = [
    // glob, path, claims, exact match, match with fold keys
    ['/medicall/**', '/medicall/a.wav', undefined, true, true],
    ['/medicall/**', '/MEDICALL/a.wav', undefined, false, true],
    ['/medicall/**', '/medicall/.PRIVATE/a.wav', undefined, false, false],
    ['/medicall/stockholm/**', '/medicall/\u017Ftockholm/a.wav', undefined, false, true],
    ['/medicall/*.wav', '/medicall/A.WAV', undefined, false, true],
    ['/medicall/*.wav', '/medicall/.A.WAV', undefined, false, false],
    ['/medicall/Call-*.wav', '/medicall/call-1.wav', undefined, false, true],
    ['/home/{sub}/**', '/home/alice/a.wav', { sub: 'alice' }, true, true],
    ['/home/{sub}/**', '/home/ALICE/a.wav', { sub: 'alice' }, false, true],
    ['/home/{sub}/**', '/home/al\u0131ce/a.wav', { sub: 'alice' }, false, true],
    ['/home/{sub}/**', '/home/ALICE/a.wav', { sub: 'ALICE' }, true, false],
    ['/home/{sub}/**', '/home/alice/a.wav', { sub: 'ALICE' }, false, false],
    ['/home/{sub}/**', '/home/alice./a.wav', { sub: 'alice.' }, true, false],
    ['/home/{sub}/**', '/home/alice/a.wav', undefined, false, false],
    ['/home/{sub}/**', '/home/bob/b.wav', { sub: 'alice' }, false, false]
  ]
  for (const [glob, path, claims, exact, folded] of table) {
    const g = compileGlob(glob)
    t.equal(globMatches(g, segs(path), claims), exact, `${glob} ~ ${path} ${JSON.stringify(claims)}: exact ${String(exact)}`)
    t.equal(globMatches(g, segs(path), claims, fold(path)), folded, `${glob} ~ ${path} ${JSON.stringify(claims)}: folded ${String(folded)}`)
  }
})

t.test('patterns with several * match exactly, without backtracking on crafted segments', async (t) => {
  const g = compileGlob('/medicall/*_*_*_*.wav')
  const table: Array<[string, boolean]> = [
    ['/medicall/a_b_c_d.wav', true],
    ['/medicall/____.wav', true],
    ['/medicall/2016_01_01_0830.wav', true],
    ['/medicall/a_b_c.wav', false],
    ['/medicall/a_b_c_d.mp3', false],
    ['/medicall/.a_b_c_d.wav', false],
    ['/medicall/a_b_c_d.wav.wav', true],
    ['/medicall/wav', false]
  ]
  for (const [path, expected] of table) t.equal(globMatches(g, segs(path)), expected, `${path}: ${expected}`)
  t.equal(globMatches(compileGlob('/a/x*y*x'), segs('/a/xyx')), true, 'overlapping parts: xyx ~ x*y*x')
  t.equal(globMatches(compileGlob('/a/x*y*x'), segs('/a/xy')), false, 'overlapping parts: xy !~ x*y*x')
  t.equal(globMatches(compileGlob('/a/ab*ba'), segs('/a/aba')), false, 'prefix and suffix may not share bytes')
  // A regex per star ([^/]*_[^/]*_...) takes minutes on this (polynomial
  // backtracking); the scan is linear. The run's timeout is the bound.
  const crafted = '_'.repeat(1000) + 'x.mp3'
  t.equal(globMatches(g, ['medicall', crafted]), false, 'a 1000-underscore segment is judged at once')
  t.equal(globMatches(g, ['medicall', crafted], undefined, ['medicall', crafted]), false, 'and so is its folded form')
})
