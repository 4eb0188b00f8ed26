#!/usr/bin/env node
// W5r's client: like W5 (one request per TLS connection, Connection: close),
// but each connection offers the session ticket of the one before it, as a
// browser or an HTTP client with a session cache does. wrk never resumes,
// so this is its own client: CONCURRENCY loops for SECONDS. Prints one JSON
// line: connections/s, the share that resumed, statuses.
//
//   node handshakes.mjs PORT PATH TOKEN CONCURRENCY SECONDS
import { connect } from 'node:tls'

const [port, path, token, concurrency, seconds] = process.argv.slice(2)
const end = Date.now() + Number(seconds) * 1000
const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${token ? `Authorization: Bearer ${token}\r\n` : ''}Connection: close\r\n\r\n`
let done = 0
let resumed = 0
let errors = 0
const statuses = {}

function once (session) {
  return new Promise((resolve) => {
    let latest = session
    let head = ''
    let reused = false
    const s = connect({ host: '127.0.0.1', port: Number(port), servername: 'localhost', rejectUnauthorized: false, session, ALPNProtocols: ['http/1.1'] }, () => {
      reused = s.isSessionReused()
      s.write(request)
    })
    s.on('session', (b) => { latest = b })
    s.on('data', (c) => { if (head.length < 16) head += c.toString('latin1', 0, 16) })
    s.on('error', () => { errors++ })
    s.on('close', () => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 'none'
      statuses[status] = (statuses[status] ?? 0) + 1
      if (status !== 'none') { done++; if (reused) resumed++ }
      resolve(latest)
    })
  })
}

async function loop () {
  let session
  while (Date.now() < end) session = await once(session)
}

const started = Date.now()
await Promise.all(Array.from({ length: Number(concurrency) }, loop))
const secs = (Date.now() - started) / 1000
process.stdout.write(JSON.stringify({ rps: done / secs, resumedShare: done ? resumed / done : 0, errors, statuses }) + '\n')
