// Stage 5, listing and file-type guard: a request for a directory, a hidden
// name or a type outside files.extensions never reaches the NAS (the NAS's
// answer is checked again before its first byte is sent: src/proxy).
import { Errors } from '../errors.js'
import { checkFileRequest } from '../policy/listing-guard.js'
import type { Stage } from './state.js'

export const guardFile: Stage = (_request, state, ctx) => {
  const file = checkFileRequest(state.segments ?? [], ctx.live().extensions)
  if (!file.ok) {
    // Refused here, the request was not allowed by its rule after all: its
    // record, metrics and log line say no rule, as for a policy refusal.
    state.rule = undefined
    if (file.reason === 'directory') throw new Errors.Directory()
    if (file.reason === 'hidden') throw new Errors.HiddenPath()
    throw new Errors.FileType()
  }
  state.extension = file.extension
}
