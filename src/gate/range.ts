// Stage 6, range: a Range header the NAS and the gateway read the same way,
// with at most limits.maxRanges ranges (src/policy/range.ts).
import { Errors } from '../errors.js'
import { checkRange } from '../policy/range.js'
import type { Stage } from './state.js'

export const checkRangeHeader: Stage = (request, _state, ctx) => {
  const range = checkRange(request.headers.range, ctx.live().maxRanges)
  if (!range.ok) throw new Errors.BadRange(range.reason)
}
