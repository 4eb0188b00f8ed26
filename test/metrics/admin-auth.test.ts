// The admin listener can require a bearer token or Basic auth; /healthz
// stays open (it says nothing), /metrics and /readyz do not.
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startStubNas, startTestGateway } from '../helpers/gateway.js'
import { loadConfig, ConfigError } from '../../src/config/load.js'

const dir = mkdtempSync(join(tmpdir(), 'nasguard-admin-'))
writeFileSync(join(dir, 'token'), 'admin-token-0123456789abcdef\n')
writeFileSync(join(dir, 'password'), 'scrape-pass\n')

t.test('bearer token', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { admin: { tokenFile: join(dir, 'token') } })
  const table: Array<[string, Record<string, string>, number]> = [
    ['/metrics', {}, 401],
    ['/metrics', { authorization: 'Bearer wrong' }, 401],
    ['/metrics', { authorization: 'Bearer admin-token-0123456789abcdef' }, 200],
    ['/readyz', {}, 401],
    ['/readyz', { authorization: 'Bearer admin-token-0123456789abcdef' }, 200],
    ['/healthz', {}, 200]
  ]
  for (const [path, headers, status] of table) {
    const res = await fetch(gw.adminUrl + path, { headers })
    t.equal(res.status, status, `${path} ${headers.authorization ?? '(none)'} → ${status}`)
    if (status === 401) t.notMatch(await res.text(), /nasguard_/, 'no metrics in the refusal')
  }
})

t.test('basic auth', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { admin: { basicAuth: { username: 'prometheus', passwordFile: join(dir, 'password') } } })
  const good = 'Basic ' + Buffer.from('prometheus:scrape-pass').toString('base64')
  const bad = 'Basic ' + Buffer.from('prometheus:nope').toString('base64')
  t.equal((await fetch(gw.adminUrl + '/metrics', { headers: { authorization: good } })).status, 200)
  t.equal((await fetch(gw.adminUrl + '/metrics', { headers: { authorization: bad } })).status, 401)
  const none = await fetch(gw.adminUrl + '/metrics')
  t.equal(none.status, 401)
  t.match(none.headers.get('www-authenticate'), /^Basic /)
})

t.test('token and basic auth together are a config error', async (t) => {
  t.throws(() => loadConfig({
    object: {
      tls: { cert: '/dev/null', key: '/dev/null' },
      upstream: { url: 'http://127.0.0.1:9' },
      auth: { jwt: { secret: 'x'.repeat(32) } },
      policy: [{ name: 'r', path: '/a/**', scopes: ['s'] }],
      audit: { dir: dir },
      admin: { tokenFile: join(dir, 'token'), basicAuth: { username: 'u', passwordFile: join(dir, 'password') } }
    }
  }), ConfigError)
})
