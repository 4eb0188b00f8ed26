// Stage 4, policy: the first rule whose path and method match decides, and
// the identity must hold its scopes or certificate (src/policy/rules.ts).
import { Errors, methodNotAllowed, type NasguardError } from '../errors.js'
import { decide } from '../policy/rules.js'
import type { Stage } from './state.js'

export const authorize: Stage = (request, state, ctx) => {
  const identity = state.identity
  if (!identity || !state.segments) throw new Errors.Internal()
  const decision = decide(ctx.live().rules, request.method, state.segments, identity.grantee, ctx.fileSystem)
  if (decision.allow) {
    state.rule = decision.rule
    state.overwrite = ctx.live().rules.find((r) => r.name === decision.rule)?.overwrite === true
    return
  }
  if (decision.reason === 'insufficient_scope') state.deniedBy = decision.rule
  if (decision.reason === 'method') throw methodNotAllowed(decision.allowed)
  if (decision.reason === 'no_rule') throw new Errors.NoRule()
  if (decision.reason === 'case_variant') throw new Errors.BadPath('a case variant of a name a rule matches (the NAS folds case)')
  const err = new Errors.InsufficientScope() as NasguardError & { required?: string[] }
  err.required = decision.required
  throw err
}
