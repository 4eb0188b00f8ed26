// The gate as Fastify runs it: one onRequest hook that tracks the request,
// runs the stages (src/gate/stages.ts) and, once they passed, starts the
// fetch. A client that left takes nothing; after its access record, the
// trail gets its completion.
import type { ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Authenticator } from '../auth/identity.js'
import { GRANTS_PATH } from '../gate/paths.js'
import { GRANTS_GATE, RECORDING_GATE, runGate } from '../gate/stages.js'
import type { GateContext, GateRequest } from '../gate/state.js'
import { elapsedMs, type Deliveries } from './deliveries.js'
import type { Records } from './records.js'

export interface GateParts {
  gate: GateContext
  authenticator: Authenticator
  deliveries: Deliveries
  records: Records
  /** How long a request body other than an upload's may take to arrive whole (3 × limits.headersTimeoutMs). */
  bodyDeadlineMs: number
}

/**
 * A body other than an upload's (the grants endpoint's JSON, a body the
 * gate refused) must arrive whole within the deadline, or its connection
 * (HTTP/1.1) or stream (HTTP/2) goes: HTTP/1.1 has no whole-request
 * deadline of Node's, for uploads' sake (src/tls/server.ts).
 */
function bodyDeadline (request: FastifyRequest, reply: FastifyReply, ms: number): void {
  const raw = request.raw as FastifyRequest['raw'] & { stream?: { endAfterHeaders: boolean } }
  const h = request.headers
  const hasBody = (h['content-length'] !== undefined && h['content-length'] !== '0') || h['transfer-encoding'] !== undefined || raw.stream?.endAfterHeaders === false
  if (!hasBody || request.method === 'PUT') return
  const timer = setTimeout(() => { if (!raw.readableEnded) raw.destroy() }, ms)
  timer.unref()
  const clear = (): void => { clearTimeout(timer) }
  raw.once('end', clear)
  reply.raw.once('close', clear)
}

/** The request as the gate's stages see it (src/gate/state.ts). */
export function gateRequestOf (authenticator: Authenticator, request: FastifyRequest, reply: FastifyReply): GateRequest {
  const raw = request.raw as typeof request.raw & { stream?: { endAfterHeaders: boolean } }
  return {
    id: request.id,
    method: request.method,
    url: request.url,
    headers: request.headers,
    rawHeaders: raw.rawHeaders,
    httpVersion: raw.httpVersion,
    endAfterHeaders: raw.stream?.endAfterHeaders,
    authenticate: async (path) => await authenticator.authenticate(request, path),
    turn: async () => {
      const queued = reply.raw as unknown as ServerResponse
      if (raw.stream !== undefined || queued.socket || request.ng.closed) return
      await new Promise<void>((resolve) => { queued.once('socket', () => resolve()); queued.once('close', () => resolve()) })
    }
  }
}

export function registerGate (app: FastifyInstance, p: GateParts): void {
  app.addHook('onRequest', async (request, reply) => {
    const state = p.deliveries.track(request, reply)
    bodyDeadline(request, reply, p.bodyDeadlineMs)
    const grants = request.url.split('?', 1)[0] === GRANTS_PATH
    const passed = await runGate(grants ? GRANTS_GATE : RECORDING_GATE, gateRequestOf(p.authenticator, request, reply), state, p.gate)
    if (grants) return
    if (passed === 'gone') {
      // The client left: before its access record, nothing was recorded and
      // nothing is fetched; after it, the trail gets its completion.
      if (state.accessRecorded) p.records.completion(request, 0, 'client-aborted', elapsedMs(state.started))
      reply.hijack()
      return
    }
    p.deliveries.start(request, reply)
  })
}
