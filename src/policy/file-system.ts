// How the NAS resolves a name, and what that means for the gate. Most NAS
// shares (SMB/CIFS, NTFS, Samba with case-insensitive shares) do not serve a
// name byte for byte: they fold case, drop trailing dots and spaces, answer
// to 8.3 short names (PRIVAT~1 for .private) and to NTFS stream suffixes
// (a.wav::$DATA). A rule that holds for the exact bytes must hold for every
// name the NAS would resolve to the same file. Under `folding`, names whose
// meaning depends on those resolutions are refused, and names are compared
// by a case fold that is at least as broad as the NAS's. Pure.

export type FileSystemMode = 'posix' | 'folding'

/**
 * A case-insensitive comparison key, at least as broad as an NTFS upcase
 * table: compatibility forms folded (NFKC), then full upper then lower case
 * (`ı`, `ſ` and the Kelvin sign meet their ASCII letters; `ß` meets `ss`).
 */
export function foldName (name: string): string {
  return name.normalize('NFKC').toUpperCase().toLowerCase().normalize('NFKC')
}

/**
 * The NAS's own case fold, one character to one (as an NTFS upcase table
 * maps them): two names with one caseKey are one file on a folding NAS.
 * Narrower than foldName, which may join names the NAS keeps apart
 * (`ß`/`ss`, compatibility forms): right for counting one file once, where
 * foldName is right for deciding what a rule covers.
 */
export function caseKey (name: string): string {
  let out = ''
  for (const c of name) {
    const u = c.toUpperCase()
    out += [...u].length === 1 ? u : c
  }
  return out
}

// DOS device names, alone or followed by spaces or an extension (`NUL`,
// `con.wav`, `nul .wav`): Windows servers open the device, not a file.
const DEVICE = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(?:[ .]|$)/i
// Characters Windows never has in a name; `<`, `>` and `"` are wildcards to
// the NT file APIs, and `:` names a stream.
const RESERVED = /[<>:"|?*\\]/
// Characters that survive NFKC but that Windows' "best fit" conversion to
// an ANSI code page (a server or a tool on it that is not Unicode
// throughout) turns into a separator or a reserved character: ∕ ⁄ ⧸ to
// `/`; ∖ ⧵ ⧹ to `\`, and ¥ (code page 932) and ₩ (949) to the `\` they
// share a byte with; ꞉ ∶ ː ׃ to `:`; “ ” „ ʺ and the combining U+030E to `"`;
// ‹ › to `<` `>`; ∗ to `*`.
const BEST_FIT = /[\u2215\u2044\u29F8\u2216\u29F5\u29F9\u00A5\u20A9\uA789\u2236\u02D0\u05C3\u201C\u201D\u201E\u02BA\u030E\u2039\u203A\u2217]/

/**
 * Why a folding NAS would resolve this segment to something else than its
 * bytes say, or undefined when it would not.
 */
export function foldingHazard (segment: string): string | undefined {
  // Windows short names are NAME~N; Samba's mangled names put any
  // character after the ~ (PRIVAT~A): a ~ followed by anything is refused.
  if (/~./.test(segment)) return 'an 8.3 or mangled short-name shape (~)'
  if (/[. ]$/.test(segment)) return 'a trailing dot or space'
  if (RESERVED.test(segment)) return 'a stream name (:) or a character Windows reserves'
  if (BEST_FIT.test(segment)) return 'a character Windows may turn into a separator or a reserved one (best fit)'
  if (DEVICE.test(segment)) return 'a DOS device name'
  return undefined
}

/** The first hazardous segment's reason under this mode, or undefined. */
export function pathHazard (mode: FileSystemMode, segments: readonly string[]): string | undefined {
  if (mode === 'posix') return undefined
  for (const s of segments) {
    const h = foldingHazard(s)
    if (h !== undefined) return `a name the NAS resolves differently: ${h}`
  }
  return undefined
}
