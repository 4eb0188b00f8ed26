// The PROXY protocol (HAProxy's `send-proxy-v2`, also v1 text), as specified
// in https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt: a load
// balancer that passes TLS through (mode tcp) writes one header before the
// client's bytes, naming the client's address and port. Pure functions: the
// socket side is src/tls/front-door.ts.
//
// Framing is the security-relevant part, so it is explicit here: how many
// bytes a header may take (v1: 107, spec §2.1; v2: 16 + its length, bounded
// by MAX_V2_BYTES), and a header that lies about its length or its family is
// refused, never skipped over.
import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net'

/** v2 signature, spec §2.2: \r\n\r\n\0\r\nQUIT\n. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
/** Spec §2.1: the longest v1 line, CRLF included. */
export const MAX_V1_BYTES = 107
/**
 * A v2 header's fixed 16 bytes plus addresses and TLVs. Spec §2.2 asks
 * receivers to take at least 536 (UNIX addresses); HAProxy's optional TLVs
 * (unique id, SSL details) stay well under 2 KiB.
 */
export const MAX_V2_BYTES = 16 + 2048

export type ProxyHeaderProblem =
  /** The connection did not start with a PROXY header at all. */
  | 'missing'
  /** v2: a version other than 2, or a command other than LOCAL or PROXY. */
  | 'version'
  /** PROXY command for a family other than TCP over IPv4 or IPv6 (UNIX, UDP, unspecified). */
  | 'family'
  /** The length field is too short for the family's addresses, or longer than MAX_V2_BYTES. */
  | 'length'
  /** v1: no CRLF within 107 bytes, wrong field count, an address or port that does not parse. */
  | 'malformed'

export interface ProxiedSource {
  address: string
  port: number
  family: 'IPv4' | 'IPv6'
}

export type ProxyHeaderResult =
  /** More bytes are needed (never more than the bound allows). */
  | { kind: 'incomplete' }
  | { kind: 'invalid', problem: ProxyHeaderProblem }
  /** LOCAL (v2) or UNKNOWN (v1): the proxy speaks for itself (health checks); its own address stands. */
  | { kind: 'local', length: number }
  | { kind: 'proxied', length: number, source: ProxiedSource }

/** Whether `buf` so far agrees with the start of `prefix`. */
function startsLike (buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length)
  return buf.subarray(0, n).equals(prefix.subarray(0, n))
}

/**
 * Reads the PROXY header at the start of `buf` (what has arrived so far).
 * `length` in a complete result is how many bytes the header took; the
 * client's own bytes follow it.
 */
export function parseProxyHeader (buf: Buffer): ProxyHeaderResult {
  if (buf.length === 0) return { kind: 'incomplete' }
  if (startsLike(buf, V2_SIGNATURE)) return parseV2(buf)
  if (startsLike(buf, V1_PREFIX)) return parseV1(buf)
  return { kind: 'invalid', problem: 'missing' }
}

function parseV2 (buf: Buffer): ProxyHeaderResult {
  if (buf.length < 16) return { kind: 'incomplete' }
  const version = buf[12] >> 4
  const command = buf[12] & 0x0f
  if (version !== 2 || command > 1) return { kind: 'invalid', problem: 'version' }
  const addressLength = buf.readUInt16BE(14)
  const length = 16 + addressLength
  if (length > MAX_V2_BYTES) return { kind: 'invalid', problem: 'length' }
  if (buf.length < length) return { kind: 'incomplete' }
  // LOCAL: addresses (if any) are skipped, as the spec asks.
  if (command === 0) return { kind: 'local', length }
  const family = buf[13] >> 4
  const transport = buf[13] & 0x0f
  if (transport !== 1) return { kind: 'invalid', problem: 'family' }
  if (family === 1) {
    if (addressLength < 12) return { kind: 'invalid', problem: 'length' }
    const address = [...buf.subarray(16, 20)].join('.')
    return { kind: 'proxied', length, source: { address, port: buf.readUInt16BE(24), family: 'IPv4' } }
  }
  if (family === 2) {
    if (addressLength < 36) return { kind: 'invalid', problem: 'length' }
    return { kind: 'proxied', length, source: { address: formatIPv6(buf.subarray(16, 32)), port: buf.readUInt16BE(48), family: 'IPv6' } }
  }
  return { kind: 'invalid', problem: 'family' }
}

function parseV1 (buf: Buffer): ProxyHeaderResult {
  const end = buf.subarray(0, MAX_V1_BYTES).indexOf('\r\n')
  if (end < 0) return buf.length >= MAX_V1_BYTES ? { kind: 'invalid', problem: 'malformed' } : { kind: 'incomplete' }
  const length = end + 2
  const line = buf.subarray(0, end)
  // Printable ASCII only: the fields are later compared and logged.
  if (line.some((b) => b < 0x20 || b > 0x7e)) return { kind: 'invalid', problem: 'malformed' }
  const fields = line.toString('latin1').split(' ')
  // Spec §2.1: after UNKNOWN the receiver ignores the rest of the line.
  if (fields[1] === 'UNKNOWN') return { kind: 'local', length }
  if (fields.length !== 6) return { kind: 'invalid', problem: 'malformed' }
  const [, proto, source, , sourcePort, destinationPort] = fields
  const destination = fields[3]
  const family = proto === 'TCP4' ? 'IPv4' : proto === 'TCP6' ? 'IPv6' : undefined
  if (family === undefined) return { kind: 'invalid', problem: 'family' }
  const valid = family === 'IPv4' ? isIPv4 : isIPv6
  if (!valid(source) || !valid(destination)) return { kind: 'invalid', problem: 'malformed' }
  const port = v1Port(sourcePort)
  if (port === undefined || v1Port(destinationPort) === undefined) return { kind: 'invalid', problem: 'malformed' }
  return { kind: 'proxied', length, source: { address: family === 'IPv6' ? normalizeIPv6(source) : source, port, family } }
}

function v1Port (s: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(s)) return undefined
  const n = Number(s)
  return n <= 65535 ? n : undefined
}

/** Node's spelling of an IPv6 peer: lowercase, zeros compressed, IPv4-mapped as ::ffff:a.b.c.d. */
export function formatIPv6 (bytes: Buffer): string {
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i))
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${[...bytes.subarray(12, 16)].join('.')}`
  let best = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) { best = i; bestLength = j - i }
    i = j > i ? j : i + 1
  }
  const hex = groups.map((g) => g.toString(16))
  if (best < 0) return hex.join(':')
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLength).join(':')}`
}

function normalizeIPv6 (address: string): string {
  const bytes = Buffer.alloc(16)
  // Expand via the 8 groups (an embedded IPv4 tail counts as two).
  let text = address
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4) {
    const o = v4[1].split('.').map(Number)
    text = text.slice(0, -v4[1].length) + `${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined]
  const h = head ? head.split(':') : []
  const tl = tail === undefined ? [] : tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - tl.length).fill('0'), ...tl]
  groups.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), i * 2))
  return formatIPv6(bytes)
}

/** An IPv4 peer on a dual-stack listener shows as ::ffff:a.b.c.d; trust entries are written plain. */
function plainAddress (address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  return m ? m[1] : address
}

/** Problems with listen.proxyProtocol.trustedProxies entries: each an address or a CIDR. */
export function trustListProblems (entries: readonly string[], key: string): Array<{ key: string, reason: string }> {
  const problems: Array<{ key: string, reason: string }> = []
  entries.forEach((entry, i) => {
    if (parseTrustEntry(entry) === undefined) problems.push({ key: `${key}[${i}]`, reason: `is not an IP address or CIDR (like 10.0.0.0/24 or fd00::/8): ${JSON.stringify(entry)}` })
  })
  return problems
}

interface TrustEntry { address: string, prefix: number, family: 'ipv4' | 'ipv6' }

function parseTrustEntry (entry: string): TrustEntry | undefined {
  const [address, prefixText, extra] = entry.split('/')
  if (extra !== undefined) return undefined
  const plain = plainAddress(address)
  const kind = isIP(plain)
  if (kind === 0) return undefined
  const max = kind === 4 ? 32 : 128
  if (prefixText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined
  const prefix = prefixText === undefined ? max : Number(prefixText)
  if (prefix > max) return undefined
  return { address: plain, prefix, family: kind === 4 ? 'ipv4' : 'ipv6' }
}

/** The proxies whose PROXY headers are believed. Entries must have passed trustListProblems. */
export class TrustedProxies {
  private readonly list = new BlockList()

  constructor (entries: readonly string[]) {
    for (const entry of entries) {
      const e = parseTrustEntry(entry)
      if (e === undefined) throw new Error(`listen.proxyProtocol.trustedProxies: not an IP address or CIDR: ${JSON.stringify(entry)}`)
      this.list.addSubnet(e.address, e.prefix, e.family)
    }
  }

  includes (address: string | undefined): boolean {
    if (address === undefined) return false
    const plain = plainAddress(address)
    const kind = isIP(plain)
    if (kind === 0) return false
    return this.list.check(plain, kind === 4 ? 'ipv4' : 'ipv6')
  }
}
