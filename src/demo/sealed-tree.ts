// The demo NAS's tree, sealed: each demo recording is written as an age file
// under its sealed name, to its period's key in the demo keyring (made on
// first run). So the demo NAS's own listing shows base32 names and
// ciphertext only, and `age -d -i <keyring>/<period>.key <file>` opens any of
// them. A plaintext tree left by an older demo is sealed and removed.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { initKeyring, Keyring, newPeriodKey } from '../sealing/keyring.js'
import { sealedPathOf } from '../sealing/names.js'
import { compilePeriodPattern, periodOf } from '../sealing/period.js'
import { SealStream } from '../sealing/seal-stream.js'
import type { DemoRecording } from './recordings.js'

export const DEMO_PERIOD_PATTERN = '/medicall/{yyyy}/{mm}/**'

export interface SealedDemo {
  /** The plaintext path, and where its sealed file lies on the demo NAS (a file path) and the key that opens it. */
  files: Array<{ path: string, sealedFile: string, identityFile: string }>
}

export async function sealDemoTree (root: string, keyringDir: string, recordings: DemoRecording[]): Promise<SealedDemo> {
  initKeyring(keyringDir)
  const pattern = compilePeriodPattern(DEMO_PERIOD_PATTERN, 'month')
  let ring = Keyring.load(keyringDir)
  const files: SealedDemo['files'] = []
  for (const r of recordings) {
    const segments = r.path.split('/').slice(1)
    const period = periodOf(pattern, segments) as string
    if (!ring.key(period)) { newPeriodKey(keyringDir, 'month', period); ring = Keyring.load(keyringDir) }
    const sealedFile = join(root, ...sealedPathOf(ring.nameKey, segments, 1).split('/').slice(1))
    if (!existsSync(sealedFile)) {
      mkdirSync(dirname(sealedFile), { recursive: true })
      const recipient = ring.key(period)?.identity.publicKey as Buffer
      writeFileSync(sealedFile, await buffer(Readable.from([r.body]).pipe(new SealStream([recipient], r.path))))
    }
    rmSync(join(root, ...segments), { force: true })
    files.push({ path: r.path, sealedFile, identityFile: join(keyringDir, `${period}.key`) })
  }
  return { files }
}
