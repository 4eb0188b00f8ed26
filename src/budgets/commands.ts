// `nasguard quota show --sub S` and `nasguard quota reset --sub S`: asked
// of the running gateway through its admin listener (it knows where the
// budgets are kept: its memory, its primary's, or Redis), with the admin
// credential from the config.
import { userInfo } from 'node:os'
import { adminCredential } from '../admin.js'
import type { Config } from '../config/schema.js'

function adminUrl (c: Readonly<Config>, path: string): string {
  const host = c.admin.host === '0.0.0.0' || c.admin.host === '::' ? '127.0.0.1' : c.admin.host
  return `http://${host.includes(':') ? `[${host}]` : host}:${c.admin.port}${path}`
}

/** POSTs `{"sub": subject}` to the admin listener's path (src/admin.ts: a body holds any subject a token can carry). */
async function ask (c: Readonly<Config>, path: string, subject: string): Promise<Record<string, unknown>> {
  if (!c.admin.enabled) throw new Error('admin.enabled is false: the budgets are reached through the admin listener')
  const credential = adminCredential(c)
  if (credential === undefined) throw new Error('admin.tokenFile (or admin.basicAuth) is not set: the budgets are served only behind the admin credential')
  let operator = 'unknown'
  try { operator = userInfo().username } catch {}
  let res: Response
  try {
    res = await fetch(adminUrl(c, path), { method: 'POST', headers: { authorization: credential, 'x-nasguard-operator': operator, 'content-type': 'application/json' }, body: JSON.stringify({ sub: subject }) })
  } catch (err) {
    throw new Error(`the gateway's admin listener (admin.host ${c.admin.host}, admin.port ${c.admin.port}) cannot be reached: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`)
  }
  const body = await res.json().catch(() => ({})) as Record<string, unknown>
  if (!res.ok) throw new Error(`the gateway answered ${res.status}: ${String(body.message ?? '')}`)
  return body
}

/**
 * The subject named on the command line: --sub as text, or --sub-json as a
 * JSON string, for a subject a command line cannot carry (a lone surrogate,
 * a NUL). A --sub holding U+FFFD is refused: the command line most likely
 * carried bytes that are not UTF-8, and another subject would be reset.
 */
export function subjectOf (o: { sub?: string, subJson?: string }): string {
  if ((o.sub === undefined) === (o.subJson === undefined)) throw new Error('give the subject with --sub S, or as a JSON string with --sub-json \'"S"\' (one of them)')
  if (o.sub !== undefined) {
    if (o.sub.includes('\ufffd')) throw new Error('--sub holds U+FFFD, which a command line carries for bytes that are not UTF-8: give the subject as a JSON string with --sub-json (e.g. \'"eve\\ud800"\')')
    if (o.sub === '') throw new Error('--sub is empty')
    return o.sub
  }
  let parsed: unknown
  try { parsed = JSON.parse(o.subJson as string) } catch { parsed = undefined }
  if (typeof parsed !== 'string' || parsed === '') throw new Error('--sub-json must be a non-empty JSON string, e.g. \'"alice"\'')
  return parsed
}

export async function quotaShow (c: Readonly<Config>, subject: string, json: boolean, out: (s: string) => void): Promise<number> {
  const r = await ask(c, '/quota', subject)
  if (json) { out(JSON.stringify(r) + '\n'); return 0 }
  out(`subject ${JSON.stringify(subject)}\n`)
  for (const [kind, title] of [['token', "as a token's sub (and its grants)"], ['certificate', "as a client certificate's subject"]] as const) {
    const ledger = r[kind] as { used: Record<string, number>, budgets: Record<string, number | undefined>, held?: { requests: number, recordings: number, bytes: number } } | undefined
    if (!ledger) continue
    out(`  ${title}\n`)
    for (const [k, v] of Object.entries(ledger.used)) out(`    ${k.padEnd(18)} ${String(v).padStart(12)}${ledger.budgets[k] === undefined ? '' : ` of ${ledger.budgets[k]}`}\n`)
    // What other workers' or gateways' leases hold is counted against the budgets until they settle (within a second).
    if (ledger.held && (ledger.held.requests > 0 || ledger.held.recordings > 0 || ledger.held.bytes > 0)) out(`    held by leases     ${ledger.held.requests} requests, ${ledger.held.recordings} recordings, ${ledger.held.bytes} bytes (settled within a second)\n`)
  }
  return 0
}

export async function quotaReset (c: Readonly<Config>, subject: string, out: (s: string) => void): Promise<number> {
  await ask(c, '/quota/reset', subject)
  out(`the budgets of ${JSON.stringify(subject)} were reset (audited: event quota-reset)\n`)
  return 0
}
