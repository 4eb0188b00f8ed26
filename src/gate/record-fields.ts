// What every audit record of a request says about it: who, from where,
// what. A refused target keeps no query, path parameters or token-shaped
// runs: a grant may ride in any of them, and is kept nowhere.
import type { IncomingHttpHeaders } from 'node:http'
import type { AuditRecord } from '../audit/writer.js'
import { refusedTarget } from '../audit/record-bounds.js'
import type { RequestState } from './state.js'

export function requestFields (request: { id: string, method: string, url: string, headers: IncomingHttpHeaders }, state: RequestState): Omit<AuditRecord, 'event' | 'time'> {
  return {
    requestId: request.id,
    ...state.client,
    method: request.method,
    path: state.path ?? refusedTarget(request.url),
    range: typeof request.headers.range === 'string' ? request.headers.range : undefined,
    subject: state.identity?.subject,
    auth: state.identity?.method,
    jti: state.identity?.jti,
    rule: state.rule,
    keyId: state.sealed?.keyId,
    userAgent: request.headers['user-agent']
  }
}
