import t from 'tap'
import { canonicalPath } from '../../src/policy/canonical-path.js'

t.test('canonical paths pass, re-encoded one fixed way', async (t) => {
  const cases: Array<[string, string, string[]]> = [
    ['/medicall/2016/01/01/083012_46701234567.wav', '/medicall/2016/01/01/083012_46701234567.wav', ['medicall', '2016', '01', '01', '083012_46701234567.wav']],
    ['/medicall/a%20b.wav', '/medicall/a%20b.wav', ['medicall', 'a b.wav']],
    ['/medicall/%41.wav', '/medicall/A.wav', ['medicall', 'A.wav']],
    ['/medicall/a%3bb.wav', '/medicall/a%3Bb.wav', ['medicall', 'a;b.wav']],
    ['/medicall/s%C3%B6der.wav', '/medicall/s%C3%B6der.wav', ['medicall', 'söder.wav']],
    ['/medicall/a.wav?grant=x&y=1', '/medicall/a.wav', ['medicall', 'a.wav']],
    ['/medicall/', '/medicall/', ['medicall', '']],
    ['/', '/', ['']],
    ['/medicall/+46701234567.wav', '/medicall/+46701234567.wav', ['medicall', '+46701234567.wav']]
  ]
  for (const [input, path, segments] of cases) {
    const r = canonicalPath(input, 1024)
    t.same(r, { ok: true, path, segments }, input)
  }
})

t.test('ambiguous paths are refused, with a reason', async (t) => {
  const refused: Array<[string, RegExp]> = [
    ['/medicall/../etc/passwd.wav', /dot segment/],
    ['/medicall/./a.wav', /dot segment/],
    ['/medicall/..', /dot segment/],
    ['/medicall/%2e%2e/secret/a.wav', /encoded/],
    ['/medicall/%2E%2E/secret/a.wav', /encoded/],
    ['/medicall/.%2e/secret/a.wav', /encoded/],
    ['/medicall/%252e%252e/a.wav', /encoded/],
    ['/medicall/a%2fb.wav', /encoded/],
    ['/medicall/a%2Fb.wav', /encoded/],
    ['/medicall/a%5cb.wav', /encoded/],
    ['/medicall/a\\..\\b.wav', /backslash/],
    ['/medicall/a.wav;jsessionid=1', /path parameters/],
    ['/medicall/..;/secret/a.wav', /path parameters/],
    ['/medicall/a%00.wav', /control/],
    ['/medicall/a%0a.wav', /control/],
    ['/medicall/a%c2%85.wav', /control/],
    ['/medicall//a.wav', /empty path segment/],
    ['//medicall/a.wav', /empty path segment/],
    ['/medicall/%c0%ae%c0%ae/a.wav', /UTF-8/],
    ['/medicall/%ff.wav', /UTF-8/],
    ['/medicall/%c3.wav', /UTF-8/],
    ['/medicall/%zz.wav', /percent/],
    ['/medicall/%4.wav', /percent/],
    ['/medicall/%uff0e%uff0e/a.wav', /percent/],
    ['/medicall/%ef%bc%8e%ef%bc%8e/a.wav', /compatibility/],
    ['/medicall/%ef%bc%8fetc.wav', /compatibility/],
    ['/medicall/e%CC%81.wav', /normal form C/],
    ['medicall/a.wav', /start with/],
    ['http://evil/medicall/a.wav', /start with/],
    ['*', /start with/],
    ['/medicall/a b.wav', /not allowed/],
    ['/medicall/a#b.wav', /not allowed/],
    ['/medicall/ä.wav', /not allowed/],
    ['/' + 'a'.repeat(1100) + '.wav', /longer than/]
  ]
  for (const [input, reason] of refused) {
    const r = canonicalPath(input, 1024)
    t.equal(r.ok, false, input)
    if (!r.ok) t.match(r.reason, reason, input)
  }
})
