// Forged, broken and misplaced tokens: each is refused with 401, an
// RFC 6750 invalid_token challenge and an { error, message } body, for a path
// the policy allows, and not one of them reaches the NAS.
import { createHmac, generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createSigner } from 'fast-jwt'
import { RECORDING, SECRET, bearer, get, startStubNas, startTestGateway, type Response } from '../helpers/gateway.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

const MISSING = 'NASGUARD_ERR_TOKEN_MISSING'
const INVALID = 'NASGUARD_ERR_TOKEN_INVALID'
const EXPIRED = 'NASGUARD_ERR_TOKEN_EXPIRED'

function b64url (v: string | Buffer): string {
  return Buffer.from(v).toString('base64url')
}

function now (): number {
  return Math.floor(Date.now() / 1000)
}

function claims (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { sub: 'alice', scope: 'recordings:read', jti: 'forged-' + Math.random().toString(36).slice(2), exp: now() + 600, ...extra }
}

/** header.payload, both base64url JSON. */
function unsigned (header: Record<string, unknown>, payload: Record<string, unknown>): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
}

/** A hand-made HMAC JWS: the header says whatever it is told, the MAC is computed with `hash` and `key`. */
function hmacToken (header: Record<string, unknown>, payload: Record<string, unknown>, key: string | Buffer, hash: 'sha256' | 'sha384' | 'sha512' = 'sha256'): string {
  const input = unsigned(header, payload)
  return `${input}.${createHmac(hash, key).update(input).digest('base64url')}`
}

/** The type of the `t` a subtest callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0]

interface Row {
  name: string
  headers: Record<string, string>
  /** Appended to PATH (a query string). */
  suffix?: string
  code: string
}

function checkRefusal (t: Test, res: Response, row: Row): void {
  t.equal(res.status, 401, `${row.name}: status 401`)
  const challenge = String(res.headers['www-authenticate'] ?? '')
  t.match(challenge, /^Bearer /, `${row.name}: Bearer challenge`)
  t.ok(challenge.includes('error="invalid_token"'), `${row.name}: www-authenticate carries error="invalid_token" (got ${challenge})`)
  t.match(String(res.headers['content-type']), /^application\/json/, `${row.name}: JSON body`)
  let body: Record<string, unknown> = {}
  try {
    body = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>
  } catch {
    t.fail(`${row.name}: body is not JSON: ${JSON.stringify(res.body.subarray(0, 80).toString('latin1'))}`)
  }
  t.same(Object.keys(body).sort(), ['error', 'message'], `${row.name}: body is exactly { error, message }`)
  t.equal(body.error, row.code, `${row.name}: error code`)
  t.match(String(body.error), /^NASGUARD_ERR_TOKEN_/, `${row.name}: a token error`)
  t.type(body.message, 'string', `${row.name}: message is a string`)
  t.notOk(res.body.toString('utf8').includes('46701234567'), `${row.name}: the refusal does not echo the recording name`)
}


async function runRows (t: Test, gw: { port: number }, nas: { requests: unknown[] }, rows: Row[]): Promise<void> {
  for (const row of rows) {
    const before = nas.requests.length
    const res = await get(gw, PATH + (row.suffix ?? ''), { headers: row.headers })
    checkRefusal(t, res, row)
    t.equal(nas.requests.length - before, 0, `${row.name}: no request reached the NAS`)
    t.equal(nas.requests.length, 0, `${row.name}: the NAS has still seen nothing`)
  }
}

t.test('HS256 gateway: forged, broken and misplaced tokens are refused before the NAS', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const valid = gw.token()
  const [vh, vp, vs] = valid.split('.')

  const rows: Row[] = []

  // alg: none, in every capitalisation, with an empty signature.
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    rows.push({ name: `alg ${alg}, empty signature`, headers: bearer(unsigned({ alg, typ: 'JWT' }, claims()) + '.'), code: INVALID })
  }
  // alg: none carrying a signature that is valid for HS256 over the same input.
  {
    const input = unsigned({ alg: 'none', typ: 'JWT' }, claims())
    rows.push({ name: 'alg none with an HS256 MAC attached', headers: bearer(`${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`), code: INVALID })
  }
  // alg: none with no header alg at all.
  rows.push({ name: 'header without alg', headers: bearer(hmacToken({ typ: 'JWT' }, claims(), SECRET)), code: INVALID })

  rows.push({ name: 'wrong HMAC secret', headers: bearer(createSigner({ key: 'another-secret-that-is-at-least-32-bytes!!', algorithm: 'HS256' })(claims())), code: INVALID })
  rows.push({ name: 'wrong HMAC secret, hand-made', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims(), 'x'.repeat(48))), code: INVALID })
  // The same HS256 MAC under a header that says HS512.
  rows.push({ name: 'HS256 signature, header alg changed to HS512', headers: bearer(`${b64url(JSON.stringify({ alg: 'HS512', typ: 'JWT' }))}.${vp}.${vs}`), code: INVALID })
  // A genuine HS512 MAC with the right secret: the algorithm is pinned to HS256.
  rows.push({ name: 'HS512 with the right secret (algorithm not pinned)', headers: bearer(hmacToken({ alg: 'HS512', typ: 'JWT' }, claims(), SECRET, 'sha512')), code: INVALID })
  rows.push({ name: 'HS384 with the right secret (algorithm not pinned)', headers: bearer(hmacToken({ alg: 'HS384', typ: 'JWT' }, claims(), SECRET, 'sha384')), code: INVALID })
  // Payload swapped under a valid header and signature.
  rows.push({ name: 'payload tampered, signature kept', headers: bearer(`${vh}.${b64url(JSON.stringify(claims({ sub: 'mallory', scope: 'recordings:read recordings:read:stockholm' })))}.${vs}`), code: INVALID })

  rows.push({ name: 'expired by 120 s (beyond the 30 s tolerance)', headers: bearer(gw.token({ exp: now() - 120 })), code: EXPIRED })
  rows.push({ name: 'expired by 1 day', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims({ exp: now() - 86400 }), SECRET)), code: EXPIRED })
  {
    const noExp = claims()
    delete noExp.exp
    rows.push({ name: 'missing exp', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, noExp, SECRET)), code: INVALID })
  }
  rows.push({ name: 'exp as a string', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims({ exp: String(now() + 600) }), SECRET)), code: INVALID })
  rows.push({ name: 'exp as a numeric string far in the future', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims({ exp: '9999999999' }), SECRET)), code: INVALID })
  {
    const noSub = claims()
    delete noSub.sub
    rows.push({ name: 'missing sub', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, noSub, SECRET)), code: INVALID })
  }
  rows.push({ name: 'empty sub', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims({ sub: '' }), SECRET)), code: INVALID })
  rows.push({ name: 'sub as a number', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims({ sub: 42 }), SECRET)), code: INVALID })

  rows.push({ name: 'signature truncated by 6 characters', headers: bearer(valid.slice(0, -6)), code: INVALID })
  rows.push({ name: 'signature removed (trailing dot kept)', headers: bearer(`${vh}.${vp}.`), code: INVALID })
  rows.push({ name: 'two segments only', headers: bearer(`${vh}.${vp}`), code: INVALID })

  rows.push({ name: 'garbage "Bearer abc"', headers: { authorization: 'Bearer abc' }, code: INVALID })
  rows.push({ name: 'empty Bearer', headers: { authorization: 'Bearer ' }, code: MISSING })
  rows.push({ name: 'no Authorization header at all', headers: {}, code: MISSING })

  rows.push({ name: 'valid token in the query string only (access_token)', headers: {}, suffix: `?access_token=${valid}`, code: MISSING })
  rows.push({ name: 'valid token in the query string only (token)', headers: {}, suffix: `?token=${valid}`, code: MISSING })
  rows.push({ name: 'valid token in a Cookie header only', headers: { cookie: `token=${valid}; access_token=${valid}; jwt=${valid}` }, code: MISSING })
  rows.push({ name: 'valid token in a Cookie header as "Bearer"', headers: { cookie: `authorization=Bearer ${valid}` }, code: MISSING })
  rows.push({ name: 'Basic scheme', headers: { authorization: 'Basic ' + Buffer.from('alice:password').toString('base64') }, code: MISSING })
  rows.push({ name: 'Basic scheme carrying the valid JWT', headers: { authorization: 'Basic ' + valid }, code: MISSING })

  await runRows(t, gw, nas, rows)
})

t.test('HS256 gateway: positive control, a valid token gets 200 and exactly one NAS request', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const res = await get(gw, PATH, { headers: bearer(gw.token()) })
  t.equal(res.status, 200)
  t.ok(res.body.equals(RECORDING), 'the recording is served')
  t.equal(nas.requests.length, 1, 'exactly one request reached the NAS')
  t.equal(nas.requests[0].url, PATH)
  t.equal(nas.requests[0].headers.authorization, undefined, 'the client token is not forwarded')
})

t.test('RS256 gateway: key confusion and other forgeries are refused; a real RS256 token is served', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' }
  })
  const other = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-rsa-'))
  const publicKeyFile = join(dir, 'jwt.pub.pem')
  writeFileSync(publicKeyFile, publicKey)

  const nas = await startStubNas(t)
  let gw: Awaited<ReturnType<typeof startTestGateway>>
  try {
    gw = await startTestGateway(t, nas, { auth: { publicKeyFile, algorithms: ['RS256'] } })
  } catch (err) {
    t.fail(`a gateway with auth.jwt.publicKeyFile and algorithms [RS256] must start: ${(err as Error).message}`)
    return
  }
  const signRs = createSigner({ key: privateKey, algorithm: 'RS256' })

  const rows: Row[] = [
    // The classic: HS256 with the PEM the gateway verifies with as the HMAC key.
    { name: 'HS256 MACed with the RSA public key PEM', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims(), publicKey)), code: INVALID },
    { name: 'HS256 MACed with the public PEM, trailing newline stripped', headers: bearer(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims(), publicKey.trimEnd())), code: INVALID },
    { name: 'HS512 MACed with the RSA public key PEM', headers: bearer(hmacToken({ alg: 'HS512', typ: 'JWT' }, claims(), publicKey, 'sha512')), code: INVALID },
    { name: 'alg none against the RS256 gateway', headers: bearer(unsigned({ alg: 'none', typ: 'JWT' }, claims()) + '.'), code: INVALID },
    { name: 'RS256 signed by another key', headers: bearer(createSigner({ key: other.privateKey, algorithm: 'RS256' })(claims())), code: INVALID },
    { name: 'RS256, expired by 120 s', headers: bearer(signRs(claims({ exp: now() - 120 }))), code: EXPIRED },
    { name: 'HS256 token from the shared test secret', headers: bearer(gw.token()), code: INVALID }
  ]
  {
    const [h, p, s] = signRs(claims()).split('.')
    void p
    rows.push({ name: 'RS256 signature, payload swapped', headers: bearer(`${h}.${b64url(JSON.stringify(claims({ sub: 'mallory' })))}.${s}`), code: INVALID })
  }

  await runRows(t, gw, nas, rows)

  // Positive control on the same gateway: a genuine RS256 token is served.
  const res = await get(gw, PATH, { headers: bearer(signRs(claims())) })
  t.equal(res.status, 200, 'a validly RS256-signed token gets 200')
  t.ok(res.body.equals(RECORDING), 'the recording is served')
  t.equal(nas.requests.length, 1, 'exactly one request reached the NAS, from the positive control')
})
