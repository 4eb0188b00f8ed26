// Small helpers for tests that wait on conditions nothing emits (an audit
// line written after the response closed, a gauge going back to 0).
import { request as httpsRequest } from 'node:https'
import type { IncomingMessage } from 'node:http'
import { requestOptions, type RequestOpts } from './gateway-client.js'

/** No wait is bounded by less than this: a busy 2-core machine is slow, and only a failure waits it out. */
export const WAIT_FLOOR_MS = 30000

/**
 * Polls `probe` until it returns something other than undefined, every
 * `intervalMs`, for `tries` × `intervalMs` or WAIT_FLOOR_MS, whichever is
 * longer. Throws with `what` when it never does.
 */
export async function waitFor<T> (what: string, probe: () => T | undefined | Promise<T | undefined>, opts: { tries?: number, intervalMs?: number } = {}): Promise<T> {
  const intervalMs = opts.intervalMs ?? 20
  const deadline = Date.now() + Math.max((opts.tries ?? 100) * intervalMs, WAIT_FLOOR_MS)
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > deadline) break
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/**
 * When UTC midnight is less than `marginMs` away, waits until it has
 * passed. The audit writer rotates by the wall clock's UTC day: a test
 * that counts a trail's files, or dates its records "today", must not
 * straddle midnight.
 */
export async function clearOfUtcMidnight (marginMs: number): Promise<void> {
  const left = 86_400_000 - (Date.now() % 86_400_000)
  if (left < marginMs) await new Promise((resolve) => setTimeout(resolve, left + 1000))
}

export interface LooseResponse {
  status: number
  headers: IncomingMessage['headers']
  body: Buffer
  /** The response body arrived in full (IncomingMessage.complete). */
  complete: boolean
  /** The error the response or request emitted, if any (a cut response). */
  error?: NodeJS.ErrnoException
}

/**
 * Like get(), but a response that is cut short resolves (with complete:
 * false and the error) instead of rejecting, so a test can look at it.
 */
export function getLoose (gw: { port: number }, path: string, opts: RequestOpts = {}): Promise<LooseResponse> {
  return new Promise((resolve, reject) => {
    let responded = false
    const req = httpsRequest(requestOptions(gw, path, opts), (res) => {
      responded = true
      const chunks: Buffer[] = []
      let error: NodeJS.ErrnoException | undefined
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', (err: NodeJS.ErrnoException) => { error = err })
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete, error }))
    })
    req.on('error', (err) => { if (!responded) reject(err) })
    req.end()
  })
}

/** The promise's value, or a failure after `ms` (at least WAIT_FLOOR_MS): a broken defence fails the test instead of hanging it. */
export async function within<T> (what: string, p: Promise<T>, ms = WAIT_FLOOR_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), Math.max(ms, WAIT_FLOOR_MS)) })
  try {
    return await Promise.race([p, bound])
  } finally {
    clearTimeout(timer)
  }
}
