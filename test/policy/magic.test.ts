import t from 'tap'
import { MAGIC_BYTES, magicMatches } from '../../src/policy/magic.js'
import { toneMp3, toneWav } from '../../src/demo/recordings.js'

type Case = [name: string, extension: string, head: Buffer, complete: boolean, ok: boolean]

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1')
const u32le = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b }
const u32be = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b }
const chunk = (id: string, data: Buffer): Buffer =>
  Buffer.concat([latin1(id), u32le(data.length), data, Buffer.alloc(data.length % 2)])
const html = Buffer.from('<!DOCTYPE html><html><head><title>Index of /medicall</title></head><body>46709999999.wav</body></html>')

// The generated tone: RIFF header (12) + fmt chunk (24) + data chunk.
const WAV = toneWav(440, 0.5)
const FMT = WAV.subarray(12, 36)
const DATA = WAV.subarray(36)
const riff = (...chunks: Buffer[]): Buffer => {
  const body = Buffer.concat(chunks)
  return Buffer.concat([latin1('RIFF'), u32le(4 + body.length), latin1('WAVE'), body])
}
/** The tone with its fmt chunk data (16 bytes) patched. */
function withFmt (patch: (fmt: Buffer) => void): Buffer {
  const b = Buffer.from(WAV)
  patch(b.subarray(20, 36))
  return b
}
function fmtChunk (format: number, channels: number, rate: number, blockAlign: number, bits: number, extra = 0): Buffer {
  const d = Buffer.alloc(16 + extra)
  d.writeUInt16LE(format, 0)
  d.writeUInt16LE(channels, 2)
  d.writeUInt32LE(rate, 4)
  d.writeUInt32LE(rate * blockAlign, 8)
  d.writeUInt16LE(blockAlign, 12)
  d.writeUInt16LE(bits, 14)
  return chunk('fmt ', d)
}

const bwf = riff(chunk('bext', Buffer.alloc(602)), FMT, DATA)
const rf64 = Buffer.concat([latin1('RF64'), u32le(0xffffffff), latin1('WAVE'), chunk('ds64', Buffer.alloc(28)), FMT, DATA])
const junkOdd = riff(chunk('JUNK', Buffer.alloc(3)), chunk('LIST', latin1('INFOISFT\x06\x00\x00\x00sox 1\x00')), FMT, DATA)
// A JUNK chunk running well past the first MAGIC_BYTES.
const longJunk = riff(chunk('JUNK', Buffer.alloc(100000)), FMT, DATA)

t.test('MAGIC_BYTES covers a few KiB', async (t) => {
  t.equal(MAGIC_BYTES, 4096)
})

t.test('WAV: RIFF/RF64 WAVE, the chunks up to fmt, and the fmt fields', async (t) => {
  const text = latin1('RIFF\x00\x00\x00\x00WAVE is the audio format of this memo. It describes how files are laid out.\n')
  const table: Case[] = [
    ['the generated tone, whole', '.wav', WAV, true, true],
    ['the generated tone, first MAGIC_BYTES', '.wav', WAV.subarray(0, MAGIC_BYTES), false, true],
    ['the tone\'s header alone', '.wav', WAV.subarray(0, 44), true, true],
    ['BWF: bext before fmt', '.wav', bwf, true, true],
    ['RF64 with ds64 first', '.wav', rf64, true, true],
    ['odd-sized JUNK (padded) and LIST before fmt', '.wav', junkOdd, true, true],
    ['long JUNK past the window, more to come', '.wav', longJunk.subarray(0, MAGIC_BYTES), false, true],
    ['long JUNK past the end of the file', '.wav', longJunk.subarray(0, MAGIC_BYTES), true, false],
    ['IMA ADPCM, bits 0', '.wav', riff(fmtChunk(0x11, 1, 8000, 256, 0, 4), DATA), true, true],
    ['MPEG layer 3 in WAV', '.wav', riff(fmtChunk(0x55, 2, 44100, 1, 0, 14), DATA), true, true],
    ['IEEE float stereo 96 kHz', '.wav', riff(fmtChunk(3, 2, 96000, 8, 32), DATA), true, true],
    ['extensible, 8 channels, 24 bits', '.wav', riff(fmtChunk(0xfffe, 8, 48000, 24, 24, 24), DATA), true, true],
    ['mu-law', '.wav', riff(fmtChunk(7, 1, 8000, 1, 8), DATA), true, true],
    ['fmt cut by the window, more to come', '.wav', WAV.subarray(0, 30), false, true],
    ['fmt cut by the end of the file', '.wav', WAV.subarray(0, 30), true, false],
    ['format 0x9999', '.wav', withFmt((f) => f.writeUInt16LE(0x9999, 0)), true, false],
    ['format 0', '.wav', withFmt((f) => f.writeUInt16LE(0, 0)), true, false],
    ['0 channels', '.wav', withFmt((f) => f.writeUInt16LE(0, 2)), true, false],
    ['33 channels', '.wav', withFmt((f) => f.writeUInt16LE(33, 2)), true, false],
    ['sample rate 0', '.wav', withFmt((f) => f.writeUInt32LE(0, 4)), true, false],
    ['sample rate 768001', '.wav', withFmt((f) => f.writeUInt32LE(768001, 4)), true, false],
    ['PCM with bits 0', '.wav', withFmt((f) => f.writeUInt16LE(0, 14)), true, false],
    ['bits 65', '.wav', withFmt((f) => f.writeUInt16LE(65, 14)), true, false],
    ['PCM with block align 0', '.wav', withFmt((f) => f.writeUInt16LE(0, 12)), true, false],
    ['fmt size 8', '.wav', riff(chunk('fmt ', Buffer.alloc(8, 1)), DATA), true, false],
    ['RIFF....WAVE then garbage chunk ids', '.wav', Buffer.concat([WAV.subarray(0, 12), Buffer.from([0x00, 0x01, 0x02, 0x03, 8, 0, 0, 0]), Buffer.alloc(64)]), true, false],
    ['RIFF....WAVE then a control char in a chunk id', '.wav', riff(chunk('JU\x7fK', Buffer.alloc(4)), FMT, DATA), true, false],
    ['a garbage id after a good JUNK chunk', '.wav', riff(chunk('JUNK', Buffer.alloc(4)), chunk('\xff\xfe\x00\x01', Buffer.alloc(4)), FMT), false, false],
    ['a text starting RIFF....WAVE, whole file', '.wav', text, true, false],
    ['RIFF WAVE and nothing else', '.wav', WAV.subarray(0, 12), true, false],
    ['11 bytes', '.wav', WAV.subarray(0, 11), true, false],
    ['11 bytes, not complete', '.wav', WAV.subarray(0, 11), false, false],
    ['RIFF but AVI', '.wav', Buffer.concat([latin1('RIFF\x00\x00\x00\x00AVI '), FMT]), true, false],
    ['an HTML page', '.wav', html, true, false],
    ['an MP3', '.wav', toneMp3(), true, false]
  ]
  for (const [name, ext, head, complete, ok] of table) t.equal(magicMatches(ext, head, complete), ok, `${name}: ${ok ? 'pass' : 'refused'}`)
})

// MPEG audio frames: a header and filler up to the frame length.
const filler = (n: number): Buffer => Buffer.alloc(n, 0x55)
const frame = (header: number[], length: number): Buffer => Buffer.concat([Buffer.from(header), filler(length - 4)])
const frames = (header: number[], length: number, count: number): Buffer => Buffer.concat(Array.from({ length: count }, () => frame(header, length)))
// A tag header: ID3, version, revision, flags, syncsafe size.
function id3 (major: number, flags: number, size: number): Buffer {
  return Buffer.from([0x49, 0x44, 0x33, major, 0, flags, (size >> 21) & 0x7f, (size >> 14) & 0x7f, (size >> 7) & 0x7f, size & 0x7f])
}

// [name, header bytes, frame length worked out by hand]
const LAYOUTS: Array<[string, number[], number]> = [
  ['MPEG-1 layer I 384k 44.1k', [0xff, 0xff, 0xc0, 0xc4], 416], // (floor(12*384000/44100) + 0) * 4
  ['MPEG-1 layer II 192k 48k, padded', [0xff, 0xfd, 0xa6, 0xc4], 577], // 144*192000/48000 + 1
  ['MPEG-1 layer III 128k 44.1k', [0xff, 0xfb, 0x90, 0x44], 417], // floor(144*128000/44100)
  ['MPEG-1 layer III 128k 44.1k, padded', [0xff, 0xfb, 0x92, 0x44], 418],
  ['MPEG-2 layer I 128k 24k', [0xff, 0xf7, 0x84, 0xc4], 256], // (12*128000/24000) * 4
  ['MPEG-2 layer II 64k 16k', [0xff, 0xf5, 0x88, 0xc4], 576], // 144*64000/16000
  ['MPEG-2 layer III 64k 22.05k', [0xff, 0xf3, 0x80, 0xc4], 208], // floor(72*64000/22050)
  ['MPEG-2.5 layer III 32k 8k', [0xff, 0xe3, 0x48, 0xc4], 288] // 72*32000/8000
]

t.test('MP3: frame lengths per version and layer find the next header', async (t) => {
  for (const [name, header, length] of LAYOUTS) {
    t.ok(magicMatches('.mp3', frames(header, length, 3), true), `${name}: three frames of ${length} bytes pass`)
    const shifted = Buffer.concat([frame(header, length + 1), frame(header, length)])
    t.notOk(magicMatches('.mp3', shifted, true), `${name}: a next header one byte late is refused`)
    const early = Buffer.concat([frame(header, length - 1), frame(header, length)])
    t.notOk(magicMatches('.mp3', early, true), `${name}: a next header one byte early is refused`)
  }
})

t.test('MP3: ID3v2 tag and MPEG frame headers', async (t) => {
  const l3 = [0xff, 0xfb, 0x90, 0x44]
  const twoFrames = frames(l3, 417, 2)
  // Seeded noise after an 0xFFFB header: the computed next frame is not a header.
  let seed = 7
  const noise = Buffer.from(Array.from({ length: 2000 }, () => { seed = (seed * 1103515245 + 12345) % 2147483648; return (seed >> 16) & 0xff }))
  const random = Buffer.concat([Buffer.from(l3), noise])
  t.not(random[417], 0xff, 'fixture: no header where the next frame should be')
  const tag = Buffer.concat([id3(3, 0, 20), latin1('TIT2\x00\x00\x00\x0a\x00\x00\x00call 0830')])
  t.equal(tag.length, 30, 'fixture: a 20-byte tag body')
  const v4footer = Buffer.concat([id3(4, 0x10, 12), latin1('TIT2\x00\x00\x00\x02\x00\x00\x00a'), latin1('3DI\x04\x00\x10\x00\x00\x00\x0c')])
  const bigTag = Buffer.concat([id3(4, 0, 200000), Buffer.alloc(MAGIC_BYTES - 10)])
  const badSize = Buffer.concat([latin1('ID3\x04\x00\x00\x00\x00\x80\x00'), twoFrames])
  const table: Case[] = [
    ['the generated tone', '.mp3', toneMp3(), true, true],
    ['the generated tone, not complete', '.mp3', toneMp3(), false, true],
    ['two MPEG-1 layer III frames', '.mp3', twoFrames, true, true],
    ['a frame then an ID3v1 tag', '.mp3', Buffer.concat([frame(l3, 417), latin1('TAG'), Buffer.alloc(125)]), true, true],
    ['ID3v2.3 tag then the tone', '.mp3', Buffer.concat([tag, toneMp3()]), true, true],
    ['ID3v2.3 tag then two frames', '.mp3', Buffer.concat([tag, twoFrames]), true, true],
    ['empty ID3v2.4 tag then the tone (the proxy test fixture)', '.mp3', Buffer.concat([latin1('ID3\x04\x00\x00\x00\x00\x00\x00'), toneMp3()]), true, true],
    ['ID3v2.2 tag', '.mp3', Buffer.concat([id3(2, 0, 0), twoFrames]), true, true],
    ['ID3v2.4 tag with a footer', '.mp3', Buffer.concat([v4footer, twoFrames]), true, true],
    ['ID3v2.4 tag with the footer flag but no footer', '.mp3', Buffer.concat([v4footer.subarray(0, 22), twoFrames]), true, false],
    ['a tag larger than the window, more to come', '.mp3', bigTag, false, true],
    ['a tag larger than the whole file', '.mp3', bigTag, true, false],
    ['a tag and no audio', '.mp3', tag, true, false],
    ['a tag then garbage', '.mp3', Buffer.concat([tag, html]), true, false],
    ['a tag then a frame one byte late', '.mp3', Buffer.concat([tag, Buffer.alloc(1), twoFrames]), true, false],
    ['ID3 with a non-syncsafe size', '.mp3', badSize, true, false],
    ['ID3 version 5', '.mp3', Buffer.concat([id3(5, 0, 0), twoFrames]), true, false],
    ['ID3 version 1', '.mp3', Buffer.concat([id3(1, 0, 0), twoFrames]), true, false],
    ['ID3 revision 0xFF', '.mp3', Buffer.concat([latin1('ID3\x04\xff\x00\x00\x00\x00\x00'), twoFrames]), true, false],
    ['a five-byte ID3 start (the proxy test: served, not crashed on)', '.mp3', latin1('ID3\x04\x00'), true, true],
    ['a five-byte ID3 start with version 9', '.mp3', latin1('ID3\x09\x00'), true, false],
    ['0xFFFB then noise', '.mp3', random, true, false],
    ['0xFFFB then noise, first MAGIC_BYTES of more', '.mp3', random, false, false],
    ['next frame at another sample rate', '.mp3', Buffer.concat([frame(l3, 417), frame([0xff, 0xfb, 0x94, 0x44], 384)]), true, false],
    ['next frame at another layer', '.mp3', Buffer.concat([frame(l3, 417), frame([0xff, 0xfd, 0x90, 0x44], 417)]), true, false],
    ['next frame at another version', '.mp3', Buffer.concat([frame(l3, 417), frame([0xff, 0xf3, 0x90, 0x44], 417)]), true, false],
    ['a first frame whose next one lies past the head', '.mp3', frame(l3, 417).subarray(0, 300), true, true],
    ['free format (bitrate index 0)', '.mp3', Buffer.concat([Buffer.from([0xff, 0xfb, 0x00, 0x44]), noise]), true, true],
    ['0xFF 0xFF alone', '.mp3', Buffer.from([0xff, 0xff]), true, false],
    ['0xFF 0xFF 0xFF 0xFF (bitrate index 1111)', '.mp3', Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0]), true, false],
    ['reserved version 01', '.mp3', Buffer.from([0xff, 0xeb, 0x90, 0x44]), true, false],
    ['reserved layer 00', '.mp3', Buffer.from([0xff, 0xf9, 0x90, 0x44]), true, false],
    ['sample-rate index 11', '.mp3', Buffer.from([0xff, 0xfb, 0x9c, 0x44]), true, false],
    ['emphasis 10', '.mp3', Buffer.from([0xff, 0xfb, 0x90, 0x46]), true, false],
    ['11 sync bits missing one', '.mp3', Buffer.from([0xff, 0xdb, 0x90, 0x44]), true, false],
    ['an ADTS AAC frame', '.mp3', Buffer.from([0xff, 0xf1, 0x50, 0x80, 0x2e, 0x7f, 0xfc]), true, false],
    ['an HTML page', '.mp3', html, true, false],
    ['a WAV', '.mp3', WAV, true, false],
    ['empty', '.mp3', Buffer.alloc(0), true, false]
  ]
  for (const [name, ext, head, complete, ok] of table) t.equal(magicMatches(ext, head, complete), ok, `${name}: ${ok ? 'pass' : 'refused'}`)
})

t.test('Ogg, FLAC, M4A, AAC, AU, GSM', async (t) => {
  const oggPage = Buffer.concat([latin1('OggS\x00\x02'), Buffer.alloc(22), latin1('\x01\x13OpusHead')])
  const streaminfo = Buffer.concat([latin1('fLaC'), Buffer.from([0x00, 0x00, 0x00, 0x22]), Buffer.alloc(34)])
  const ftyp = Buffer.concat([u32be(32), latin1('ftypM4A '), Buffer.alloc(4), latin1('M4A isommp42')])
  const snd = (offset: number, encoding: number): Buffer => Buffer.concat([latin1('.snd'), u32be(offset), u32be(0xffffffff), u32be(encoding), u32be(8000), u32be(1)])
  const table: Case[] = [
    ['an Ogg page', '.ogg', oggPage, true, true],
    ['an Ogg page as .oga', '.oga', oggPage, true, true],
    ['an Ogg page as .opus', '.opus', oggPage, true, true],
    ['OggS and 60 zero bytes (the proxy test fixture)', '.ogg', Buffer.concat([latin1('OggS'), Buffer.alloc(60)]), true, true],
    ['OggS with structure version 1', '.ogg', latin1('OggS\x01\x02'), true, false],
    ['OggS alone', '.ogg', latin1('OggS'), true, false],
    ['HTML as .opus', '.opus', html, true, false],
    ['fLaC and STREAMINFO', '.flac', streaminfo, true, true],
    ['fLaC and a last-block STREAMINFO', '.flac', Buffer.concat([latin1('fLaC'), Buffer.from([0x80, 0x00, 0x00, 0x22])]), true, true],
    ['fLaC and a VORBIS_COMMENT first', '.flac', Buffer.concat([latin1('fLaC'), Buffer.from([0x04, 0x00, 0x00, 0x22])]), true, false],
    ['fLaC and STREAMINFO of 33 bytes', '.flac', Buffer.concat([latin1('fLaC'), Buffer.from([0x00, 0x00, 0x00, 0x21])]), true, false],
    ['fLaC alone', '.flac', latin1('fLaC'), true, false],
    ['an M4A ftyp box', '.m4a', ftyp, true, true],
    ['ftyp box of size 4', '.m4a', Buffer.concat([u32be(4), ftyp.subarray(4)]), true, false],
    ['ftyp with a binary major brand', '.m4a', Buffer.concat([u32be(32), latin1('ftyp\x00\x01\x02\x03')]), true, false],
    ['a moov box first', '.m4a', Buffer.concat([u32be(32), latin1('moovM4A ')]), true, false],
    ['ftyp cut before the brand', '.m4a', ftyp.subarray(0, 10), true, false],
    ['ADTS MPEG-4 AAC', '.aac', Buffer.from([0xff, 0xf1, 0x50, 0x80, 0x2e, 0x7f, 0xfc]), true, true],
    ['ADTS MPEG-2 AAC', '.aac', Buffer.from([0xff, 0xf9, 0x50, 0x80, 0x2e, 0x7f, 0xfc]), true, true],
    ['an MP3 frame as .aac (layer 01)', '.aac', Buffer.from([0xff, 0xfb, 0x90, 0x44]), true, false],
    ['11 sync bits only', '.aac', Buffer.from([0xff, 0xe1, 0x50, 0x80]), true, false],
    ['AU, 16-bit linear', '.au', snd(24, 3), true, true],
    ['AU, mu-law, annotation after the header', '.au', snd(32, 1), true, true],
    ['AU with data offset 16', '.au', snd(16, 3), true, false],
    ['AU with encoding 0', '.au', snd(24, 0), true, false],
    ['AU with encoding 28', '.au', snd(24, 28), true, false],
    ['.snd alone', '.au', latin1('.snd'), true, false],
    ['GSM has no magic', '.gsm', html, true, true],
    ['an unchecked type', '.txt', html, true, true]
  ]
  for (const [name, ext, head, complete, ok] of table) t.equal(magicMatches(ext, head, complete), ok, `${name}: ${ok ? 'pass' : 'refused'}`)
})

t.test('complete defaults to false: a head cut by the window is not judged as a whole file', async (t) => {
  t.ok(magicMatches('.wav', longJunk.subarray(0, MAGIC_BYTES)))
  t.notOk(magicMatches('.wav', longJunk.subarray(0, MAGIC_BYTES), true))
  t.notOk(magicMatches('.wav', html))
})
