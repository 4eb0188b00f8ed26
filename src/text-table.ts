// Text for a terminal: columns padded to their widest cell, and no control
// characters. What a server, a subject or a path says (a banner, a name) must
// not reach an operator's terminal as escapes or bidirectional overrides.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

export const printable = (s: string): string => s.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

/** A header line and one line per row, each cell printable; the last column is not padded. */
export function textTable (head: string[], rows: Array<Array<string | number>>): string {
  const cells = rows.map((r) => r.map((c) => printable(String(c))))
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  const line = (c: string[]): string => c.map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i]))).join('  ') + '\n'
  return line(head) + cells.map(line).join('')
}
