// Rotating a period's identity (nasguard keys rotate): the keyring's roles
// (<P>.key, <P>.next.key, <P>.old.key), a retirement interrupted at each
// step and finished by a rerun with every file still opening, a rotated
// period opening with its new identity and not its old one (Debian's age
// too), new seals going to the next identity during a rotation, and the
// gateway serving a period mid-rotation, including a file re-sealed after
// its header was remembered.
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { keysRotate, seal } from '../../src/sealing/commands.js'
import { eraseKey, keyFileOf, Keyring, lockKeyring, newPeriodKey, nextPeriodKey, openHeaderWithAny, retireKey } from '../../src/sealing/keyring.js'
import { SealStream } from '../../src/sealing/seal-stream.js'
import { diskPathOf } from '../../src/sealing/bulk/durable.js'
import type { FileResult, Summary } from '../../src/sealing/bulk/run.js'
import { get, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { makeKeyring, memoryNas, PATTERN, sealBytes, sealedName } from '../helpers/sealed-nas.js'
import { listFiles, makeShare, sha256 } from './seal-fixtures.js'

const PATH = '/medicall/2026/11/29/101500_46701234567.wav'

async function sealTo (recipient: Buffer, path: string, plain: Buffer): Promise<Buffer> {
  return await buffer(Readable.from([plain]).pipe(new SealStream([recipient], path)))
}

t.test('keyring roles, and a retirement interrupted at every step', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const old = keys.ring().key('2026-11')?.identity as NonNullable<ReturnType<Keyring['key']>>['identity']
  const next = nextPeriodKey(keys.dir, '2026-11')
  t.equal(nextPeriodKey(keys.dir, '2026-11').keyId, next.keyId, 'a rerun reuses the next identity')
  const ring = keys.ring()
  t.equal(ring.key('2026-11')?.identity.recipient, old.recipient, 'key(): still the primary')
  t.equal(ring.sealingKey('2026-11')?.keyId, next.keyId, 'sealingKey(): the next one')
  t.equal(ring.identities('2026-11').length, 2)
  t.same(ring.list().map((k) => k.period), ['2026-11'], 'no period named 2026-11.next')
  t.throws(() => newPeriodKey(keys.dir, 'month', '2026-11'), /exists/)
  const plain = randomBytes(1000)
  const oldFile = await sealTo(old.publicKey, PATH, plain)
  const newFile = await sealTo(next.identity.publicKey, PATH, plain)
  const opens = (): boolean => {
    const ids = Keyring.load(keys.dir).identities('2026-11')
    return openHeaderWithAny(oldFile, ids, PATH) !== undefined && openHeaderWithAny(newFile, ids, PATH) !== undefined
  }
  t.ok(opens(), 'during the rotation, files sealed to either identity open')
  // The retirement's steps, each interrupted (link done, unlink not), then finished.
  const f = (role: 'primary' | 'next' | 'old'): string => keyFileOf(keys.dir, '2026-11', role)
  const states: Array<[string, () => void]> = [
    ['<P>.key linked to <P>.old.key', () => { linkSync(f('primary'), f('old')) }],
    ['<P>.key moved to <P>.old.key', () => { unlinkSync(f('primary')) }],
    ['<P>.next.key linked to <P>.key', () => { linkSync(f('next'), f('primary')) }],
    ['<P>.next.key moved to <P>.key', () => { unlinkSync(f('next')) }]
  ]
  for (const [name, step] of states) {
    step()
    t.ok(opens(), `${name}: the keyring opens every file`)
    t.equal(Keyring.load(keys.dir).key('2026-11') !== undefined, true, `${name}: the period has a key`)
  }
  const oldId = keys.ring().role('2026-11', 'old')?.keyId
  t.equal(retireKey(keys.dir, '2026-11'), oldId, 'a rerun finishes the retirement')
  const after = Keyring.load(keys.dir)
  t.same(after.identities('2026-11').map((k) => k.keyId), [next.keyId], 'only the new identity is left')
  t.notOk(existsSync(f('old')) || existsSync(f('next')))
  t.throws(() => openHeaderWithAny(oldFile, after.identities('2026-11'), PATH), /not sealed to this period/, 'a file sealed to the old identity no longer opens')
  t.equal(retireKey(keys.dir, '2026-11'), undefined, 'nothing left to retire')
  // Erasing a period mid-rotation destroys every one of its identities.
  nextPeriodKey(keys.dir, '2026-11')
  eraseKey(keys.dir, '2026-11')
  t.same(Keyring.load(keys.dir).identities('2026-11'), [])
  t.ok(Keyring.load(keys.dir).erased('2026-11'))
})

t.test('keys rotate: every file re-sealed to the new identity, the old one retired', async (t) => {
  const files: Array<[string, Buffer]> = [
    ['/medicall/2016/01/101500_46701234567.wav', randomBytes(150_000)],
    ['/medicall/2016/01/101600_46709876543.wav', Buffer.alloc(0)],
    ['/medicall/2016/02/090000_46700000002.wav', randomBytes(100)]
  ]
  const share = makeShare(files)
  const io = (lines: string[]): { out: (s: string) => void, tty: boolean } => ({ out: (s) => { lines.push(s) }, tty: false })
  t.equal(await seal(share.config, { source: share.root, jobs: 2, removePlaintext: true }, io([])), 0)
  const oldKeyFile = join(share.dir, 'old-2016-01.key')
  copyFileSync(join(share.keyring, '2016-01.key'), oldKeyFile)
  const february = readFileSync(join(share.keyring, '2016-02.key'), 'utf8')
  // The rotation begins (its first run made the next key), and a recording
  // sealed meanwhile goes to the next identity.
  const next = nextPeriodKey(share.keyring, '2016-01')
  const late = '/medicall/2016/01/235900_46700000009.wav'
  writeFileSync(join(share.root, late), randomBytes(5000))
  const lateRun: string[] = []
  t.equal(await seal(share.config, { source: share.root, jobs: 1, removePlaintext: true }, io(lateRun)), 0)
  const lines: string[] = []
  const code = await keysRotate(share.config, { source: share.root, jobs: 2, period: '2016-01' }, io(lines))
  t.equal(code, 0, lines.join(''))
  const parsed = lines.join('').trim().split('\n').map((l) => JSON.parse(l) as FileResult & { summary?: Summary })
  const summary = parsed.find((l) => l.summary)?.summary as Summary
  t.equal(summary.sealed, 2, 'the two files sealed to the old identity are re-sealed')
  t.equal(parsed.filter((l) => l.reason === 'already-sealed-to-the-new-identity').length, 1, 'the one sealed during the rotation was already')
  t.equal(summary.retired?.split(':')[0], '2016-01')
  t.equal(Keyring.load(share.keyring).key('2016-01')?.keyId, next.keyId, 'the next identity is the primary now')
  t.notOk(existsSync(join(share.audit, 'rotate-2016-01.journal')), 'the finished rotation leaves no journal')
  t.equal(readFileSync(join(share.keyring, '2016-02.key'), 'utf8'), february, 'another period is untouched')
  t.ok(listFiles(share.root).every((p) => !/\.nasguard-seal-/.test(p)), 'no temporary file left')
  const sealed = listFiles(share.root).filter((p) => p.startsWith('/medicall/2016/01/'))
  t.equal(sealed.length, 3)
  for (const p of sealed) {
    const file = diskPathOf(share.root, p)
    t.equal(spawnSync('age', ['-d', '-i', join(share.keyring, '2016-01.key'), file]).status, 0, 'age -d opens it with the new identity')
    t.not(spawnSync('age', ['-d', '-i', oldKeyFile, file]).status, 0, 'and not with the old one')
  }
  for (const [path, body] of files.slice(0, 2)) {
    const p = sealed.find((s) => sha256(execFileSync('age', ['-d', '-i', join(share.keyring, '2016-01.key'), diskPathOf(share.root, s)])) === sha256(body))
    t.ok(p, `${path.slice(-10, -4)}: its plaintext is what it was`)
  }
})

t.test('a rerun after a crash in the retirement finishes it', async (t) => {
  const path = '/medicall/2016/01/101500_46701234567.wav'
  const body = randomBytes(1000)
  const share = makeShare([[path, body]])
  await seal(share.config, { source: share.root, jobs: 1, removePlaintext: true }, { out: () => {}, tty: false })
  const next = nextPeriodKey(share.keyring, '2016-01')
  // Killed in the retirement: the file re-sealed, <P>.key moved to <P>.old.key, <P>.next.key not yet moved.
  const [sealed] = listFiles(share.root)
  writeFileSync(diskPathOf(share.root, sealed), await sealTo(next.identity.publicKey, path, body))
  const f = (role: 'primary' | 'next' | 'old'): string => keyFileOf(share.keyring, '2016-01', role)
  linkSync(f('primary'), f('old'))
  unlinkSync(f('primary'))
  const out: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, { out: (s) => { out.push(s) }, tty: false }), 0)
  t.match(out.join(''), /"retired":"2016-01:/)
  t.same(Keyring.load(share.keyring).identities('2016-01').map((k) => k.keyId), [next.keyId], 'the new identity alone')
  t.equal(sha256(execFileSync('age', ['-d', '-i', f('primary'), diskPathOf(share.root, sealed)])), sha256(body))
})

t.test('the gateway serves a period mid-rotation, and a file re-sealed after its header was remembered', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const next = nextPeriodKey(keys.dir, '2026-11')
  const ring = keys.ring()
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN } })
  const a = randomBytes(70_000)
  const b = randomBytes(3000)
  const other = '/medicall/2026/11/29/101600_46709876543.wav'
  mem.files.set(sealedName(ring, PATH), await sealBytes(ring, '2026-11', PATH, a))
  mem.files.set(sealedName(ring, other), await sealTo(next.identity.publicKey, other, b))
  const auth = { authorization: `Bearer ${gw.token()}` }
  const first = await get(gw, PATH, { headers: auth })
  t.equal(first.status, 200)
  t.ok(first.body.equals(a), 'sealed to the old identity: served')
  const second = await get(gw, other, { headers: auth })
  t.equal(second.status, 200)
  t.ok(second.body.equals(b), 'sealed to the next identity: served')
  // keys rotate re-seals the first file; the gateway remembered its old header.
  mem.files.set(sealedName(ring, PATH), await sealTo(next.identity.publicKey, PATH, a))
  const ranged = await get(gw, PATH, { headers: { ...auth, range: 'bytes=66000-66009' } })
  t.equal(ranged.status, 206)
  t.ok(ranged.body.equals(a.subarray(66000, 66010)), 're-sealed: read afresh (If-Match failed on the old version), the same bytes')
  t.not(ranged.headers.etag, first.headers.etag, 'a new ETag: a new sealing')
})

t.test('keys rotate takes the period from the plaintext path: sealed month folders (names.segments 2), and a moved file keeps the old identity', async (t) => {
  const io = (lines: string[]): { out: (s: string) => void, tty: boolean } => ({ out: (s) => { lines.push(s) }, tty: false })
  const two = makeShare([['/medicall/2016/01/101500_46701234567.wav', randomBytes(3000)]], ', names: { segments: 2 }')
  t.equal(await seal(two.config, { source: two.root, jobs: 1, removePlaintext: true }, io([])), 0)
  const oldKey = readFileSync(join(two.keyring, '2016-01.key'), 'utf8')
  const lines: string[] = []
  t.equal(await keysRotate(two.config, { source: two.root, jobs: 1, period: '2016-01' }, io(lines)), 0, lines.join(''))
  t.not(readFileSync(join(two.keyring, '2016-01.key'), 'utf8'), oldKey, 'rotated')
  const [file] = listFiles(two.root)
  t.equal(spawnSync('age', ['-d', '-i', join(two.keyring, '2016-01.key'), diskPathOf(two.root, file)]).status, 0, 'the file under a sealed month folder opens with the new identity')

  const one = makeShare([['/medicall/2016/01/101500_46701234567.wav', randomBytes(3000)]])
  t.equal(await seal(one.config, { source: one.root, jobs: 1, removePlaintext: true }, io([])), 0)
  const sealed = diskPathOf(one.root, listFiles(one.root)[0])
  mkdirSync(join(one.root, 'medicall/2016/01/disputed'))
  const moved = join(one.root, 'medicall/2016/01/disputed', basename(sealed))
  renameSync(sealed, moved)
  const key = readFileSync(join(one.keyring, '2016-01.key'), 'utf8')
  const out: string[] = []
  t.equal(await keysRotate(one.config, { source: one.root, jobs: 1, period: '2016-01' }, io(out)), 1, 'exit 1: a file still needs the old identity')
  t.match(out.join(''), /does not decode/)
  t.equal(readFileSync(join(one.keyring, '2016-01.key'), 'utf8'), key, 'the old identity is kept')
  t.equal(spawnSync('age', ['-d', '-i', join(one.keyring, '2016-01.key'), moved]).status, 0, 'the moved file still opens')
})

t.test('a key file being destroyed is renamed first: a crash leaves a keyring that loads, and the leftover is destroyed', async (t) => {
  const keys = makeKeyring(['2026-11'])
  const next = nextPeriodKey(keys.dir, '2026-11')
  // A crash while <P>.old.key was being overwritten (renamed to <P>.old.key.shred first).
  const leftover = keyFileOf(keys.dir, '2026-11', 'old') + '.shred'
  writeFileSync(leftover, randomBytes(200), { mode: 0o600 })
  t.same(Keyring.load(keys.dir).identities('2026-11').length, 2, 'the keyring loads')
  t.notOk(existsSync(leftover), 'and the leftover is destroyed')
  retireKey(keys.dir, '2026-11')
  t.same(readdirSync(keys.dir).filter((n) => n.startsWith('2026-11')), ['2026-11.key'], 'a retirement leaves only the new key')
  t.equal(Keyring.load(keys.dir).key('2026-11')?.keyId, next.keyId)
  eraseKey(keys.dir, '2026-11')
  t.same(readdirSync(keys.dir).filter((n) => n.startsWith('2026-11')), ['2026-11.erased'], 'an erasure leaves only the tombstone')
})

t.test('key files are made under random temporary names: a leftover one of a process with this pid blocks nothing', async (t) => {
  const keys = makeKeyring([])
  writeFileSync(join(keys.dir, `2016-01.key.${process.pid}.tmp`), 'left by a kill -9 of an earlier process with this pid\n', { mode: 0o600 })
  t.equal(newPeriodKey(keys.dir, 'month', '2016-01').period, '2016-01', 'the key is made')
  t.throws(() => newPeriodKey(keys.dir, 'month', '2016-01'), { name: 'KeyExistsError' }, 'and made once')
})

t.test('the keyring lock: no retirement or erasure while a seal runs; no key made for a period being erased', async (t) => {
  const share = makeShare([['/medicall/2016/01/101500_46701234567.wav', randomBytes(2000)]])
  const io = (lines: string[]): { out: (s: string) => void, tty: boolean } => ({ out: (s) => { lines.push(s) }, tty: false })
  t.equal(await seal(share.config, { source: share.root, jobs: 1, removePlaintext: true }, io([])), 0)
  const key = readFileSync(join(share.keyring, '2016-01.key'), 'utf8')
  // A seal run (which loaded the keyring before the rotation began) holds the keyring, shared.
  const unlock = lockKeyring(share.keyring, 'shared')
  const lines: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01', drainMs: 0 }, io(lines)), 1, 'exit 1')
  t.match(lines.join(''), /locked by another run.*the old identity is kept/)
  t.equal(readFileSync(join(share.keyring, '2016-01.key'), 'utf8'), key, 'the old identity is kept while the seal runs')
  t.throws(() => eraseKey(share.keyring, '2016-01'), { name: 'KeyringBusyError' }, 'no erasure either')
  unlock()
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, io([])), 0, 'once it ended, a rerun retires it')
  // An erasure under way (its tombstone is written first): no key is made for the period.
  const keys = makeKeyring(['2026-11'])
  writeFileSync(join(keys.dir, '2026-11.erased'), '# erasing\n', { mode: 0o600 })
  t.throws(() => nextPeriodKey(keys.dir, '2026-11'), /erased/)
  t.notOk(existsSync(keyFileOf(keys.dir, '2026-11', 'next')), 'no next identity made')
})

t.test('keys rotate with key backups (sealing.keyBackups): the new identity goes to every copy before the old is retired, and the old is retired there too', async (t) => {
  const path = '/medicall/2016/01/101500_46701234567.wav'
  const body = randomBytes(4000)
  const backup = mkdtempSync(join(tmpdir(), 'nasguard-backup-'))
  const share = makeShare([[path, body]], `, keyBackups: [${backup}]`)
  const io = (lines: string[]): { out: (s: string) => void, tty: boolean } => ({ out: (s) => { lines.push(s) }, tty: false })
  t.equal(await seal(share.config, { source: share.root, jobs: 1, removePlaintext: true }, io([])), 0)
  // The operator's copy of the keyring.
  for (const name of readdirSync(share.keyring).filter((n) => n.endsWith('.key'))) {
    copyFileSync(join(share.keyring, name), join(backup, name))
    chmodSync(join(backup, name), 0o600)
  }
  const oldKey = join(share.dir, 'old-2016-01.key')
  copyFileSync(join(share.keyring, '2016-01.key'), oldKey)
  const [sealed] = listFiles(share.root)
  const opens = (keyFile: string): boolean => spawnSync('age', ['-d', '-i', keyFile, diskPathOf(share.root, sealed)]).status === 0

  // The backup volume not mounted (its mount point an empty directory): the files are re-sealed, but the old identity is kept (the copy could not open them otherwise).
  renameSync(backup, backup + '.away')
  mkdirSync(backup)
  const first: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, io(first)), 1, 'exit 1')
  t.match(first.join(''), /the key backup\(s\) .*holds no copy of the keyring \(no names\.key: not mounted\?\)\) could not be locked/)
  t.same(readdirSync(backup), [], 'nothing written in the empty mount point')
  t.ok(existsSync(join(share.keyring, '2016-01.key')) && existsSync(join(share.keyring, '2016-01.next.key')), 'the keyring keeps both identities')
  t.ok(opens(join(backup + '.away', '2016-01.key')) === false && opens(join(share.keyring, '2016-01.next.key')), 'the file is re-sealed to the new identity, which the backup does not hold yet')
  rmdirSync(backup)
  renameSync(backup + '.away', backup)

  // Mounted again: the rerun copies the new identity, retires the old one in the keyring and in the copy.
  const second: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, io(second)), 0, `the rerun: exit 0 (${second.join('').slice(-300)})`)
  t.same(readdirSync(backup).filter((n) => n.startsWith('2016-01')), ['2016-01.key'], 'the copy holds one identity of the period')
  t.equal(readFileSync(join(backup, '2016-01.key'), 'utf8'), readFileSync(join(share.keyring, '2016-01.key'), 'utf8'), 'the new one, as the keyring')
  t.ok(opens(join(backup, '2016-01.key')), 'age -d opens the re-sealed file with the copy\'s key')
  t.notOk(opens(oldKey), 'the old identity opens nothing')

  // A copy left half done (unreachable while the keyring retired): the next rerun finishes it there.
  const fresh = readFileSync(join(backup, '2016-01.key'), 'utf8')
  renameSync(join(backup, '2016-01.key'), join(backup, '2016-01.next.key'))
  copyFileSync(oldKey, join(backup, '2016-01.key'))
  chmodSync(join(backup, '2016-01.key'), 0o600)
  const third: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, io(third)), 0, `a rerun finishes the copy (${third.join('').slice(-300)})`)
  t.same(readdirSync(backup).filter((n) => n.startsWith('2016-01')), ['2016-01.key'], 'one identity there again')
  t.equal(readFileSync(join(backup, '2016-01.key'), 'utf8'), fresh, 'the new one')
})

t.test('a retirement that cannot be recorded destroys nothing: the old identity is recorded as retiring before it goes', async (t) => {
  const path = '/medicall/2016/01/101500_46701234567.wav'
  const share = makeShare([[path, randomBytes(3000)]])
  t.equal(await seal(share.config, { source: share.root, jobs: 1, removePlaintext: true }, { out: () => {}, tty: false }), 0)
  const old = Keyring.load(share.keyring).key('2016-01')?.keyId as string
  const records: string[] = []
  const failing = { out: () => {}, tty: false, record: async (r: { reason: string }) => { records.push(r.reason); if (/retiring/.test(r.reason)) throw new Error('the rotate event was not recorded in <ops>: disk full') } }
  await t.rejects(keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, failing), /the rotate event was not recorded/)
  t.match(records, [new RegExp(`retiring ${old}`)], 'the retirement was to be recorded first')
  t.equal(Keyring.load(share.keyring).role('2016-01', 'primary')?.keyId, old, 'the old identity is still there')
  const recorded: string[] = []
  t.equal(await keysRotate(share.config, { source: share.root, jobs: 1, period: '2016-01' }, { out: () => {}, tty: false, record: async (r) => { recorded.push(r.reason) } }), 0, 'the rerun, the trail writable')
  t.match(recorded, [new RegExp(`retiring ${old}`), new RegExp(`retired ${old}`)], 'retiring, then retired')
})
