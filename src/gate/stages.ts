// The gate: every request passes its stages in this order, and only then is
// it proxied. This file is the one place the order is declared; the README's
// "What a request goes through" is checked against it (test/gate/order.test.ts).
import { recordAccess } from './access-record.js'
import { admit } from './admission.js'
import { chargeBudget } from './budget.js'
import { canonicalTarget } from './canonical-path.js'
import { guardFile } from './file-guard.js'
import { methodAndFraming } from './framing.js'
import { grantsMethod } from './grants-method.js'
import { identify } from './identity.js'
import { authorize } from './policy.js'
import { checkRangeHeader } from './range.js'
import { enforceRetention } from './retention.js'
import { resolveSealing } from './sealing.js'
import type { GateContext, GateRequest, RequestState, Stage } from './state.js'

export interface NamedStage {
  name: string
  run: Stage
  /** It takes something for the client (a NAS connection, an access record): not run once the client has left. */
  forClient?: true
}

/** A recording: GET or HEAD of a file under a policy rule. */
export const RECORDING_GATE: readonly NamedStage[] = [
  { name: 'method and framing', run: methodAndFraming },
  { name: 'canonical path', run: canonicalTarget },
  { name: 'identity', run: identify },
  { name: 'policy', run: authorize },
  { name: 'listing and file-type guard', run: guardFile },
  { name: 'range', run: checkRangeHeader },
  { name: 'retention', run: enforceRetention },
  { name: 'sealing', run: resolveSealing },
  { name: 'admission', run: admit, forClient: true },
  { name: 'budget', run: chargeBudget, forClient: true },
  { name: 'access record', run: recordAccess, forClient: true }
]

/** The grants endpoint: its body, policy and record are its handler's. */
export const GRANTS_GATE: readonly NamedStage[] = [
  { name: 'method and framing', run: grantsMethod },
  { name: 'identity', run: identify }
]

/**
 * Runs a gate's stages in order; a refusal throws. A client that left is
 * still judged by every check (a denied attempt is audited even when its
 * client hung up at once), but takes nothing: the stages that take
 * something for it are not run. Resolves 'gone' then, or when it left
 * during the last stage; 'passed' otherwise.
 */
export async function runGate (gate: readonly NamedStage[], request: GateRequest, state: RequestState, ctx: GateContext): Promise<'passed' | 'gone'> {
  for (const stage of gate) {
    if (stage.forClient && state.closed) return 'gone'
    // Most stages are synchronous: only a promise is awaited.
    const pending = stage.run(request, state, ctx)
    if (pending) await pending
  }
  return state.closed ? 'gone' : 'passed'
}
