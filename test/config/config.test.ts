import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, envName, loadConfig } from '../../src/config/load.js'
import { testCerts } from '../helpers/certs.js'

const certs = testCerts()
const SECRET = 'x'.repeat(32)
/** A file that holds no key; an EC P-256 public key; its private key. */
const KEYS_DIR = mkdtempSync(join(tmpdir(), 'nasguard-config-'))
const JUNK = join(KEYS_DIR, 'junk.pem')
writeFileSync(JUNK, 'not a key\n')
const EC = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
const EC_PUBLIC = join(KEYS_DIR, 'ec.pub')
writeFileSync(EC_PUBLIC, EC.publicKey.export({ type: 'spki', format: 'pem' }))
const EC_PRIVATE = join(KEYS_DIR, 'ec.key')
writeFileSync(EC_PRIVATE, EC.privateKey.export({ type: 'pkcs8', format: 'pem' }))
const RSA_PUBLIC = join(KEYS_DIR, 'rsa.pub')
writeFileSync(RSA_PUBLIC, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }))

function base (): Record<string, any> {
  return {
    tls: { cert: certs.cert, key: certs.key },
    upstream: { url: 'http://127.0.0.1:9' },
    auth: { jwt: { secret: SECRET } },
    policy: [{ name: 'r', path: '/medicall/**', scopes: ['recordings:read'] }],
    audit: { dir: '/tmp/nasguard-audit' }
  }
}

function problems (object: unknown, env: NodeJS.ProcessEnv = {}): Array<{ key: string, reason: string }> {
  try {
    loadConfig({ object, env })
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('defaults are filled in and the result is frozen', async (t) => {
  const c = loadConfig({ object: base() })
  t.equal(c.listen.port, 8443)
  t.equal(c.listen.host, '0.0.0.0')
  t.equal(c.tls.profile, 'intermediate')
  t.equal(c.admin.host, '127.0.0.1')
  t.equal(c.audit.durability, 'strict')
  t.same(c.files.extensions, ['.wav', '.mp3'])
  t.same(c.policy[0].methods, ['GET', 'HEAD'])
  t.same(c.auth.jwt.algorithms, ['HS256'])
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.listen) && Object.isFrozen(c.policy[0]))
})

t.test('a public key of the type its algorithms verify with passes', async (t) => {
  t.same(problems({ ...base(), auth: { jwt: { publicKeyFile: EC_PUBLIC, algorithms: ['ES256'] } } }), [])
  t.same(problems({ ...base(), auth: { jwt: { publicKeyFile: RSA_PUBLIC, algorithms: ['RS256', 'PS256'] } } }), [], 'an RSA key for RS256 and PS256')
  t.same(problems({ ...base(), auth: { jwt: { publicKeyFile: certs.cert, algorithms: ['ES256'] } } }), [], 'a certificate (the test CA\'s server certificate, P-256) for ES256')
})

t.test('each bad value is refused naming its key and the reason', async (t) => {
  const table: Array<[string, (c: Record<string, any>) => void, string, RegExp]> = [
    ['port not a number', (c) => { c.listen = { port: 'abc' } }, 'listen.port', /integer/],
    ['port out of range', (c) => { c.listen = { port: 70000 } }, 'listen.port', /<= 65535/],
    ['typo in a key', (c) => { c.listen = { prot: 1 } }, 'listen.prot', /unknown key/],
    ['missing upstream', (c) => { delete c.upstream }, 'upstream', /required/],
    ['upstream not a URL', (c) => { c.upstream.url = 'nas.lan' }, 'upstream.url', /not a URL/],
    ['upstream with a path', (c) => { c.upstream.url = 'http://nas/share' }, 'upstream.url', /origin only/],
    ['upstream ftp', (c) => { c.upstream.url = 'ftp://nas' }, 'upstream.url', /http/],
    ['credentials in the URL', (c) => { c.upstream.url = 'http://u:p@nas' }, 'upstream.url', /credentials/],
    ['password without user', (c) => { c.upstream.password = 'p' }, 'upstream.username', /required/],
    ['bad profile', (c) => { c.tls.profile = 'old' }, 'tls.profile', /must be one of: intermediate, modern \(got "old"\)/],
    ['missing cert file', (c) => { c.tls.cert = '/nonexistent/server.crt' }, 'tls.cert', /cannot read.*ENOENT/],
    ['no jwt key', (c) => { c.auth.jwt = {} }, 'auth.jwt', /no verification key/],
    ['two jwt keys', (c) => { c.auth.jwt.secretFile = '/x' }, 'auth.jwt', /not several/],
    ['keys[] entry without a key', (c) => { c.auth.jwt.keys = [{ algorithms: ['HS256'] }] }, 'auth.jwt.keys[0]', /exactly one/],
    ['keys[] short secret', (c) => { c.auth.jwt.keys = [{ kid: 'a', algorithms: ['HS512'], secret: 'y'.repeat(40) }] }, 'auth.jwt.keys[0].secret', /HS512 secret must be at least 64 bytes/],
    ['keys[] HMAC alg on a public key', (c) => { c.auth.jwt.keys = [{ algorithms: ['HS256'], publicKeyFile: certs.cert }] }, 'auth.jwt.keys[0].algorithms', /key confusion/],
    ['keys[] duplicate kid', (c) => { c.auth.jwt.keys = [{ kid: 'a', algorithms: ['HS256'], secret: SECRET }, { kid: 'a', algorithms: ['HS256'], secret: SECRET }] }, 'auth.jwt.keys', /share a kid/],
    ['JWKS over plain http', (c) => { c.auth.jwt.jwks = { url: 'http://idp.example/jwks.json', algorithms: ['RS256'] } }, 'auth.jwt.jwks.url', /https/],
    ['JWKS with an HMAC algorithm', (c) => { c.auth.jwt.jwks = { url: 'https://idp.example/jwks.json', algorithms: ['HS256'] } }, 'auth.jwt.jwks.algorithms[0]', /must be one of: RS256/],
    ['ES512 is not offered', (c) => { c.auth.jwt.algorithms = ['ES512'] }, 'auth.jwt.algorithms[0]', /must be one of/],
    ['short grant key', (c) => { c.auth.grants = { secret: 'short' } }, 'auth.grants.secret', /fewer than 32 characters/],
    ['lifetime cap too small', (c) => { c.auth.jwt.maxLifetimeSec = 5 }, 'auth.jwt.maxLifetimeSec', />= 60/],
    ['short HMAC secret', (c) => { c.auth.jwt.secret = 'short' }, 'auth.jwt.secret', /at least 32 bytes/],
    ['RS256 with a secret', (c) => { c.auth.jwt.algorithms = ['RS256'] }, 'auth.jwt.algorithms', /needs a public key/],
    ['a public key file that holds none', (c) => { c.auth.jwt = { publicKeyFile: JUNK, algorithms: ['RS256'] } }, 'auth.jwt.publicKeyFile', /is not a PEM public key or certificate/],
    ['a private key as the public key', (c) => { c.auth.jwt = { publicKeyFile: EC_PRIVATE, algorithms: ['ES256'] } }, 'auth.jwt.publicKeyFile', /holds a private key: give the public key/],
    ['an EC key for RS256', (c) => { c.auth.jwt = { publicKeyFile: EC_PUBLIC, algorithms: ['RS256'] } }, 'auth.jwt.publicKeyFile', /holds an EC key on prime256v1, which RS256 does not verify with/],
    ['a P-256 key for ES384', (c) => { c.auth.jwt.keys = [{ kid: 'e', algorithms: ['ES384'], publicKeyFile: EC_PUBLIC }] }, 'auth.jwt.keys[0].publicKeyFile', /which ES384 does not verify with/],
    ['an RSA key for ES256', (c) => { c.auth.jwt.keys = [{ kid: 'e', algorithms: ['ES256'], publicKeyFile: RSA_PUBLIC }] }, 'auth.jwt.keys[0].publicKeyFile', /holds an rsa key, which ES256 does not verify with/],
    ['keys[] public key file that holds none', (c) => { c.auth.jwt.keys = [{ kid: 'e', algorithms: ['ES256'], publicKeyFile: JUNK }] }, 'auth.jwt.keys[0].publicKeyFile', /is not a PEM public key or certificate/],
    ['HS256 with a public key', (c) => { c.auth.jwt = { publicKeyFile: certs.cert, algorithms: ['HS256'] } }, 'auth.jwt.algorithms', /key confusion/],
    ['public key without algorithms', (c) => { c.auth.jwt = { publicKeyFile: certs.cert } }, 'auth.jwt.algorithms', /required/],
    ['alg none', (c) => { c.auth.jwt.algorithms = ['none'] }, 'auth.jwt.algorithms[0]', /must be one of: HS256.*EdDSA/],
    ['empty policy', (c) => { c.policy = [] }, 'policy', /fewer than 1/],
    ['rule without scopes', (c) => { c.policy[0].scopes = [] }, 'policy[0].scopes', /fewer than 1/],
    ['rule path relative', (c) => { c.policy[0].path = 'medicall/**' }, 'policy[0].path', /format/],
    ['rule path with ..', (c) => { c.policy[0].path = '/medicall/../x' }, 'policy[0].path', /dot segments/],
    ['rule method POST', (c) => { c.policy[0].methods = ['POST'] }, 'policy[0].methods[0]', /must be one of: GET, HEAD/],
    ['duplicate rule names', (c) => { c.policy.push({ ...c.policy[0] }) }, 'policy[1].name', /duplicate/],
    ['unknown extension', (c) => { c.files = { extensions: ['.exe'] } }, 'files.extensions[0]', /not a known recording type/],
    ['bad durability', (c) => { c.audit.durability = 'none' }, 'audit.durability', /must be one of: strict, batched/],
    ['workers 0', (c) => { c.workers = 0 }, 'workers', /must be either an integer from 1 to 64 or auto \(got 0\)/],
    ['workers as a word', (c) => { c.workers = 'many' }, 'workers', /must be either an integer from 1 to 64 or auto \(got "many"\)/],
    ['NAS pipelining 0', (c) => { c.upstream.pipelining = 0 }, 'upstream.pipelining', /must be >= 1/],
    ['token cache negative', (c) => { c.auth.jwt.cacheSize = -1 }, 'auth.jwt.cacheSize', /must be >= 0/],
    ['X-Forwarded-For proxy not an address', (c) => { c.listen = { trustedProxies: ['not-an-ip'] } }, 'listen.trustedProxies[0]', /not an IP address or CIDR/],
    ['X-Forwarded-For proxies: every address', (c) => { c.listen = { trustedProxies: ['0.0.0.0/0'] } }, 'listen.trustedProxies[0]', /too wide/],
    ['X-Forwarded-For proxies: IPv4 in two halves', (c) => { c.listen = { trustedProxies: ['10.0.0.5', '128.0.0.0/1'] } }, 'listen.trustedProxies[1]', /too wide \(\/1\)/],
    ['X-Forwarded-For proxies: all of IPv6', (c) => { c.listen = { trustedProxies: ['::/1'] } }, 'listen.trustedProxies[0]', /too wide/],
    ['X-Forwarded-For proxies: a mapped range', (c) => { c.listen = { trustedProxies: ['::ffff:0.0.0.0/96'] } }, 'listen.trustedProxies[0]', /IPv4-mapped/],
    ['X-Forwarded-For proxies: the mapped block in hex', (c) => { c.listen = { trustedProxies: ['::ffff:0:0/96'] } }, 'listen.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['X-Forwarded-For proxies: the mapped block spelled out', (c) => { c.listen = { trustedProxies: ['0:0:0:0:0:ffff:0:0/96'] } }, 'listen.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['X-Forwarded-For proxies: half the mapped block', (c) => { c.listen = { trustedProxies: ['::ffff:0:0/97'] } }, 'listen.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['X-Forwarded-For proxies: an IPv6 range holding the mapped block', (c) => { c.listen = { trustedProxies: ['::/80'] } }, 'listen.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['X-Forwarded-For proxies: one mapped address in hex', (c) => { c.listen = { trustedProxies: ['::ffff:7f00:1'] } }, 'listen.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['PROXY protocol proxies: the mapped block', (c) => { c.listen = { proxyProtocol: { trustedProxies: ['::ffff:0:0/96'] } } }, 'listen.proxyProtocol.trustedProxies[0]', /holds IPv4-mapped addresses/],
    ['a byte budget past exact counting', (c) => { c.policy[0].perSubject = { bytesPerHour: 1e16 } }, 'policy[0].perSubject.bytesPerHour', /must be <= 1125899906842624/]
  ]
  for (const [name, mutate, key, reason] of table) {
    const c = base()
    mutate(c)
    const ps = problems(c)
    const p = ps.find((x) => x.key === key)
    t.ok(p, `${name}: names ${key} (got ${JSON.stringify(ps)})`)
    if (p) t.match(p.reason, reason, name)
  }
})

t.test('every key can be set from NASGUARD_* variables, with type checks', async (t) => {
  t.equal(envName(['auth', 'jwt', 'secretFile']), 'NASGUARD_AUTH_JWT_SECRET_FILE')
  const c = loadConfig({
    object: base(),
    env: {
      NASGUARD_LISTEN_PORT: '9443',
      NASGUARD_UPSTREAM_URL: 'https://nas.example:8443',
      NASGUARD_UPSTREAM_TIMEOUT_MS: '1234',
      NASGUARD_ADMIN_ENABLED: 'false',
      NASGUARD_FILES_EXTENSIONS: '.wav,.ogg',
      NASGUARD_POLICY: JSON.stringify([{ name: 'env', path: '/x/**', scopes: ['s'] }])
    }
  })
  t.equal(c.listen.port, 9443)
  t.equal(c.upstream.url, 'https://nas.example:8443')
  t.equal(c.upstream.timeoutMs, 1234)
  t.equal(c.admin.enabled, false)
  t.same(c.files.extensions, ['.wav', '.ogg'])
  t.equal(c.policy[0].name, 'env')
  t.equal(c.workers, 1, 'workers: one process unless asked')
  t.equal(loadConfig({ object: base(), env: { NASGUARD_WORKERS: 'auto' } }).workers, 'auto')
  t.equal(loadConfig({ object: base(), env: { NASGUARD_WORKERS: '4' } }).workers, 4, 'a number from the environment is a number')
  t.match(problems(base(), { NASGUARD_WORKERS: 'lots' }), [{ key: 'workers', reason: /an integer from 1 to 64 or auto/ }])

  t.match(problems(base(), { NASGUARD_LISTEN_PORT: 'eighty' }), [{ key: 'listen.port', reason: /NASGUARD_LISTEN_PORT must be a number/ }])
  t.match(problems(base(), { NASGUARD_ADMIN_ENABLED: 'yes' }), [{ key: 'admin.enabled', reason: /true or false/ }])
  t.match(problems(base(), { NASGUARD_LISTEN_PROT: '1' }), [{ key: 'NASGUARD_LISTEN_PROT', reason: /unknown environment variable/ }])
})

t.test('YAML files: relative paths resolve against the file, YAML errors name the line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-cfg-'))
  writeFileSync(join(dir, 'jwt.secret'), SECRET + '\n')
  const file = join(dir, 'nasguard.yaml')
  writeFileSync(file, [
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
    'upstream: { url: "http://127.0.0.1:9" }',
    'auth: { jwt: { secretFile: jwt.secret } }',
    'policy:', '  - { name: r, path: /medicall/**, scopes: [recordings:read] }',
    'audit: { dir: audit }'
  ].join('\n'))
  const c = loadConfig({ file })
  t.equal(c.auth.jwt.secretFile, join(dir, 'jwt.secret'))
  t.equal(c.audit.dir, join(dir, 'audit'))

  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'listen:\n  port: [1,\n')
  t.throws(() => loadConfig({ file: bad }), /config error at \(file\): .*bad\.yaml line \d+ is not valid YAML/)
  t.throws(() => loadConfig({ file: join(dir, 'missing.yaml') }), /cannot read .*missing\.yaml: ENOENT/)
})

t.test('upstream.fileSystem: folding by default, posix on request, nothing else', async (t) => {
  t.equal(loadConfig({ object: base() }).upstream.fileSystem, 'folding', 'folding is the default')
  const posix = base()
  posix.upstream.fileSystem = 'posix'
  t.equal(loadConfig({ object: posix }).upstream.fileSystem, 'posix')
  const folding = base()
  folding.upstream.fileSystem = 'folding'
  t.equal(loadConfig({ object: folding }).upstream.fileSystem, 'folding')
  for (const bad of ['ntfs', 'FOLDING', '', 1, true]) {
    const c = base()
    c.upstream.fileSystem = bad
    t.throws(() => loadConfig({ object: c }), ConfigError, `${JSON.stringify(bad)}: a ConfigError`)
    const ps = problems(c)
    const p = ps.find((x) => x.key === 'upstream.fileSystem')
    t.ok(p, `${JSON.stringify(bad)}: names upstream.fileSystem (got ${JSON.stringify(ps)})`)
    if (typeof bad === 'string' && p) t.match(p.reason, /folding.*posix|posix.*folding/, `${JSON.stringify(bad)}: the reason lists the modes (${p.reason})`)
  }
})
