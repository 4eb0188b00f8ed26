// Stage 9, budget (limits.perSubject, and a rule's own perSubject): the
// request is charged to its subject (a token's sub; a grant's minter; a
// client certificate's CN) against the budgets of the rule that allowed
// it, or refused with 429 and when it may try again. A GET charges its
// recording (distinct recordings: a player's Range requests for one file
// count once); a HEAD or an upload charges a request only. Not charged for
// a client that already left.
import { Errors, type NasguardError } from '../errors.js'
import { foldName } from '../policy/file-system.js'
import type { Stage } from './state.js'

export const chargeBudget: Stage = (request, state, ctx) => {
  const budgets = state.rule === undefined ? undefined : ctx.live().budgets.get(state.rule)
  if (!budgets || !state.identity) return
  const subject = state.identity.subject
  // On a NAS that folds names, every spelling of one recording is that one recording.
  const recording = request.method !== 'GET' || state.path === undefined ? undefined : ctx.fileSystem === 'folding' ? foldName(state.path) : state.path
  const verdict = ctx.charge({ subject, ...(recording !== undefined ? { recording } : {}) }, budgets)
  if (verdict.ok) {
    state.charged = subject
    return
  }
  state.budget = verdict.budget
  const err = new Errors.QuotaExceeded() as NasguardError & { retryAfterSec?: number }
  err.retryAfterSec = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))
  throw err
}
