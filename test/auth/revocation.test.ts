// The token denylist: `nasguard token revoke` (the built CLI, in a child
// process) writes a JSON-lines file that every running gateway polls. A
// revoked token (by jti, or every token of a subject issued before a time)
// is refused with 401 before the NAS is asked; entries lapse; the file is
// replaced atomically. npm test builds dist/ first (run `npm run build`).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { addRevocation } from '../../src/auth/revocation.js'
import { RECORDING, SECRET, bearer, get, startStubNas, startTestGateway, testCerts, type StubNas, type TestGateway, type Teardown } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const CLI = resolve('dist/cli.js')
const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const POLL_MS = 50
/** Bounded polling for "the gateways applied the new denylist". */
const WAIT = { tries: 300, intervalMs: 25 }

function now (): number {
  return Math.floor(Date.now() / 1000)
}

function cli (args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** A CLI config naming the same jwt secret, audit dir and (when given) denylist file as the gateway. */
function writeCliConfig (dir: string, auditDir: string, revocationFile?: string): string {
  const certs = testCerts()
  const file = join(dir, 'nasguard.yaml')
  // JSON is YAML: no quoting surprises with the secret or the paths.
  writeFileSync(file, JSON.stringify({
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: {
      jwt: { secret: SECRET },
      ...(revocationFile ? { revocation: { file: revocationFile, pollMs: POLL_MS } } : {})
    },
    policy: [{ name: 'recordings', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: auditDir }
  }, null, 2))
  return file
}

interface Setup {
  nas: StubNas
  gw: TestGateway
  /** The denylist file, alone in its own directory. */
  file: string
  denyDir: string
  config: string
}

async function setup (t: Teardown): Promise<Setup> {
  const denyDir = mkdtempSync(join(tmpdir(), 'nasguard-deny-'))
  const file = join(denyDir, 'revoked.jsonl')
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { authExtra: { revocation: { file, pollMs: POLL_MS } } })
  const config = writeCliConfig(mkdtempSync(join(tmpdir(), 'nasguard-revoke-cli-')), gw.auditDir, file)
  return { nas, gw, file, denyDir, config }
}

/** The entries of the denylist, without its header line (checked on its own below). */
function lines (file: string): Array<Record<string, unknown>> {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.type !== 'header')
}

function challenge (res: { headers: Record<string, unknown> }): string {
  return String(res.headers['www-authenticate'] ?? '')
}

/** Polls until the token gets a 401, and returns that response. */
async function until401 (gw: { port: number }, token: string, what: string): Promise<Awaited<ReturnType<typeof get>>> {
  return waitFor(what, async () => {
    const res = await get(gw, PATH, { headers: bearer(token) })
    return res.status === 401 ? res : undefined
  }, WAIT)
}

t.test('token revoke --jti: that token gets 401 (revoked), another token of the subject still works, the NAS is not asked', async (t) => {
  const { nas, gw, config, file } = await setup(t)
  const revoked = gw.token({ sub: 'alice', jti: 'jti-to-revoke' })
  const other = gw.token({ sub: 'alice', jti: 'jti-to-keep' })

  const before = await get(gw, PATH, { headers: bearer(revoked) })
  t.equal(before.status, 200, 'the token works before it is revoked')
  t.same(before.body, RECORDING)

  const r = cli(['token', 'revoke', '--config', config, '--jti', 'jti-to-revoke'])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /revoked token jti-to-revoke/)
  t.match(r.stdout, /holds 1 entry/)
  t.match(lines(file), [{ type: 'jti', jti: 'jti-to-revoke' }], 'the CLI wrote the entry to the file the gateway polls')
  t.equal(lines(file).length, 1)

  const refused = await until401(gw, revoked, 'the revoked token to be refused')
  t.match(challenge(refused), /error="invalid_token"/)
  t.match(challenge(refused), /error_description="[^"]*revoked[^"]*"/, 'the challenge says the token was revoked')
  const body = JSON.parse(refused.body.toString()) as Record<string, unknown>
  t.equal(body.error, 'NASGUARD_ERR_TOKEN_INVALID')
  t.match(body.message, /revoked/)

  // From here on the gateway applies the entry: count what reaches the NAS.
  const n = nas.requests.length
  const again = await get(gw, PATH, { headers: bearer(revoked) })
  t.equal(again.status, 401, 'it stays refused')
  t.equal(nas.requests.length, n, 'a refused (revoked) token never reaches the NAS')

  const ok = await get(gw, PATH, { headers: bearer(other) })
  t.equal(ok.status, 200, 'another token of the same subject (other jti) still works')
  t.same(ok.body, RECORDING)
  t.equal(nas.requests.length, n + 1, 'only the unrevoked token reached the NAS')
})

t.test('token revoke --jti with the default file (revoked.jsonl in audit.dir) reaches a gateway using the default too', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const config = writeCliConfig(mkdtempSync(join(tmpdir(), 'nasguard-revoke-cli-')), gw.auditDir)
  const token = gw.token({ jti: 'jti-default-file' })
  t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 200)

  const r = cli(['token', 'revoke', '--config', config, '--jti', 'jti-default-file'])
  t.equal(r.status, 0, r.stderr)
  t.match(lines(join(gw.auditDir, 'revoked.jsonl')), [{ type: 'jti', jti: 'jti-default-file' }])
  const refused = await until401(gw, token, 'the revoked token to be refused (default file, default poll)')
  t.match(challenge(refused), /error_description="[^"]*revoked/)
  const n = nas.requests.length
  t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 401)
  t.equal(nas.requests.length, n)
})

t.test('token revoke --sub --issued-before T: tokens of the subject issued before T get 401, later ones and other subjects work', async (t) => {
  const { nas, gw, config, file } = await setup(t)
  const T = now() - 100
  const exp = now() + 600
  const oldest = gw.token({ sub: 'alice', jti: 'alice-old-1', iat: T - 100, exp })
  const justBefore = gw.token({ sub: 'alice', jti: 'alice-old-2', iat: T - 1, exp })
  const after = gw.token({ sub: 'alice', jti: 'alice-new', iat: T + 50, exp })
  const bob = gw.token({ sub: 'bob', jti: 'bob-old', iat: T - 100, exp })
  for (const tok of [oldest, justBefore, after, bob]) {
    t.equal((await get(gw, PATH, { headers: bearer(tok) })).status, 200, 'every token works before the revocation')
  }

  const r = cli(['token', 'revoke', '--config', config, '--sub', 'alice', '--issued-before', String(T)])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /every token and grant of alice issued before/)
  t.match(lines(file), [{ type: 'sub', sub: 'alice', issuedBefore: T }])

  const refused = await until401(gw, oldest, "alice's old token to be refused")
  t.match(challenge(refused), /error_description="[^"]*revoked/)
  t.match(JSON.parse(refused.body.toString()), { error: 'NASGUARD_ERR_TOKEN_INVALID', message: /subject revoked/ })

  const n = nas.requests.length
  const second = await get(gw, PATH, { headers: bearer(justBefore) })
  t.equal(second.status, 401, 'a token issued one second before T is refused too')
  t.match(challenge(second), /revoked/)
  t.equal((await get(gw, PATH, { headers: bearer(oldest) })).status, 401)
  t.equal(nas.requests.length, n, 'no refused token reached the NAS')

  const later = await get(gw, PATH, { headers: bearer(after) })
  t.equal(later.status, 200, 'a token of alice issued after T still works')
  t.same(later.body, RECORDING)
  t.equal((await get(gw, PATH, { headers: bearer(bob) })).status, 200, 'bob is not affected')
  t.equal(nas.requests.length, n + 2)
})

t.test('token revoke --sub without --issued-before revokes what the subject holds now', async (t) => {
  const { nas, gw, config, file } = await setup(t)
  const carol = gw.token({ sub: 'carol', jti: 'carol-1', iat: now() - 10 })
  const dave = gw.token({ sub: 'dave', jti: 'dave-1', iat: now() - 10 })
  t.equal((await get(gw, PATH, { headers: bearer(carol) })).status, 200)

  const lo = now()
  const r = cli(['token', 'revoke', '--config', config, '--sub', 'carol'])
  const hi = now()
  t.equal(r.status, 0, r.stderr)
  const [entry] = lines(file)
  t.equal(entry.type, 'sub')
  t.equal(entry.sub, 'carol')
  t.ok((entry.at as number) >= lo && (entry.at as number) <= hi, 'made now')
  // Tokens carry whole seconds: one issued in the second of the revocation, before it, goes too.
  t.equal(entry.issuedBefore, (entry.at as number) + 1, 'issued-before defaults to now: every token issued so far, this second\'s too')

  await until401(gw, carol, "carol's token to be refused")
  t.equal((await get(gw, PATH, { headers: bearer(gw.token({ sub: 'carol', jti: 'carol-same-second', iat: entry.at as number })) })).status, 401, 'a token of carol issued in the second of the revocation is refused')
  const n = nas.requests.length
  t.equal((await get(gw, PATH, { headers: bearer(carol) })).status, 401)
  t.equal(nas.requests.length, n)
  t.equal((await get(gw, PATH, { headers: bearer(dave) })).status, 200, 'dave is not affected')
})

t.test('entries lapse: a lapsed entry revokes nothing, and the CLI drops lapsed entries when it rewrites the file', async (t) => {
  const { nas, gw, config, file } = await setup(t)
  const t0 = now()
  // `now` is given to addRevocation so that its own clean-up keeps these
  // entries in the file: only the gateway is to judge them lapsed.
  const writeAt = t0 - 120
  addRevocation(file, { type: 'jti', jti: 'jti-lapsed', expiresAt: t0 - 30, at: t0 - 200 }, writeAt)
  addRevocation(file, { type: 'sub', sub: 'alice', issuedBefore: t0 + 3600, expiresAt: t0 - 30, at: t0 - 200 }, writeAt)
  // A live entry in the same file: once it bites, the gateway has read the lapsed ones too.
  addRevocation(file, { type: 'jti', jti: 'jti-sentinel', expiresAt: t0 + 600, at: t0 }, writeAt)
  t.equal(lines(file).length, 3, 'the file holds both lapsed entries and the live one')

  await until401(gw, gw.token({ sub: 'sentinel', jti: 'jti-sentinel' }), 'the live entry to be applied')

  const n = nas.requests.length
  const lapsedJti = await get(gw, PATH, { headers: bearer(gw.token({ sub: 'alice', jti: 'jti-lapsed' })) })
  t.equal(lapsedJti.status, 200, 'a token whose jti entry has lapsed works (and alice\'s lapsed subject entry does not bite either)')
  t.same(lapsedJti.body, RECORDING)
  t.equal(nas.requests.length, n + 1)

  const r = cli(['token', 'revoke', '--config', config, '--jti', 'jti-fresh'])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /holds 2 entries/)
  const kept = lines(file)
  t.equal(kept.length, 2, 'the two lapsed entries were dropped: the live one and the new one remain')
  t.same(kept.map((e) => e.jti ?? e.sub), ['jti-sentinel', 'jti-fresh'])
})

t.test('the denylist file is replaced atomically: a new inode each time, mode 0600, no temp files left behind', async (t) => {
  const { gw, config, file, denyDir } = await setup(t)
  const tokens: string[] = []
  let ino = -1
  for (let i = 0; i < 4; i++) {
    const jti = `jti-atomic-${i}`
    tokens.push(gw.token({ jti }))
    const r = cli(['token', 'revoke', '--config', config, '--jti', jti])
    t.equal(r.status, 0, r.stderr)
    const st = statSync(file)
    t.not(st.ino, ino, 'the file was replaced (renamed over), not rewritten in place')
    ino = st.ino
    t.equal(st.mode & 0o777, 0o600, 'the denylist is 0600')
  }
  addRevocation(file, { type: 'jti', jti: 'jti-atomic-lib', expiresAt: now() + 600, at: now() })
  tokens.push(gw.token({ jti: 'jti-atomic-lib' }))
  t.not(statSync(file).ino, ino)

  t.same(readdirSync(denyDir), ['revoked.jsonl'], 'only the denylist is in its directory: no *.tmp left behind')
  const entries = lines(file)
  t.same(entries.map((e) => e.jti), ['jti-atomic-0', 'jti-atomic-1', 'jti-atomic-2', 'jti-atomic-3', 'jti-atomic-lib'], 'every line is whole JSON, every entry kept')
  const text = readFileSync(file, 'utf8')
  const body = text.slice(text.indexOf('\n') + 1)
  t.same(JSON.parse(text.slice(0, text.indexOf('\n'))), { type: 'header', version: 1, entries: 5, sha256: createHash('sha256').update(body).digest('hex') }, 'the first line is a header counting the entries, with the SHA-256 of their lines')
  for (const tok of tokens) await until401(gw, tok, 'every revoked token to be refused')
})

t.test('several gateways sharing the denylist (as workers do) all honour a new entry', async (t) => {
  const denyDir = mkdtempSync(join(tmpdir(), 'nasguard-deny-'))
  const file = join(denyDir, 'revoked.jsonl')
  const nasA = await startStubNas(t)
  const nasB = await startStubNas(t)
  const a = await startTestGateway(t, nasA, { authExtra: { revocation: { file, pollMs: POLL_MS } } })
  const b = await startTestGateway(t, nasB, { authExtra: { revocation: { file, pollMs: POLL_MS } } })
  const config = writeCliConfig(mkdtempSync(join(tmpdir(), 'nasguard-revoke-cli-')), a.auditDir, file)
  const token = a.token({ sub: 'alice', jti: 'jti-shared' })
  const keep = a.token({ sub: 'alice', jti: 'jti-shared-keep' })
  t.equal((await get(a, PATH, { headers: bearer(token) })).status, 200)
  t.equal((await get(b, PATH, { headers: bearer(token) })).status, 200)

  const r = cli(['token', 'revoke', '--config', config, '--jti', 'jti-shared'])
  t.equal(r.status, 0, r.stderr)

  for (const [name, gw, nas] of [['first', a, nasA], ['second', b, nasB]] as const) {
    const res = await until401(gw, token, `the ${name} gateway to refuse the revoked token`)
    t.match(challenge(res), /error_description="[^"]*revoked/, `${name} gateway: revoked`)
    const n = nas.requests.length
    t.equal((await get(gw, PATH, { headers: bearer(token) })).status, 401)
    t.equal(nas.requests.length, n, `${name} gateway: the refused token did not reach its NAS`)
    t.equal((await get(gw, PATH, { headers: bearer(keep) })).status, 200, `${name} gateway: the other token still works`)
  }
})

t.test('an unreadable denylist fails closed and shows in /readyz; concurrent revocations keep every entry', async (t) => {
  const { mkdtempSync, chmodSync, readFileSync: read } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join: j } = await import('node:path')
  const { addRevocation } = await import('../../src/auth/revocation.js')
  const { startStubNas: nasOf, startTestGateway: gwOf, get: fetchOf, bearer: auth } = await import('../helpers/gateway.js')
  const { waitFor: until } = await import('../helpers/wait.js')
  const dir = mkdtempSync(j(tmpdir(), 'nasguard-denyread-'))
  const file = j(dir, 'revoked.jsonl')
  // A valid empty list (an empty file is a damaged one: see denylist-faults.test.ts).
  const { writeDenylist } = await import('../../src/auth/revocation.js')
  writeDenylist(file, [])
  const nas = await nasOf(t)
  const gw = await gwOf(t, nas, { authExtra: { revocation: { file, pollMs: 50 } } })
  t.equal((await fetchOf(gw, '/medicall/a.wav', { headers: auth(gw.token()) })).status, 200)
  // A directory where the file was: it exists, and cannot be read as a list.
  const { rmSync, mkdirSync } = await import('node:fs')
  rmSync(file)
  mkdirSync(file)
  const refused = await until('the gateway to notice', async () => {
    const r = await fetchOf(gw, '/medicall/a.wav', { headers: auth(gw.token()) })
    return r.status === 503 ? r : undefined
  })
  t.equal(JSON.parse(refused.body.toString()).error, 'NASGUARD_ERR_REVOCATION_UNAVAILABLE')
  const ready = await fetch(gw.adminUrl + '/readyz')
  t.equal(ready.status, 503)
  t.match((await ready.json() as { checks: { revocation: string } }).checks.revocation, /^failing/)
  rmSync(file, { recursive: true })

  // Two processes revoking at once (as two operators would) lose nothing.
  const shared = j(dir, 'shared.jsonl')
  const now = Math.floor(Date.now() / 1000)
  const { spawn } = await import('node:child_process')
  const { resolve: abs } = await import('node:path')
  const mod = abs('dist/auth/revocation.js')
  const script = (w: number): string => `import('${mod}').then(({ addRevocation }) => { for (let i = 0; i < 150; i++) addRevocation(${JSON.stringify(shared)}, { type: 'jti', jti: 'w${w}-' + i, expiresAt: ${now + 3600}, at: ${now} }) })`
  await Promise.all([0, 1].map((w) => new Promise<void>((res, rej) => {
    const c = spawn(process.execPath, ['-e', script(w)], { stdio: 'inherit', env: { PATH: process.env.PATH } })
    c.on('exit', (code) => code === 0 ? res() : rej(new Error(`writer ${w} exited ${code ?? 'null'}`)))
  })))
  const written = read(shared, 'utf8').trim().split('\n')
  t.match(JSON.parse(written[0]), { type: 'header', entries: 300 }, 'the header counts them')
  t.equal(written.length - 1, 300, 'all 300 entries from two processes kept')
  chmodSync(shared, 0o640)
  addRevocation(shared, { type: 'jti', jti: 'mode', expiresAt: now + 3600, at: now })
  const { statSync } = await import('node:fs')
  t.equal(statSync(shared).mode & 0o777, 0o640, 'the file keeps the mode it had')
})
