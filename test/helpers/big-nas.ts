// A NAS whose every answer is 512 MB, pumped under backpressure: for tests
// of clients that read slowly or not at all.
import type { ServerResponse } from 'node:http'
import { startStubNas, type StubNas, type Teardown } from './stub-nas.js'

const MB = 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 0x33)

/** `open` holds the ids (x-request-id) of NAS requests not yet closed. */
export async function bigNas (t: Teardown): Promise<StubNas & { open: Set<string> }> {
  const open = new Set<string>()
  const nas = await startStubNas(t, (req, res: ServerResponse) => {
    const id = String(req.headers['x-request-id'])
    open.add(id)
    res.on('close', () => open.delete(id))
    res.on('error', () => {})
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': 512 * MB })
    const pump = (): void => { while (!res.destroyed && res.write(CHUNK)); }
    res.on('drain', pump)
    pump()
  })
  return { ...nas, open }
}
