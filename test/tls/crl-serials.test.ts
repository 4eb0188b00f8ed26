// A CRL lists each revoked serial as the positive DER INTEGER the
// certificate carries (RFC 5280 §4.1.2.2, X.690 §8.3): a serial whose first
// byte has its high bit set gets a leading 00. Without it openssl reads the
// serial as negative, it matches no certificate, and the revoked
// certificate verifies (seen once when a random serial began with 0xeb).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildCrl, createCa } from '../../src/tls/certificates.js'

t.test('revoked serials are listed as the positive numbers they are, whatever their first byte', async (t) => {
  const ca = createCa('serials test CA')
  const serials = ['eb259cd6c2513d75bb7b8df95dceed', '80', 'ff00ff', '7f1234', '00a1b2', 'abc']
  const crl = buildCrl(ca, serials.map((serial) => ({ serial, revokedAt: '2026-11-01T00:00:00Z' })))
  const file = join(mkdtempSync(join(tmpdir(), 'nasguard-crl-')), 'ca.crl')
  writeFileSync(file, crl)
  const out = spawnSync('openssl', ['crl', '-in', file, '-noout', '-text'], { encoding: 'utf8' })
  t.equal(out.status, 0, 'openssl reads the CRL')
  const listed = [...out.stdout.matchAll(/Serial Number: (\S+)/g)].map((m) => m[1])
  const expected = serials.map((s) => BigInt('0x' + s).toString(16).toUpperCase()).map((h) => (h.length % 2 ? '0' + h : h))
  t.same(listed, expected, 'each serial as a positive hex number, none negative')
  t.notOk(listed.some((s) => s.startsWith('-')), 'no negative serial')
})
