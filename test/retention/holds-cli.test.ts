// nasguard hold add|list|release through the built CLI (npm run build first):
// - With state.redis (Debian's redis-server), the holds live in Redis:
//   placed by one config, seen and released by another sharing the Redis
//   (and the audit key the document is sealed with), no holds file written,
//   and the sweep keeps what they hold. A Redis that lost its data (no
//   epoch: FLUSHALL) is not "no holds": hold add and sweep --apply fail
//   (exit 1) with the `nasguard state init` message, and nothing is erased.
// - Usage errors exit 2 naming the option, and write nothing: a relative
//   --path-prefix, one with `..`, one with a trailing-dot segment on a
//   folding NAS (accepted under posix), an empty --case, an --until in the
//   past, --at with --apply.
import t, { type Test } from 'tap'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { eraseKey, initKeyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { testCerts } from '../helpers/certs.js'
import { runCli, type Run } from '../helpers/process.js'
import { startRedis } from '../helpers/redis.js'

const NOT_INITIALISED = /Redis holds no nasguard state \(no epoch\): run `nasguard state init`/

interface Site { dir: string, keyring: string, config: (name: string, o?: { redis?: string, fileSystem?: string }) => string }

/** A keyring holding 2016-01 (long past retention), and configs over it, each with an audit directory of its own and one audit key. */
function makeSite (): Site {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-holds-'))
  const keyring = join(dir, 'keyring')
  initKeyring(keyring)
  newPeriodKey(keyring, 'month', '2016-01')
  chmodSync(keyring, 0o700)
  const certs = testCerts()
  return {
    dir,
    keyring,
    config: (name, o = {}) => {
      const audit = join(dir, `audit-${name}`)
      mkdirSync(audit, { mode: 0o700 })
      const file = join(dir, `${name}.yaml`)
      writeFileSync(file, `listen: { port: 8443 }
tls: { cert: ${certs.cert}, key: ${certs.key} }
upstream: { url: "http://127.0.0.1:1", fileSystem: ${o.fileSystem ?? 'folding'} }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: "/medicall/**", scopes: [recordings:read] }]
audit: { dir: ${audit}, keyFile: ${join(dir, 'audit.key')} }
sealing: { mode: migrate, keyring: ${keyring}, periodPattern: "/medicall/{yyyy}/{mm}/**" }
retention: [{ name: month, path: "/medicall/{yyyy}/{mm}/**", keepDays: 365 }]
${o.redis ? `state: { redis: { url: "${o.redis}" } }\n` : ''}`)
      return file
    }
  }
}

const hold = async (config: string, ...args: string[]): Promise<Run> => await runCli(['hold', ...args, '--config', config])

async function holdsListed (t: Test, config: string): Promise<{ where: string, holds: Array<Record<string, unknown>> }> {
  const r = await hold(config, 'list', '--json')
  t.equal(r.status, 0, `hold list (${r.stderr.trim()})`)
  return JSON.parse(r.stdout) as { where: string, holds: Array<Record<string, unknown>> }
}

async function events (t: Test, config: string, event: string): Promise<Array<Record<string, unknown>>> {
  const r = await runCli(['audit', 'search', '--config', config, '--event', event, '--json'])
  t.equal(r.status, 0, `audit search --event ${event}`)
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('with state.redis the holds are in Redis, shared by every config on it; a Redis without the epoch is refused', async (t) => {
  const redis = await startRedis(t)
  const s = makeSite()
  const a = s.config('a', { redis: redis.url })
  const b = s.config('b', { redis: redis.url })
  const key = 'nasguard:{revocations}:holds'

  const add = await hold(a, 'add', '--path-prefix', '/medicall/2016/01/', '--case', 'R-1', '--reason', 'subpoena')
  t.equal(add.status, 0, `hold add through config a (${add.stderr.trim()})`)
  t.match(add.stdout, /hold placed: case R-1 on \/medicall\/2016\/01\/ until released \(generation 1\)/)
  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  t.teardown(() => client.disconnect())
  await client.connect()
  t.match(await client.get(key), /"case":"R-1"/, `the document is in Redis under ${key}`)
  t.notOk(existsSync(join(s.dir, 'audit-a', 'legal-holds.json')) || existsSync(join(s.dir, 'audit-b', 'legal-holds.json')), 'no holds file written')

  const seen = await holdsListed(t, b)
  t.equal(seen.where, `Redis ${key}`)
  t.match(seen.holds, [{ case: 'R-1', prefix: '/medicall/2016/01/', reason: 'subpoena' }], 'config b sees the hold config a placed')
  const kept = await runCli(['retention', 'sweep', '--config', a, '--apply', '--confirm', 'erase 0 periods and delete 0 files'])
  t.equal(kept.status, 0, `the sweep reads the hold from Redis (${kept.stderr.trim()})`)
  t.ok(existsSync(join(s.keyring, '2016-01.key')), 'and keeps the held period')
  await t.test('the sweep on a host whose ops chain has no record yet (config b)', async (t) => {
    const r = await runCli(['retention', 'sweep', '--config', b, '--apply', '--confirm', 'erase 0 periods and delete 0 files'])
    t.equal(r.status, 0, `exit 0 (${r.stderr.trim()})`)
    t.ok(existsSync(join(s.keyring, '2016-01.key')), 'the held period kept')
  })

  const rel = await hold(b, 'release', '--case', 'R-1')
  t.equal(rel.status, 0, `hold release through config b (${rel.stderr.trim()})`)
  t.same((await holdsListed(t, a)).holds, [], 'config a sees it released')
  t.match(await events(t, a, 'hold'), [{ case: 'R-1', path: '/medicall/2016/01/', reason: 'add: subpoena' }], 'the add is an event in a\'s trail')
  t.match(await events(t, b, 'hold'), [{ case: 'R-1', path: '/medicall/2016/01/', reason: 'release' }], 'the release in b\'s')

  // Redis lost its data: no epoch. Not "no holds".
  await client.flushall()
  const lost = await hold(a, 'add', '--path-prefix', '/medicall/2016/01/', '--case', 'R-2', '--reason', 'subpoena')
  t.equal(lost.status, 1, 'hold add: exit 1')
  t.match(lost.stderr, NOT_INITIALISED)
  t.equal(await client.get(key), null, 'nothing written to Redis')
  const list = await hold(a, 'list')
  t.equal(list.status, 1, 'hold list: exit 1')
  t.match(list.stderr, NOT_INITIALISED)
  for (const phrase of ['erase 1 period and delete 0 files', 'erase 0 periods and delete 0 files']) {
    const sweep = await runCli(['retention', 'sweep', '--config', a, '--apply', '--confirm', phrase])
    t.equal(sweep.status, 1, 'sweep --apply: exit 1')
    t.match(sweep.stderr, NOT_INITIALISED)
  }
  t.ok(existsSync(join(s.keyring, '2016-01.key')), 'nothing erased')
})

t.test('usage errors exit 2 naming the option, and write nothing', async (t) => {
  const s = makeSite()
  const folding = s.config('folding')
  const posix = s.config('posix', { fileSystem: 'posix' })
  // Each option once (a second one is a usage error of its own): the case's value replaces the default.
  const add = (config: string, option?: string, value?: string): Promise<Run> => {
    const given: Record<string, string> = { '--path-prefix': '/medicall/2016/01/', '--case': 'C-1', '--reason': 'litigation' }
    if (option !== undefined && value !== undefined) given[option] = value
    return runCli(['hold', 'add', '--config', config, ...Object.entries(given).flat()])
  }
  const cases: Array<[string, Promise<Run>, RegExp]> = [
    ['a relative prefix', add(folding, '--path-prefix', 'medicall/2016/01/'), /--path-prefix: it must start with \//],
    ['a .. segment', add(folding, '--path-prefix', '/medicall/2016/../2017/'), /--path-prefix: it has a \. or \.\. segment/],
    ['a trailing-dot segment on a folding NAS', add(folding, '--path-prefix', '/medicall/2016./01/'), /--path-prefix: segment "2016\." is a name the NAS resolves differently \(a trailing dot or space\)/],
    ['an empty case', add(folding, '--case', ''), /--case: 1 to 128 letters/],
    ['an --until in the past', add(folding, '--until', '2020-01-01T00:00:00Z'), /--until: a time in the future/],
    ['--at with --apply', runCli(['retention', 'sweep', '--config', folding, '--apply', '--confirm', 'erase 1 period and delete 0 files', '--at', '2030-01-01T00:00:00Z']), /--at is for a preview: --apply judges as of now/],
    ['--confirm without --apply', runCli(['retention', 'sweep', '--config', folding, '--confirm', 'erase 1 period and delete 0 files']), /--confirm goes with --apply/]
  ]
  const accepted = add(posix, '--path-prefix', '/medicall/2016./01/')
  for (const [what, run, message] of cases) {
    const r = await run
    t.equal(r.status, 2, `${what}: exit 2`)
    t.match(r.stderr, message, `${what}: names the option`)
  }
  t.notOk(existsSync(join(s.dir, 'audit-folding', 'legal-holds.json')), 'no holds file written')
  t.ok(existsSync(join(s.keyring, '2016-01.key')), 'nothing erased')
  const r = await accepted
  t.equal(r.status, 0, `under posix a trailing dot is a name like another (${r.stderr.trim()})`)
})

t.test('a release the audit trail cannot record is undone: the case still holds, and the command says so', async (t) => {
  const site = makeSite()
  const config = site.config('a')
  t.equal((await hold(config, 'init')).status, 0, 'hold init')
  t.equal((await hold(config, 'add', '--path-prefix', '/medicall/2016/01/', '--case', 'CASE-U', '--reason', 'court order')).status, 0, 'hold add')
  // The ops chain unwritable (a broken disk, in effect): its directory replaced by a file.
  const ops = join(site.dir, 'audit-a', 'ops')
  renameSync(ops, ops + '.aside')
  writeFileSync(ops, 'not a directory\n')
  const r = await hold(config, 'release', '--case', 'CASE-U')
  t.equal(r.status, 1, 'exit 1')
  t.match(r.stderr, /the hold event was not recorded.*the release was undone: case CASE-U still holds/)
  t.match((await holdsListed(t, config)).holds, [{ case: 'CASE-U', prefix: '/medicall/2016/01/' }], 'the hold is in force')
  const dry = await runCli(['retention', 'sweep', '--config', config])
  t.match(dry.stdout, /^2016-01\s+held\s.*CASE-U/m, 'and the sweep keeps the period')
  rmSync(ops)
  renameSync(ops + '.aside', ops)
  t.equal((await hold(config, 'release', '--case', 'CASE-U')).status, 0, 'once the trail can be written, the release goes through')
  t.same((await holdsListed(t, config)).holds, [], 'released')
  t.match((await events(t, config, 'hold')).filter((e) => e.reason === 'release'), [{ case: 'CASE-U' }], 'one release recorded')
})

t.test('a hold placed on an erased period says it cannot bring it back', async (t) => {
  const site = makeSite()
  const config = site.config('a')
  t.equal((await hold(config, 'init')).status, 0, 'hold init')
  eraseKey(site.keyring, '2016-01')
  const r = await hold(config, 'add', '--path-prefix', '/medicall/2016/01/14/4670', '--case', 'LATE-1', '--reason', 'too late')
  t.equal(r.status, 0, 'placed all the same (it may cover recordings not yet sealed)')
  t.match(r.stdout, 'note: period(s) 2016-01 under it were erased already (their identity destroyed): this hold cannot bring back what they held')
  const young = await hold(config, 'add', '--path-prefix', '/medicall/2017/', '--case', 'OK-1', '--reason', 'in time')
  t.notMatch(young.stdout, /note:/, 'no note for a hold on periods not erased')
})
