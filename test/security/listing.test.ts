// Directory listings are never served: directory-shaped, hidden and
// non-recording paths are refused before the NAS is asked, and a NAS that
// answers a recording request with a listing or a redirect has none of its
// answer passed on.
import type { ServerResponse } from 'node:http'
import t from 'tap'
import { DEFAULT_POLICY, bearer, get, startStubNas, startTestGateway, type Response } from '../helpers/gateway.js'

const DIRECTORY = 'NASGUARD_ERR_DIRECTORY'
const FILE_TYPE = 'NASGUARD_ERR_FILE_TYPE'
const HIDDEN = 'NASGUARD_ERR_HIDDEN_PATH'
const NO_RULE = 'NASGUARD_ERR_NO_RULE'
const BAD_PATH = 'NASGUARD_ERR_BAD_PATH'
const LISTING = 'NASGUARD_ERR_UPSTREAM_LISTING'

function jsonOf (res: Response): Record<string, unknown> | undefined {
  try {
    return JSON.parse(res.body.toString('utf8')) as Record<string, unknown>
  } catch {
    return undefined
  }
}

interface PathRow { path: string, codes: string[], status?: number }

const SHAPE_ROWS: PathRow[] = [
  { path: '/medicall/2016/01/01/', codes: [DIRECTORY] },
  { path: '/medicall/2016/01/01', codes: [DIRECTORY] },
  { path: '/medicall/', codes: [DIRECTORY] },
  { path: '/medicall', codes: [DIRECTORY] },
  { path: '/medicall/2016/01/01/083012_46701234567', codes: [DIRECTORY] },
  { path: '/medicall/2016/01/01/083012_46701234567.wav/', codes: [DIRECTORY] },
  { path: '/medicall/2016/01/01/index.html', codes: [FILE_TYPE] },
  { path: '/medicall/2016/01/01/a.txt', codes: [FILE_TYPE] },
  { path: '/medicall/a.wav.bak', codes: [FILE_TYPE] },
  { path: '/medicall/a.wav.php', codes: [FILE_TYPE] },
  { path: '/medicall/2016/01/01/listing.json', codes: [FILE_TYPE] },
  // A NAS that folds names reads `a.` as `a` (upstream.fileSystem: folding): refused as a path.
  { path: '/medicall/a.', codes: [BAD_PATH], status: 400 },
  // Hidden names. With the default policy no rule opens them (a glob never
  // matches a dot segment), so the policy refuses first; either refusal is a 403.
  { path: '/medicall/.env', codes: [HIDDEN, NO_RULE] },
  { path: '/medicall/.private/a.wav', codes: [HIDDEN, NO_RULE] },
  { path: '/medicall/2016/.git/config.wav', codes: [HIDDEN, NO_RULE] },
  { path: '/medicall/2016/01/01/.083012_46701234567.wav', codes: [HIDDEN, NO_RULE] }
]

t.test('directory-shaped, hidden and non-recording paths are refused before the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  for (const row of SHAPE_ROWS) {
    const before = nas.requests.length
    const res = await get(gw, row.path, { headers: bearer(gw.token()) })
    const body = jsonOf(res)
    t.equal(res.status, row.status ?? 403, `${row.path}: ${row.status ?? 403}`)
    t.ok(row.codes.includes(String(body?.error)), `${row.path}: one of ${row.codes.join(' | ')} (got ${String(body?.error)})`)
    t.same(Object.keys(body ?? {}).sort(), ['error', 'message'], `${row.path}: body is { error, message }`)
    t.equal(nas.requests.length - before, 0, `${row.path}: nothing reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.path}: the NAS has still seen nothing`)
  }
})

t.test('hidden paths are refused by the listing guard even when a rule names them', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, {
    policy: [
      ...DEFAULT_POLICY,
      { name: 'private', path: '/medicall/.private/**', scopes: ['recordings:read'] },
      { name: 'env', path: '/medicall/.env', scopes: ['recordings:read'] },
      { name: 'git', path: '/medicall/*/.git/*', scopes: ['recordings:read'] },
      { name: 'dotfile', path: '/medicall/2016/01/01/.083012_46701234567.wav', scopes: ['recordings:read'] }
    ]
  })
  const rows = SHAPE_ROWS.filter((r) => r.codes.includes(HIDDEN))
  t.equal(rows.length, 4)
  for (const row of rows) {
    const before = nas.requests.length
    const res = await get(gw, row.path, { headers: bearer(gw.token()) })
    t.equal(res.status, 403, `${row.path}: 403`)
    t.equal(jsonOf(res)?.error, HIDDEN, `${row.path}: ${HIDDEN}`)
    t.equal(nas.requests.length - before, 0, `${row.path}: nothing reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.path}: the NAS has still seen nothing`)
  }
})

const MARKER = '46709999999.wav'
const LEAKY_HEADERS = { server: 'StubNAS/1.0 (listing)', 'x-powered-by': 'PHP/5.4', 'set-cookie': 'nas_session=leaked; Path=/' }

function listing (contentType: string, body: string): (res: ServerResponse) => void {
  return (res) => {
    res.writeHead(200, { ...LEAKY_HEADERS, 'content-type': contentType, 'content-length': Buffer.byteLength(body), location: '/medicall/elsewhere/' })
    res.end(body)
  }
}

function redirect (status: number): (res: ServerResponse, url: string) => void {
  return (res, url) => {
    const body = `<html><body>Moved to <a href="${url}/">${url}/</a> ${MARKER}</body></html>`
    res.writeHead(status, { ...LEAKY_HEADERS, location: url + '/', 'content-type': 'text/html', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
}

const HTML = `<html><head><title>Index of /medicall/2016/01/01/</title></head><body><a href="${MARKER}">${MARKER}</a></body></html>`

const UPSTREAM_ROWS: Array<{ name: string, answer: (res: ServerResponse, url: string) => void }> = [
  { name: 'HTML listing (text/html)', answer: listing('text/html', HTML) },
  { name: 'HTML listing (TEXT/HTML; charset=UTF-8)', answer: listing('TEXT/HTML; charset=UTF-8', HTML) },
  { name: 'XHTML listing', answer: listing('application/xhtml+xml', HTML) },
  { name: 'JSON listing (application/json)', answer: listing('application/json', JSON.stringify([{ name: MARKER, size: 123456 }])) },
  { name: 'XML listing (application/xml)', answer: listing('application/xml', `<?xml version="1.0"?><list><file name="${MARKER}"/></list>`) },
  { name: 'WebDAV multistatus (text/xml)', answer: listing('text/xml; charset="utf-8"', `<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/medicall/${MARKER}</D:href></D:response></D:multistatus>`) },
  { name: 'plain text listing', answer: listing('text/plain', `${MARKER}\n46708888888.wav\n`) },
  { name: 'HTML listing with no Content-Type at all', answer: (res) => { res.writeHead(200, { ...LEAKY_HEADERS, 'content-length': Buffer.byteLength(HTML) }); res.end(HTML) } },
  { name: '301 redirect to the path plus /', answer: redirect(301) },
  { name: '302 redirect to the path plus /', answer: redirect(302) },
  { name: '307 redirect to the path plus /', answer: redirect(307) },
  { name: '308 redirect to the path plus /', answer: redirect(308) }
]

t.test('a NAS that answers a recording request with a listing or a redirect: 502, nothing of it passed on', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const path = '/medicall/2016/01/01/083012_46701234567.wav'
  for (const row of UPSTREAM_ROWS) {
    nas.handle((req, res) => row.answer(res, req.url ?? ''))
    const before = nas.requests.length
    const res = await get(gw, path, { headers: bearer(gw.token()) })
    const text = res.body.toString('latin1')
    t.equal(res.status, 502, `${row.name}: 502`)
    t.equal(jsonOf(res)?.error, LISTING, `${row.name}: ${LISTING}`)
    t.match(String(res.headers['content-type']), /^application\/json/, `${row.name}: the client gets JSON, not the NAS's type`)
    t.notOk(text.includes(MARKER), `${row.name}: the body does not contain the listing`)
    t.notOk(text.includes('46708888888'), `${row.name}: nor any other name from it`)
    for (const h of ['location', 'server', 'x-powered-by', 'set-cookie']) {
      t.equal(res.headers[h], undefined, `${row.name}: the NAS's ${h} header does not reach the client`)
    }
    t.notOk(JSON.stringify(res.headers).includes(MARKER), `${row.name}: no header holds the listing`)
    t.notOk(JSON.stringify(res.headers).includes('StubNAS'), `${row.name}: no header names the NAS software`)
    t.equal(nas.requests.length - before, 1, `${row.name}: exactly one request reached the NAS (the redirect was not followed)`)
    t.equal(nas.requests[nas.requests.length - 1].url, path, `${row.name}: the NAS was asked for the file itself`)
  }
})
