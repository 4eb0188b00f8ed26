// Stage 2, canonical path: one unambiguous path, or a refusal. Refused too
// when the NAS would resolve it to another name than the policy sees (a
// folding NAS: trailing dots and spaces, 8.3 short names, ::$DATA).
import { Errors } from '../errors.js'
import { canonicalPath } from '../policy/canonical-path.js'
import { pathHazard } from '../policy/file-system.js'
import type { Stage } from './state.js'

export const canonicalTarget: Stage = (request, state, ctx) => {
  const canonical = canonicalPath(request.url, ctx.live().maxPathLength)
  if (!canonical.ok) throw new Errors.BadPath(canonical.reason)
  const hazard = pathHazard(ctx.fileSystem, canonical.segments)
  if (hazard !== undefined) throw new Errors.BadPath(hazard)
  state.path = canonical.path
  state.segments = canonical.segments
}
