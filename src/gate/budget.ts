// Stage 10, budget (limits.perSubject, and a rule's own perSubject): the
// request is charged to its identity's ledger (a token's sub, its grants
// too; a client certificate's CN, kept apart) against the budgets of the
// rule that allowed it, or refused with 429 and when it may try again. A
// GET charges its recording (distinct recordings: a player's Range
// requests for one file count once); a HEAD or an upload charges a
// request only. Not charged for a client that already left, nor for one
// that admission refused (its share of NAS connections full: a neighbour
// behind the same address must not burn this subject's budget). The store
// may answer later (Redis; the primary of workers): the stage then waits.
import { Errors, type NasguardError } from '../errors.js'
import { caseKey } from '../policy/file-system.js'
import { ledgerOf } from '../budgets/store.js'
import type { Verdict } from '../budgets/book.js'
import type { RequestState, Stage } from './state.js'

export const chargeBudget: Stage = (request, state, ctx) => {
  const budgets = state.rule === undefined ? undefined : ctx.live().budgets.get(state.rule)
  if (!budgets || !state.identity) return
  const ledger = ledgerOf(state.identity)
  // On a NAS that folds case, every spelling of one recording is that one recording (its decoded names, case-folded as the NAS does).
  const recording = request.method !== 'GET' || state.path === undefined ? undefined : ctx.fileSystem === 'folding' && state.segments ? '/' + state.segments.map(caseKey).join('/') : state.path
  const verdict = ctx.charge({ subject: ledger, ...(recording !== undefined ? { recording } : {}) }, budgets)
  if (verdict instanceof Promise) return verdict.then((v) => { settle(v, ledger, state) })
  settle(verdict, ledger, state)
}

function settle (verdict: Verdict, ledger: string, state: RequestState): void {
  if (verdict.ok) {
    state.charged = ledger
    return
  }
  state.budget = verdict.budget
  const err = new Errors.QuotaExceeded() as NasguardError & { retryAfterSec?: number }
  err.retryAfterSec = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))
  throw err
}
