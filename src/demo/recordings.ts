// Synthetic call recordings for the demo NAS, laid out the way the exposed
// server was: /medicall/YYYY/MM/DD/<HHMMSS>_<phone>.wav. The phone numbers are
// made up (Swedish mobile format); the audio is a short tone. The demo NAS
// holds them sealed (sealed-tree.ts).
import { TONE_MP3_BASE64 } from './tone-mp3.js'

/** A mono 16-bit PCM WAV file holding a sine tone. */
export function toneWav (frequencyHz: number, seconds: number, sampleRate = 8000): Buffer {
  const samples = Math.round(seconds * sampleRate)
  const data = Buffer.alloc(samples * 2)
  for (let i = 0; i < samples; i++) {
    const fade = Math.min(1, i / 400, (samples - i) / 400)
    data.writeInt16LE(Math.round(Math.sin((2 * Math.PI * frequencyHz * i) / sampleRate) * 12000 * fade), i * 2)
  }
  const h = Buffer.alloc(44)
  h.write('RIFF', 0, 'ascii')
  h.writeUInt32LE(36 + data.length, 4)
  h.write('WAVE', 8, 'ascii')
  h.write('fmt ', 12, 'ascii')
  h.writeUInt32LE(16, 16) // PCM header size
  h.writeUInt16LE(1, 20) // PCM
  h.writeUInt16LE(1, 22) // mono
  h.writeUInt32LE(sampleRate, 24)
  h.writeUInt32LE(sampleRate * 2, 28) // byte rate
  h.writeUInt16LE(2, 32) // block align
  h.writeUInt16LE(16, 34) // bits per sample
  h.write('data', 36, 'ascii')
  h.writeUInt32LE(data.length, 40)
  return Buffer.concat([h, data])
}

export function toneMp3 (): Buffer {
  return Buffer.from(TONE_MP3_BASE64, 'base64')
}

export interface DemoRecording { path: string, body: Buffer }

const DAYS = ['2016/01/01', '2016/01/02', '2019/02/18']

/** The demo's recordings: their URL paths and bodies (the same on every machine). */
export function demoRecordings (): DemoRecording[] {
  // A fixed-seed generator: the same tree on every machine.
  let seed = 1177
  const next = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed }
  const out: DemoRecording[] = []
  DAYS.forEach((day, d) => {
    for (let i = 0; i < 4; i++) {
      const hh = String(8 + ((next() >> 8) % 10)).padStart(2, '0')
      const mm = String((next() >> 8) % 60).padStart(2, '0')
      const ss = String((next() >> 8) % 60).padStart(2, '0')
      const phone = '4670' + String((next() >> 4) % 10000000).padStart(7, '0')
      const mp3 = i === 3
      const name = `${hh}${mm}${ss}_${phone}.${mp3 ? 'mp3' : 'wav'}`
      out.push({ path: `/medicall/${day}/${name}`, body: mp3 ? toneMp3() : toneWav(330 + 55 * (d * 4 + i), 1.5) })
    }
  })
  return out.sort((a, b) => a.path.localeCompare(b.path))
}
