// What every bench script prepares: the fixture recordings, a certificate,
// a JWT secret and a token, and a wait until a URL answers 200.
import { execFile } from 'node:child_process'
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { createSigner } from 'fast-jwt'
import { createCa, issueServerCert, writeKeyFile } from '../../../dist/tls/certificates.js'

export const run = promisify(execFile)
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The fixture recordings, by URL path. */
export const FILES = {
  small: '/medicall/2016/01/01/083012_46701234567.wav',
  large: '/medicall/2016/01/02/101500_46709876543.wav',
  huge: '/medicall/2019/02/18/140000_46705550000.wav'
}
export const SIZES = { small: 64 * 1024, large: 48 * 1024 * 1024, huge: 256 * 1024 * 1024 }

/** A mono 16-bit WAV file of `bytes` bytes under root (a header, then a tone written a MiB at a time). */
export function writeWav (root, path, bytes) {
  const file = join(root, path)
  mkdirSync(resolve(file, '..'), { recursive: true })
  const h = Buffer.alloc(44)
  h.write('RIFF', 0); h.writeUInt32LE(bytes - 8, 4); h.write('WAVEfmt ', 8); h.writeUInt32LE(16, 16)
  h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22); h.writeUInt32LE(8000, 24); h.writeUInt32LE(16000, 28)
  h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34); h.write('data', 36); h.writeUInt32LE(bytes - 44, 40)
  const fd = openSync(file, 'w')
  writeSync(fd, h)
  const block = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < block.length; i += 2) block.writeInt16LE(Math.round(Math.sin(i / 7) * 9000), i)
  for (let off = 44; off < bytes; off += block.length) writeSync(fd, block, 0, Math.min(block.length, bytes - off), off)
  ftruncateSync(fd, bytes)
  closeSync(fd)
}

/** Writes the named fixtures under dir/nas; returns that root. */
export function writeFixtures (dir, names) {
  const root = join(dir, 'nas')
  for (const n of names) writeWav(root, FILES[n], SIZES[n])
  return root
}

/**
 * A server certificate from nasguard's CA, as `cert init` makes it: ECDSA
 * P-256, or RSA-2048 with BENCH_SERVER_KEY=rsa (to measure what the key type
 * costs every peer); a JWT secret file and a token with recordings:read
 * (6 hours).
 */
export function credentials (dir) {
  const cert = join(dir, 'server.crt')
  const key = join(dir, 'server.key')
  const keyType = process.env.BENCH_SERVER_KEY ?? 'ecdsa'
  if (keyType !== 'ecdsa' && keyType !== 'rsa') throw new Error(`BENCH_SERVER_KEY=${keyType}: ecdsa or rsa`)
  const ca = createCa('bench CA')
  const server = issueServerCert(ca, ['localhost', '127.0.0.1'], undefined, { keyType })
  writeKeyFile(key, server.keyPem)
  writeFileSync(cert, server.certPem)
  const secret = 'b'.repeat(48)
  const secretFile = join(dir, 'jwt.secret')
  writeFileSync(secretFile, secret)
  const token = createSigner({ key: secret, algorithm: 'HS256' })({ sub: 'bench', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 6 * 3600 })
  return { cert, key, secretFile, token }
}

/** Polls url (with the token, if given) until it answers 200; throws with `what` otherwise. */
export async function waitFor200 (url, token, what) {
  for (let i = 0; i < 300; i++) {
    const r = await run('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), url]).catch(() => ({ stdout: '' }))
    if (r.stdout === '200') return
    await sleep(100)
  }
  throw new Error(`${what} did not come up`)
}
