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
import { BlockList, SocketAddress, isIP, isIPv4, isIPv6 } from 'node:net'

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
  // No zone ids (HAProxy sends none; "%eth0:…" would pass isIPv6).
  if (!valid(source) || !valid(destination) || source.includes('%') || destination.includes('%')) return { kind: 'invalid', problem: 'malformed' }
  const port = v1Port(sourcePort)
  if (port === undefined || v1Port(destinationPort) === undefined) return { kind: 'invalid', problem: 'malformed' }
  const address = family === 'IPv6' ? canonicalIPv6(source) : source
  if (address === undefined) return { kind: 'invalid', problem: 'malformed' }
  return { kind: 'proxied', length, source: { address, port, family } }
}

function v1Port (s: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(s)) return undefined
  const n = Number(s)
  return n <= 65535 ? n : undefined
}

/** Node's own spelling of an IPv6 address (what socket.remoteAddress would say), or undefined. */
function canonicalIPv6 (text: string): string | undefined {
  try {
    return new SocketAddress({ address: text, family: 'ipv6' }).address
  } catch {
    return undefined
  }
}

/** Node's spelling of an IPv6 peer given its 16 bytes: lowercase, zeros compressed, ::ffff:a.b.c.d. */
export function formatIPv6 (bytes: Buffer): string {
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16))
  // Eight hex groups always parse.
  return canonicalIPv6(groups.join(':')) as string
}

/** An IPv4 peer on a dual-stack listener shows as ::ffff:a.b.c.d; trust entries are written plain. */
function plainAddress (address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  return m ? m[1] : address
}

/**
 * The shortest prefix accepted: a trust entry that wide names clients, not
 * load balancers, and any host in it could claim to be anyone.
 */
const MIN_PREFIX = { ipv4: 8, ipv6: 16 }

/**
 * Problems with a list of trusted proxies (listen.proxyProtocol.trustedProxies,
 * and listen.trustedProxies, whose X-Forwarded-For names the audit's client):
 * each an address or a CIDR no wider than MIN_PREFIX.
 */
export function trustListProblems (entries: readonly string[], key: string): Array<{ key: string, reason: string }> {
  const problems: Array<{ key: string, reason: string }> = []
  entries.forEach((entry, i) => {
    const e = parseTrustEntry(entry)
    if (typeof e === 'string') problems.push({ key: `${key}[${i}]`, reason: `${e}: ${JSON.stringify(entry)}` })
  })
  return problems
}

interface TrustEntry { address: string, prefix: number, family: 'ipv4' | 'ipv6' }

/** The entry, or what is wrong with it. */
function parseTrustEntry (entry: string): TrustEntry | string {
  const [address, prefixText, extra] = entry.split('/')
  const bad = 'is not an IP address or CIDR (like 10.0.0.0/24 or fd00::/8)'
  if (extra !== undefined || address.includes('%')) return bad
  const plain = plainAddress(address)
  // ::ffff:10.0.0.0/8 would silently mean 10.0.0.0/8: write IPv4 as IPv4.
  if (plain !== address && prefixText !== undefined) return 'is an IPv4-mapped range: write it as IPv4 (10.0.0.0/8)'
  const kind = isIP(plain)
  if (kind === 0) return bad
  const family = kind === 4 ? 'ipv4' : 'ipv6'
  const max = kind === 4 ? 32 : 128
  if (prefixText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return bad
  const prefix = prefixText === undefined ? max : Number(prefixText)
  if (prefix > max) return bad
  if (prefix < MIN_PREFIX[family]) return `is too wide (/${prefix}): list the load balancers' own addresses, any host in the range could claim to be any client`
  if (family === 'ipv6' && overlapsMapped(plain, prefix)) return 'holds IPv4-mapped addresses (::ffff:0:0/96): write IPv4 addresses and ranges as IPv4 (10.0.0.0/8)'
  return { address: plain, prefix, family }
}

/** The IPv4-mapped block, ::ffff:0:0/96. */
const MAPPED = new BlockList()
MAPPED.addSubnet('::ffff:0:0', 96, 'ipv6')

/** Whether an IPv6 range and ::ffff:0:0/96 share an address (one holds the other, as CIDR blocks do). */
function overlapsMapped (address: string, prefix: number): boolean {
  if (prefix >= 96) return MAPPED.check(address, 'ipv6')
  const range = new BlockList()
  range.addSubnet(address, prefix, 'ipv6')
  return range.check('::ffff:0:0', 'ipv6')
}

/**
 * The proxies whose PROXY headers are believed. Entries must have passed
 * trustListProblems. IPv4 and IPv6 are kept apart: Node's BlockList checks
 * an IPv4 address against IPv6 rules in its ::ffff: form, so ::/64 would
 * otherwise trust every IPv4 host.
 */
export class TrustedProxies {
  private readonly lists = { ipv4: new BlockList(), ipv6: new BlockList() }

  /** @param key the config key the entries come from, for the error */
  constructor (entries: readonly string[], key = 'listen.proxyProtocol.trustedProxies') {
    for (const entry of entries) {
      const e = parseTrustEntry(entry)
      if (typeof e === 'string') throw new Error(`${key}: ${JSON.stringify(entry)} ${e}`)
      this.lists[e.family].addSubnet(e.address, e.prefix, e.family)
    }
  }

  includes (address: string | undefined): boolean {
    if (address === undefined) return false
    const plain = plainAddress(address)
    const kind = isIP(plain)
    if (kind === 0) return false
    const family = kind === 4 ? 'ipv4' : 'ipv6'
    return this.lists[family].check(plain, family)
  }
}
