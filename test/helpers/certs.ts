// The test CA and a localhost server certificate, shared by every test
// process of this user on this day. Apart from gateway.ts so that a test
// that needs only the files (the CLI tests) does not load the gateway.
import { existsSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCa, issueServerCert, writeKeyFile, type ServerKeyType } from '../../src/tls/certificates.js'

const certCache = new Map<ServerKeyType, { dir: string, ca: string, cert: string, key: string }>()

/**
 * A CA and a localhost server certificate (its key ECDSA P-256, as `cert
 * init` makes it, or RSA-2048), shared by every test process of
 * this user on this day (two RSA-2048 keys are about 0.6 s of CPU, and
 * about 50 test files want them). Made in a private directory and renamed
 * into place, so a process sees all four files or none; a directory another
 * user made, or one left incomplete, is not used.
 */
export function testCerts (keyType: ServerKeyType = 'ecdsa'): { dir: string, ca: string, cert: string, key: string } {
  const cached = certCache.get(keyType)
  if (cached) return cached
  const dir = join(tmpdir(), `nasguard-test-certs-${keyType}-${process.getuid?.() ?? 0}-${new Date().toISOString().slice(0, 10)}`)
  const paths = { dir, ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') }
  const usable = (): boolean => {
    try {
      const st = statSync(dir)
      return st.uid === (process.getuid?.() ?? st.uid) && (st.mode & 0o077) === 0 && [paths.ca, paths.cert, paths.key, join(dir, 'ca.key')].every((f) => existsSync(f))
    } catch {
      return false
    }
  }
  if (!usable()) {
    const tmp = mkdtempSync(join(tmpdir(), 'nasguard-certs-'))
    const ca = createCa('nasguard test CA')
    const server = issueServerCert(ca, ['localhost', '127.0.0.1'], undefined, { keyType })
    writeKeyFile(join(tmp, 'ca.key'), ca.keyPem)
    writeKeyFile(join(tmp, 'server.key'), server.keyPem)
    writeKeyFile(join(tmp, 'server.crt'), server.certPem)
    writeKeyFile(join(tmp, 'ca.crt'), ca.certPem)
    try {
      renameSync(tmp, dir)
    } catch {
      // Another test process was first: its set is used.
      rmSync(tmp, { recursive: true, force: true })
    }
    if (!usable()) throw new Error(`the shared test certificates in ${dir} are not usable (another owner, or incomplete): remove it`)
  }
  certCache.set(keyType, paths)
  return paths
}
