// Recording types nasguard knows. The Content-Type a client receives comes
// from this table, never from the NAS (a NAS that says text/html for a .wav
// must not get a browser to render it).
const CONTENT_TYPES: Readonly<Record<string, string>> = Object.freeze({
  '.wav': 'audio/wav',
  '.mp3': 'audio/mpeg',
  '.ogg': 'audio/ogg',
  '.opus': 'audio/ogg',
  '.oga': 'audio/ogg',
  '.flac': 'audio/flac',
  '.m4a': 'audio/mp4',
  '.aac': 'audio/aac',
  '.gsm': 'audio/x-gsm',
  '.au': 'audio/basic'
})

export function isKnownExtension (ext: string): boolean {
  return Object.hasOwn(CONTENT_TYPES, ext)
}

export function contentTypeFor (ext: string): string {
  return CONTENT_TYPES[ext] ?? 'application/octet-stream'
}

/** Lower-cased extension of the last segment, with the dot; '' when none. */
export function extensionOf (segment: string): string {
  const dot = segment.lastIndexOf('.')
  return dot > 0 ? segment.slice(dot).toLowerCase() : ''
}
