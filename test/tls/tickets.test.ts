// Session ticket keys shared by workers are derived from a shared secret
// and the files in use: every worker arrives at the same keys (a ticket
// from one resumes on another), and any reload of the certificate, the
// client CA or the CRL gives new keys, so no session resumed from an older
// ticket skips a new CRL (a resumed session is not checked against it).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config/load.js'
import { createTlsServer } from '../../src/tls/server.js'
import { buildCrl, createCa, issueServerCert, writeKeyFile } from '../../src/tls/certificates.js'

const hooks = { onPlaintext: () => false, onClientConnectionsRefused: () => {}, onHandshakeFailure: () => {}, onCertificate: () => {}, onReloadFailure: () => {}, onProtocolResets: () => {}, onUnroutedMethod: () => ({ status: 405, body: { error: 'x', message: 'x' }, headers: {} }) }

t.test('shared ticket keys: equal across servers on the same files, new after every reload', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-tickets-'))
  const ca = createCa('tickets CA')
  const server = issueServerCert(ca, ['localhost'])
  writeFileSync(join(dir, 'server.crt'), server.certPem)
  writeKeyFile(join(dir, 'server.key'), server.keyPem)
  writeFileSync(join(dir, 'ca.crt'), ca.certPem)
  writeFileSync(join(dir, 'ca.crl'), buildCrl(ca, []))
  const config = loadConfig({
    object: {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), clientAuth: 'optional', clientCa: join(dir, 'ca.crt'), clientCrl: join(dir, 'ca.crl'), watch: false },
      upstream: { url: 'http://127.0.0.1:9' },
      auth: { jwt: { secret: 'x'.repeat(40) } },
      policy: [{ name: 'r', path: '/medicall/**', scopes: ['s'] }],
      audit: { dir: join(dir, 'audit') }
    }
  })
  const secret = randomBytes(48)
  const a = createTlsServer(config, () => {}, { ...hooks, ticketKeys: secret })
  const b = createTlsServer(config, () => {}, { ...hooks, ticketKeys: secret })
  const other = createTlsServer(config, () => {}, { ...hooks, ticketKeys: randomBytes(48) })
  const solo = createTlsServer(config, () => {}, hooks)
  t.teardown(() => { for (const s of [a, b, other, solo]) s.stopWatching() })

  const keysA = a.server.getTicketKeys()
  t.same(b.server.getTicketKeys(), keysA, 'two workers, one secret, the same files: the same ticket keys')
  t.notSame(other.server.getTicketKeys(), keysA, 'another secret: other keys')
  t.notSame(solo.server.getTicketKeys(), keysA, 'no shared secret: Node\'s own random keys')

  // A client certificate is revoked: the CRL changes, both workers reload.
  writeFileSync(join(dir, 'ca.crl'), buildCrl(ca, [{ serial: '0a', revokedAt: new Date().toISOString() }]))
  t.equal(a.reload(), true)
  t.equal(b.reload(), true)
  const afterCrl = a.server.getTicketKeys()
  t.notSame(afterCrl, keysA, 'a new CRL: new ticket keys (older tickets no longer resume)')
  t.same(b.server.getTicketKeys(), afterCrl, 'and still the same in every worker')

  // A renewed server certificate: new keys again.
  const renewed = issueServerCert(ca, ['localhost'])
  writeFileSync(join(dir, 'server.crt'), renewed.certPem)
  writeKeyFile(join(dir, 'server.key'), renewed.keyPem)
  t.equal(a.reload(), true)
  t.notSame(a.server.getTicketKeys(), afterCrl, 'a new certificate: new ticket keys')

  // A reload of unchanged files keeps them (workers reloading at different moments agree).
  const now = a.server.getTicketKeys()
  t.equal(a.reload(), true)
  t.same(a.server.getTicketKeys(), now, 'unchanged files: unchanged keys')
})
