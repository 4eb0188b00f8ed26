// The grants endpoint's first stage (it takes a body, which its handler
// checks against a schema): POST only, headers within HEADER_LIMITS, no
// upgrade, and an HTTP/1.1 Host. Its path is the grants path itself.
import { Errors, methodNotAllowed } from '../errors.js'
import { GRANTS_PATH } from './paths.js'
import { headersWithinLimits } from './framing.js'
import type { Stage } from './state.js'

export const grantsMethod: Stage = (request, state) => {
  if (!headersWithinLimits(request.rawHeaders)) throw new Errors.HeadersTooLarge()
  if (request.method !== 'POST') throw methodNotAllowed(['POST'])
  if (request.headers.upgrade !== undefined) throw new Errors.BadRequest('protocol upgrades are not supported')
  if (request.httpVersion === '1.1' && request.headers.host === undefined) throw new Errors.BadRequest('an HTTP/1.1 request needs a Host header')
  state.path = GRANTS_PATH
}
