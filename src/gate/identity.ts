// Stage 3, identity: the bearer token, playback grant or client
// certificate the request carries, verified (src/auth/identity.ts); deny by
// default, so no credential is a refusal.
import type { Stage } from './state.js'

export const identify: Stage = async (request, state) => {
  state.identity = await request.authenticate(state.path as string)
}
