#!/usr/bin/env node
// The calibration peer: the least a Node TLS gateway can do. node:https,
// fast-jwt HS256 with its cache, a scope and a path prefix, and undici's
// Pool.stream writing the NAS's answer straight into the response. No
// framework, no audit, no metrics, no logs. nasguard's ratio to it is what
// its features cost (the same runtime, the same worker count).
//
//   node bare-proxy.mjs PORT NAS_PORT CERT KEY SECRET_FILE WORKERS
import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { createVerifier } from 'fast-jwt'
import { Pool } from 'undici'

const [port, nasPort, cert, key, secretFile, workers] = process.argv.slice(2)

if (cluster.isPrimary && Number(workers) > 1) {
  for (let i = 0; i < Number(workers); i++) cluster.fork()
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.kill('SIGTERM'); process.exit(0) })
} else {
  process.on('SIGTERM', () => process.exit(0)) // exits normally, so that --cpu-prof writes its profile
  const verify = createVerifier({ key: readFileSync(secretFile, 'utf8').trim(), algorithms: ['HS256'], cache: true })
  const pool = new Pool(`http://127.0.0.1:${nasPort}`, { connections: 256 })
  const PASS = ['content-type', 'content-length', 'content-range', 'accept-ranges', 'etag', 'last-modified']

  const allowed = (req) => {
    const a = req.headers.authorization
    if (typeof a !== 'string' || !a.startsWith('Bearer ')) return false
    try {
      const claims = verify(a.slice(7))
      return String(claims.scope ?? '').split(' ').includes('recordings:read') && req.url.startsWith('/medicall/') && !req.url.includes('..')
    } catch { return false }
  }

  createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    if (req.method !== 'GET' || !allowed(req)) { res.writeHead(401, { 'content-length': 0 }).end(); return }
    const ac = new AbortController()
    res.once('close', () => { if (!res.writableFinished) ac.abort() })
    pool.stream({
      method: 'GET',
      path: req.url.split('?')[0],
      headers: req.headers.range ? { range: req.headers.range } : {},
      signal: ac.signal
    }, ({ statusCode, headers }) => {
      const out = {}
      for (const h of PASS) if (headers[h] !== undefined) out[h] = headers[h]
      res.writeHead(statusCode, out)
      return res
    }).catch(() => { if (!res.headersSent) res.writeHead(502, { 'content-length': 0 }).end(); else res.destroy() })
  }).listen(Number(port), '127.0.0.1')
}
