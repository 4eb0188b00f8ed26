// The PROXY protocol parser (src/tls/proxy-protocol.ts) against vectors
// written from the spec (haproxy.org/download/2.8/doc/proxy-protocol.txt):
// v2 PROXY and LOCAL, v1 TCP4/TCP6/UNKNOWN, every prefix of a valid header
// is "incomplete" (never a verdict on half a header), and each malformed
// shape is refused with its problem. The socket side is in
// test/tls/proxied-clients.test.ts.
import t from 'tap'
import { MAX_V1_BYTES, MAX_V2_BYTES, TrustedProxies, V2_SIGNATURE, formatIPv6, parseProxyHeader, trustListProblems } from '../../src/tls/proxy-protocol.js'

/** A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block. */
function v2 (command: number, family: number, block: Buffer, version = 2): Buffer {
  const len = Buffer.alloc(2)
  len.writeUInt16BE(block.length)
  return Buffer.concat([V2_SIGNATURE, Buffer.from([(version << 4) | command, family]), len, block])
}

function inet (src: number[], dst: number[], sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12)
  Buffer.from(src).copy(b, 0)
  Buffer.from(dst).copy(b, 4)
  b.writeUInt16BE(sport, 8)
  b.writeUInt16BE(dport, 10)
  return b
}

function inet6 (src: Buffer, dst: Buffer, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36)
  src.copy(b, 0)
  dst.copy(b, 16)
  b.writeUInt16BE(sport, 32)
  b.writeUInt16BE(dport, 34)
  return b
}

const CLIENT4 = v2(1, 0x11, inet([203, 0, 113, 7], [10, 0, 0, 11], 51234, 443))

t.test('v2 PROXY over TCP/IPv4 names the client, and the header length', async (t) => {
  const tail = Buffer.from([0x16, 0x03, 0x01])
  t.same(parseProxyHeader(Buffer.concat([CLIENT4, tail])), { kind: 'proxied', length: 28, source: { address: '203.0.113.7', port: 51234, family: 'IPv4' } })
})

t.test('v2 PROXY over TCP/IPv6, with TLVs after the addresses', async (t) => {
  const src = Buffer.from('20010db8000000000000000000000007', 'hex')
  const dst = Buffer.from('20010db8000000000000000000000001', 'hex')
  const tlv = Buffer.from([0x04, 0x00, 0x00]) // PP2_TYPE_NOOP, empty
  const h = v2(1, 0x21, Buffer.concat([inet6(src, dst, 4000, 443), tlv]))
  t.same(parseProxyHeader(h), { kind: 'proxied', length: 16 + 39, source: { address: '2001:db8::7', port: 4000, family: 'IPv6' } })
  const mapped = Buffer.from('00000000000000000000ffffcb007107', 'hex')
  t.same(parseProxyHeader(v2(1, 0x21, inet6(mapped, dst, 1, 443))), { kind: 'proxied', length: 52, source: { address: '::ffff:203.0.113.7', port: 1, family: 'IPv6' } })
})

t.test('v2 LOCAL (health checks) keeps the proxy, whatever family it names', async (t) => {
  t.same(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0))), { kind: 'local', length: 16 })
  t.same(parseProxyHeader(v2(0, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2))), { kind: 'local', length: 28 })
})

t.test('v1 TCP4, TCP6 and UNKNOWN', async (t) => {
  const line = 'PROXY TCP4 203.0.113.7 10.0.0.11 51234 443\r\n'
  t.same(parseProxyHeader(Buffer.from(line + 'rest')), { kind: 'proxied', length: line.length, source: { address: '203.0.113.7', port: 51234, family: 'IPv4' } })
  const six = 'PROXY TCP6 2001:DB8:0:0:0:0:0:7 2001:db8::1 1 443\r\n'
  t.same(parseProxyHeader(Buffer.from(six)), { kind: 'proxied', length: six.length, source: { address: '2001:db8::7', port: 1, family: 'IPv6' } })
  t.same(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { kind: 'local', length: 15 })
})

t.test('every strict prefix of a valid header is incomplete, not a verdict', async (t) => {
  const v1 = Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.11 51234 443\r\n')
  for (const h of [CLIENT4, v1]) {
    for (let n = 0; n < h.length; n++) {
      const r = parseProxyHeader(h.subarray(0, n))
      if (r.kind !== 'incomplete') t.fail(`prefix of ${n} bytes gave ${JSON.stringify(r)}`)
    }
  }
})

t.test('malformed headers are refused with their problem', async (t) => {
  const cases: Array<[string, Buffer, string]> = [
    ['a TLS ClientHello (no header)', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5]), 'missing'],
    ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\n'), 'missing'],
    ['wrong v2 signature', Buffer.concat([Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0b]), CLIENT4.subarray(12)]), 'missing'],
    ['v2 with version 1', v2(1, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 1), 'version'],
    ['v2 with command 2', v2(2, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), 'version'],
    ['v2 PROXY for AF_UNIX', v2(1, 0x31, Buffer.alloc(216)), 'family'],
    ['v2 PROXY for AF_UNSPEC', v2(1, 0x00, Buffer.alloc(0)), 'family'],
    ['v2 PROXY over UDP', v2(1, 0x12, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), 'family'],
    ['v2 IPv4 with a length too short for its addresses', v2(1, 0x11, Buffer.alloc(8)), 'length'],
    ['v2 IPv6 with a length too short for its addresses', v2(1, 0x21, Buffer.alloc(12)), 'length'],
    ['v2 length 65535 (answered at once, not waited for)', Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]), 'length'],
    ['v2 length just over the bound', Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11]), Buffer.from([(MAX_V2_BYTES - 15) >> 8, (MAX_V2_BYTES - 15) & 0xff])]), 'length'],
    ['v1 without CRLF within 107 bytes', Buffer.from('PROXY TCP4 ' + '1'.repeat(MAX_V1_BYTES)), 'malformed'],
    ['v1 with a bad address', Buffer.from('PROXY TCP4 203.0.113.999 10.0.0.1 1 2\r\n'), 'malformed'],
    ['v1 with an IPv6 address under TCP4', Buffer.from('PROXY TCP4 ::1 10.0.0.1 1 2\r\n'), 'malformed'],
    ['v1 with a port over 65535', Buffer.from('PROXY TCP4 1.2.3.4 10.0.0.1 65536 2\r\n'), 'malformed'],
    ['v1 with a leading-zero port', Buffer.from('PROXY TCP4 1.2.3.4 10.0.0.1 080 2\r\n'), 'malformed'],
    ['v1 with a field missing', Buffer.from('PROXY TCP4 1.2.3.4 10.0.0.1 80\r\n'), 'malformed'],
    ['v1 with double spaces', Buffer.from('PROXY TCP4  1.2.3.4 10.0.0.1 80 2\r\n'), 'malformed'],
    ['v1 with a control character', Buffer.from('PROXY TCP4 1.2.3.4\t10.0.0.1 80 2\r\n'), 'malformed'],
    ['v1 with an unknown protocol', Buffer.from('PROXY UDP4 1.2.3.4 10.0.0.1 80 2\r\n'), 'family']
  ]
  for (const [name, input, problem] of cases) t.same(parseProxyHeader(input), { kind: 'invalid', problem }, name)
})

t.test('IPv6 spelled as Node spells a peer', async (t) => {
  const f = (hex: string): string => formatIPv6(Buffer.from(hex, 'hex'))
  t.equal(f('00000000000000000000000000000001'), '::1')
  t.equal(f('20010db8000000010000000000000000'), '2001:db8:0:1::')
  t.equal(f('20010db8000000010001000100010001'), '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed')
  t.equal(f('20010000000000010000000000000001'), '2001:0:0:1::1', 'the longest run is compressed')
})

t.test('trusted proxies: addresses and CIDRs, IPv4-mapped peers match IPv4 entries', async (t) => {
  const list = new TrustedProxies(['127.0.0.1', '10.0.0.0/24', 'fd12::/16'])
  t.ok(list.includes('127.0.0.1'))
  t.ok(list.includes('::ffff:127.0.0.1'))
  t.ok(list.includes('10.0.0.200'))
  t.ok(list.includes('fd12::3'))
  t.notOk(list.includes('127.0.0.2'))
  t.notOk(list.includes('10.0.1.1'))
  t.notOk(list.includes(undefined))
  t.same(trustListProblems(['127.0.0.1', '10.0.0.0/24', '::1/128'], 'k'), [])
  t.same(trustListProblems(['haproxy.lan', '10.0.0.0/33', '10.0.0.0/08', '1.2.3.4/8/1', ''], 'k').map((p) => p.key), ['k[0]', 'k[1]', 'k[2]', 'k[3]', 'k[4]'])
})

t.test('a trust list never reaches past what it names: IPv6 ranges never match IPv4 peers, no mapped ranges, nothing too wide', async (t) => {
  // Node's BlockList checks an IPv4 address against IPv6 rules as ::ffff:a.b.c.d.
  const v6 = new TrustedProxies(['2001:db8::/64', '::1'])
  for (const peer of ['8.8.8.8', '::ffff:8.8.8.8', '127.0.0.1', '0.0.0.1']) t.notOk(v6.includes(peer), `${peer} is not trusted by IPv6 entries`)
  t.ok(v6.includes('2001:db8::5'))
  const wrong = trustListProblems(['::/0', '0.0.0.0/0', '10.0.0.0/7', '::ffff:10.0.0.0/8', '::ffff:0.0.0.0/96', 'fe80::1%eth0'], 'k')
  t.same(wrong.map((p) => p.key), ['k[0]', 'k[1]', 'k[2]', 'k[3]', 'k[4]', 'k[5]'], 'each refused')
  t.match(wrong[1].reason, /too wide/)
  t.match(wrong[3].reason, /write it as IPv4/)
  t.same(trustListProblems(['::ffff:10.0.0.1', '10.0.0.0/8', '2001:db8::/16'], 'k'), [], 'a single mapped address, /8 and /16 pass')
  // An IPv6 range that holds IPv4-mapped addresses would, in a matcher that maps IPv4 peers (proxy-addr's), trust IPv4 hosts.
  const mapped = trustListProblems(['::/64', '::ffff:0:0/96', '::ffff:0:0/97', '::ffff:7f00:1', '0:0:0:0:0:ffff:a00:0/104'], 'k')
  t.same(mapped.map((p) => p.key), ['k[0]', 'k[1]', 'k[2]', 'k[3]', 'k[4]'], 'every range holding mapped addresses is refused')
  for (const p of mapped) t.match(p.reason, /holds IPv4-mapped addresses/)
})

t.test('v1 addresses with zone ids are refused, and every IPv6 address is spelled as Node spells it', async (t) => {
  // isIPv6 accepts zones holding ':' and '.': they once reached a hand-written expander.
  for (const zone of ['fe80::1%a:b:c:d:e:f:0:1:2', 'fe80::%1.2.3.4', '::%eth0:ffff:ffff', 'fe80::1%eth0']) {
    t.same(parseProxyHeader(Buffer.from(`PROXY TCP6 ${zone} ::1 1 2\r\n`)), { kind: 'invalid', problem: 'malformed' }, zone)
  }
  const v1 = parseProxyHeader(Buffer.from('PROXY TCP6 0:0:0:0:0:0:0102:0304 ::1 1 2\r\n'))
  const v2 = parseProxyHeader(Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x21, 0, 36]), Buffer.from('00000000000000000000000001020304', 'hex'), Buffer.alloc(16), Buffer.from([0, 1, 0, 2])]))
  t.match(v1, { kind: 'proxied', source: { address: '::1.2.3.4' } }, 'v1: one spelling')
  t.match(v2, { kind: 'proxied', source: { address: '::1.2.3.4' } }, 'v2: the same spelling')
})

t.test('listen.trustedProxies (X-Forwarded-For) beside listen.proxyProtocol is a config error', async (t) => {
  const { loadConfig } = await import('../../src/config/load.js')
  const { testCerts } = await import('../helpers/certs.js')
  const certs = testCerts()
  const object = { listen: { trustedProxies: ['127.0.0.1'], proxyProtocol: { trustedProxies: ['127.0.0.1'] } }, tls: { cert: certs.cert, key: certs.key }, upstream: { url: 'http://127.0.0.1:9' }, auth: { jwt: { secret: 'x'.repeat(32) } }, policy: [{ name: 'r', path: '/medicall/**', scopes: ['s'] }], audit: { dir: '/tmp/unused-audit' } }
  t.throws(() => loadConfig({ object }), /listen\.trustedProxies.*X-Forwarded-For header can only come from the client/)
  t.throws(() => loadConfig({ object: { ...object, listen: { proxyProtocol: { trustedProxies: ['0.0.0.0/0'] } } } }), /listen\.proxyProtocol\.trustedProxies\[0\].*too wide/)
})
