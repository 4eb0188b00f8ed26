// repeatsKeys: whether some object in a JSON text names a member twice,
// however the key is spelt. No sockets: the admin's quota body and the
// grants body tests cover it through the listeners.
import t from 'tap'
import { repeatsKeys } from '../src/json-keys.js'

t.test('a table of texts: repeated keys are found at any depth, and strings never count as structure', async (t) => {
  const cases: Array<[string, boolean, string]> = [
    ['{"sub":"a"}', false, 'one member'],
    ['{"sub":"a","sub":"b"}', true, 'a key twice'],
    ['{"sub":"a", "s\\u0075b":"b"}', true, 'a key twice, once escaped'],
    ['{"\\u0073\\u0075\\u0062":"a","sub":"b"}', true, 'a key twice, the first all escapes'],
    ['{"a\\"b":1,"a\\"b":2}', true, 'a key with an escaped quote, twice'],
    ['{"a\\\\":1,"a\\\\":2}', true, 'a key ending in an escaped backslash, twice'],
    ['{"a\\\\":1,"a":2}', false, 'a key ending in a backslash and the key without it'],
    ['{"sub":"sub","x":"sub"}', false, 'the key as a value'],
    ['{"sub":"\\",\\"sub\\":\\"b"}', false, 'a value that reads like a second member'],
    ['{"sub":"a,{\\"sub\\":1}"}', false, 'braces and commas in a value'],
    ['{"a":{"sub":1},"b":{"sub":2}}', false, 'the same key in two objects'],
    ['[{"sub":1},{"sub":2}]', false, 'the same key in two array items'],
    ['{"a":{"sub":1,"sub":2}}', true, 'a key twice in a nested object'],
    ['[1,{"x":[{"y":1,"y":2}]}]', true, 'a key twice deep in arrays'],
    ['{"a":[1,2,{"b":3}],"a":4}', true, 'a key twice around an array'],
    ['{"a":[{"a":1}],"b":{"a":2}}', false, 'one key at three depths'],
    ['{"":1,"":2}', true, 'the empty key twice'],
    ['{"\\ud83d\\ude00":1,"\uD83D\uDE00":2}', true, 'a surrogate pair, escaped and not'],
    ['"sub"', false, 'a string'],
    ['[]', false, 'an empty array'],
    ['{}', false, 'an empty object'],
    ['\uFEFF{"a":1,"a":1}', true, 'after a byte-order mark']
  ]
  for (const [json, repeated, what] of cases) {
    if (!json.startsWith('\uFEFF')) JSON.parse(json)
    t.equal(repeatsKeys(json), repeated, what)
  }
})

/** A small deterministic generator (mulberry32), so a failure names its seed. */
function random (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6D2B79F5) | 0
    let r = Math.imul(a ^ (a >>> 15), 1 | a)
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296
  }
}

const KEY_CHARS = ['a', 'b', '"', '\\', ',', '{', '}', '[', ']', ':', 'é', '\u2028', '\u0000']

function value (next: () => number, depth: number): unknown {
  const pick = next()
  if (depth > 3 || pick < 0.3) return next() < 0.5 ? Math.floor(next() * 100) : key(next)
  if (pick < 0.6) return Array.from({ length: Math.floor(next() * 4) }, () => value(next, depth + 1))
  return Object.fromEntries(Array.from({ length: Math.floor(next() * 5) }, () => [key(next), value(next, depth + 1)]))
}

function key (next: () => number): string {
  return Array.from({ length: Math.floor(next() * 4) }, () => KEY_CHARS[Math.floor(next() * KEY_CHARS.length)]).join('')
}

t.test('generated documents: none repeats as JSON.stringify writes it; each repeats once a member is written twice', async (t) => {
  let checked = 0
  for (let seed = 1; seed <= 400; seed++) {
    const next = random(seed)
    const doc = { root: value(next, 0), k: key(next) }
    const json = JSON.stringify(doc)
    if (repeatsKeys(json)) t.fail(`seed ${seed}: a repeat found in ${json}`)
    // The member "k" again, at the end of the outermost object.
    const doubled = json.slice(0, -1) + ',' + JSON.stringify('k') + ':1}'
    if (!repeatsKeys(doubled)) t.fail(`seed ${seed}: no repeat found in ${doubled}`)
    checked++
  }
  t.equal(checked, 400, '400 documents checked both ways')
})
