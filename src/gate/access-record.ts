// Stage 11, access record: no byte of a recording leaves before this record
// is on disk (audit.durability); a trail that cannot be written refuses
// the request (503).
import { Errors } from '../errors.js'
import { requestFields } from './record-fields.js'
import type { Stage } from './state.js'

export const recordAccess: Stage = async (request, state, ctx) => {
  if (!await ctx.record({ event: 'access', time: new Date().toISOString(), ...requestFields(request, state) })) {
    throw new Errors.AuditUnavailable()
  }
  state.accessRecorded = true
}
