// The probe's three outputs: a table per URL for a person, JSON for a
// pipeline, and Prometheus text for node_exporter's textfile collector
// (written by prom-client, so labels are escaped as the format says).
import { Gauge, Registry } from 'prom-client'
import { printable, textTable } from '../text-table.js'
import { SEVERITIES, countBySeverity, ordered, type ProbeResult } from './findings.js'

export function tableOf (results: readonly ProbeResult[]): string {
  return results.map((r) => {
    const c = countBySeverity(r.findings)
    const head = `${printable(r.url)}: ${SEVERITIES.map((s) => `${c[s]} ${s}`).join(', ')}\n`
    return head + textTable(['SEVERITY', 'CHECK', 'FINDING', 'FIX'], ordered(r.findings).map((f) => [f.severity, f.check, f.title, f.fix || '-'])).replace(/^/gm, '  ')
  }).join('\n')
}

export function jsonOf (results: readonly ProbeResult[]): string {
  // JSON escapes C0 controls itself; C1 controls and bidirectional overrides (from a banner or a certificate) are escaped too.
  return JSON.stringify(results.map((r) => ({ ...r, counts: countBySeverity(r.findings), findings: ordered(r.findings) })), null, 2)
    .replace(/[\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n'
}

export async function promOf (results: readonly ProbeResult[]): Promise<string> {
  const registry = new Registry()
  const registers = [registry]
  const findings = new Gauge({ name: 'nasguard_probe_findings', help: 'Findings of the last nasguard probe of a URL, by severity (HIGH: exposed now).', labelNames: ['url', 'severity'], registers })
  const finding = new Gauge({ name: 'nasguard_probe_finding', help: 'One line per finding of the last nasguard probe (id is a stable name, e.g. directory-listing).', labelNames: ['url', 'id', 'severity'], registers })
  const reached = new Gauge({ name: 'nasguard_probe_reached', help: '1 when something answered at the URL (TLS or plain HTTP), 0 when nothing did.', labelNames: ['url'], registers })
  const last = new Gauge({ name: 'nasguard_probe_timestamp_seconds', help: 'When the URL was last probed, seconds since the epoch.', labelNames: ['url'], registers })
  for (const r of results) {
    const c = countBySeverity(r.findings)
    for (const s of SEVERITIES) findings.set({ url: r.url, severity: s }, c[s])
    for (const f of r.findings) finding.set({ url: r.url, id: f.id, severity: f.severity }, 1)
    reached.set({ url: r.url }, r.reached ? 1 : 0)
    last.set({ url: r.url }, Date.parse(r.time) / 1000)
  }
  return await registry.metrics()
}
