// Policy: which scopes open which paths. Deny by default: a request no rule
// matches is refused whatever the token holds. Pure functions over the
// decoded segments produced by canonicalPath.
import type { PolicyRuleConfig } from '../config/schema.js'
import { foldName, foldingHazard, type FileSystemMode } from './file-system.js'

// Literals and patterns carry a second form for NAS file systems that fold
// names: the folded literal, and a pattern over folded segments.
type SegmentMatcher =
  | { kind: 'any-depth' }
  | { kind: 'literal', value: string, folded: string }
  | { kind: 'pattern', parts: string[], foldedParts: string[] }
  | { kind: 'claim', name: string }

/** Claims a rule path may name: `{sub}`, `{region}`, ... (a whole segment). */
const CLAIM_SEGMENT = /^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$/

export interface CompiledGlob { source: string, segments: SegmentMatcher[] }

/**
 * A segment against a `*` pattern (split at its stars), without a regular
 * expression: the parts between the stars are found left to right, which is
 * exact for `*` alone and linear, where a regex with several `[^/]*` would
 * backtrack polynomially on a crafted segment. A pattern never matches a
 * hidden (dot-led) name.
 */
function wildcardMatches (parts: readonly string[], s: string): boolean {
  const first = parts[0]
  const last = parts[parts.length - 1]
  if (s.startsWith('.') || !s.startsWith(first)) return false
  let pos = first.length
  for (let i = 1; i < parts.length - 1; i++) {
    const at = s.indexOf(parts[i], pos)
    if (at === -1) return false
    pos = at + parts[i].length
  }
  return s.length - last.length >= pos && s.endsWith(last)
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
    if (!p.includes('*')) return { kind: 'literal', value: p, folded: foldName(p) }
    return { kind: 'pattern', parts: p.split('*'), foldedParts: p.split('*').map(foldName) }
  })
  return { source: glob, segments }
}

/**
 * A claim value usable as one path segment, or undefined. A value that could
 * reach another segment or look like a pattern never matches: '/', '\\',
 * '..' and other dot-led names, '*', '%' (encodings), control characters,
 * and anything Unicode normalisation would change. On a NAS that folds
 * names, neither does a value that is not its own fold (`ALICE`, `alıce`)
 * or that the NAS would resolve to another name (`alice.`, `alice `,
 * `ALICE~1`): it would open the tree of the user whose value it folds onto.
 */
export function claimSegment (v: unknown, mode: FileSystemMode = 'posix'): string | undefined {
  if (typeof v !== 'string' || v === '' || v.length > 255) return undefined
  if (/[/\\*%?#\x00-\x1f\x7f-\x9f]/.test(v) || v.startsWith('.') || v.includes('..')) return undefined
  if (v !== v.normalize('NFKC')) return undefined
  if (mode === 'folding' && (v !== foldName(v) || foldingHazard(v) !== undefined)) return undefined
  return v
}

type Claims = Readonly<Record<string, unknown>>

/**
 * `{name}` segments read from the path instead of a token's claims (a
 * retention rule's `{yyyy}`): a segment `accept`s says yes to is bound to
 * its name in `bound`.
 */
export interface Capture { accept: (name: string, segment: string) => boolean, bound: Record<string, string> }

/** A request's segments as matched: exact bytes, or (folding) their fold keys. */
interface Subject { segments: readonly string[], folded?: readonly string[], claims?: Claims, capture?: Capture }

function segmentMatches (m: Exclude<SegmentMatcher, { kind: 'any-depth' }>, x: Subject, i: number): boolean {
  const f = x.folded
  if (m.kind === 'literal') return f ? m.folded === f[i] : m.value === x.segments[i]
  if (m.kind === 'pattern') return f ? wildcardMatches(m.foldedParts, f[i]) : wildcardMatches(m.parts, x.segments[i])
  const s = f ? f[i] : x.segments[i]
  if (x.capture) {
    // Bound along the way; a branch that fails later is overwritten by the one that matches (each name is one segment of the glob).
    if (!x.capture.accept(m.name, s)) return false
    x.capture.bound[m.name] = s
    return true
  }
  const v = x.claims ? claimSegment(x.claims[m.name], f ? 'folding' : 'posix') : undefined
  return v !== undefined && v === s
}

function matchFrom (g: SegmentMatcher[], gi: number, x: Subject, si: number): boolean {
  const s = x.segments
  if (gi === g.length) return si === s.length
  const m = g[gi]
  if (m.kind === 'any-depth') {
    for (let k = si; k <= s.length; k++) {
      if (k > si && s[k - 1].startsWith('.')) return false
      if (matchFrom(g, gi + 1, x, k)) return true
    }
    return false
  }
  return si < s.length && segmentMatches(m, x, si) && matchFrom(g, gi + 1, x, si + 1)
}

/**
 * Without claims, a rule with a `{claim}` segment matches nothing. With
 * `folded` (the segments' fold keys), names match as a folding NAS resolves
 * them.
 */
export function globMatches (glob: CompiledGlob, segments: readonly string[], claims?: Claims, folded?: readonly string[]): boolean {
  return matchFrom(glob.segments, 0, { segments, folded, claims }, 0)
}

/**
 * The `{name}` segments' values when the glob matches, read from the path
 * (each must be accepted); undefined when it does not match. With `folded`,
 * as globMatches, and the values are fold keys.
 */
export function globCaptures (glob: CompiledGlob, segments: readonly string[], accept: Capture['accept'], folded?: readonly string[]): Record<string, string> | undefined {
  const capture: Capture = { accept, bound: {} }
  return matchFrom(glob.segments, 0, { segments, folded, capture }, 0) ? capture.bound : undefined
}

/**
 * What a glob can match under a directory (its segments; a recording is
 * deeper): 'none' when nothing; 'unaligned' when a `**` comes before the
 * directory ends, so its `{name}` segments (if any) may be read from
 * anywhere; else 'meets', with the `{name}` values read from the
 * directory itself, and `all` when it matches every path under it (the
 * rest of the glob is one `**`; hidden names aside).
 */
export function globUnder (glob: CompiledGlob, dir: readonly string[], accept: Capture['accept'], folded?: readonly string[]): { kind: 'none' } | { kind: 'unaligned' } | { kind: 'meets', bound: Record<string, string>, all: boolean } {
  const capture: Capture = { accept, bound: {} }
  const x: Subject = { segments: dir, folded, capture }
  const g = glob.segments
  for (let i = 0; i < dir.length; i++) {
    if (i === g.length) return { kind: 'none' }
    const m = g[i]
    if (m.kind === 'any-depth') return i === g.length - 1 ? { kind: 'meets', bound: capture.bound, all: true } : { kind: 'unaligned' }
    if (!segmentMatches(m, x, i)) return { kind: 'none' }
  }
  if (g.length === dir.length) return { kind: 'none' }
  return { kind: 'meets', bound: capture.bound, all: g.length === dir.length + 1 && g[dir.length].kind === 'any-depth' }
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
  /** An upload (PUT) may replace a recording that exists. */
  overwrite: boolean
}

const METHOD_ORDER = ['GET', 'HEAD', 'PUT']

/** The methods some of the rules take, in one order: a 405's Allow (RFC 9110 §10.2.1). */
export function methodsOf (rules: readonly PolicyRule[]): string[] {
  return METHOD_ORDER.filter((m) => rules.some((r) => r.methods.has(m)))
}

export function compileRules (rules: readonly PolicyRuleConfig[]): PolicyRule[] {
  return rules.map((r) => ({ name: r.name, glob: compileGlob(r.path), methods: new Set(r.methods), scopes: r.scopes ?? [], certs: new Set(r.certs ?? []), overwrite: r.overwrite === true }))
}

/** What a rule grants to: a token's scopes, or a verified client certificate. */
export type Basis = { scopes: ReadonlySet<string> } | { cert: string }

/**
 * Who is asking: a token (its scopes, and its claims for `{claim}` paths),
 * a verified client certificate, or a playback grant: minted under a rule,
 * on the basis of the scopes or certificate that rule granted to then.
 */
export type Grantee =
  | { scopes: ReadonlySet<string>, claims?: Claims }
  | { cert: string }
  | { grantRule: string, basis: Basis, claims?: Claims }

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
  | { allow: false, reason: 'case_variant' }
  | { allow: false, reason: 'method', allowed: string[] }
  | { allow: false, reason: 'insufficient_scope', required: string[], rule: string }

/** The token scopes the rule grants to (empty when none does). */
export function grantingScopes (rule: PolicyRule, scopes: ReadonlySet<string>): string[] {
  return [...scopes].filter((ts) => rule.scopes.some((rs) => scopeMatches(rs, ts)))
}

/**
 * A grant keeps working only while its rule still grants to what it was
 * minted on: the same rule name is not enough once the rule's scopes or
 * certificates changed.
 */
function grants (rule: PolicyRule, who: Grantee): boolean {
  if ('grantRule' in who) return rule.name === who.grantRule && grants(rule, who.basis)
  if ('cert' in who) return rule.certs.has(who.cert)
  return grantingScopes(rule, who.scopes).length > 0
}

/**
 * Which rule allows this request. On a NAS that folds names (mode
 * `folding`), rules match by fold key, so every spelling the NAS resolves
 * to one file meets the same rules; a spelling that meets a rule only
 * through folding (`/MEDICALL/...` for `/medicall/**`, `/home/ALICE/` for
 * `{sub}` alice) is refused as a case variant rather than judged.
 */
export function decide (rules: readonly PolicyRule[], method: string, segments: readonly string[], who: Grantee, mode: FileSystemMode = 'posix'): Decision {
  const claims = 'cert' in who ? undefined : who.claims
  const folded = mode === 'folding' ? segments.map(foldName) : undefined
  const onPath = rules.filter((r) => globMatches(r.glob, segments, claims, folded))
  if (onPath.length === 0) return { allow: false, reason: 'no_rule' }
  if (folded && onPath.some((r) => !globMatches(r.glob, segments, claims))) return { allow: false, reason: 'case_variant' }
  const forMethod = onPath.filter((r) => r.methods.has(method))
  if (forMethod.length === 0) return { allow: false, reason: 'method', allowed: methodsOf(onPath) }
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
