// POST /_nasguard/grants: a playback grant for one recording, minted for a
// token that may read it now (browsers' <audio> cannot send a bearer
// token). The body is checked against a schema; the path it names passes the
// recording gate's own stages (retention too), as a GET of it would; the grant is audited
// before it is handed out.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config/schema.js'
import type { GrantSigner } from '../auth/grants.js'
import type { Identity } from '../auth/identity.js'
import type { AuditRecord } from '../audit/writer.js'
import { Errors } from '../errors.js'
import { repeatsKeys } from '../json-keys.js'
import { claimsUsed, grantingScopes } from '../policy/rules.js'
import { canonicalTarget } from '../gate/canonical-path.js'
import { guardFile } from '../gate/file-guard.js'
import { GRANTS_PATH } from '../gate/paths.js'
import { authorize } from '../gate/policy.js'
import { enforceRetention } from '../gate/retention.js'
import type { GateContext, GateRequest, RequestState } from '../gate/state.js'

/** The body: a plain JSON schema (TypeBox, the config's, stays out of the gateway's processes). */
const GrantRequest = {
  type: 'object',
  properties: { path: { type: 'string', minLength: 1, maxLength: 8192 }, ttlSec: { type: 'integer', minimum: 1 } },
  required: ['path'],
  additionalProperties: false
} as const
interface GrantBody { path: string, ttlSec?: number }

export interface GrantsRoute {
  signer: GrantSigner
  settings: Readonly<Config['auth']['grants']>
  gate: GateContext
  gateRequest: (request: FastifyRequest, reply: FastifyReply) => GateRequest
  /** Writes the grant record (with the request's own fields); false when it could not be written. */
  record: (request: FastifyRequest, grant: Partial<AuditRecord>) => Promise<boolean>
}

/** The path the grant opens: canonical, allowed to this identity by a rule, a file of a served type, not past its retention. */
async function authorised (route: GrantsRoute, request: FastifyRequest<{ Body: GrantBody }>, reply: FastifyReply): Promise<{ path: string, rule: string }> {
  const target: RequestState = { ...request.ng, path: undefined, segments: undefined, rule: undefined }
  const asGet = { ...route.gateRequest(request, reply), method: 'GET', url: request.body.path }
  try {
    for (const stage of [canonicalTarget, authorize, guardFile, enforceRetention]) await stage(asGet, target, route.gate)
  } finally {
    request.ng.retentionRule = target.retentionRule
    request.ng.deniedBy = target.deniedBy
  }
  return { path: target.path as string, rule: target.rule as string }
}

/**
 * Bodies are parsed as Fastify does (a `__proto__` or `constructor.prototype`
 * key is refused), and one that names a member twice is refused too: JSON.parse
 * keeps the last `path`, while a WAF or log in front may have read the first.
 * Registered on the gateway itself, not only this route: any JSON body it
 * takes is read the same way (today, this route's is the only one; uploads
 * have their own parser).
 */
function registerBodyParser (app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = String(body)
    parse(request, text, (err, value) => {
      if (err) done(err, undefined)
      else if (repeatsKeys(text)) done(new Errors.BadRequest('the body names a member twice'), undefined)
      else done(null, value)
    })
  })
}

export function registerGrantsRoute (app: FastifyInstance, route: GrantsRoute): void {
  const g = route.settings
  registerBodyParser(app)
  app.post<{ Body: GrantBody }>(GRANTS_PATH, { bodyLimit: 4096, schema: { body: GrantRequest } }, async (request, reply) => {
    const identity = request.ng.identity as Identity
    // A grant opens one recording; it never mints others.
    if (identity.method === 'grant') throw new Errors.GrantInvalid('a grant cannot mint grants')
    const { path, rule } = await authorised(route, request, reply)
    const granting = route.gate.live().rules.find((r) => r.name === rule)!
    const used = claimsUsed(granting.glob)
    // What the rule granted to now: the grant works only while it still does.
    const basis = 'cert' in identity.grantee ? { m: identity.grantee.cert, n: identity.certSerial } : 'scopes' in identity.grantee ? { g: grantingScopes(granting, identity.grantee.scopes) } : {}
    const now = Math.floor(Date.now() / 1000)
    const ttl = Math.min(request.body.ttlSec ?? g.ttlSec, g.ttlSec)
    // A grant never outlives the token it was minted from.
    const exp = Math.min(now + ttl, identity.exp ?? Number.MAX_SAFE_INTEGER)
    const value = route.signer.sign({
      p: path,
      s: identity.subject,
      r: rule,
      i: now,
      e: exp,
      ...(identity.jti ? { j: identity.jti } : {}),
      ...(identity.iat !== undefined ? { t: identity.iat } : {}),
      ...(identity.keyTag !== undefined ? { k: identity.keyTag } : {}),
      ...(g.bindIp ? { a: request.ip } : {}),
      ...basis,
      ...(used.length > 0 ? { c: Object.fromEntries(used.map((n) => [n, String(identity.claims?.[n])])) } : {})
    })
    if (!await route.record(request, { method: 'GET', path, range: undefined, rule, grantExpiresAt: new Date(exp * 1000).toISOString() })) {
      throw new Errors.AuditUnavailable()
    }
    reply.code(201)
    return { url: `${path}?grant=${value}`, expiresAt: new Date(exp * 1000).toISOString() }
  })
}
