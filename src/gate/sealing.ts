// Stage 8, sealing (sealing.mode migrate or require): the recording's period,
// read from its path, and the key of that period. A period whose key was
// destroyed is erased: 410, and the NAS is not asked. Under require, a path
// with no period, or a period with no key, cannot be opened either. The
// NAS's name for the recording is its sealed name (src/sealing/names.ts).
// An upload (PUT) is always sealed: it needs sealing on, a period in its
// path, and that period's key, which only a recent period's first upload
// may make (the current period or the one before), and the directories it
// leaves readable on the NAS must not hold what may be a phone number.
import { Errors } from '../errors.js'
import { holdsPhoneNumber } from '../policy/phone-numbers.js'
import { readableSegments } from '../sealing/names.js'
import { periodOf, recentPeriods } from '../sealing/period.js'
import type { Stage } from './state.js'

export const resolveSealing: Stage = (request, state, ctx) => {
  const s = ctx.sealing()
  const upload = request.method === 'PUT'
  if (!s) {
    if (upload) throw new Errors.MethodNotAllowed()
    return
  }
  const segments = state.segments ?? []
  const period = periodOf(s.pattern, segments)
  if (period === undefined) {
    if (upload) throw new Errors.UploadPath()
    if (s.mode === 'require') throw new Errors.NoPeriod()
    return
  }
  if (s.keyring.erased(period)) throw new Errors.RecordingErased()
  const key = ctx.periodKey(period, upload)
  if (upload) {
    if (readableSegments(segments, s.nameSegments).some(holdsPhoneNumber)) throw new Errors.UploadReadableNumber()
    // A recent period's first upload makes its key, once its body is judged (src/proxy/ingest.ts), unless this gateway makes none.
    if (!key && !recentPeriods(s.pattern.unit, new Date()).includes(period)) throw new Errors.UploadPeriod()
    if (!key && !s.makeKeys) throw new Errors.PeriodKeyMissing()
    const sealedPath = s.sealedPath(state.path as string, segments)
    if (sealedPath === null) throw new Errors.UploadNameTooLong()
    state.sealed = { path: sealedPath, period, keyId: key?.keyId ?? `${period}:new` }
    return
  }
  if (!key) {
    if (s.mode === 'require') throw new Errors.RecordingErased()
    return
  }
  const sealedPath = s.sealedPath(state.path as string, segments)
  if (sealedPath === null) {
    // No sealed recording can have this name: under migrate the NAS may still hold it in plaintext.
    if (s.mode === 'require') throw new Errors.NotFound()
    return
  }
  state.sealed = { path: sealedPath, period, keyId: key.keyId }
}
