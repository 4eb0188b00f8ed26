// Sealed recordings for tests: a keyring with period identities, files
// sealed by nasguard's own SealStream, and a stub NAS that serves an
// in-memory tree the way a file server does (one Range, ETag, If-Match,
// If-Range ignored) and logs every request it gets.
import { createHash } from 'node:crypto'
import { chmodSync, mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { initKeyring, Keyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { sealedPathOf } from '../../src/sealing/names.js'
import { SealStream } from '../../src/sealing/seal-stream.js'
import { startStubNas, startTestGateway, type GatewayOverrides, type NasHandler, type StubNas, type Teardown, type TestGateway } from './gateway.js'

export const PATTERN = '/medicall/{yyyy}/{mm}/**'

/** A keyring directory with a name key and an identity for each period. */
export function makeKeyring (periods: string[]): { dir: string, ring: () => Keyring } {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-keyring-')), 'keyring')
  initKeyring(dir)
  for (const p of periods) newPeriodKey(dir, 'month', p)
  chmodSync(dir, 0o700)
  return { dir, ring: () => Keyring.load(dir) }
}

/** The sealed bytes of `plain`, sealed for `path` to the period's recipient. */
export async function sealBytes (ring: Keyring, period: string, path: string, plain: Buffer): Promise<Buffer> {
  const key = ring.key(period)
  if (!key) throw new Error(`no key for ${period}`)
  return await buffer(Readable.from(plain.length > 0 ? [plain] : []).pipe(new SealStream([key.identity.publicKey], path)))
}

/** The NAS's name for a plaintext path. */
export function sealedName (ring: Keyring, path: string): string {
  return sealedPathOf(ring.nameKey, path.split('/').slice(1), 1)
}

export interface MemoryNas {
  files: Map<string, Buffer>
  handler: NasHandler
}

const etags = new WeakMap<Buffer, string>()

function etagOf (b: Buffer): string {
  let e = etags.get(b)
  if (e === undefined) { e = '"' + createHash('sha256').update(b).digest('hex').slice(0, 16) + '"'; etags.set(b, e) }
  return e
}

/** Serves `files` (by exact path): 404 for anything else, one byte range, If-Match. */
export function memoryNas (files = new Map<string, Buffer>()): MemoryNas {
  const handler: NasHandler = (req: IncomingMessage, res: ServerResponse) => {
    const body = files.get(req.url ?? '')
    if (!body) { res.writeHead(404, { 'content-type': 'text/html' }); res.end('<h1>404</h1>'); return }
    const etag = etagOf(body)
    const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', etag, 'last-modified': 'Sun, 29 Nov 2026 10:15:00 GMT' }
    const ifMatch = req.headers['if-match']
    if (ifMatch !== undefined && ifMatch !== etag) { res.writeHead(412); res.end(); return }
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (range) {
      const start = Number(range[1])
      const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1
      if (start >= body.length) { res.writeHead(416, { 'content-range': `bytes */${body.length}` }); res.end(); return }
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 })
      res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1))
      return
    }
    res.writeHead(200, { ...headers, 'content-length': body.length })
    res.end(req.method === 'HEAD' ? undefined : body)
  }
  return { files, handler }
}

export interface SealedSetup {
  keys: { dir: string, ring: () => Keyring }
  ring: Keyring
  mem: MemoryNas
  nas: StubNas
  gw: TestGateway
}

/** A keyring with these periods, an in-memory NAS, and a gateway in front of it with sealing on (require unless overridden). */
export async function startSealed (t: Teardown, periods: string[], o: GatewayOverrides = {}): Promise<SealedSetup> {
  const keys = makeKeyring(periods)
  const mem = memoryNas()
  const nas = await startStubNas(t, mem.handler)
  const gw = await startTestGateway(t, nas, { ...o, sealing: { mode: 'require', keyring: keys.dir, periodPattern: PATTERN, ...o.sealing } })
  return { keys, ring: keys.ring(), mem, nas, gw }
}
