// The audit trail's tamper evidence. Every line is one JSON record that
// carries a sequence number, the SHA-256 of the previous line, and an
// HMAC-SHA256 over its own content under the audit key (kept apart from the
// JWT keys). Editing a record breaks its MAC; deleting, inserting or
// reordering records breaks the sequence and the hash chain; without the
// key none of it can be repaired. Pure functions.
import { createHmac, hash, timingSafeEqual, type KeyObject } from 'node:crypto'

export const GENESIS = '0'.repeat(64)

export function lineHash (line: string): string {
  return hash('sha256', line, 'hex')
}

function mac (key: Buffer | KeyObject, body: string): string {
  return createHmac('sha256', key).update(body).digest('hex')
}

/** A record's closing fields (a writer's `instance`) as JSON text, made once per fields object. */
interface TailText { keys: readonly string[], text: string }
const tailTexts = new WeakMap<object, TailText | null>()

/**
 * The fields' JSON members, `"k":v,` each (none for an undefined value, as
 * JSON.stringify leaves them out); null when a key is an array index or
 * seq or prev, which a spread would place or overwrite otherwise.
 */
function tailTextOf (fields: Readonly<Record<string, unknown>>): TailText | null {
  let known = tailTexts.get(fields)
  if (known !== undefined) return known
  const keys = Object.keys(fields)
  let text = ''
  for (const k of keys) {
    const value = JSON.stringify(fields[k])
    if (value !== undefined) text += `${JSON.stringify(k)}:${value},`
  }
  known = keys.some((k) => k === 'seq' || k === 'prev' || /^(?:0|[1-9]\d*)$/.test(k)) ? null : { keys, text }
  tailTexts.set(fields, known)
  return known
}

const NO_FIELDS: TailText = { keys: [], text: '' }

/**
 * The JSON text of `{ ...record, ...fields, seq, prev }`, without making
 * that object: a spread that adds fields after a dozen of a record's own
 * takes V8's slow path, and so did adding them one by one (together 3-9 µs
 * a record, more than the MAC). The fields' text is made once per fields
 * object (a writer passes the same one every time). A record that holds
 * one of the added keys already (where a spread keeps the record's place
 * for it), an array or an object with its own JSON form is spread.
 */
function jsonWith (record: object, fields: Readonly<Record<string, unknown>> | undefined, seq: number, prev: string): string {
  const tail = fields === undefined ? NO_FIELDS : tailTextOf(fields)
  if (tail === null || Object.hasOwn(record, 'seq') || Object.hasOwn(record, 'prev') || tail.keys.some((k) => Object.hasOwn(record, k)) ||
    Array.isArray(record) || typeof (record as { toJSON?: unknown }).toJSON === 'function') {
    return JSON.stringify({ ...record, ...fields, seq, prev })
  }
  const own = JSON.stringify(record) as string | undefined
  // (A boxed primitive is not written as an object: spread too. No record is one.)
  if (own?.charCodeAt(0) !== 0x7b) return JSON.stringify({ ...record, ...fields, seq, prev })
  return `${own.length > 2 ? `${own.slice(0, -1)},` : '{'}${tail.text}"seq":${JSON.stringify(seq)},"prev":${JSON.stringify(prev)}}`
}

/**
 * The line for a record: `{...record, ...fields, seq, prev, mac}` without
 * the newline. The MAC covers the JSON text up to (not including) the mac
 * field. `fields` is read once per object: pass a frozen one.
 */
export function seal (record: object, seq: number, prev: string, key: Buffer | KeyObject, fields?: Readonly<Record<string, unknown>>): string {
  const body = jsonWith(record, fields, seq, prev)
  return `${body.slice(0, -1)},"mac":"${mac(key, body)}"}`
}

export interface OpenedLine {
  record: Record<string, unknown> & { seq: number, prev: string }
  hash: string
}

// seal() writes `...,"seq":N,"prev":"<64 hex>","mac":"<64 hex>"}`: the
// tail has a fixed shape, so the chain fields can be read without parsing
// the whole record (verify reads millions of lines).
const MAC_TAIL = /,"mac":"([0-9a-f]{64})"\}$/
const CHAIN_TAIL = /,"seq":(\d{1,15}),"prev":"([0-9a-f]{64})"\}$/

/**
 * A line's record if its MAC holds; why not otherwise. With full: false
 * only seq and prev are read (enough to check the chain); with full: true
 * the whole record is parsed.
 */
export function open (line: string, key: Buffer, full = true): { ok: true, value: OpenedLine } | { ok: false, reason: 'unparsable' | 'bad-mac' } {
  // `,"mac":"` (8) + 64 hex digits + `"}` (2)
  const macTail = 74
  const m = line.length > macTail ? MAC_TAIL.exec(line.slice(-macTail)) : null
  if (!m) return { ok: false, reason: 'unparsable' }
  const body = line.slice(0, line.length - macTail) + '}'
  const tail = CHAIN_TAIL.exec(body.slice(-100))
  if (!tail) return { ok: false, reason: 'unparsable' }
  let record: OpenedLine['record']
  if (full) {
    try {
      record = JSON.parse(body) as OpenedLine['record']
    } catch {
      return { ok: false, reason: 'unparsable' }
    }
    if (typeof record.seq !== 'number' || typeof record.prev !== 'string') return { ok: false, reason: 'unparsable' }
  } else {
    record = { seq: Number(tail[1]), prev: tail[2] }
  }
  const expected = Buffer.from(mac(key, body), 'hex')
  if (!timingSafeEqual(expected, Buffer.from(m[1], 'hex'))) return { ok: false, reason: 'bad-mac' }
  return { ok: true, value: { record, hash: lineHash(line) } }
}
