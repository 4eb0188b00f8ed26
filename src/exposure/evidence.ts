// What an answer to an anonymous request gives away, judged alike by the
// gateway's lockdown check (src/proxy/exposure-check.ts) and by
// `nasguard probe` (src/probe/): a directory listing, or a file's bytes.
const BODY_PEEK = 64 * 1024
/** A PROPFIND body asking for each entry's type only. */
export const PROPFIND_BODY = '<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'

/** What file servers title their listings: nginx and Apache, python, Tomcat, Jetty, IIS, Caddy's browse. */
const LISTING_MARKS = /\bIndex of \/|Directory listing for|\[To Parent Directory\]|<title>\s*Directory: \/|class="listing"/i

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' }
export const decodeEntities = (s: string): string => s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) =>
  e[0] !== '#' ? ENTITIES[e.toLowerCase()] ?? m : String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1))))

/**
 * Links whose text names their own target (`<a href="2019/">2019/</a>`), as
 * every file server lists, against the other links (sorting and parent links
 * left out).
 */
function linkCounts (body: string): { entries: number, others: number } {
  let entries = 0
  let others = 0
  for (const m of body.matchAll(/<a\s[^>]*href\s*=\s*["']?([^"' >]+)["']?[^>]*>([\s\S]{0,2000}?)<\/a>/gi)) {
    const href = decodeEntities(m[1])
    if (/^[?#]/.test(href) || /^(\.\.\/?|\/)$/.test(href)) continue
    const last = href.replace(/[?#].*$/, '').replace(/\/$/, '').split('/').pop() ?? ''
    let name = last
    try { name = decodeURIComponent(last) } catch {}
    const text = decodeEntities(m[2].replace(/<[^>]*>/g, '')).replace(/\u00a0/g, ' ').trim().replace(/\/$/, '')
    if (name !== '' && (text === name || text === last)) entries++
    else others++
  }
  return { entries, others }
}

/** An array of entries somewhere near the top of a JSON answer: strings, or objects with a name. */
function jsonEntries (v: unknown, depth = 0): boolean {
  if (Array.isArray(v)) return v.length > 0 && v.every((e) => typeof e === 'string' || (typeof e === 'object' && e !== null && ['name', 'filename', 'path', 'href'].some((k) => k in e)))
  if (typeof v !== 'object' || v === null || depth >= 3) return false
  return Object.values(v).some((x) => jsonEntries(x, depth + 1))
}

/**
 * Whether a body a directory answered with lists what it holds: a DAV
 * multistatus, nginx's XML or JSON autoindex, a listing's title, or a page
 * without a form where more links name their targets than do not. A login page, a home
 * page or a blog's pagination is not one.
 */
export function looksLikeListing (contentType: string, body: string): boolean {
  if (/<(?:[\w.-]+:)?multistatus\b/i.test(body) || /<list>\s*<(?:file|directory)\b/i.test(body)) return true
  if (/json/i.test(contentType)) {
    try { return jsonEntries(JSON.parse(body)) } catch { return /"(?:name|filename)"\s*:/.test(body) && /^\s*[[{]/.test(body) }
  }
  if (LISTING_MARKS.test(body)) return true
  const links = linkCounts(body)
  return !/<form\b/i.test(body) && links.entries >= 1 && links.entries > links.others
}

/**
 * Whether an answer to `Range: bytes=0-0` gave the file away: its first byte
 * (206 for 0-0), the whole of it (a 200 that is not an HTML page: a NAS that
 * ignores Range), or its size (416 with `bytes *` and a length: an empty file).
 */
export function servesFile (status: number, headers: Record<string, string | string[] | undefined>): boolean {
  const range = String(headers['content-range'] ?? '')
  // A multipart 206 carries its ranges inside the body: a part of the file all the same.
  if (status === 206) return /^bytes 0-\d+\//i.test(range) || /^\s*multipart\/byteranges\b/i.test(String(headers['content-type'] ?? ''))
  if (status === 416) return /^bytes \*\/\d+/i.test(range)
  return status === 200 && !/text\/html/i.test(String(headers['content-type'] ?? ''))
}

/** What a login, error or landing page is written in: text, JSON or XML (not a recording's bytes). */
const PAGE_TYPES = /^\s*(?:text\/|application\/(?:[\w.-]+\+)?(?:json|xml)\b)/i

/**
 * As servesFile, for the answer a redirect led to: a share link that hands
 * out the file counts, a page (a login form, a "link expired" notice, an
 * API's error) that answers 200 does not.
 */
export function servesFileAfterRedirect (status: number, headers: Record<string, string | string[] | undefined>): boolean {
  return servesFile(status, headers) && !(status === 200 && PAGE_TYPES.test(String(headers['content-type'] ?? '')))
}

/**
 * The first 64 KiB of a body, as text. A body that fails part-way throws,
 * unless keepPartial: then what arrived is what it said.
 */
export async function peek (body: AsyncIterable<Buffer>, keepPartial = false): Promise<string> {
  const chunks: Buffer[] = []
  let n = 0
  try {
    for await (const c of body) {
      chunks.push(c)
      n += c.length
      if (n >= BODY_PEEK) break
    }
  } catch (err) {
    if (!keepPartial) throw err
  }
  return Buffer.concat(chunks).subarray(0, BODY_PEEK).toString('utf8')
}
