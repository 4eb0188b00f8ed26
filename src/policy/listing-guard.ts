// Listings are never served: a directory-shaped request is refused before
// the NAS is asked. Pure.
import { extensionOf } from './file-types.js'

export type FileCheck =
  | { ok: true, extension: string }
  | { ok: false, reason: 'directory' | 'file_type' | 'hidden' }

export function checkFileRequest (segments: readonly string[], extensions: ReadonlySet<string>): FileCheck {
  const last = segments[segments.length - 1] ?? ''
  if (last === '') return { ok: false, reason: 'directory' }
  if (segments.some((s) => s.startsWith('.'))) return { ok: false, reason: 'hidden' }
  const ext = extensionOf(last)
  if (ext === '') return { ok: false, reason: 'directory' }
  if (!extensions.has(ext)) return { ok: false, reason: 'file_type' }
  // index.wav and friends: what a web server answers for a directory.
  if (/^index\./i.test(last)) return { ok: false, reason: 'file_type' }
  return { ok: true, extension: ext }
}
