// Magic bytes per recording type (files.checkMagic): what the first bytes of
// a real recording look like. A NAS that answers a .wav request with
// anything else (an error page without a content type, a renamed document)
// is cut off before the client sees a byte. Pure.
//
// Four bytes of magic are easy to hit by chance: a text can start with
// "RIFF....WAVE", and random binary starts with an MPEG sync (0xFFE) once in
// 2048. So where a format has structure near its start, that is checked too:
// - WAV: the RIFF/WAVE chunk list up to the `fmt ` chunk (plain RIFF, RF64
//   with its ds64 chunk, BWF with bext, JUNK or LIST first) and the fmt
//   chunk's WAVEFORMAT fields.
// - MP3: the ID3v2 tag header (ID3v2.4.0 structure, section 3.1) and the
//   MPEG audio frame header (ISO/IEC 11172-3 2.4.1.3, with ISO/IEC 13818-3
//   and MPEG-2.5 for the low sample rates), and the next frame header when
//   the first one says where it is.
// `head` is the first MAGIC_BYTES bytes of the file, or the whole file when
// `complete`. A structure that runs past a head that is not the whole file is
// given the benefit of the doubt; one that runs past the end of the file is not.

type Check = (b: Buffer, complete: boolean) => boolean

/** Bytes to peek at before deciding (the head may be longer or, at the end of the file, shorter). */
export const MAGIC_BYTES = 4096

const ascii = (b: Buffer, at: number, s: string): boolean => b.length >= at + s.length && b.toString('latin1', at, at + s.length) === s

function printable (b: Buffer, at: number, n: number): boolean {
  if (b.length < at + n) return false
  for (let i = at; i < at + n; i++) if (b[i] < 0x20 || b[i] > 0x7e) return false
  return true
}

// --- WAV ---------------------------------------------------------------

// WAVEFORMAT wFormatTag values a recording may carry, split by whether the
// samples are stored as they are (bits per sample and block align must be
// set) or compressed (bits per sample may be 0). 0xFFFE (extensible) is
// neither: its bits per sample is the container size.
const WAV_RAW = new Set([0x0001, 0x0003, 0x0006, 0x0007]) // PCM, IEEE float, A-law, mu-law
const WAV_COMPRESSED = new Set([0x0002, 0x0011, 0x0031, 0x0050, 0x0055]) // ADPCM, IMA ADPCM, GSM 6.10, MPEG, MPEG layer 3
const WAV_EXTENSIBLE = 0xfffe

function wavFmt (b: Buffer, at: number, size: number, complete: boolean): boolean {
  if (size < 16) return false
  if (at + 16 > b.length) return !complete
  const format = b.readUInt16LE(at)
  const channels = b.readUInt16LE(at + 2)
  const sampleRate = b.readUInt32LE(at + 4)
  const blockAlign = b.readUInt16LE(at + 12)
  const bits = b.readUInt16LE(at + 14)
  const raw = WAV_RAW.has(format)
  const compressed = WAV_COMPRESSED.has(format)
  return (raw || compressed || format === WAV_EXTENSIBLE) &&
    channels >= 1 && channels <= 32 &&
    sampleRate >= 1 && sampleRate <= 768000 &&
    bits <= 64 && (bits !== 0 || compressed) &&
    (blockAlign !== 0 || !raw)
}

/** RIFF or RF64 + WAVE, then chunks (4-byte id, LE size, data padded to even) up to a plausible `fmt `. */
function wav (b: Buffer, complete: boolean): boolean {
  if (!(ascii(b, 0, 'RIFF') || ascii(b, 0, 'RF64')) || !ascii(b, 8, 'WAVE')) return false
  let at = 12
  while (at + 8 <= b.length) {
    if (!printable(b, at, 4)) return false
    const size = b.readUInt32LE(at + 4)
    if (ascii(b, at, 'fmt ')) return wavFmt(b, at + 8, size, complete)
    at += 8 + size + (size % 2)
  }
  // The chunk list runs past the head: fine while the file goes on beyond it.
  return !complete
}

// --- MP3 ---------------------------------------------------------------

// Header fields as coded: version 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
// (1 reserved); layer 3 = I, 2 = II, 1 = III (0 reserved).
interface MpegHeader { version: number, layer: number, sampleRateIndex: number, length: number }

// kbit/s by bitrate index (index 0 is free format, 15 is invalid).
const KBPS_V1_L1 = [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448]
const KBPS_V1_L2 = [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384]
const KBPS_V1_L3 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
const KBPS_V2_L1 = [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256]
const KBPS_V2_L23 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]
const SAMPLE_RATES: Readonly<Record<number, readonly number[]>> = {
  3: [44100, 48000, 32000],
  2: [22050, 24000, 16000],
  0: [11025, 12000, 8000]
}

function kbps (version: number, layer: number): readonly number[] {
  if (version === 3) return layer === 3 ? KBPS_V1_L1 : layer === 2 ? KBPS_V1_L2 : KBPS_V1_L3
  return layer === 3 ? KBPS_V2_L1 : KBPS_V2_L23
}

/** Frame length in bytes; 0 for free format (not computable from the header). */
function frameLength (version: number, layer: number, bitrateIndex: number, sampleRateIndex: number, padding: number): number {
  const bitrate = kbps(version, layer)[bitrateIndex] * 1000
  const sampleRate = SAMPLE_RATES[version][sampleRateIndex]
  if (bitrate === 0) return 0
  if (layer === 3) return (Math.floor(12 * bitrate / sampleRate) + padding) * 4
  // Layer III at MPEG-2/2.5 has half as many samples per frame.
  const factor = layer === 1 && version !== 3 ? 72 : 144
  return Math.floor(factor * bitrate / sampleRate) + padding
}

function mpegHeader (b: Buffer, at: number): MpegHeader | null {
  if (at + 4 > b.length || b[at] !== 0xff || (b[at + 1] & 0xe0) !== 0xe0) return null
  const version = (b[at + 1] >> 3) & 3
  const layer = (b[at + 1] >> 1) & 3
  const bitrateIndex = b[at + 2] >> 4
  const sampleRateIndex = (b[at + 2] >> 2) & 3
  const padding = (b[at + 2] >> 1) & 1
  const emphasis = b[at + 3] & 3
  if (version === 1 || layer === 0 || bitrateIndex === 15 || sampleRateIndex === 3 || emphasis === 2) return null
  return { version, layer, sampleRateIndex, length: frameLength(version, layer, bitrateIndex, sampleRateIndex, padding) }
}

/** A frame header at `at`, and the next one where the first says it is, if the head reaches it. */
function mpegAudio (b: Buffer, at: number, complete: boolean): boolean {
  const first = mpegHeader(b, at)
  if (first === null) return false
  if (first.length === 0) return true
  const next = at + first.length
  if (next + 4 > b.length) return true
  // A one-frame file ending in an ID3v1 tag (exactly 128 bytes, 'TAG').
  if (complete && b.length - next === 128 && ascii(b, next, 'TAG')) return true
  const second = mpegHeader(b, next)
  return second !== null && second.version === first.version && second.layer === first.layer &&
    second.sampleRateIndex === first.sampleRateIndex
}

/** The ID3v2 header bytes the head holds: version 2-4, revision not 0xFF, syncsafe size. */
function id3v2Header (b: Buffer): boolean {
  if (b.length > 3 && (b[3] < 2 || b[3] > 4)) return false
  if (b.length > 4 && b[4] === 0xff) return false
  for (let i = 6; i < Math.min(b.length, 10); i++) if (b[i] >= 0x80) return false
  return true
}

/** Where the ID3v2 tag at 0 ends: header, syncsafe size, and the footer when flagged. */
function id3v2End (b: Buffer): number {
  const size = (b[6] << 21) | (b[7] << 14) | (b[8] << 7) | b[9]
  return 10 + size + ((b[5] & 0x10) !== 0 ? 10 : 0)
}

function mp3 (b: Buffer, complete: boolean): boolean {
  if (!ascii(b, 0, 'ID3')) return mpegAudio(b, 0, complete)
  if (!id3v2Header(b)) return false
  // A file of a few bytes cannot hold the whole tag header; what it has matched.
  if (b.length < 10) return true
  const end = id3v2End(b)
  if (end + 4 > b.length) return !complete
  return mpegAudio(b, end, complete)
}

// --- Others ------------------------------------------------------------

// OggS capture pattern, stream structure version 0.
const ogg: Check = (b) => ascii(b, 0, 'OggS') && b.length > 4 && b[4] === 0

// fLaC, then the mandatory first metadata block: STREAMINFO (type 0), 34 bytes.
const flac: Check = (b) => ascii(b, 0, 'fLaC') && b.length >= 8 && (b[4] & 0x7f) === 0 && b.readUIntBE(5, 3) === 34

// ISO BMFF: a first box of at least its own header, of type ftyp, with a printable major brand.
const m4a: Check = (b) => b.length >= 12 && b.readUInt32BE(0) >= 8 && ascii(b, 4, 'ftyp') && printable(b, 8, 4)

// ADTS: 12 sync bits, layer 00.
const aac: Check = (b) => b.length >= 2 && b[0] === 0xff && (b[1] & 0xf0) === 0xf0 && (b[1] & 0x06) === 0

// Sun/NeXT: .snd, data offset past the 24-byte header, a defined encoding.
const au: Check = (b) => ascii(b, 0, '.snd') && b.length >= 16 && b.readUInt32BE(4) >= 24 &&
  b.readUInt32BE(12) >= 1 && b.readUInt32BE(12) <= 27

const MAGIC: Readonly<Record<string, Check>> = {
  '.wav': wav,
  '.mp3': mp3,
  '.ogg': ogg,
  '.oga': ogg,
  '.opus': ogg,
  '.flac': flac,
  '.m4a': m4a,
  '.aac': aac,
  '.au': au,
  // Raw GSM 06.10 frames have no header to check.
  '.gsm': () => true
}

/**
 * true when the bytes look like the type, or the type has no magic to check.
 * `complete`: `head` is the whole file, so nothing lies beyond it.
 */
export function magicMatches (extension: string, head: Buffer, complete = false): boolean {
  const check = MAGIC[extension]
  return check === undefined || check(head, complete)
}
