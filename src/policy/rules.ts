// Policy: which scopes open which paths. Deny by default: a request no rule
// matches is refused whatever the token holds. Pure functions over the
// decoded segments produced by canonicalPath.
import type { PolicyRuleConfig } from '../config/schema.js'

type SegmentMatcher =
  | { kind: 'any-depth' }
  | { kind: 'literal', value: string }
  | { kind: 'pattern', re: RegExp }
  | { kind: 'claim', name: string }

/** Claims a rule path may name: `{sub}`, `{region}`, ... (a whole segment). */
const CLAIM_SEGMENT = /^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$/

export interface CompiledGlob { source: string, segments: SegmentMatcher[] }

function escapeRe (s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * `*` matches within one segment, `**` (a whole segment) matches any number
 * of segments. Neither matches a segment that starts with a dot: hidden
 * files and folders must be named literally.
 */
export function compileGlob (glob: string): CompiledGlob {
  if (!glob.startsWith('/')) throw new Error('must start with /')
  const parts = glob.slice(1).split('/')
  const segments = parts.map((p, i): SegmentMatcher => {
    if (p === '' && i !== parts.length - 1) throw new Error('empty segment (//)')
    if (p === '.' || p === '..') throw new Error('dot segments are not allowed')
    if (p === '**') return { kind: 'any-depth' }
    if (p.includes('**')) throw new Error('** must be a whole segment')
    const claim = CLAIM_SEGMENT.exec(p)
    if (claim) return { kind: 'claim', name: claim[1] }
    if (/[{}]/.test(p)) throw new Error('a claim must be a whole segment, like /home/{sub}/**')
    if (!p.includes('*')) return { kind: 'literal', value: p }
    return { kind: 'pattern', re: new RegExp('^(?!\\.)' + p.split('*').map(escapeRe).join('[^/]*') + '$') }
  })
  return { source: glob, segments }
}

/**
 * A claim value usable as one path segment, or undefined. A value that could
 * reach another segment or look like a pattern never matches: '/', '\\',
 * '..' and other dot-led names, '*', '%' (encodings), control characters,
 * and anything Unicode normalisation would change.
 */
export function claimSegment (v: unknown): string | undefined {
  if (typeof v !== 'string' || v === '' || v.length > 255) return undefined
  if (/[/\\*%?#\x00-\x1f\x7f-\x9f]/.test(v) || v.startsWith('.') || v.includes('..')) return undefined
  if (v !== v.normalize('NFKC')) return undefined
  return v
}

type Claims = Readonly<Record<string, unknown>>

function matchFrom (g: SegmentMatcher[], gi: number, s: string[], si: number, claims?: Claims): boolean {
  if (gi === g.length) return si === s.length
  const m = g[gi]
  if (m.kind === 'any-depth') {
    for (let k = si; k <= s.length; k++) {
      if (k > si && s[k - 1].startsWith('.')) return false
      if (matchFrom(g, gi + 1, s, k, claims)) return true
    }
    return false
  }
  if (si === s.length) return false
  let ok: boolean
  if (m.kind === 'literal') ok = m.value === s[si]
  else if (m.kind === 'pattern') ok = m.re.test(s[si])
  else {
    const v = claims ? claimSegment(claims[m.name]) : undefined
    ok = v !== undefined && v === s[si]
  }
  return ok && matchFrom(g, gi + 1, s, si + 1, claims)
}

/** Without claims, a rule with a `{claim}` segment matches nothing. */
export function globMatches (glob: CompiledGlob, segments: string[], claims?: Claims): boolean {
  return matchFrom(glob.segments, 0, segments, 0, claims)
}

/** The claim names a glob's `{claim}` segments use. */
export function claimsUsed (glob: CompiledGlob): string[] {
  return glob.segments.flatMap((m) => m.kind === 'claim' ? [m.name] : [])
}

export interface PolicyRule {
  name: string
  glob: CompiledGlob
  methods: ReadonlySet<string>
  scopes: readonly string[]
  /** Client certificate subjects (`CN=name`) this rule grants to. */
  certs: ReadonlySet<string>
}

export function compileRules (rules: readonly PolicyRuleConfig[]): PolicyRule[] {
  return rules.map((r) => ({ name: r.name, glob: compileGlob(r.path), methods: new Set(r.methods), scopes: r.scopes ?? [], certs: new Set(r.certs ?? []) }))
}

/**
 * Who is asking: a token (its scopes, and its claims for `{claim}` paths),
 * a verified client certificate, or a playback grant (minted under a rule).
 */
export type Grantee =
  | { scopes: ReadonlySet<string>, claims?: Claims }
  | { cert: string }
  | { grantRule: string, claims?: Claims }

/**
 * A rule scope matches a token scope exactly, or, when it ends in `:*`, any
 * token scope that adds exactly one more segment (`recordings:read:*` opens
 * to `recordings:read:stockholm`, not `recordings:read` or `recordings:readx`).
 */
export function scopeMatches (ruleScope: string, tokenScope: string): boolean {
  if (!ruleScope.endsWith(':*')) return ruleScope === tokenScope
  const prefix = ruleScope.slice(0, -1)
  return tokenScope.startsWith(prefix) && /^[^:\s*]+$/.test(tokenScope.slice(prefix.length))
}

export type Decision =
  | { allow: true, rule: string }
  | { allow: false, reason: 'no_rule' }
  | { allow: false, reason: 'method' }
  | { allow: false, reason: 'insufficient_scope', required: string[], rule: string }

function grants (rule: PolicyRule, who: Grantee): boolean {
  if ('cert' in who) return rule.certs.has(who.cert)
  if ('grantRule' in who) return rule.name === who.grantRule
  for (const rs of rule.scopes) {
    if (!rs.endsWith(':*')) { if (who.scopes.has(rs)) return true; continue }
    for (const ts of who.scopes) if (scopeMatches(rs, ts)) return true
  }
  return false
}

export function decide (rules: readonly PolicyRule[], method: string, segments: string[], who: Grantee): Decision {
  const claims = 'cert' in who ? undefined : who.claims
  const onPath = rules.filter((r) => globMatches(r.glob, segments, claims))
  if (onPath.length === 0) return { allow: false, reason: 'no_rule' }
  const forMethod = onPath.filter((r) => r.methods.has(method))
  if (forMethod.length === 0) return { allow: false, reason: 'method' }
  const granting = forMethod.find((r) => grants(r, who))
  if (granting) return { allow: true, rule: granting.name }
  return { allow: false, reason: 'insufficient_scope', required: [...new Set(forMethod.flatMap((r) => r.scopes))], rule: forMethod[0].name }
}

/** Scopes from `scope` (space-separated string) and `scp` (array or string). Other shapes count for nothing. */
export function scopesOf (claims: Record<string, unknown>): Set<string> {
  const out = new Set<string>()
  const add = (v: unknown): void => {
    if (typeof v === 'string') for (const s of v.split(' ')) { if (s) out.add(s) }
  }
  add(claims.scope)
  if (Array.isArray(claims.scp)) claims.scp.forEach((s) => { if (typeof s === 'string' && s && !s.includes(' ')) out.add(s) })
  else add(claims.scp)
  return out
}
