// Self-test of the folding NAS stub (test/helpers/folding-nas.ts): the names
// a case-insensitive Windows share answers to, and its Range handling.
import t from 'tap'
import { request, type IncomingHttpHeaders } from 'node:http'
import { FoldingTree, FOLDING_NAS_LAST_MODIFIED, foldKey, resolveFolding, shortNamesFor, startFoldingNas } from '../helpers/folding-nas.js'

const PRIVATE = '/medicall/stockholm/.private/x.wav'
const PUBLIC = '/medicall/stockholm/public/y.mp3'
const KISTA = '/medicall/kista/k.wav'
const ALICE = '/home/alice/a.wav'
const BOB = '/home/bob/b.wav'
const ANNEX = '/archive/stockholm-annex/z.bin'
const OLD = '/archive/stockholm-archive/old.wav'
const LONG = '/archive/verylongname.wave'

const FILES: Record<string, Buffer> = {
  [PRIVATE]: Buffer.from('private recording bytes'),
  [PUBLIC]: Buffer.from('public mp3'),
  [KISTA]: Buffer.from('kista'),
  [ALICE]: Buffer.from('0123456789abcdef'),
  [BOB]: Buffer.from('bob'),
  [ANNEX]: Buffer.from('annex'),
  [OLD]: Buffer.from('old'),
  [LONG]: Buffer.from('long')
}

t.test('short names are generated the Windows way', async (t) => {
  const names = shortNamesFor(['.private', 'stockholm-archive', 'stockholm-annex', 'verylongname.wave', 'a.wav', 'a+b=c.wav', 'x.wav. .', 'MEDICALL'])
  t.equal(names.get('.private'), 'PRIVAT~1')
  t.equal(names.get('stockholm-annex'), 'STOCKH~1', 'collisions numbered in sorted order')
  t.equal(names.get('stockholm-archive'), 'STOCKH~2')
  t.equal(names.get('verylongname.wave'), 'VERYLO~1.WAV')
  t.equal(names.get('a+b=c.wav'), 'A_B_C~1.WAV')
  t.equal(names.get('a.wav'), undefined, 'a valid 8.3 name answers to itself')
  t.equal(names.get('MEDICALL'), undefined)
})

t.test('fold keys: Unicode upcasing, one code unit at a time', async (t) => {
  t.equal(foldKey('al\u0131ce'), foldKey('ALICE'), 'dotless i upcases to I')
  t.equal(foldKey('\u017Ftockholm'), foldKey('stockholm'), 'long s upcases to S')
  t.equal(foldKey('\u212Aista'), foldKey('kista'), 'Kelvin sign is K')
  t.not(foldKey('stra\u00DFe'), foldKey('strasse'), 'no one-to-many mappings')
})

t.test('request paths resolve to the real file a Windows share would serve', async (t) => {
  const tree = new FoldingTree(Object.keys(FILES))
  const table: Array<[string, string | null]> = [
    [ALICE, ALICE],
    [PRIVATE, PRIVATE],
    ['/medicall/stockholm/PRIVAT~1/x.wav', PRIVATE],
    ['/medicall/stockholm/privat~1/x.wav', PRIVATE],
    ['/medicall/STOCKH~1/PRIVAT~1/X.WAV', PRIVATE],
    ['/MEDICALL/STOCKHOLM/.PRIVATE/X.WAV', PRIVATE],
    ['/medicall/stockholm/.private./x.wav', PRIVATE],
    ['/HOME/ALICE/A.WAV', ALICE],
    ['/home/alice./a.wav', ALICE],
    ['/home/alice%20/a.wav', ALICE],
    ['/home/alice.%20.%20/a.wav', ALICE],
    ['/home/alice/a.wav.', ALICE],
    ['/home/alice/a.wav.%20.', ALICE],
    ['/home/al%C4%B1ce/a.wav', ALICE],
    ['/home/AL%C4%B1CE/a.wav', ALICE],
    ['/medicall/%C5%BFtockholm/public/y.mp3', PUBLIC],
    ['/medicall/%E2%84%AAista/%E2%84%AA.wav', KISTA],
    ['/home/alice/a.wav::$DATA', ALICE],
    ['/home/alice/a.wav%3A%3A%24DATA', ALICE],
    ['/home/alice/a.wav::$data', ALICE],
    ['/home/alice/a.wav:$DATA', ALICE],
    ['/home/alice/a.wav.::$DATA', ALICE],
    ['/home/alice/a.wav:evil', null],
    ['/home/alice/a.wav:evil:$DATA', null],
    ['/home/alice/a.wav%3Aevil', null],
    ['/home\\alice\\a.wav', ALICE],
    ['/home%5Calice%5Ca.wav', ALICE],
    ['/home/bob/../alice/a.wav', ALICE],
    ['/home/bob/%2E%2E/alice/a.wav', ALICE],
    ['/home/bob/..%5Calice/a.wav', ALICE],
    ['/home/./alice/a.wav', ALICE],
    ['/../../home/alice/a.wav', ALICE],
    ['//home//alice//a.wav', ALICE],
    ['/home/alice/a.wav?download=1', ALICE],
    ['http://nas.local/home/alice/a.wav', ALICE],
    ['/archive/STOCKH~1/z.bin', ANNEX],
    ['/archive/stockh~2/old.wav', OLD],
    ['/archive/VERYLO~1.WAV', LONG],
    ['/archive/verylo~1.wav', LONG],
    ['/archive/VERYLO~1', null],
    ['/archive/STOCKH~3/old.wav', null],
    ['/home/alice', null],
    ['/home/alice/', null],
    ['/home/alice/.', null],
    ['/home/alice/...', null],
    ['/home/alice/a.wav/', null],
    ['/home/alice/a.wav/x', null],
    ['/home/alice/nope.wav', null],
    ['/home/bob/a.wav', null],
    ['/', null],
    ['/home/%ff/a.wav', null],
    ['/home/alice/a.wav%00', null],
    ['/home/alice/a.wav%zz', null]
  ]
  for (const [path, real] of table) {
    t.equal(tree.resolve(path), real, path)
    t.equal(resolveFolding(Object.keys(FILES), path), real, `${path} (from paths)`)
  }
})

interface Reply { status: number, headers: IncomingHttpHeaders, body: Buffer }

function send (port: number, path: string, opts: { method?: string, headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('the server folds names and serves ranges over a real socket', async (t) => {
  const nas = await startFoldingNas(t, FILES)
  const body = FILES[ALICE] as Buffer

  const full = await send(nas.port, '/HOME/alice./A.WAV')
  t.equal(full.status, 200)
  t.same(full.body, body)
  t.equal(full.headers['content-type'], 'audio/wav')
  t.equal(full.headers['accept-ranges'], 'bytes')
  t.equal(full.headers['last-modified'], FOLDING_NAS_LAST_MODIFIED)
  t.match(full.headers.etag, /^"[0-9a-f]{16}"$/)

  const ranged = await send(nas.port, '/home/al%C4%B1ce/a.wav::$DATA', { headers: { range: 'bytes=2-5' } })
  t.equal(ranged.status, 206)
  t.equal(ranged.headers['content-range'], `bytes 2-5/${body.length}`)
  t.equal(ranged.headers['content-length'], '4')
  t.same(ranged.body, body.subarray(2, 6))
  t.equal(ranged.headers.etag, full.headers.etag)

  const open = await send(nas.port, ALICE, { headers: { range: 'bytes=10-' } })
  t.equal(open.status, 206)
  t.equal(open.headers['content-range'], `bytes 10-15/${body.length}`)
  t.same(open.body, body.subarray(10))

  const suffix = await send(nas.port, ALICE, { headers: { range: 'bytes=-3' } })
  t.equal(suffix.status, 206)
  t.equal(suffix.headers['content-range'], `bytes 13-15/${body.length}`)
  t.same(suffix.body, body.subarray(13))

  const past = await send(nas.port, ALICE, { headers: { range: 'bytes=100-' } })
  t.equal(past.status, 416)
  t.equal(past.headers['content-range'], `bytes */${body.length}`)

  const multi = await send(nas.port, ALICE, { headers: { range: 'bytes=0-1,4-5' } })
  t.equal(multi.status, 200, 'more than one range is ignored')

  const head = await send(nas.port, '/medicall/stockholm/PRIVAT~1/x.wav', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], String((FILES[PRIVATE] as Buffer).length))
  t.equal(head.body.length, 0)

  const mp3 = await send(nas.port, '/medicall/stockholm/public/Y.MP3')
  t.equal(mp3.headers['content-type'], 'audio/mpeg')
  const bin = await send(nas.port, '/archive/STOCKH~1/z.bin')
  t.equal(bin.headers['content-type'], 'application/octet-stream')

  t.equal((await send(nas.port, '/home/alice/')).status, 404, 'directories are never listed')
  t.equal((await send(nas.port, '/home/alice/a.wav:evil')).status, 404)
  t.equal((await send(nas.port, ALICE, { method: 'DELETE' })).status, 405)

  t.same(nas.requests.map((r) => r.url), [
    '/HOME/alice./A.WAV', '/home/al%C4%B1ce/a.wav::$DATA', ALICE, ALICE, ALICE, ALICE,
    '/medicall/stockholm/PRIVAT~1/x.wav', '/medicall/stockholm/public/Y.MP3', '/archive/STOCKH~1/z.bin',
    '/home/alice/', '/home/alice/a.wav:evil', ALICE
  ])
  t.equal(nas.requests[1]?.headers.range, 'bytes=2-5')
  t.same(nas.served, [ALICE, ALICE, ALICE, ALICE, ALICE, ALICE, PRIVATE, PUBLIC, ANNEX, null, null, null])
  await nas.close()
  await nas.close()
})
