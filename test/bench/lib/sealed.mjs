// Sealed fixtures for the bench: each fixture sealed beside its plaintext,
// under its sealed name, to its period's key (nasguard's own modules, built).
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { randomBytes } from 'node:crypto'
import { initKeyring, Keyring, newPeriodKey } from '../../../dist/sealing/keyring.js'
import { sealedPathOf } from '../../../dist/sealing/names.js'
import { compilePeriodPattern, periodOf } from '../../../dist/sealing/period.js'
import { SealStream } from '../../../dist/sealing/seal-stream.js'
import { CHUNK, openChunk, payloadKey, sealChunk } from '../../../dist/sealing/payload.js'

export const SEALED_PATTERN = '/medicall/{yyyy}/{mm}/**'

export async function sealFixtures (root, keyringDir, paths) {
  initKeyring(keyringDir)
  const pattern = compilePeriodPattern(SEALED_PATTERN, 'month')
  for (const path of paths) {
    const segments = path.split('/').slice(1)
    const period = periodOf(pattern, segments)
    if (!Keyring.load(keyringDir).key(period)) newPeriodKey(keyringDir, 'month', period)
    const ring = Keyring.load(keyringDir)
    const sealed = join(root, sealedPathOf(ring.nameKey, segments, 1))
    mkdirSync(dirname(sealed), { recursive: true })
    await pipeline(createReadStream(join(root, path)), new SealStream([ring.key(period).identity.publicKey], path), createWriteStream(sealed))
  }
}

/** Opening 64 KiB chunks on one core, MB/s of plaintext. */
export async function decryptMbps (mb = 256) {
  const key = payloadKey(randomBytes(16), randomBytes(16))
  const chunk = sealChunk(key, 0, false, randomBytes(CHUNK))
  const n = (mb * 1024 * 1024) / CHUNK
  const t = process.hrtime.bigint()
  for (let i = 0; i < n; i++) if (!openChunk(key, 0, false, chunk)) throw new Error('did not open')
  return mb / (Number(process.hrtime.bigint() - t) / 1e9)
}
