// Names a folding NAS resolves to another file. SMB/NTFS shares and most NAS
// boxes fold case (with Unicode upcasing: `alıce` is `alice`), drop trailing
// dots and spaces, answer to 8.3 short names (PRIVAT~1 is .private) and to
// `::$DATA` stream suffixes. Under the default `upstream.fileSystem: folding`
// every such spelling is refused before the NAS is asked, rules and `{claim}`
// values match by case fold, and a spelling that meets a rule only through
// folding is refused as a case variant. Under `posix` the same NAS serves the
// hidden folder and another user's home: why folding is the default.
import t from 'tap'
import { RECORDING, bearer, scrape, startTestGateway, type Teardown, type TestGateway } from '../helpers/gateway.js'
import { startFoldingNas, type FoldingNas } from '../helpers/folding-nas.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const BAD_PATH = 'NASGUARD_ERR_BAD_PATH'
const NO_RULE = 'NASGUARD_ERR_NO_RULE'
const HIDDEN = 'NASGUARD_ERR_HIDDEN_PATH'

const PUBLIC = '/medicall/stockholm/a.wav'
const PRIVATE = '/medicall/stockholm/.private/x.wav'
const ALICE = '/home/alice/a.wav'
const BOB = '/home/bob/b.wav'

const FILES: Record<string, Buffer> = { [PUBLIC]: RECORDING, [PRIVATE]: RECORDING, [ALICE]: RECORDING, [BOB]: RECORDING }

const STOCKHOLM_SCOPE = 'recordings:read:stockholm'
const HOME_SCOPE = 'files:read'

const POLICY = [
  { name: 'stockholm', path: '/medicall/stockholm/**', scopes: [STOCKHOLM_SCOPE] },
  { name: 'home', path: '/home/{sub}/**', scopes: [HOME_SCOPE] }
]

interface Row {
  /** The request target, sent as is (no client normalises it). */
  path: string
  /** Token claims (sub and scope). */
  claims: { sub: string, scope: string }
  status: number
  /** Accepted error codes. */
  codes: string[]
}

const stockholm = { sub: 'carol', scope: STOCKHOLM_SCOPE }
const sub = (s: string): Row['claims'] => ({ sub: s, scope: HOME_SCOPE })

const ROWS: Row[] = [
  // 8.3 short names of the hidden folder.
  { path: '/medicall/stockholm/PRIVAT~1/x.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  { path: '/medicall/stockholm/privat~1/x.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  { path: '/medicall/STOCKH~1/PRIVAT~1/X.WAV', claims: stockholm, status: 400, codes: [BAD_PATH] },
  // Samba mangles names with any character after the ~ (mangle_hash2.c).
  { path: '/medicall/stockholm/PRIVAT~A/x.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  { path: '/medicall/stockholm/P1X2Q3~Z/x.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  // The hidden folder in another case. No rule's ** reaches a dot-led
  // segment, so the policy refuses before the listing guard: either is a 403.
  { path: '/medicall/stockholm/.PRIVATE/x.wav', claims: stockholm, status: 403, codes: [HIDDEN, NO_RULE] },
  { path: '/medicall/stockholm/.private./x.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  // Upper case: meets the stockholm rule only through folding.
  { path: '/MEDICALL/STOCKHOLM/a.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  { path: '/medicall/Stockholm/a.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  { path: '/medicall/%C5%BFtockholm/a.wav', claims: stockholm, status: 400, codes: [BAD_PATH] },
  // A sub that is not its own fold, or that the NAS would resolve to another
  // name, opens no home: neither alice's nor its own spelling.
  { path: ALICE, claims: sub('ALICE'), status: 403, codes: [NO_RULE] },
  { path: '/home/ALICE/a.wav', claims: sub('ALICE'), status: 403, codes: [NO_RULE] },
  { path: ALICE, claims: sub('Alice'), status: 403, codes: [NO_RULE] },
  { path: '/home/Alice/a.wav', claims: sub('Alice'), status: 403, codes: [NO_RULE] },
  { path: ALICE, claims: sub('al\u0131ce'), status: 403, codes: [NO_RULE] },
  { path: '/home/al%C4%B1ce/a.wav', claims: sub('al\u0131ce'), status: 403, codes: [NO_RULE] },
  { path: ALICE, claims: sub('alice.'), status: 403, codes: [NO_RULE] },
  { path: '/home/alice./a.wav', claims: sub('alice.'), status: 400, codes: [BAD_PATH] },
  { path: ALICE, claims: sub('alice '), status: 403, codes: [NO_RULE] },
  { path: '/home/alice%20/a.wav', claims: sub('alice '), status: 400, codes: [BAD_PATH] },
  // alice herself, through spellings the NAS resolves to her file.
  { path: '/home/ALICE/a.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/HOME/alice/a.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/al%C4%B1ce/a.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice./a.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice%20/a.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav::$DATA', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav%3A%3A%24DATA', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  // Best-fit look-alikes of / \\ : " (they survive NFKC; a Windows server's ANSI conversion maps them).
  { path: '/medicall/x%E2%88%95..%E2%88%95..%E2%88%95home%E2%88%95bob%E2%88%95y.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/medicall/x%E2%88%96..%E2%88%96home%E2%88%96bob.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/medicall/x%C2%A5..%C2%A5bob.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/medicall/x%E2%82%A9..%E2%82%A9bob.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav%EA%9E%89%24DATA', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%E2%81%84b.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav:$DATA', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav.', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a.wav%20', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/NUL.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/con.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/COM1.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/LPT1', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%3Cb.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%3E.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%22.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%7C.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%2A.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/a%3F.wav', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  { path: '/home/alice/A~1.WAV', claims: sub('alice'), status: 400, codes: [BAD_PATH] },
  // bob, into his own home in another case.
  { path: '/home/BOB/b.wav', claims: sub('bob'), status: 400, codes: [BAD_PATH] }
]

function errorOf (body: Buffer): string | undefined {
  try {
    return (JSON.parse(body.toString('utf8')) as { error?: string }).error
  } catch {
    return undefined
  }
}

async function setup (t: Teardown, upstream: Record<string, unknown> = {}): Promise<{ nas: FoldingNas, gw: TestGateway }> {
  const nas = await startFoldingNas(t, FILES)
  const gw = await startTestGateway(t, nas, { policy: POLICY, upstream })
  return { nas, gw }
}

t.test('folding (default): every spelling the NAS would resolve elsewhere is refused before the NAS', async (t) => {
  // upstream.fileSystem is not set: folding is the default.
  const { nas, gw } = await setup(t)
  for (const proto of PROTOCOLS) {
    for (const row of ROWS) {
      const what = `${proto} ${row.path} as ${JSON.stringify(row.claims.sub)} (${row.claims.scope})`
      const before = nas.requests.length
      const res = await fetchAs(proto, gw, row.path, bearer(gw.token(row.claims)))
      const code = errorOf(res.body)
      t.equal(res.status, row.status, `${what}: ${row.status}`)
      t.ok(code !== undefined && row.codes.includes(code), `${what}: one of ${row.codes.join(' | ')} (got ${String(code)})`)
      t.equal(nas.requests.length - before, 0, `${what}: nothing reached the NAS`)
    }
  }
  t.equal(nas.requests.length, 0, 'the NAS has seen no request at all')

  // Positive controls: the exact names still open.
  for (const proto of PROTOCOLS) {
    const before = nas.requests.length
    const home = await fetchAs(proto, gw, ALICE, bearer(gw.token(sub('alice'))))
    t.equal(home.status, 200, `${proto}: alice reads her own file`)
    t.ok(home.body.equals(RECORDING), `${proto}: alice gets the recording`)
    t.same(nas.served.slice(before), [ALICE], `${proto}: the NAS served ${ALICE}`)

    const mid = nas.requests.length
    const pub = await fetchAs(proto, gw, PUBLIC, bearer(gw.token(stockholm)))
    t.equal(pub.status, 200, `${proto}: the stockholm scope reads ${PUBLIC}`)
    t.ok(pub.body.equals(RECORDING), `${proto}: the stockholm recording`)
    t.same(nas.served.slice(mid), [PUBLIC], `${proto}: the NAS served ${PUBLIC}`)
  }
})

t.test('a rule that names .private literally: only the exact name meets it, and the listing guard still refuses it', async (t) => {
  const nas = await startFoldingNas(t, FILES)
  const gw = await startTestGateway(t, nas, {
    policy: [...POLICY, { name: 'private', path: '/medicall/stockholm/.private/**', scopes: [STOCKHOLM_SCOPE] }]
  })
  const rows: Array<[string, number, string]> = [
    [PRIVATE, 403, HIDDEN],
    ['/medicall/stockholm/.PRIVATE/x.wav', 400, BAD_PATH],
    ['/medicall/stockholm/.Private/X.WAV', 400, BAD_PATH],
    ['/medicall/stockholm/PRIVAT~1/x.wav', 400, BAD_PATH]
  ]
  for (const proto of PROTOCOLS) {
    for (const [path, status, code] of rows) {
      const before = nas.requests.length
      const res = await fetchAs(proto, gw, path, bearer(gw.token(stockholm)))
      t.equal(res.status, status, `${proto} ${path}: ${status}`)
      t.equal(errorOf(res.body), code, `${proto} ${path}: ${code}`)
      t.equal(nas.requests.length - before, 0, `${proto} ${path}: nothing reached the NAS`)
    }
  }
  t.equal(nas.requests.length, 0)
})

t.test('posix on a folding NAS: the hidden folder and another user\'s home are served (why folding is the default)', async (t) => {
  const { nas, gw } = await setup(t, { fileSystem: 'posix' })
  for (const proto of PROTOCOLS) {
    let before = nas.requests.length
    const shortName = await fetchAs(proto, gw, '/medicall/stockholm/PRIVAT~1/x.wav', bearer(gw.token(stockholm)))
    t.equal(shortName.status, 200, `${proto}: PRIVAT~1 passes the stockholm rule under posix`)
    t.ok(shortName.body.equals(RECORDING), `${proto}: and its bytes come back`)
    t.same(nas.served.slice(before), [PRIVATE], `${proto}: the NAS served the .private file`)

    before = nas.requests.length
    const upper = await fetchAs(proto, gw, '/home/ALICE/a.wav', bearer(gw.token(sub('ALICE'))))
    t.equal(upper.status, 200, `${proto}: sub ALICE opens /home/ALICE under posix`)
    t.ok(upper.body.equals(RECORDING), `${proto}: and its bytes come back`)
    t.same(nas.served.slice(before), [ALICE], `${proto}: the NAS served alice's file`)
  }
})

t.test('folding refusals are audited and counted as traversal', async (t) => {
  const { nas, gw } = await setup(t)
  const metric = 'nasguard_refusals_total{reason="bad_path",class="traversal"}'
  const countBefore = (await scrape(gw.adminUrl)).get(metric) ?? 0
  const paths: Array<[string, Row['claims']]> = [
    ['/medicall/stockholm/PRIVAT~1/x.wav', stockholm],
    ['/home/alice/a.wav::$DATA', sub('alice')],
    ['/home/alice./a.wav', sub('alice')],
    ['/home/ALICE/a.wav', sub('alice')],
    ['/MEDICALL/STOCKHOLM/a.wav', stockholm]
  ]
  const ids: string[] = []
  for (const proto of PROTOCOLS) {
    for (const [path, claims] of paths) {
      const res = await fetchAs(proto, gw, path, bearer(gw.token(claims)))
      t.equal(res.status, 400, `${proto} ${path}: 400`)
      t.equal(errorOf(res.body), BAD_PATH, `${proto} ${path}: ${BAD_PATH}`)
      const id = res.headers['x-request-id']
      t.type(id, 'string', `${proto} ${path}: has a request id`)
      ids.push(String(id))
    }
  }
  const records = await waitFor('the refusal records', () => {
    const found = gw.auditRecords().filter((r) => r.event === 'refusal' && ids.includes(String(r.requestId)))
    return found.length === ids.length ? found : undefined
  })
  for (const r of records) t.match(r, { event: 'refusal', status: 400, reason: BAD_PATH, method: 'GET' }, `refusal record ${String(r.requestId)}`)
  t.equal(gw.auditRecords().filter((r) => r.event !== 'refusal').length, 0, 'no access or fetch record')
  const countAfter = (await scrape(gw.adminUrl)).get(metric) ?? 0
  t.equal(countAfter - countBefore, ids.length, `${metric} counted each refusal`)
  t.equal(nas.requests.length, 0, 'the NAS was never asked')
})
