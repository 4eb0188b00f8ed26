// What the target serves without credentials, asked over the transport that
// works: listings at / and common recording roots, a file from a listing (or
// a --path), HSTS, and server banners.
import { PROPFIND_BODY, decodeEntities, looksLikeListing, servesFile } from '../exposure/evidence.js'
import { finding, type Finding } from './findings.js'
import { answered, exchange, type Exchange, type NetOptions, type Target } from './net.js'
import { maskPhoneNumbers } from '../policy/phone-numbers.js'

/** Where recordings are often kept: call recorders, NAS shares, and the 2019 NAS's shape. */
export const RECORDING_ROOTS = ['/recordings/', '/recording/', '/calls/', '/records/', '/audio/', '/voice/', '/media/', '/share/', '/public/', '/data/', '/backup/', '/medicall/', '/inspelningar/', '/samtal/', '/monitor/']

const MAX_FILES = 3

export interface HttpContext {
  target: Target
  net: NetOptions
  tls: boolean
  /** Paths the operator named (--path): directories end with /, anything else is a file. */
  paths: readonly string[]
}

export const ask = async (c: HttpContext, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Exchange | undefined> => {
  const r = await exchange(c.target, c.net, c.tls, method, path, headers, body)
  return answered(r) ? r : undefined
}

/** Same-origin links of a listing, resolved against it: files, and directories below it (never up). */
export function linksOf (listingPath: string, body: string, origin: URL): { files: string[], dirs: string[] } {
  const files = new Set<string>()
  const dirs = new Set<string>()
  const hrefs = [...body.matchAll(/<a\s[^>]*href\s*=\s*["']?([^"' >]+)/gi), ...body.matchAll(/<(?:[\w.-]+:)?href>\s*([^<\s]+)\s*</gi)]
  for (const m of hrefs) {
    let url: URL
    try { url = new URL(decodeEntities(m[1]), new URL(listingPath, origin)) } catch { continue }
    // A DAV href may name the NAS by an inside name (http://nas.internal/…): its path is asked of the target.
    if (/^<a\s/i.test(m[0]) && url.origin !== origin.origin) continue
    if (url.search !== '') continue
    url = new URL(url.pathname, origin)
    if (!url.pathname.endsWith('/')) files.add(url.pathname)
    else if (url.pathname.startsWith(listingPath) && url.pathname.length > listingPath.length) dirs.add(url.pathname)
  }
  return { files: [...files], dirs: [...dirs] }
}

/** Directories below a listing that are opened to find a file, at most. */
const MAX_CRAWL = 12

/**
 * A file is named by its directory only, and any run of 9 or more digits in it
 * is cut to its first two: recording names (and per-caller folders) hold phone
 * numbers, and this output lands in tickets. Dates (8 digits) stay readable.
 * Each segment is masked as the NAS reads it, percent-decoded (a listing's
 * link writes `070%20123%2045%2067`), and control characters are written
 * back encoded.
 */
const dirOf = (path: string): string => path.slice(0, path.lastIndexOf('/') + 1).split('/').map((segment) => {
  let decoded = segment
  try { decoded = decodeURIComponent(segment) } catch {}
  return maskPhoneNumbers(decoded).replace(/\p{Cc}/gu, (c) => encodeURIComponent(c))
}).join('/')

/** A directory's listing, by GET or else by WebDAV PROPFIND (any multistatus lists the collection). */
async function listingAt (c: HttpContext, dir: string): Promise<{ how: string, body: string } | undefined> {
  const r = await ask(c, 'GET', dir)
  if (r !== undefined && r.status >= 200 && r.status < 300 && looksLikeListing(r.headers['content-type'] ?? '', r.body)) return { how: `GET ${r.status}`, body: r.body }
  const dav = await ask(c, 'PROPFIND', dir, { depth: '1', 'content-type': 'application/xml' }, PROPFIND_BODY)
  if (dav !== undefined && dav.status === 207) return { how: 'PROPFIND 207', body: dav.body }
  return undefined
}

export async function listingsAndFiles (c: HttpContext): Promise<Finding[]> {
  const roots = [...new Set(['/', ...RECORDING_ROOTS, ...c.paths.filter((p) => p.endsWith('/'))])]
  const listed: string[] = []
  const files = c.paths.filter((p) => !p.endsWith('/'))
  const found: string[] = []
  const queue = [...roots]
  let crawled = 0
  for (let i = 0; i < queue.length; i++) {
    const dir = queue[i]
    const listing = await listingAt(c, dir)
    if (listing === undefined) continue
    if (roots.includes(dir)) listed.push(`${dir} (${listing.how})`)
    else crawled++
    const links = linksOf(dir, listing.body, c.target.url)
    found.push(...links.files.filter((f) => !found.includes(f)))
    if (found.length < MAX_FILES) for (const d of links.dirs) if (queue.length < roots.length + MAX_CRAWL && !queue.includes(d)) queue.push(d)
  }
  const findings: Finding[] = []
  if (listed.length > 0) findings.push(finding('HIGH', 'listing', 'directory-listing', `directory listings without credentials: ${listed.join(', ')}${crawled > 0 ? `, and ${crawled} director${crawled === 1 ? 'y' : 'ies'} below` : ''}`, 'turn listings off (nginx autoindex off; Apache Options -Indexes) and require credentials; put nasguard in front'))
  findings.push(...await anonymousFetch(c, [...files, ...found.slice(0, MAX_FILES)]))
  return findings
}

async function anonymousFetch (c: HttpContext, files: string[]): Promise<Finding[]> {
  const served: string[] = []
  for (const path of [...new Set(files)]) {
    const r = await ask(c, 'GET', path, { range: 'bytes=0-0' })
    if (r !== undefined && servesFile(r.status, r.headers)) served.push(`a file in ${dirOf(path)} (${r.status})`)
  }
  if (served.length > 0) return [finding('HIGH', 'anonymous', 'anonymous-fetch', `files served without credentials: ${served.join(', ')}`, 'require credentials for every file (nasguard: a token per request), and keep the share off this network')]
  const root = await ask(c, 'GET', '/')
  if (root === undefined) return []
  if (root.status === 401 || root.status === 403) return [finding('INFO', 'anonymous', 'credentials-required', `/ asks for credentials (${root.status})${files.length > 0 ? `, and none of the ${files.length} file(s) tried was served without them` : ''}`)]
  return [finding('INFO', 'anonymous', 'no-file-served', files.length === 0 ? `no file name was known to try (/ answers ${root.status}): pass --path with a recording's path` : `none of the ${files.length} file(s) tried was served without credentials (/ answers ${root.status})`)]
}

/** Six months, as Mozilla's guidelines ask at the least (they recommend two years). */
const HSTS_MIN = 15768000

/** HSTS on the TLS answer to / (any status: every answer should carry it). */
export function hsts (root: Exchange | undefined): Finding[] {
  if (root === undefined) return []
  const value = root.headers['strict-transport-security']
  if (value === undefined) return [finding('MEDIUM', 'hsts', 'hsts-missing', 'no Strict-Transport-Security header: a browser that once used https:// may still be sent to http://', 'send Strict-Transport-Security: max-age=63072000 on every response')]
  const age = Number(/max-age\s*=\s*"?(\d+)/i.exec(value)?.[1] ?? NaN)
  if (!(age > 0)) return [finding('MEDIUM', 'hsts', 'hsts-off', `Strict-Transport-Security ${JSON.stringify(value)} tells browsers to forget HSTS`, 'send Strict-Transport-Security: max-age=63072000')]
  if (!(age >= HSTS_MIN)) return [finding('LOW', 'hsts', 'hsts-short', `Strict-Transport-Security max-age is ${Number.isNaN(age) ? 'missing' : age} s, under six months`, 'send Strict-Transport-Security: max-age=63072000')]
  return [finding('INFO', 'hsts', 'hsts', `Strict-Transport-Security: ${value}`)]
}

const BANNER_HEADERS = ['server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version', 'x-generator', 'via']

/** Headers that name the software, from the answers to / over TLS and in plain HTTP. */
export function banners (answers: Array<Exchange | undefined>): Finding[] {
  const seen = new Map<string, string>()
  for (const r of answers) {
    for (const h of BANNER_HEADERS) {
      const v = r?.headers[h]
      if (v !== undefined && v !== '') seen.set(`${h}: ${v}`.slice(0, 200), h)
    }
  }
  const versioned = [...seen.keys()].filter((b) => /\d+\.\d+/.test(b))
  const plain = [...seen.keys()].filter((b) => !versioned.includes(b))
  const out: Finding[] = []
  if (versioned.length > 0) out.push(finding('LOW', 'banner', 'banner-version', `software versions disclosed: ${versioned.join('; ')}`, 'hide versions (nginx server_tokens off; Apache ServerTokens Prod; drop X-Powered-By)'))
  if (plain.length > 0) out.push(finding('INFO', 'banner', 'banner', `software named: ${plain.join('; ')}`))
  return out
}
