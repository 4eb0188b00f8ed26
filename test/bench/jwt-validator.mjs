#!/usr/bin/env node
// The small JWT validator the peers ask before proxying: nginx through
// auth_request, Caddy through forward_auth. It does what such validators do
// in practice and no more: HS256 signature (node:crypto, constant-time
// compare), exp, and a scope for /medicall/. No audit, no metrics, no
// revocation: that is the peers' side of the comparison.
//
//   node jwt-validator.mjs PORT SECRET_FILE
import { createServer } from 'node:http'
import { createHmac, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'

const [port, secretFile] = process.argv.slice(2)
const secret = readFileSync(secretFile, 'utf8').trim()

function allowed (authorization, uri) {
  if (typeof authorization !== 'string' || !authorization.startsWith('Bearer ')) return false
  const [h, p, s] = authorization.slice(7).split('.')
  if (!h || !p || !s) return false
  const header = JSON.parse(Buffer.from(h, 'base64url').toString())
  if (header.alg !== 'HS256') return false
  const mac = createHmac('sha256', secret).update(`${h}.${p}`).digest()
  const sig = Buffer.from(s, 'base64url')
  if (sig.length !== mac.length || !timingSafeEqual(sig, mac)) return false
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString())
  if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return false
  const scopes = String(claims.scope ?? '').split(' ')
  return typeof uri === 'string' && uri.startsWith('/medicall/') && !uri.includes('..') && scopes.includes('recordings:read')
}

createServer((req, res) => {
  let ok = false
  try {
    ok = allowed(req.headers.authorization, req.headers['x-original-uri'] ?? req.headers['x-forwarded-uri'])
  } catch { ok = false }
  res.writeHead(ok ? 204 : 401, { 'content-length': 0 })
  res.end()
}).listen(Number(port), '127.0.0.1', () => process.send?.('ready'))
