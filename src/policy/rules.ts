// Policy: which scopes open which paths. Deny by default: a request no rule
// matches is refused whatever the token holds. Pure functions over the
// decoded segments produced by canonicalPath.
import type { PolicyRuleConfig } from '../config/schema.js'

type SegmentMatcher = { kind: 'any-depth' } | { kind: 'literal', value: string } | { kind: 'pattern', re: RegExp }

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
    if (!p.includes('*')) return { kind: 'literal', value: p }
    return { kind: 'pattern', re: new RegExp('^(?!\\.)' + p.split('*').map(escapeRe).join('[^/]*') + '$') }
  })
  return { source: glob, segments }
}

function matchFrom (g: SegmentMatcher[], gi: number, s: string[], si: number): boolean {
  if (gi === g.length) return si === s.length
  const m = g[gi]
  if (m.kind === 'any-depth') {
    for (let k = si; k <= s.length; k++) {
      if (k > si && s[k - 1].startsWith('.')) return false
      if (matchFrom(g, gi + 1, s, k)) return true
    }
    return false
  }
  if (si === s.length) return false
  const ok = m.kind === 'literal' ? m.value === s[si] : m.re.test(s[si])
  return ok && matchFrom(g, gi + 1, s, si + 1)
}

export function globMatches (glob: CompiledGlob, segments: string[]): boolean {
  return matchFrom(glob.segments, 0, segments, 0)
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

/** Who is asking: the scopes of a token, or the subject of a verified client certificate. */
export type Grantee = { scopes: ReadonlySet<string> } | { cert: string }

export type Decision =
  | { allow: true, rule: string }
  | { allow: false, reason: 'no_rule' }
  | { allow: false, reason: 'method' }
  | { allow: false, reason: 'insufficient_scope', required: string[] }

function grants (rule: PolicyRule, who: Grantee): boolean {
  if ('cert' in who) return rule.certs.has(who.cert)
  return rule.scopes.some((s) => who.scopes.has(s))
}

export function decide (rules: readonly PolicyRule[], method: string, segments: string[], who: Grantee): Decision {
  const onPath = rules.filter((r) => globMatches(r.glob, segments))
  if (onPath.length === 0) return { allow: false, reason: 'no_rule' }
  const forMethod = onPath.filter((r) => r.methods.has(method))
  if (forMethod.length === 0) return { allow: false, reason: 'method' }
  const granting = forMethod.find((r) => grants(r, who))
  if (granting) return { allow: true, rule: granting.name }
  return { allow: false, reason: 'insufficient_scope', required: [...new Set(forMethod.flatMap((r) => r.scopes))] }
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
