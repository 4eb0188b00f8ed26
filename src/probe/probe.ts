// `nasguard probe URL…`: an address tested the way an attacker or a
// journalist would, from outside and without credentials. The checks, in
// order: what speaks at the port (reach.ts); then, over the transport that
// answers, listings and files without credentials, HSTS and banners
// (http-checks.ts); then, over TLS, versions, ciphers and the certificate
// (tls-checks.ts).
import { finding, type Finding, type ProbeResult } from './findings.js'
import { answered, targetOf, type NetOptions } from './net.js'
import { reach } from './reach.js'
import { ask, banners, hsts, listingsAndFiles } from './http-checks.js'
import { certificate, ciphers, versions } from './tls-checks.js'

export interface ProbeOptions extends NetOptions {
  /** Known recording paths or directories to try (--path). */
  paths: readonly string[]
  /** How long the whole probe of one URL may take (--deadline-ms): a server that trickles every answer does not hold it longer. */
  deadlineMs: number
}

export async function probe (url: string, options: ProbeOptions): Promise<ProbeResult> {
  const deadline = AbortSignal.timeout(options.deadlineMs)
  const result = await checks(url, { ...options, deadline })
  if (deadline.aborted) result.findings.push(finding('LOW', 'reach', 'probe-deadline', `the probe of this URL stopped at its deadline (${options.deadlineMs} ms): the server answers too slowly, and the checks after that point are missing`, 'find out why it answers so slowly; probe again with a longer --deadline-ms'))
  return result
}

async function checks (url: string, o: ProbeOptions): Promise<ProbeResult> {
  const time = new Date().toISOString()
  const target = targetOf(url)
  const r = await reach(target, o)
  const findings: Finding[] = [...r.findings]
  if (r.reach.transport === undefined) return { url, reached: false, findings, time }
  const net = { ...o, legacyTls: r.reach.legacy }
  const http = { target, net, tls: r.reach.transport === 'tls', paths: o.paths }
  findings.push(...await listingsAndFiles(http))
  const root = await ask(http, 'GET', '/')
  if (http.tls) findings.push(...hsts(root))
  findings.push(...banners([root, answered(r.reach.plain) ? r.reach.plain : undefined]))
  const h = r.reach.tls
  if (h?.ok === true) {
    findings.push(finding('INFO', 'tls', 'tls-default', `TLS: ${h.protocol}, ${h.cipher}`))
    findings.push(...await versions(target, o), ...await ciphers(target, o), ...certificate(target, h, o.ca !== undefined))
  }
  return { url, reached: true, findings, time }
}
