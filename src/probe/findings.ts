// What `nasguard probe` reports: findings, each with a severity and a
// one-line fix. HIGH is what an attacker or a journalist uses at once (plain
// HTTP, a listing, a recording without credentials, an expired certificate);
// MEDIUM weakens what protects the traffic; LOW tells an attacker more than
// needed; INFO is what was seen and is fine.
export const SEVERITIES = ['HIGH', 'MEDIUM', 'LOW', 'INFO'] as const
export type Severity = typeof SEVERITIES[number]

export interface Finding {
  /** A stable name for the finding (a Prometheus label: bounded). */
  id: string
  severity: Severity
  /** Which check found it. */
  check: string
  /** What was seen, in one line. */
  title: string
  /** What to do about it, in one line ('' for INFO findings that need nothing). */
  fix: string
}

export interface ProbeResult {
  url: string
  /** Whether anything answered at the address (TLS or plain HTTP). */
  reached: boolean
  findings: Finding[]
  time: string
}

export const finding = (severity: Severity, check: string, id: string, title: string, fix = ''): Finding => ({ id, severity, check, title, fix })

export function countBySeverity (findings: readonly Finding[]): Record<Severity, number> {
  const counts = { HIGH: 0, MEDIUM: 0, LOW: 0, INFO: 0 }
  for (const f of findings) counts[f.severity]++
  return counts
}

/** Most severe first, then in the order the checks ran. */
export function ordered (findings: readonly Finding[]): Finding[] {
  return findings.map((f, i) => ({ f, i })).sort((a, b) => SEVERITIES.indexOf(a.f.severity) - SEVERITIES.indexOf(b.f.severity) || a.i - b.i).map((x) => x.f)
}
