// Recordings are streamed, never buffered whole: 500 MB through the gateway
// over real TLS while the process's memory stays flat.
import t from 'tap'
import { request } from 'node:https'
import { readFileSync } from 'node:fs'
import { bearer, startStubNas, startTestGateway, testCerts } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'

const TOTAL = 500 * 1024 * 1024
const CHUNK = Buffer.alloc(1024 * 1024, 0x55)

t.test('a 500 MB recording streams with flat memory', async (t) => {
  const nas = await startStubNas(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': TOTAL })
    let sent = 0
    const pump = (): void => {
      while (sent < TOTAL) {
        sent += CHUNK.length
        if (!res.write(CHUNK)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  const gw = await startTestGateway(t, nas, { upstream: { timeoutMs: 60000 } })
  global.gc?.()
  const baseline = process.memoryUsage().rss
  let peak = baseline
  let atQuarter = 0
  let received = 0
  let nextSample = 0
  await new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port: gw.port, path: '/medicall/big.wav', headers: bearer(gw.token()), ca: readFileSync(testCerts().ca), agent: false }, (res) => {
      t.equal(res.statusCode, 200)
      res.on('data', (c: Buffer) => {
        received += c.length
        if (received >= nextSample) {
          nextSample += 16 * 1024 * 1024
          const rss = process.memoryUsage().rss
          peak = Math.max(peak, rss)
          if (atQuarter === 0 && received >= TOTAL / 4) atQuarter = peak
        }
      })
      res.on('end', resolve)
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(received, TOTAL, 'every byte arrived')
  const growthMb = (peak - baseline) / 1024 / 1024
  const lateGrowthMb = (peak - atQuarter) / 1024 / 1024
  t.comment(`RSS baseline ${(baseline / 1048576).toFixed(0)} MB, at 125 MB ${(atQuarter / 1048576).toFixed(0)} MB, peak ${(peak / 1048576).toFixed(0)} MB`)
  // Buffering the recording would grow RSS by about its size (500 MB).
  t.ok(growthMb < 128, `RSS grew ${growthMb.toFixed(1)} MB in all while 500 MB passed (limit 128 MB)`)
  t.ok(lateGrowthMb < 48, `RSS grew ${lateGrowthMb.toFixed(1)} MB over the last 375 MB (flat: limit 48 MB)`)
  const fetch = await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch'))
  t.equal(fetch?.bytes, TOTAL, 'the audit record counts every byte')
})
