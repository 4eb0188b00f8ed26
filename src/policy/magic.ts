// Magic bytes per recording type (files.checkMagic): what the first bytes of
// a real recording look like. A NAS that answers a .wav request with
// anything else (an error page without a content type, a renamed document)
// is cut off before the client sees a byte. Pure.

type Check = (b: Buffer) => boolean

const ascii = (b: Buffer, at: number, s: string): boolean => b.length >= at + s.length && b.toString('latin1', at, at + s.length) === s

const MAGIC: Readonly<Record<string, Check>> = {
  '.wav': (b) => (ascii(b, 0, 'RIFF') || ascii(b, 0, 'RF64')) && ascii(b, 8, 'WAVE'),
  // An ID3v2 tag, or an MPEG audio frame sync (11 bits set).
  '.mp3': (b) => ascii(b, 0, 'ID3') || (b.length >= 2 && b[0] === 0xff && (b[1] & 0xe0) === 0xe0),
  '.ogg': (b) => ascii(b, 0, 'OggS'),
  '.oga': (b) => ascii(b, 0, 'OggS'),
  '.opus': (b) => ascii(b, 0, 'OggS'),
  '.flac': (b) => ascii(b, 0, 'fLaC'),
  '.m4a': (b) => ascii(b, 4, 'ftyp'),
  // ADTS sync (12 bits set).
  '.aac': (b) => b.length >= 2 && b[0] === 0xff && (b[1] & 0xf0) === 0xf0,
  '.au': (b) => ascii(b, 0, '.snd')
}

/** Bytes needed to decide. */
export const MAGIC_BYTES = 12

/** true when the bytes look like the type, or the type has no magic to check. */
export function magicMatches (extension: string, head: Buffer): boolean {
  const check = MAGIC[extension]
  return check === undefined || check(head)
}
