// Forged tokens, advanced: one table of attacks over real sockets against
// gateways with several pinned keys (keys[] by kid), a JWK Set, issuer,
// audience and a lifetime cap, and policies with wildcard scopes and
// `{sub}` path segments. Every attack is refused (401, or 403 where the token
// is genuine but its scopes or claims do not open the path), nothing reaches
// the stub NAS, no key server the token names is ever asked, and each refusal
// is in the audit trail with its reason. Positive controls on the same
// gateways prove the keys, rules and paths used by the attacks do work.
//
// test/security/forged-tokens.test.ts covers the single-key gateways (HS256
// secret, RS256 publicKeyFile), query/cookie tokens and malformed headers;
// this file does not repeat those.
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createCa } from '../../src/tls/certificates.js'
import { RECORDING, bearer, get, startStubNas, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { jws, jwsAs, nowSec, sendJson, signingInput, startCountingServer } from '../helpers/jws.js'
import { waitFor } from '../helpers/wait.js'

const INVALID = 'NASGUARD_ERR_TOKEN_INVALID'
const EXPIRED = 'NASGUARD_ERR_TOKEN_EXPIRED'
const SCOPE = 'NASGUARD_ERR_INSUFFICIENT_SCOPE'
const NO_RULE = 'NASGUARD_ERR_NO_RULE'

const ISS = 'https://idp.example.test'
const AUD = 'nasguard'

const GENERAL = '/medicall/general/2016/01/01/083012_46701234567.wav'
const STHLM = '/medicall/stockholm/2016/01/01/090000_46701111111.wav'
const REGION = '/regions/stockholm/2016/01/01/090000_46702222222.wav'

const POLICY = [
  { name: 'general', path: '/medicall/general/**', scopes: ['recordings:read'] },
  { name: 'sthlm', path: '/medicall/stockholm/**', scopes: ['recordings:read:stockholm'] },
  { name: 'regions', path: '/regions/**', scopes: ['recordings:read:*'] },
  { name: 'home', path: '/home/{sub}/**', scopes: ['files:read'] }
]

type GwName = 'full' | 'pk' | 'idp'

interface Attack {
  name: string
  gw: GwName
  token: string
  path?: string
  status: 400 | 401 | 403
  code: string
  /** 403 insufficient_scope: the scope="..." the challenge must name. */
  scope?: string
}

interface Control {
  name: string
  gw: GwName
  token: string
  path?: string
  rule: string
}

function pemFile (dir: string, name: string, key: KeyObject): { file: string, pem: string, der: Buffer } {
  const pem = key.export({ type: 'spki', format: 'pem' }).toString()
  const file = join(dir, name)
  writeFileSync(file, pem)
  return { file, pem, der: key.export({ type: 'spki', format: 'der' }) }
}

function without (o: Record<string, unknown>, ...keys: string[]): Record<string, unknown> {
  const c = { ...o }
  for (const k of keys) delete c[k]
  return c
}

t.test('advanced forgeries: every one refused before the NAS, and audited; the positive controls pass', async (t) => {
  // Keys the gateways trust.
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ps = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const ed = generateKeyPairSync('ed25519')
  const idpKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const hs = { HS256: randomBytes(24).toString('hex'), HS384: randomBytes(32).toString('hex'), HS512: randomBytes(48).toString('hex') }
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-adv-keys-'))
  const rsaPub = pemFile(dir, 'rsa.pub.pem', rsa.publicKey)
  const ecPub = pemFile(dir, 'ec.pub.pem', ec.publicKey)
  const edPub = pemFile(dir, 'ed.pub.pem', ed.publicKey)
  const psPub = pemFile(dir, 'ps.pub.pem', ps.publicKey)

  // The attacker: an RSA key with a self-signed certificate, and a server
  // publishing both (JWKS for jku, PEM for x5u). It must never be asked.
  const evil = createCa('attacker CA')
  const evilKey = createPrivateKey(evil.keyPem)
  const evilJwk = createPublicKey(evilKey).export({ format: 'jwk' })
  const evilCertB64 = new X509Certificate(evil.certPem).raw.toString('base64')
  const attacker = await startCountingServer(t, (req, res) => {
    if (req.url === '/jwks.json') {
      sendJson(res, 200, { keys: ['attacker-1', 'rsa', 'idp-1'].map((kid) => ({ ...evilJwk, kid, alg: 'RS256', use: 'sig' })) })
    } else if (req.url === '/cert.pem') {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' })
      res.end(evil.certPem)
    } else {
      sendJson(res, 404, {})
    }
  })
  const jku = `${attacker.url}/jwks.json`
  const x5u = `${attacker.url}/cert.pem`

  // The legitimate identity provider's JWK Set, for the `idp` gateway.
  const legit = await startCountingServer(t, (_req, res) => {
    sendJson(res, 200, { keys: [{ ...idpKey.publicKey.export({ format: 'jwk' }), kid: 'idp-1', alg: 'RS256', use: 'sig' }] })
  })

  const nas = await startStubNas(t)
  const gws: Record<GwName, TestGateway> = {
    full: await startTestGateway(t, nas, {
      auth: {
        keys: [
          { kid: 'rsa', algorithms: ['RS256'], publicKeyFile: rsaPub.file },
          { kid: 'ec', algorithms: ['ES256'], publicKeyFile: ecPub.file },
          { kid: 'ed', algorithms: ['EdDSA'], publicKeyFile: edPub.file },
          { kid: 'ps', algorithms: ['PS256'], publicKeyFile: psPub.file },
          { kid: 'hs256', algorithms: ['HS256'], secret: hs.HS256 },
          { kid: 'hs384', algorithms: ['HS384'], secret: hs.HS384 },
          { kid: 'hs512', algorithms: ['HS512'], secret: hs.HS512 }
        ],
        issuer: ISS,
        audience: AUD,
        maxLifetimeSec: 3600
      },
      policy: POLICY
    }),
    // Exactly the configuration of the key-confusion attacks: two public keys, no HMAC at all.
    pk: await startTestGateway(t, nas, {
      auth: { keys: [{ kid: 'rsa', algorithms: ['RS256'], publicKeyFile: rsaPub.file }, { kid: 'ec', algorithms: ['ES256'], publicKeyFile: ecPub.file }] },
      policy: POLICY
    }),
    // A JWK Set gateway: a token's own key URLs must not replace the configured set.
    idp: await startTestGateway(t, nas, {
      auth: { jwks: { url: `${legit.url}/jwks.json`, algorithms: ['RS256'] } },
      policy: POLICY
    })
  }

  const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => {
    const n = nowSec()
    return { sub: 'alice', scope: 'recordings:read', iss: ISS, aud: AUD, iat: n, exp: n + 600, jti: 'adv-' + randomBytes(6).toString('hex'), ...extra }
  }
  const signers = {
    rsa: { alg: 'RS256', key: rsa.privateKey },
    ec: { alg: 'ES256', key: ec.privateKey },
    ed: { alg: 'EdDSA', key: ed.privateKey },
    ps: { alg: 'PS256', key: ps.privateKey },
    hs256: { alg: 'HS256', key: hs.HS256 },
    hs384: { alg: 'HS384', key: hs.HS384 },
    hs512: { alg: 'HS512', key: hs.HS512 },
    'idp-1': { alg: 'RS256', key: idpKey.privateKey }
  } as const
  /** A genuine token for a configured key, with optional extra header fields. */
  const genuine = (kid: keyof typeof signers, payload: Record<string, unknown>, header: Record<string, unknown> = {}): string =>
    jws({ alg: signers[kid].alg, typ: 'JWT', kid, ...header }, payload, signers[kid].key)

  const attacks: Attack[] = []
  const add = (a: Omit<Attack, 'status' | 'code'> & Partial<Pick<Attack, 'status' | 'code'>>): void => {
    attacks.push({ status: 401, code: INVALID, ...a })
  }

  // --- alg none, every spelling, unsigned (empty signature) ---
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    add({ name: `full: alg ${alg}, unsigned`, gw: 'full', token: signingInput({ alg, typ: 'JWT' }, claims()) + '.' })
    add({ name: `full: alg ${alg}, unsigned, kid hs256`, gw: 'full', token: signingInput({ alg, typ: 'JWT', kid: 'hs256' }, claims()) + '.' })
    add({ name: `pk: alg ${alg}, unsigned, kid rsa`, gw: 'pk', token: signingInput({ alg, typ: 'JWT', kid: 'rsa' }, claims()) + '.' })
  }

  // --- null signature and blank HMAC secret on an HS256 header ---
  add({ name: 'null signature, HS256 header with kid hs256', gw: 'full', token: signingInput({ alg: 'HS256', typ: 'JWT', kid: 'hs256' }, claims()) + '.' })
  add({ name: 'null signature, HS256 header without kid', gw: 'full', token: signingInput({ alg: 'HS256', typ: 'JWT' }, claims()) + '.' })
  add({ name: 'blank HMAC secret, kid hs256', gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: 'hs256' }, claims(), '') })
  add({ name: 'blank HMAC secret, no kid', gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT' }, claims(), '') })

  // --- public key used as the HMAC secret (RS256/ES256 -> HS256 confusion) ---
  for (const [kid, pub] of [['rsa', rsaPub], ['ec', ecPub]] as const) {
    const variants: Array<[string, string | Buffer]> = [['PEM as-is', pub.pem], ['PEM trimmed', pub.pem.trim()], ['DER bytes', pub.der]]
    for (const [what, secret] of variants) {
      for (const withKid of [true, false]) {
        const header = { alg: 'HS256', typ: 'JWT', ...(withKid ? { kid } : {}) }
        for (const gw of ['pk', 'full'] as const) {
          add({ name: `${gw}: HS256 MACed with the ${kid} public key, ${what}, ${withKid ? `kid ${kid}` : 'no kid'}`, gw, token: jws(header, claims(), secret) })
        }
      }
    }
  }

  // --- ECDSA "psychic signature" (CVE-2022-21449): r = s = 0 ---
  {
    const raw = Buffer.alloc(64).toString('base64url')
    const der = Buffer.from('3006020100020100', 'hex').toString('base64url')
    for (const gw of ['full', 'pk'] as const) {
      for (const [form, sig] of [['raw 64-byte JOSE', raw], ['DER', der]]) {
        add({ name: `${gw}: ES256 r=s=0 (${form}), kid ec`, gw, token: `${signingInput({ alg: 'ES256', typ: 'JWT', kid: 'ec' }, claims())}.${sig}` })
        add({ name: `${gw}: ES256 r=s=0 (${form}), no kid`, gw, token: `${signingInput({ alg: 'ES256', typ: 'JWT' }, claims())}.${sig}` })
      }
    }
  }

  // --- keys the token brings itself: jwk, jku, x5u, x5c (signed with the attacker's key) ---
  const evilJwkHeader = { ...evilJwk, kid: 'attacker-1', alg: 'RS256', use: 'sig' }
  const broughtKeys: Array<[string, Record<string, unknown>]> = [
    ['embedded jwk', { jwk: evilJwkHeader }],
    ['jku to the attacker', { jku }],
    ['x5u to the attacker', { x5u }],
    ['x5c with the attacker certificate', { x5c: [evilCertB64] }],
    ['jku + x5u + x5c + jwk together', { jku, x5u, x5c: [evilCertB64], jwk: evilJwkHeader }]
  ]
  for (const [what, extra] of broughtKeys) {
    for (const gw of ['full', 'pk', 'idp'] as const) {
      const kids = gw === 'idp' ? [undefined, 'attacker-1', 'idp-1'] : [undefined, 'attacker-1', 'rsa']
      for (const kid of kids) {
        const header = { alg: 'RS256', typ: 'JWT', ...(kid ? { kid } : {}), ...extra }
        add({ name: `${gw}: ${what}, ${kid ? `kid ${kid}` : 'no kid'}`, gw, token: jws(header, claims(), evilKey) })
      }
    }
  }

  // --- hostile kid values ---
  add({ name: 'kid ../../../../dev/null, HS256 with an empty secret', gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: '../../../../dev/null' }, claims(), '') })
  add({ name: "kid ' OR 1=1, HS256 with an empty secret", gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: "' OR 1=1" }, claims(), '') })
  add({ name: "kid ' OR 1=1, HS256 with the hs256 secret", gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: "' OR 1=1" }, claims(), hs.HS256) })
  add({ name: 'kid empty string, HS256 with an empty secret', gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: '' }, claims(), '') })
  add({ name: 'kid empty string, HS256 with the hs256 secret', gw: 'full', token: jws({ alg: 'HS256', typ: 'JWT', kid: '' }, claims(), hs.HS256) })
  add({ name: 'kid empty string, RS256 with the rsa key', gw: 'full', token: jws({ alg: 'RS256', typ: 'JWT', kid: '' }, claims(), rsa.privateKey) })

  // --- claims: time, issuer, audience, lifetime ---
  {
    const n = nowSec()
    add({ name: 'expired 120 s ago (beyond the 30 s tolerance)', gw: 'full', token: genuine('hs256', claims({ iat: n - 720, exp: n - 120 })), code: EXPIRED })
    add({ name: 'expired, RS256', gw: 'full', token: genuine('rsa', claims({ iat: n - 720, exp: n - 120 })), code: EXPIRED })
    add({ name: 'nbf 10 minutes in the future', gw: 'full', token: genuine('hs256', claims({ nbf: n + 600 })) })
    add({ name: 'nbf 60 s in the future (beyond the 30 s tolerance)', gw: 'full', token: genuine('ec', claims({ nbf: n + 60 })) })
    add({ name: 'wrong iss', gw: 'full', token: genuine('hs256', claims({ iss: 'https://evil.example.test' })) })
    add({ name: 'no iss', gw: 'full', token: genuine('rsa', without(claims(), 'iss')) })
    add({ name: 'wrong aud', gw: 'full', token: genuine('hs256', claims({ aud: 'someone-else' })) })
    add({ name: 'wrong aud in an array', gw: 'full', token: genuine('rsa', claims({ aud: ['someone-else', 'another'] })) })
    add({ name: 'no aud', gw: 'full', token: genuine('hs256', without(claims(), 'aud')) })
    add({ name: 'missing exp', gw: 'full', token: genuine('hs256', without(claims(), 'exp')) })
    add({ name: 'missing exp, RS256', gw: 'full', token: genuine('rsa', without(claims(), 'exp')) })
    add({ name: 'exp as a string', gw: 'full', token: genuine('hs256', claims({ exp: String(n + 600) })) })
    add({ name: 'lifetime 2 h > maxLifetimeSec 3600 (iat now)', gw: 'full', token: genuine('hs256', claims({ exp: n + 7200 })) })
    add({ name: 'lifetime 2 h > maxLifetimeSec 3600 (no iat)', gw: 'full', token: genuine('ed', without(claims({ exp: n + 7200 }), 'iat')) })
    add({ name: 'lifetime 2 h > maxLifetimeSec 3600 (iat backdated, exp 2 h ahead)', gw: 'full', token: genuine('rsa', claims({ iat: n - 3000, exp: n + 7200 })) })
  }

  // --- truncated signatures ---
  add({ name: 'RS256 signature truncated', gw: 'full', token: genuine('rsa', claims()).slice(0, -8) })
  add({ name: 'ES256 signature truncated', gw: 'full', token: genuine('ec', claims()).slice(0, -4) })
  add({ name: 'HS256 signature truncated', gw: 'full', token: genuine('hs256', claims()).slice(0, -3) })

  // --- crit on otherwise valid tokens ---
  add({ name: "crit ['exp'], HS256", gw: 'full', token: genuine('hs256', claims(), { crit: ['exp'], exp: nowSec() + 600 }) })
  add({ name: "crit ['exp'], RS256", gw: 'full', token: genuine('rsa', claims(), { crit: ['exp'], exp: nowSec() + 600 }) })
  add({ name: "crit ['b64'] with b64 false, HS256", gw: 'full', token: genuine('hs256', claims(), { crit: ['b64'], b64: false }) })
  add({ name: "crit ['b64'] with b64 true, EdDSA", gw: 'full', token: genuine('ed', claims(), { crit: ['b64'], b64: true }) })
  add({ name: "crit ['b64'], RS256 on the JWK Set gateway", gw: 'idp', token: genuine('idp-1', claims(), { crit: ['b64'], b64: false }) })

  // --- HMAC keys: the kid selects the key, and each key is pinned to its algorithm ---
  for (const [alg, kid, sibling] of [['HS256', 'hs256', 'hs384'], ['HS384', 'hs384', 'hs512'], ['HS512', 'hs512', 'hs256']] as const) {
    add({ name: `${alg} with the right secret, unknown kid`, gw: 'full', token: jws({ alg, typ: 'JWT', kid: 'hs-unknown' }, claims(), hs[alg]) })
    add({ name: `${alg} with the right secret, no kid`, gw: 'full', token: jws({ alg, typ: 'JWT' }, claims(), hs[alg]) })
    add({ name: `${alg} with the right secret, kid of the ${sibling} key`, gw: 'full', token: jws({ alg, typ: 'JWT', kid: sibling }, claims(), hs[alg]) })
    add({ name: `${alg} MACed with the ${sibling} secret, kid ${sibling} (key pinned to another algorithm)`, gw: 'full', token: jws({ alg, typ: 'JWT', kid: sibling }, claims(), signers[sibling].key) })
    add({ name: `${alg} header, kid ${kid}, MACed with the right secret but the wrong hash`, gw: 'full', token: jwsAs(signers[sibling].alg, { alg, typ: 'JWT', kid }, claims(), hs[alg]) })
  }
  // Public keys are pinned too: an RS256 signature under a PS256 header, an RS256 header on the PS key.
  add({ name: 'PS256 header on the rsa (RS256) key, PSS signature', gw: 'full', token: jws({ alg: 'PS256', typ: 'JWT', kid: 'rsa' }, claims(), rsa.privateKey) })
  add({ name: 'RS256 header on the ps (PS256) key', gw: 'full', token: jws({ alg: 'RS256', typ: 'JWT', kid: 'ps' }, claims(), ps.privateKey) })
  add({ name: 'ES256 header on the ed (EdDSA) key', gw: 'full', token: jws({ alg: 'ES256', typ: 'JWT', kid: 'ed' }, claims(), ec.privateKey) })

  // --- scope tricks against sthlm (recordings:read:stockholm): genuine tokens, 403 ---
  const sthlmScope = 'recordings:read:stockholm'
  const scopeTricks: Array<[string, Record<string, unknown>]> = [
    ['scope recordings:read:stockholm.evil', { scope: 'recordings:read:stockholm.evil' }],
    ['scope recordings:read:stock', { scope: 'recordings:read:stock' }],
    ['scope recordings:read:*', { scope: 'recordings:read:*' }],
    ['scope recordings:read (the parent)', { scope: 'recordings:read' }],
    ['scope RECORDINGS:READ:STOCKHOLM', { scope: 'RECORDINGS:READ:STOCKHOLM' }],
    ['scope recordings:read:stockholm with a trailing NUL', { scope: 'recordings:read:stockholm\u0000' }],
    ['scp as an object holding the scope', { scp: { 'recordings:read:stockholm': true } }],
    ['scp array entry that hides the scope after a space', { scp: ['x recordings:read:stockholm'] }],
    ['scope as an array', { scope: ['recordings:read:stockholm'] }],
    ['scope as a number', { scope: 123 }],
    ['scope as an object', { scope: { 'recordings:read:stockholm': true } }]
  ]
  for (const [what, extra] of scopeTricks) {
    add({ name: `sthlm: ${what}`, gw: 'full', path: STHLM, token: genuine('hs256', without(claims(extra), ...('scope' in extra ? [] : ['scope']))), status: 403, code: SCOPE, scope: sthlmScope })
  }
  // The wildcard rule recordings:read:* opens one more segment, not fewer, not a look-alike.
  for (const s of ['recordings:read', 'recordings:readx:stockholm', 'recordings:read:', 'recordings:read:stockholm:extra', 'recordings:read:*', 'recordings:read:**']) {
    add({ name: `regions (recordings:read:*): token scope ${s}`, gw: 'full', path: REGION, token: genuine('rsa', claims({ scope: s })), status: 403, code: SCOPE, scope: 'recordings:read:*' })
  }

  // --- claim values in a templated path: /home/{sub}/** ---
  const homeTricks: Array<[string, string]> = [
    ['../other', '/home/other/a.wav'],
    ['a/b', '/home/a/b/a.wav'],
    ['a/b', '/home/other/a.wav'],
    ['*', '/home/*/a.wav'],
    ['*', '/home/other/a.wav'],
    ['%2e%2e', '/home/other/a.wav'],
    ['.hidden', '/home/.hidden/a.wav'],
    ['.hidden', '/home/other/a.wav']
  ]
  for (const [sub, path] of homeTricks) {
    // A `*` in a path is a wildcard to a Windows share: refused as a path before any rule is asked.
    const wildcard = path.includes('*')
    add({ name: `home: sub ${JSON.stringify(sub)} asking for ${path}`, gw: 'full', path, token: genuine('hs256', claims({ sub, scope: 'files:read' })), status: wildcard ? 400 : 403, code: wildcard ? 'NASGUARD_ERR_BAD_PATH' : NO_RULE })
  }

  // --- run the table ---
  const refused: Array<{ attack: Attack, requestId: string }> = []
  for (const a of attacks) {
    const before = nas.requests.length
    const res = await get(gws[a.gw], a.path ?? GENERAL, { headers: bearer(a.token) })
    t.equal(res.status, a.status, `${a.name}: ${a.status}`)
    let body: Record<string, unknown> = {}
    try { body = JSON.parse(res.body.toString('utf8')) as Record<string, unknown> } catch { t.fail(`${a.name}: the body is JSON`) }
    t.equal(body.error, a.code, `${a.name}: error code ${a.code}`)
    const challenge = String(res.headers['www-authenticate'] ?? '')
    if (a.status === 401) {
      t.match(challenge, /^Bearer realm="nasguard", error="invalid_token", error_description="[^"]+"$/, `${a.name}: invalid_token challenge with a description (got ${challenge})`)
    } else if (a.status === 403) {
      t.match(challenge, /^Bearer realm="nasguard", error="insufficient_scope"/, `${a.name}: insufficient_scope challenge (got ${challenge})`)
      if (a.scope) t.ok(challenge.includes(`scope="${a.scope}"`), `${a.name}: the challenge names scope="${a.scope}" (got ${challenge})`)
    }
    t.equal(nas.requests.length, before, `${a.name}: nothing reached the NAS`)
    t.equal(attacker.requests.length, 0, `${a.name}: the attacker's key server was not asked`)
    refused.push({ attack: a, requestId: String(res.headers['x-request-id']) })
  }
  t.equal(nas.requests.length, 0, 'not one attack reached the NAS')

  // --- positive controls, on the same gateways ---
  const controls: Control[] = [
    { name: 'RS256, kid rsa', gw: 'full', token: genuine('rsa', claims()), rule: 'general' },
    { name: 'ES256, kid ec', gw: 'full', token: genuine('ec', claims()), rule: 'general' },
    { name: 'EdDSA, kid ed', gw: 'full', token: genuine('ed', claims()), rule: 'general' },
    { name: 'PS256, kid ps', gw: 'full', token: genuine('ps', claims()), rule: 'general' },
    { name: 'HS256, kid hs256', gw: 'full', token: genuine('hs256', claims()), rule: 'general' },
    { name: 'HS384, kid hs384', gw: 'full', token: genuine('hs384', claims()), rule: 'general' },
    { name: 'HS512, kid hs512', gw: 'full', token: genuine('hs512', claims()), rule: 'general' },
    { name: 'lifetime just under the cap (3590 s)', gw: 'full', token: genuine('hs256', claims({ exp: nowSec() + 3590 })), rule: 'general' },
    { name: 'sthlm with recordings:read:stockholm', gw: 'full', path: STHLM, token: genuine('hs256', claims({ scope: sthlmScope })), rule: 'sthlm' },
    { name: 'sthlm with recordings:read:stockholm in scp', gw: 'full', path: STHLM, token: genuine('ec', without(claims({ scp: [sthlmScope] }), 'scope')), rule: 'sthlm' },
    { name: 'regions (recordings:read:*) with recordings:read:stockholm', gw: 'full', path: REGION, token: genuine('rsa', claims({ scope: sthlmScope })), rule: 'regions' },
    { name: 'home: sub alice asking for /home/alice/a.wav', gw: 'full', path: '/home/alice/a.wav', token: genuine('hs256', claims({ scope: 'files:read' })), rule: 'home' },
    { name: 'pk: RS256, kid rsa', gw: 'pk', token: genuine('rsa', claims()), rule: 'general' },
    { name: 'pk: ES256, kid ec', gw: 'pk', token: genuine('ec', claims()), rule: 'general' },
    { name: 'idp: RS256, kid idp-1 from the JWK Set', gw: 'idp', token: genuine('idp-1', claims()), rule: 'general' }
  ]
  const served: Array<{ control: Control, requestId: string }> = []
  for (const c of controls) {
    const before = nas.requests.length
    const res = await get(gws[c.gw], c.path ?? GENERAL, { headers: bearer(c.token) })
    t.equal(res.status, 200, `control ${c.name}: 200 (got ${res.status} ${res.body.toString('utf8').slice(0, 200)})`)
    t.ok(res.body.equals(RECORDING), `control ${c.name}: the recording is served`)
    t.equal(nas.requests.length - before, 1, `control ${c.name}: exactly one NAS request`)
    served.push({ control: c, requestId: String(res.headers['x-request-id']) })
  }
  t.equal(attacker.requests.length, 0, "the attacker's key server was never asked, by any request")

  // --- the audit trail: a refusal with its reason for every attack, a fetch naming the rule for every control ---
  for (const name of Object.keys(gws) as GwName[]) {
    const gw = gws[name]
    const mine = refused.filter((r) => r.attack.gw === name)
    const ok = served.filter((s) => s.control.gw === name)
    const records = await waitFor(`audit records on ${name}`, () => {
      const all = gw.auditRecords()
      const ids = new Set(all.filter((r) => r.event === 'refusal' || r.event === 'fetch').map((r) => r.requestId))
      return [...mine.map((m) => m.requestId), ...ok.map((s) => s.requestId)].every((id) => ids.has(id)) ? all : undefined
    }, { tries: 250 })
    for (const { attack, requestId } of mine) {
      const rec = records.filter((r) => r.requestId === requestId)
      const refusal = rec.find((r) => r.event === 'refusal')
      t.equal(refusal?.reason, attack.code, `audit: ${attack.name}: refusal with reason ${attack.code}`)
      t.equal(refusal?.status, attack.status, `audit: ${attack.name}: refusal status ${attack.status}`)
      t.notOk(rec.some((r) => r.event === 'access' || r.event === 'fetch'), `audit: ${attack.name}: no access or fetch record`)
    }
    for (const { control, requestId } of ok) {
      const fetch = records.find((r) => r.requestId === requestId && r.event === 'fetch')
      t.equal(fetch?.rule, control.rule, `audit: control ${control.name}: the fetch record names rule ${control.rule}`)
      t.equal(fetch?.status, 200, `audit: control ${control.name}: fetch status 200`)
      t.equal(fetch?.outcome, 'complete', `audit: control ${control.name}: fetch complete`)
    }
  }
  t.equal(attacker.requests.length, 0, "the attacker's key server got zero requests, even after the audit settled")
})
