// The two stories of issue 20, told the same way to every setup that keeps
// the budgets (one process; two gateways sharing Redis; workers asking
// their primary; workers on Redis): a scraper walking distinct recordings
// is stopped at its budget and the NAS never sees the request past it; a
// listener seeking through one recording with 500 Range requests is never
// stopped. `send` may deal the requests out over several connections,
// workers or gateways.
import type { Test } from 'tap'
import { RECORDING, type Response } from '../helpers/gateway.js'

export const QUOTA = 'NASGUARD_ERR_QUOTA_EXCEEDED'
export const HOUR_SEC = 3600

export type Send = (path: string, headers: Record<string, string>, method?: string) => Promise<Response>

/** The i-th distinct recording under /medicall/** (the rule "recordings"). */
export function recording (i: number, prefix = '/medicall'): string {
  return `${prefix}/2016/01/${String(1 + (i % 28)).padStart(2, '0')}/${String(i).padStart(6, '0')}_46701234567.wav`
}

export function json (res: Response): { error?: string } {
  try {
    return JSON.parse(res.body.toString()) as { error?: string }
  } catch {
    return {}
  }
}

/** Retry-After as whole seconds, or NaN. */
export function retryAfter (res: Response): number {
  const v = String(res.headers['retry-after'] ?? '')
  return /^\d+$/.test(v) ? Number(v) : NaN
}

/** A quota refusal: 429, the JSON code, a Retry-After within (0, max]. */
export function isQuota (res: Response, max: number): boolean {
  const ra = retryAfter(res)
  return res.status === 429 && json(res).error === QUOTA && /^application\/json/.test(String(res.headers['content-type'])) && ra > 0 && ra <= max
}

/** Sends `paths` with at most `width` in flight; results in order. */
export async function sendAll (send: Send, paths: string[], headers: Record<string, string>, width: number): Promise<Response[]> {
  const out: Response[] = new Array(paths.length)
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < paths.length) {
      const i = next++
      out[i] = await send(paths[i], headers)
    }
  }))
  return out
}

/** Deals requests out over several senders in turn (connections, workers, gateways). */
export function roundRobin (senders: Send[]): Send {
  let i = 0
  return async (path, headers, method) => await senders[i++ % senders.length](path, headers, method)
}

/** What the NAS was asked, as the scenarios read it. */
export interface AskedNas { requests: Array<{ url: string }> }

/**
 * A scraper walks `walk` distinct recordings from `first` on: the first
 * `budget` are served with their bodies, every later one is 429 with
 * Retry-After, and the NAS is asked exactly `budget` times, for those
 * first recordings only. The first budget + 1 go one after the other (so
 * "the first" is an order); the rest 8 at a time.
 */
export async function scraperIsStopped (t: Test, label: string, o: { send: Send, auth: Record<string, string>, nas: AskedNas, budget: number, walk: number, first?: number }): Promise<void> {
  const asked = o.nas.requests.length
  const paths = Array.from({ length: o.walk }, (_, i) => recording((o.first ?? 0) + i))
  const firsts: Response[] = []
  for (const p of paths.slice(0, o.budget + 1)) firsts.push(await o.send(p, o.auth))
  const all = [...firsts, ...await sendAll(o.send, paths.slice(o.budget + 1), o.auth, 8)]
  const ok = all.slice(0, o.budget)
  t.same(ok.map((r) => r.status), new Array(o.budget).fill(200), `${label}: the first ${o.budget} recordings are served`)
  t.ok(ok.every((r) => r.body.equals(RECORDING)), `${label}: with their bodies`)
  const over = all.slice(o.budget)
  const bad = over.filter((r) => !isQuota(r, HOUR_SEC))
  t.equal(over.length - bad.length, o.walk - o.budget, `${label}: every request from ${o.budget + 1} on is 429 ${QUOTA} with Retry-After in (0, 3600]`)
  if (bad.length > 0) t.comment('first bad answer', bad[0].status, String(bad[0].body))
  t.equal(o.nas.requests.length - asked, o.budget, `${label}: the NAS was asked exactly ${o.budget} times`)
  t.same(o.nas.requests.slice(asked).map((r) => r.url).sort(), paths.slice(0, o.budget).sort(), `${label}: and only for the first ${o.budget} recordings (never recording ${o.budget + 1})`)
}

/**
 * A listener seeks through one recording with 500 Range requests, as an
 * <audio> element does (open-ended and bounded, from all over the file),
 * five at a time: every one is 206 with its bytes, and each reached the NAS.
 */
export async function listenerIsNotStopped (t: Test, label: string, o: { send: Send, auth: Record<string, string>, nas: AskedNas, path: string }): Promise<void> {
  const asked = o.nas.requests.length
  const ranges = Array.from({ length: 500 }, (_, i) => {
    const start = (i * 7919) % (RECORDING.length - 1)
    return i % 3 === 0 ? `bytes=${start}-` : `bytes=${start}-${Math.min(start + 1 + (i * 131) % 4096, RECORDING.length - 1)}`
  })
  const answers: Response[] = []
  for (let i = 0; i < ranges.length; i += 5) {
    answers.push(...await Promise.all(ranges.slice(i, i + 5).map((range) => o.send(o.path, { ...o.auth, range }))))
  }
  const partial = answers.filter((r, i) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(ranges[i]) as RegExpExecArray
    const end = m[2] === '' ? RECORDING.length - 1 : Number(m[2])
    return r.status === 206 && r.body.equals(RECORDING.subarray(Number(m[1]), end + 1))
  })
  t.equal(partial.length, 500, `${label}: all 500 Range requests get 206 with their bytes`)
  t.equal(o.nas.requests.length - asked, 500, `${label}: each reached the NAS`)
}
