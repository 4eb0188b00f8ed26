// A stub NAS that resolves names the way real NAS shares do. SMB/CIFS shares,
// NTFS volumes and the web servers many NAS boxes run over them fold names:
// case-insensitively (with Unicode upcasing, so `alıce` is `alice`), without
// trailing dots and spaces, through `::$DATA` stream suffixes, through 8.3
// short names (`PRIVAT~1` is `.private`) and with `\` as a separator. A stub
// that compares bytes would hide every bypass that relies on this, so
// security tests use this one to show which request would reach which file.
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { listenOnLoopback } from './stub-nas.js'
import { refuseExposureCheck, type NasRequest } from './stub-nas.js'

export interface FoldingNasRequest { method: string, url: string, headers: IncomingMessage['headers'] }

export interface FoldingNas {
  url: string
  port: number
  /** Every request that reached the NAS, in order. */
  requests: FoldingNasRequest[]
  /**
   * Same index as `requests`: the real file each request resolved to (and
   * was served from, or answered 416 for), or null when it resolved to
   * nothing (404) or was not GET or HEAD (405).
   */
  served: Array<string | null>
  close: () => Promise<void>
}

/** The Last-Modified every file has (fixed, so tests are repeatable). */
export const FOLDING_NAS_LAST_MODIFIED = 'Mon, 01 Jan 2024 00:00:00 GMT'

interface DirNode { kind: 'dir', path: string, children: Map<string, Node>, shortNames: Map<string, string> }
interface FileNode { kind: 'file', path: string }
type Node = DirNode | FileNode

/** Characters a short name may hold besides A-Z and 0-9. */
const SHORT_SPECIALS = new Set("!#$%&'()-@^_`{}~")

function shortChar (c: string): boolean {
  return /^[A-Z0-9]$/.test(c) || SHORT_SPECIALS.has(c)
}

/** Upcases one code point the way an upcase table does (no 1-to-many mappings). */
function upcaseCodePoint (c: string): string {
  const u = c.toUpperCase()
  return [...u].length === 1 ? u : c
}

/**
 * The key two names share when a case-insensitive share treats them as the
 * same: NFC, each code point upcased, then lowercased (so `ı` and `i`, `ſ`
 * and `s`, the Kelvin sign and `k` share a key; `ß` stays itself).
 */
export function foldKey (name: string): string {
  let out = ''
  for (const c of name.normalize('NFC')) {
    const u = upcaseCodePoint(c)
    const l = u.toLowerCase()
    out += [...l].length === 1 ? l : u
  }
  return out
}

/** Whether `name` already is a valid 8.3 name (ignoring case), so needs no generated short name. */
function isValid83 (name: string): boolean {
  if (name === '.' || name === '..') return false
  const upper = name.toUpperCase()
  const parts = upper.split('.')
  if (parts.length > 2) return false
  const [base, ext = ''] = parts
  if (base === undefined || base.length < 1 || base.length > 8 || ext.length > 3) return false
  if (parts.length === 2 && ext.length === 0) return false
  return [...base, ...ext].every(shortChar)
}

/** Short-name characters for one part of a long name (spaces and dots dropped, the rest mapped to `_`). */
function shortPart (s: string): string {
  let out = ''
  for (const c of s.normalize('NFD').replace(/\p{M}/gu, '').toUpperCase()) {
    if (c === ' ' || c === '.') continue
    out += shortChar(c) ? c : '_'
  }
  return out
}

/**
 * The 8.3 short names Windows would generate for the entries of one
 * directory: uppercase, leading dots and spaces removed, spaces and inner
 * dots removed, other characters short names cannot hold replaced by `_`,
 * base cut to 6 characters plus `~N`, extension cut to 3. Collisions are
 * numbered `~1`, `~2`, ... in sorted order of the long names. Names that
 * already are valid 8.3 names get none (they answer to themselves).
 */
export function shortNamesFor (names: Iterable<string>): Map<string, string> {
  const all = [...names].sort()
  const taken = new Set(all.filter(isValid83).map((n) => n.toUpperCase()))
  const out = new Map<string, string>()
  for (const name of all) {
    if (isValid83(name)) continue
    const trimmed = name.replace(/^[. ]+/, '')
    const dot = trimmed.lastIndexOf('.')
    const base = shortPart(dot === -1 ? trimmed : trimmed.slice(0, dot))
    const ext = dot === -1 ? '' : shortPart(trimmed.slice(dot + 1)).slice(0, 3)
    if (base === '') continue
    for (let n = 1; ; n++) {
      const tail = `~${n}`
      const b = base.slice(0, Math.min(6, 8 - tail.length)) + tail
      const short = ext === '' ? b : `${b}.${ext}`
      if (!taken.has(short)) {
        taken.add(short)
        out.set(name, short)
        break
      }
    }
  }
  return out
}

/** The directory tree of a set of real files, resolving request paths the Windows way. */
export class FoldingTree {
  readonly root: DirNode = { kind: 'dir', path: '/', children: new Map(), shortNames: new Map() }

  constructor (paths: Iterable<string>) {
    for (const p of paths) {
      if (!p.startsWith('/')) throw new Error(`FoldingTree: ${p} is not an absolute path`)
      const segs = p.split('/').filter((s) => s !== '')
      if (segs.length === 0) throw new Error(`FoldingTree: ${p} names no file`)
      let dir = this.root
      segs.forEach((seg, i) => {
        if (seg === '.' || seg === '..') throw new Error(`FoldingTree: ${p} has a dot segment`)
        const last = i === segs.length - 1
        const at = '/' + segs.slice(0, i + 1).join('/')
        const existing = dir.children.get(seg)
        if (last) {
          if (existing) throw new Error(`FoldingTree: ${at} given twice or also a directory`)
          dir.children.set(seg, { kind: 'file', path: at })
          return
        }
        if (existing?.kind === 'file') throw new Error(`FoldingTree: ${at} is both a file and a directory`)
        const next: DirNode = existing ?? { kind: 'dir', path: at, children: new Map(), shortNames: new Map() }
        dir.children.set(seg, next)
        dir = next
      })
    }
    const number = (d: DirNode): void => {
      for (const [long, short] of shortNamesFor(d.children.keys())) d.shortNames.set(short, long)
      for (const c of d.children.values()) if (c.kind === 'dir') number(c)
    }
    number(this.root)
  }

  /** The real file `requestPath` (a raw request target) resolves to, or null. */
  resolve (requestPath: string): string | null {
    let raw = requestPath.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '')
    const q = raw.search(/[?#]/)
    if (q !== -1) raw = raw.slice(0, q)
    if (!raw.startsWith('/')) return null
    let decoded: string
    try {
      decoded = decodeURIComponent(raw)
    } catch {
      return null
    }
    const parts = decoded.split(/[/\\]/)
    const trailingSeparator = parts.length > 1 && parts[parts.length - 1] === ''
    const segs: string[] = []
    for (const s of parts) {
      if (s === '' || s === '.') continue
      if (s === '..') segs.pop()
      else segs.push(s)
    }
    let node: Node = this.root
    for (const seg of segs) {
      if (node.kind !== 'dir') return null
      const name = windowsName(seg)
      if (name === null) return null
      const child = lookup(node, name)
      if (child === undefined) return null
      node = child
    }
    if (node.kind !== 'file' || trailingSeparator) return null
    return node.path
  }
}

/** One segment as Windows would name it: stream suffix and trailing dots and spaces gone, or null. */
function windowsName (seg: string): string | null {
  let name = seg
  const colon = name.indexOf(':')
  if (colon !== -1) {
    const stream = name.slice(colon).toUpperCase()
    if (stream !== '::$DATA' && stream !== ':$DATA') return null
    name = name.slice(0, colon)
  }
  name = name.replace(/[. ]+$/, '')
  return name === '' ? null : name
}

function lookup (dir: DirNode, name: string): Node | undefined {
  const exact = dir.children.get(name)
  if (exact) return exact
  const key = foldKey(name)
  const longs = [...dir.children.keys()].sort()
  const long = longs.find((n) => foldKey(n) === key)
  if (long !== undefined) return dir.children.get(long)
  for (const [short, target] of dir.shortNames) {
    if (foldKey(short) === key) return dir.children.get(target)
  }
  return undefined
}

/**
 * The real path (one of `paths`, or of the tree's) that `requestPath`
 * resolves to on a case-insensitive Windows share, or null for nothing (a
 * directory, a named stream, a name that is not there).
 */
export function resolveFolding (paths: FoldingTree | Iterable<string>, requestPath: string): string | null {
  const tree = paths instanceof FoldingTree ? paths : new FoldingTree(paths)
  return tree.resolve(requestPath)
}

export function contentTypeFor (path: string): string {
  const lower = path.toLowerCase()
  if (lower.endsWith('.wav')) return 'audio/wav'
  if (lower.endsWith('.mp3')) return 'audio/mpeg'
  return 'application/octet-stream'
}

type RangeResult = { kind: 'none' } | { kind: 'range', start: number, end: number } | { kind: 'unsatisfiable' }

/** One `bytes=a-b | a- | -n` range against `size`; anything else is ignored (a full 200). */
export function parseRange (header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'none' }
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null || (m[1] === '' && m[2] === '')) return { kind: 'none' }
  if (m[1] === '') {
    const n = Number(m[2])
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(m[1])
  if (m[2] !== '' && Number(m[2]) < start) return { kind: 'none' }
  if (start >= size) return { kind: 'unsatisfiable' }
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  return { kind: 'range', start, end }
}

function notFound (res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain', 'content-length': 9 })
  res.end('Not Found')
}

/** A plain HTTP file server on 127.0.0.1 serving `files` with Windows name resolution. */
export async function startFoldingNas (t: { teardown: (fn: () => unknown) => void }, files: Record<string, Buffer>): Promise<FoldingNas> {
  const tree = new FoldingTree(Object.keys(files))
  const requests: FoldingNasRequest[] = []
  const served: Array<string | null> = []
  const exposureChecks: NasRequest[] = []
  const server = createServer((req, res) => {
    if (refuseExposureCheck(req, res, exposureChecks)) return
    const method = req.method ?? ''
    requests.push({ method, url: req.url ?? '', headers: req.headers })
    if (method !== 'GET' && method !== 'HEAD') {
      served.push(null)
      res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 })
      res.end()
      return
    }
    const real = tree.resolve(req.url ?? '')
    served.push(real)
    const body = real === null ? undefined : files[real]
    if (real === null || body === undefined) {
      notFound(res)
      return
    }
    const head = method === 'HEAD'
    const headers: Record<string, string | number> = {
      'content-type': contentTypeFor(real),
      etag: `"${createHash('sha1').update(real).update(body).digest('hex').slice(0, 16)}"`,
      'last-modified': FOLDING_NAS_LAST_MODIFIED,
      'accept-ranges': 'bytes'
    }
    const range = parseRange(req.headers.range, body.length)
    if (range.kind === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${body.length}`, 'content-length': 0 })
      res.end()
      return
    }
    if (range.kind === 'range') {
      res.writeHead(206, { ...headers, 'content-range': `bytes ${range.start}-${range.end}/${body.length}`, 'content-length': range.end - range.start + 1 })
      res.end(head ? undefined : body.subarray(range.start, range.end + 1))
      return
    }
    res.writeHead(200, { ...headers, 'content-length': body.length })
    res.end(head ? undefined : body)
  })
  const { port, close } = await listenOnLoopback(t, server)
  return { url: `http://127.0.0.1:${port}`, port, requests, served, close }
}
