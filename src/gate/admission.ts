// Stage 9, admission: a NAS connection within the client's share, or
// 429 / 503 now, never a hang (src/proxy/admission.ts). A pipelined
// HTTP/1.1 request first waits for the responses before it: it takes no
// NAS connection until its response owns the connection.
import type { Stage } from './state.js'

export const admit: Stage = async (request, state, ctx) => {
  await request.turn()
  // Left while it waited: it takes no NAS connection.
  if (state.closed) return
  state.ticket = ctx.admission.admit(state.client.clientIp)
  if (state.ticket.ready) await state.ticket.ready
}
