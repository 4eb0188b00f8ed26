// Stage 7, retention (config.retention): a recording past its retention is
// refused with 410, unless a legal hold in force covers it, and the NAS is
// not asked. Dated by its path, that is known here; dated by the NAS's
// Last-Modified, the exchange judges the NAS's answer before a byte of it
// is passed on (src/retention/rules.ts lastModifiedVerdict), with what this
// stage found about holds. Holds are read only for such recordings, and
// while they cannot be read or do not verify, those are refused with 503:
// whether a hold covers them cannot be told. An upload that may replace a
// recording (a rule with overwrite: true) is refused under a hold in force,
// dated or not, expired or not: a hold keeps what is there.
import { Errors, type NasguardError } from '../errors.js'
import { holdsOn } from '../retention/holds.js'
import { lastModifiedVerdict, retentionOf } from '../retention/rules.js'
import type { GateContext, RequestState, Stage } from './state.js'

async function refuseHeldReplacement (state: RequestState, ctx: GateContext): Promise<void> {
  const holds = await ctx.holds()
  if (!holds.ok) throw new Errors.HoldsUnavailable()
  if (holdsOn(holds.holds, state.segments ?? [], ctx.fileSystem, ctx.now()).length > 0) throw new Errors.RecordingHeld()
}

export const enforceRetention: Stage = async (request, state, ctx) => {
  if (request.method === 'PUT' && state.overwrite === true) await refuseHeldReplacement(state, ctx)
  const rules = ctx.live().retention
  if (rules.length === 0) return
  const segments = state.segments ?? []
  const r = retentionOf(rules, segments, ctx.fileSystem)
  if (r.kind === 'none') return
  const now = ctx.now()
  if (r.kind === 'dated' && now < r.expiresAt) return
  state.retentionRule = r.rule.name
  const holds = await ctx.holds()
  if (!holds.ok) {
    if (r.kind === 'dated') throw new Errors.HoldsUnavailable()
    state.retention = { keepMs: r.keepMs, now, holdsUnknown: true }
    return
  }
  const held = holdsOn(holds.holds, segments, ctx.fileSystem, now)
  if (held.length > 0) {
    state.held = held.map((h) => h.case)
    return
  }
  if (r.kind === 'dated') throw new Errors.RetentionExpired()
  state.retention = { keepMs: r.keepMs, now }
}

/**
 * The refusal for a recording dated by the NAS's Last-Modified (the stage
 * left state.retention), judged on the NAS's answer before any of it is
 * passed on; undefined when it may be served. No valid Last-Modified: its
 * age cannot be told, and it is not served as if it were young.
 */
export function lastModifiedRefusal (state: RequestState | null | undefined, lastModified: string | string[] | undefined): NasguardError | undefined {
  const r = state?.retention
  if (!r || lastModifiedVerdict(lastModified, r.keepMs, r.now) === 'kept') return undefined
  return r.holdsUnknown ? new Errors.HoldsUnavailable() : new Errors.RetentionExpired()
}
