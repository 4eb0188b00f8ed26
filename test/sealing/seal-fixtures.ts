// A mounted NAS share for the seal and rotate tests: a temporary directory
// of plaintext recordings (their names hold phone numbers), a config whose
// keyring and audit directory lie beside it (off the share), and the
// SHA-256 of every recording, to check what a run leaves.
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import type { Config } from '../../src/config/schema.js'
import { loadConfig } from '../../src/config/load.js'
import { testCerts } from '../helpers/gateway.js'

export interface Share {
  dir: string
  root: string
  configFile: string
  config: Readonly<Config>
  keyring: string
  audit: string
  /** Plaintext path (as under the share, /medicall/...) → SHA-256 hex. */
  sha: Map<string, string>
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** A share holding `files` (share path → bytes), and its config. */
export function makeShare (files: Array<[string, Buffer]>, sealing = ''): Share {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-seal-'))
  const root = join(dir, 'nas')
  mkdirSync(root)
  const sha = new Map<string, string>()
  for (const [path, body] of files) {
    mkdirSync(dirname(join(root, path)), { recursive: true })
    writeFileSync(join(root, path), body)
    sha.set(path, sha256(body))
  }
  const certs = testCerts()
  const keyring = join(dir, 'keyring')
  const audit = join(dir, 'audit')
  const configFile = join(dir, 'nasguard.yaml')
  writeFileSync(configFile, `listen: { port: 8443 }
tls: { cert: ${certs.cert}, key: ${certs.key} }
upstream: { url: http://127.0.0.1:1 }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]
audit: { dir: ${audit} }
sealing: { mode: require, keyring: ${keyring}, periodPattern: "/medicall/{yyyy}/{mm}/**"${sealing} }
`)
  return { dir, root, configFile, config: loadConfig({ file: configFile, env: {} }), keyring, audit, sha }
}

/** Every file under a directory (dot-led ones too), as share paths, sorted. */
export function listFiles (root: string): string[] {
  const out: string[] = []
  const visit = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) visit(p)
      else out.push('/' + relative(root, p))
    }
  }
  visit(root)
  return out.sort()
}

/** Path, size and mtime of everything under a directory: what "wrote nothing" compares. */
export function snapshot (dir: string): string {
  try {
    return listFiles(dir).map((p) => { const st = statSync(join(dir, p)); return `${p} ${st.size} ${st.mtimeMs}` }).join('\n')
  } catch {
    return '(none)'
  }
}

export function readJournal (file: string): string {
  try { return readFileSync(file, 'utf8') } catch { return '' }
}
