// How a folding NAS resolves names, as the gate models it: the fold key is at
// least as broad as an NTFS upcase table, and every segment shape the NAS
// would resolve to another name (8.3 short names, trailing dots and spaces,
// streams and reserved characters, DOS devices) is a hazard under `folding`
// and nothing under `posix`.
import t from 'tap'
import { foldName, foldingHazard, pathHazard } from '../../src/policy/file-system.js'

t.test('foldName: one key for every spelling a case-insensitive share treats as one', async (t) => {
  const table: Array<[string, string]> = [
    ['alice', 'alice'],
    ['ALICE', 'alice'],
    ['Alice', 'alice'],
    ['al\u0131ce', 'alice'], // dotless i upcases to I
    ['AL\u0131CE', 'alice'],
    ['\u017Ftockholm', 'stockholm'], // long s upcases to S
    ['\u212Aista', 'kista'], // Kelvin sign (NFKC: K)
    ['stra\u00DFe', 'strasse'], // sharp s upcases to SS
    ['STRASSE', 'strasse'],
    ['\uFF21lice', 'alice'], // full-width A (NFKC)
    ['\uFB01le.wav', 'file.wav'], // fi ligature (NFKC)
    ['\u00C4rla', '\u00E4rla'],
    ['A\u0308rla', '\u00E4rla'], // decomposed: NFKC composes it
    ['A.WAV', 'a.wav'],
    ['PRIVAT~1', 'privat~1'],
    ['', '']
  ]
  for (const [name, key] of table) t.equal(foldName(name), key, `${JSON.stringify(name)} -> ${JSON.stringify(key)}`)
  for (const [name] of table) t.equal(foldName(foldName(name)), foldName(name), `idempotent on ${JSON.stringify(name)}`)
  t.not(foldName('alice'), foldName('bob'))
  t.not(foldName('alice'), foldName('alice.'), 'folding is about case: trailing dots are a hazard, not a fold')
})

t.test('foldingHazard: names a folding NAS resolves to something else than their bytes', async (t) => {
  const hazardous: Array<[string, RegExp]> = [
    ['PRIVAT~1', /8\.3/],
    ['privat~1', /8\.3/],
    ['A~1.WAV', /8\.3/],
    ['STOCKH~2', /8\.3/],
    ['x~9', /8\.3/],
    ['alice.', /trailing dot or space/],
    ['alice ', /trailing dot or space/],
    ['a.wav.', /trailing dot or space/],
    ['a.wav ', /trailing dot or space/],
    ['a.wav. .', /trailing dot or space/],
    ['a.wav::$DATA', /stream name/],
    ['a.wav:$DATA', /stream name/],
    ['a.wav:evil', /stream name/],
    ['a<b.wav', /reserves/],
    ['a>b.wav', /reserves/],
    ['a"b.wav', /reserves/],
    ['a|b.wav', /reserves/],
    ['a?b.wav', /reserves/],
    ['a*b.wav', /reserves/],
    ['a\\b.wav', /reserves/],
    ['NUL.wav', /DOS device/],
    ['nul', /DOS device/],
    ['con', /DOS device/],
    ['CON', /DOS device/],
    ['con.wav', /DOS device/],
    ['nul .wav', /DOS device|trailing/],
    ['CON  .wav', /DOS device|trailing/],
    ['COM1.wav', /DOS device/],
    ['com9', /DOS device/],
    ['LPT1', /DOS device/],
    ['lpt3.mp3', /DOS device/],
    ['aux.mp3', /DOS device/],
    ['PRN', /DOS device/],
    ['CONIN$', /DOS device/],
    ['conout$.wav', /DOS device/],
    ['nul.tar.gz', /DOS device/],
    // Samba's mangled names: any character after the ~.
    ['PRIVAT~A', /short-name/],
    ['P1X2Q3~Z', /short-name/],
    ['PRIVAT~_', /short-name/],
    ['~a', /short-name/],
    ['a~b1', /short-name/],
    ['~x1.wav', /short-name/]
  ]
  for (const [name, why] of hazardous) {
    const h = foldingHazard(name)
    t.type(h, 'string', `${JSON.stringify(name)} is a hazard`)
    t.match(h ?? '', why, `${JSON.stringify(name)}: ${String(h)}`)
  }
  const safe = [
    'a.wav', 'alice', 'A.WAV', 'ALICE', '~', 'a~', '083012_46701234567.wav',
    'console.wav', 'con_x.wav', 'conx', 'nul-a.wav', 'com.wav', 'com10.wav', 'lpt.wav', 'auxiliary.mp3', 'prnt.wav',
    'a b.wav', 'a..b.wav', 'a.b.c.wav', '$DATA', 'a$b.wav', 'stockholm-annex', '.private', '\u00E4rla.wav', 'al\u0131ce'
  ]
  for (const name of safe) t.equal(foldingHazard(name), undefined, `${JSON.stringify(name)} is safe`)
})

t.test('pathHazard: the first hazardous segment under folding, nothing under posix', async (t) => {
  const segs = (p: string): string[] => p.slice(1).split('/')
  const table: Array<[string, RegExp | undefined]> = [
    ['/medicall/stockholm/a.wav', undefined],
    ['/home/alice/a.wav', undefined],
    ['/MEDICALL/STOCKHOLM/A.WAV', undefined], // case alone is for the rules to judge
    ['/medicall/stockholm/.private/x.wav', undefined], // hidden names are for the listing guard
    ['/medicall/stockholm/PRIVAT~1/x.wav', /8\.3/],
    ['/home/alice./a.wav', /trailing dot or space/],
    ['/home/alice /a.wav', /trailing dot or space/],
    ['/home/alice/a.wav::$DATA', /stream name/],
    ['/home/alice/NUL.wav', /DOS device/],
    ['/home/alice/a<b.wav', /reserves/],
    ['/home/alice./A~1.WAV', /trailing dot or space/], // the first one
    ['/home/A~1/alice.', /8\.3/]
  ]
  for (const [path, why] of table) {
    const h = pathHazard('folding', segs(path))
    if (why === undefined) t.equal(h, undefined, `folding: ${path} is safe`)
    else t.match(h ?? '', why, `folding: ${path}: ${String(h)}`)
    if (why !== undefined) t.match(h ?? '', /^a name the NAS resolves differently: /, `folding: ${path}: says why`)
    t.equal(pathHazard('posix', segs(path)), undefined, `posix: ${path} is only bytes`)
  }
  t.equal(pathHazard('folding', []), undefined, 'no segments, no hazard')
})
