// `nasguard audit report`: a data subject's access report (GDPR art. 15).
// Every access to the recordings whose path holds a phone number (--phone),
// or every recording access of one identity (--subject), read through the
// verified chain (walkAll, as audit search reads it). The report goes to
// stdout for the investigator only: it names recordings, so it is never
// logged.
//
// Phone numbers in paths. A recording's path spells its number in many
// ways: 083012_46701234567.wav, +46701234567, 0046701234567,
// "+46 70-123 45 67", "(070) 123 45 67". The path is URL-decoded (%XX of
// an ASCII character; any other byte stands for a character that is no
// digit) and cut into blocks: runs of digit groups joined by the
// separators a number is written with (space - . ( ) +); anything else (a
// letter, _, /) ends a block, and a + starts one (it opens an
// international number).
// A path matches when some consecutive groups of one block, put together,
// are the number or 00 and the number; a "(0)" group (the trunk prefix in
// "+46 (0)70 ...") may be left out. A number's digits never match inside
// a longer digit run (46701234567 is not in 467012345670), as the match
// must start and end at group boundaries. What this cannot tell: a longer
// number written with separators whose groups happen to hold the query
// ("+46 70 123 45 67 8" for 46701234567), and a national spelling
// (070...) against an international query: give each form with --phone.
import { problemsText, walkAll, type TrailLocation } from './commands.js'
import type { VerifyReport } from './verify.js'
import { printable, textTable } from '../text-table.js'

/** The events that are an access to a recording: read, fetched, refused, a grant minted for it, uploaded. */
export const ACCESS_EVENTS: readonly string[] = ['access', 'fetch', 'refusal', 'grant', 'ingest']

export type ReportFormat = 'table' | 'json' | 'csv'

export interface ReportQuery {
  /** Normalised numbers (digits only, without a leading 00). */
  phones: string[]
  subject?: string
  since?: number
  until?: number
  format: ReportFormat
}

/** One access, as the report lists it. */
export interface ReportRow {
  time: string
  event: string
  subject?: string
  rule?: string
  status?: number
  outcome?: string
  reason?: string
  bytes?: number
  method?: string
  range?: string
  path?: string
  auth?: string
  instance?: string
  chain: string
  seq: number
  clientIp?: string
  peerIp?: string
  requestId?: string
}

const MIN_DIGITS = 6
// E.164: at most 15 digits, country code included.
const MAX_DIGITS = 15

/** A --phone value as digits (a leading + or 00 dropped); a message naming --phone when it is not a phone number. */
export function normalisePhone (text: string): { ok: true, digits: string } | { ok: false, reason: string } {
  const bad = (why: string): { ok: false, reason: string } => ({ ok: false, reason: `invalid --phone ${JSON.stringify(text)}: ${why}; give the number in digits, e.g. 46701234567, +46 70-123 45 67 or 0046701234567 (repeat --phone for other spellings, e.g. the national 0701234567)` })
  if (/\p{L}/u.test(text)) return bad('it holds letters')
  if (!/^[\d\s+\-.()]*$/.test(text)) return bad('only digits, spaces, + - . ( ) are allowed')
  let digits = text.replace(/\D/g, '')
  if (digits.startsWith('00')) digits = digits.slice(2)
  if (digits.length < MIN_DIGITS) return bad(`it has fewer than ${MIN_DIGITS} digits (${digits.length}), which would match far too many paths`)
  if (digits.length > MAX_DIGITS) return bad(`it has ${digits.length} digits, more than any phone number (${MAX_DIGITS})`)
  return { ok: true, digits }
}

/**
 * The report's query from the command line, or why it is a usage error
 * (the caller throws it as one, exit 2).
 */
export function reportQuery (o: { phones?: string[], subject?: string, json?: boolean, csv?: boolean, since?: number, until?: number }): ReportQuery | string {
  if ((o.phones ?? []).length === 0 && o.subject === undefined) return 'audit report needs --phone NUMBER (repeatable) or --subject SUBJECT'
  if (o.json === true && o.csv === true) return 'audit report takes one of --json and --csv'
  if (o.subject === '') return 'invalid --subject "": name the identity (the subject of its token or certificate)'
  const phones: string[] = []
  for (const p of o.phones ?? []) {
    const n = normalisePhone(p)
    if (!n.ok) return n.reason
    if (!phones.includes(n.digits)) phones.push(n.digits)
  }
  if (o.since !== undefined && o.until !== undefined && o.since > o.until) return '--since is after --until: nothing could match'
  return { phones, subject: o.subject, since: o.since, until: o.until, format: o.json === true ? 'json' : o.csv === true ? 'csv' : 'table' }
}

// Also _ (a common file-name separator), the Unicode dashes and minus, and no-break spaces.
const JOINERS = ' -.()_\u00a0\u202f\u2010\u2011\u2012\u2013\u2014\u2015\u2212'

/** One block's groups: digits, and whether the group was written "(0)" (a trunk prefix that may be left out). */
interface Group { digits: string, trunk: boolean }

/** The blocks of a decoded path (see the top of this file). */
export function digitBlocks (segment: string): Group[][] {
  const blocks: Group[][] = []
  let block: Group[] = []
  let digits = ''
  let start = 0
  const endGroup = (end: number): void => {
    if (digits === '') return
    block.push({ digits, trunk: digits === '0' && segment[start - 1] === '(' && segment[end] === ')' })
    digits = ''
  }
  const endBlock = (): void => {
    if (block.length > 0) blocks.push(block)
    block = []
  }
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]
    if (c >= '0' && c <= '9') {
      if (digits === '') start = i
      digits += c
    } else if (c === '+') {
      endGroup(i)
      endBlock()
    } else if (JOINERS.includes(c)) {
      endGroup(i)
    } else {
      endGroup(i)
      endBlock()
    }
  }
  endGroup(segment.length)
  endBlock()
  return blocks
}

/** Some consecutive groups of the block are the number (or 00 and it); "(0)" groups may be left out. */
function blockHolds (block: Group[], wanted: string[]): boolean {
  const longest = Math.max(...wanted.map((w) => w.length))
  for (let i = 0; i < block.length; i++) {
    // Both readings of a "(0)": kept, and left out. At most one "(0)" is left out per number (a trunk prefix is written
    // once): two readings per start, so a path of many "(0)" stays linear.
    let heads: Array<{ digits: string, skipped: boolean }> = [{ digits: '', skipped: false }]
    for (let j = i; j < block.length && heads.length > 0; j++) {
      const g = block[j]
      const next = heads.map((h) => ({ digits: h.digits + g.digits, skipped: h.skipped }))
      const skip = g.trunk && j > i ? heads.filter((h) => !h.skipped).map((h) => ({ digits: h.digits, skipped: true })) : []
      heads = [...next, ...skip].filter((h) => h.digits.length <= longest)
      if (heads.some((h) => wanted.includes(h.digits))) return true
    }
  }
  return false
}

/**
 * The path as matching reads it: percent-decoded (as UTF-8; a sequence
 * that is not UTF-8 becomes a character that is no digit and no
 * separator), then NFKC, so that full-width digits are digits.
 */
function decoded (path: string): string {
  let text = path
  if (path.includes('%')) {
    try {
      text = decodeURIComponent(path)
    } catch {
      text = path.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => { const c = parseInt(hex, 16); return c < 0x80 ? String.fromCharCode(c) : '\ufffd' })
    }
  }
  return /^[\x00-\x7f]*$/.test(text) ? text : text.normalize('NFKC')
}

export interface PhoneMatcher {
  /** The path holds one of the numbers. */
  holds: (path: string) => boolean
  /** False only for a record line whose path cannot hold one (a line without a path among them): cheap, and true for every line whose path holds one. */
  lineMayHold: (line: string) => boolean
}

/** A matcher for paths that hold one of the numbers (normalised, as normalisePhone gives them). */
export function phoneMatcher (numbers: string[]): PhoneMatcher {
  // A national number (0701234567) has no international prefix to go before it.
  const wanted = numbers.flatMap((n) => (n.startsWith('0') ? [n] : [n, `00${n}`]))
  // Groups joined into a match are consecutive digits of the path once its
  // separators are gone; only a "(0)" left out breaks that.
  const mayHold = (text: string): boolean => {
    const digits = text.replace(/\D+/g, '')
    return numbers.some((n) => digits.includes(n)) || text.includes('(0)')
  }
  return {
    holds: (path) => {
      const text = decoded(path)
      return mayHold(text) && digitBlocks(text).some((block) => blockHolds(block, wanted))
    },
    lineMayHold: (line) => {
      // Without a backslash the JSON text of every string is the string
      // itself, so "path":" is the key and the path ends at the next quote.
      if (line.includes('\\')) return true
      const at = line.indexOf('"path":"')
      if (at === -1) return false
      return mayHold(decoded(line.slice(at + 8, line.indexOf('"', at + 8))))
    }
  }
}

function rowOf (r: Record<string, unknown>, chain: string): ReportRow {
  const s = (k: string): string | undefined => (typeof r[k] === 'string' ? r[k] as string : undefined)
  const n = (k: string): number | undefined => (typeof r[k] === 'number' ? r[k] as number : undefined)
  return {
    time: String(r.time),
    event: String(r.event),
    subject: s('subject'),
    rule: s('rule'),
    status: n('status'),
    outcome: s('outcome'),
    reason: s('reason'),
    bytes: n('bytes'),
    method: s('method'),
    range: s('range'),
    path: s('path'),
    auth: s('auth'),
    instance: s('instance'),
    chain,
    seq: Number(r.seq),
    clientIp: s('clientIp'),
    peerIp: s('peerIp'),
    requestId: s('requestId')
  }
}

/** Walks the verified trail and returns the accesses the query names, oldest first. */
export async function reportRows (loc: TrailLocation, q: ReportQuery): Promise<{ rows: ReportRow[], chains: string[], report: VerifyReport }> {
  const phones = q.phones.length > 0 ? phoneMatcher(q.phones) : undefined
  // JSON.stringify writes a record's subject as it would this one.
  const subjectText = q.subject === undefined ? undefined : `"subject":${JSON.stringify(q.subject)}`
  // Every line is verified; only those that may be a match are parsed.
  const wants = (line: string): boolean => (subjectText === undefined || line.includes(subjectText)) && (phones === undefined || phones.lineMayHold(line))
  const rows: ReportRow[] = []
  const { chains, merged } = await walkAll(loc, (r, chain) => {
    if (!ACCESS_EVENTS.includes(r.event as string)) return
    if (q.subject !== undefined && r.subject !== q.subject) return
    if (q.since !== undefined || q.until !== undefined) {
      const t = Date.parse(String(r.time))
      if (q.since !== undefined && !(t >= q.since)) return
      if (q.until !== undefined && !(t <= q.until)) return
    }
    if (phones && !(typeof r.path === 'string' && phones.holds(r.path))) return
    rows.push(rowOf(r, chain))
  }, { wants })
  // Chains are walked one after another: the report reads in time order.
  const order = new Map(chains.map((c, i) => [c.name, i]))
  rows.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : (order.get(a.chain) ?? 0) - (order.get(b.chain) ?? 0) || a.seq - b.seq))
  return { rows, chains: chains.map((c) => c.name), report: merged }
}

/** What the report was asked, in words. */
function queryText (q: ReportQuery): string {
  const parts: string[] = []
  if (q.phones.length > 0) parts.push(`paths holding ${q.phones.map((p) => (p.startsWith('0') ? p : `${p} (or +${p}, 00${p})`)).join(', ')}`)
  if (q.subject !== undefined) parts.push(`subject ${JSON.stringify(q.subject)}`)
  if (q.since !== undefined) parts.push(`since ${new Date(q.since).toISOString()}`)
  if (q.until !== undefined) parts.push(`until ${new Date(q.until).toISOString()}`)
  return parts.join('; ')
}

function chainText (report: VerifyReport, chains: string[]): string {
  if (report.problems.length > 0) return `CHAIN NOT INTACT: what is listed comes from records whose MAC holds, but records may be missing or altered\n${problemsText(report)}`
  const note = report.truncatedTail ? `\n${problemsText(report)}` : ''
  return `chain intact: ${report.records} records verified in ${chains.length} chain(s)${note}`
}


const where = (r: ReportRow): string => `${r.instance ?? '-'}${r.chain === '.' ? '' : `/${r.chain}`}`

function tableText (rows: ReportRow[]): string {
  const head = ['TIME', 'EVENT', 'SUBJECT', 'RULE', 'STATUS', 'OUTCOME', 'BYTES', 'CLIENT', 'INSTANCE', 'PATH']
  return textTable(head, rows.map((r) => [r.time, r.event, r.subject ?? '-', r.rule ?? '-', r.status ?? '-', r.outcome ?? r.reason ?? '-', r.bytes ?? '-', r.clientIp ?? '-', where(r), r.path ?? '-']))
}

/** RFC 4180, and a cell a spreadsheet would run as a formula starts with ' instead. */
export function csvCell (v: string | number | undefined): string {
  if (v === undefined) return ''
  let s = String(v)
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`
  // No terminal escapes (ESC, C1 controls, bidi overrides) reach whoever cats the file.
  s = printable(s)
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
}

const CSV_COLUMNS: Array<keyof ReportRow> = ['time', 'event', 'subject', 'rule', 'status', 'outcome', 'reason', 'bytes', 'method', 'range', 'path', 'auth', 'instance', 'chain', 'seq', 'clientIp', 'peerIp', 'requestId']

function csvText (rows: ReportRow[]): string {
  return [CSV_COLUMNS.join(','), ...rows.map((r) => CSV_COLUMNS.map((k) => csvCell(r[k])).join(','))].map((l) => l + '\r\n').join('')
}

function totalsText (rows: ReportRow[]): string {
  const by = new Map<string, number>()
  for (const r of rows) by.set(r.event, (by.get(r.event) ?? 0) + 1)
  const bytes = rows.filter((r) => r.event === 'fetch').reduce((a, r) => a + (r.bytes ?? 0), 0)
  const events = [...by].map(([e, n]) => `${n} ${e}`).join(', ')
  return `${rows.length} access record(s)${events ? ` (${events})` : ''}; ${bytes} byte(s) fetched`
}

/**
 * Prints the report; 0 when the chain is intact, 1 when it is not (what was
 * read is listed all the same, and says so) or when there is no trail.
 * Table: the query, the rows and the chain's state on stdout. --json: one
 * document on stdout with the query, the chain's state and the rows.
 * --csv: the rows on stdout. The chain's state goes to stderr for --json
 * and --csv, and for a table whose chain is not intact.
 */
export async function auditReport (loc: TrailLocation, q: ReportQuery, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const { rows, chains, report } = await reportRows(loc, q)
  if (report.files.length === 0 && report.problems.length === 0) { err(`no audit files in ${loc.dir}\n`); return 1 }
  const intact = report.problems.length === 0
  const generated = new Date().toISOString()
  if (q.format === 'json') {
    out(JSON.stringify({
      report: 'nasguard audit report',
      generated,
      dir: loc.dir,
      query: { phones: q.phones, subject: q.subject, since: q.since === undefined ? undefined : new Date(q.since).toISOString(), until: q.until === undefined ? undefined : new Date(q.until).toISOString(), events: ACCESS_EVENTS },
      chain: { intact, records: report.records, chains, problems: report.problems.map((p) => p.message), truncatedTail: report.truncatedTail },
      accesses: rows
    }, null, 2) + '\n')
  } else if (q.format === 'csv') {
    out(csvText(rows))
  } else {
    out(`access report, ${queryText(q)}\n${ACCESS_EVENTS.join(', ')} records from ${loc.dir}, generated ${generated}\n\n`)
    out(tableText(rows))
    out(`\n${totalsText(rows)}\n${chainText(report, chains)}\n`)
  }
  if (q.format !== 'table') err(`${totalsText(rows)}\n${chainText(report, chains)}\n`)
  else if (!intact) err(`nasguard: the audit chain is not intact (${report.problems.length} problem(s)): the report lists what could be verified record by record\n`)
  return intact ? 0 : 1
}
