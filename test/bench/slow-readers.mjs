#!/usr/bin/env node
// W4's client: N concurrent TLS connections, each fetching a large recording
// and reading it slowly (a token bucket of RATE bytes/s per reader), as a
// room full of browser players on a slow link would. A reader that reaches
// the end starts again; one that fails is counted and restarts after 1 s.
// Every REPORT_MS it prints one JSON line: readers streaming, bytes, errors.
//
//   node slow-readers.mjs URL TOKEN COUNT SECONDS RATE
import { request } from 'node:https'

const [url, token, count, seconds, rate] = process.argv.slice(2)
const COUNT = Number(count)
const RATE = Number(rate)
const REPORT_MS = Number(process.env.REPORT_MS ?? 5000)
const end = Date.now() + Number(seconds) * 1000
let bytes = 0
let errors = 0
let statuses = {}
let streaming = 0
let completed = 0
const live = new Set()

function reader () {
  if (Date.now() >= end) return
  const started = Date.now()
  let got = 0
  let counted = false
  const req = request(url, { agent: false, rejectUnauthorized: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
    if (res.statusCode !== 200) { res.resume(); res.on('end', () => setTimeout(reader, 1000)); return }
    streaming++
    counted = true
    res.on('data', (chunk) => {
      got += chunk.length
      bytes += chunk.length
      // Ahead of the allowance: stop reading until it catches up.
      const ahead = got - RATE * (Date.now() - started) / 1000
      if (ahead > 0) {
        res.pause()
        setTimeout(() => res.resume(), Math.ceil(ahead / RATE * 1000))
      }
    })
    res.on('end', () => { streaming--; counted = false; completed++; live.delete(req); reader() })
  })
  live.add(req)
  req.on('error', () => {
    errors++
    if (counted) streaming--
    counted = false
    live.delete(req)
    setTimeout(reader, 1000)
  })
  req.end()
}

// Ramp up over ~5 s so the handshakes do not all land at once.
for (let i = 0; i < COUNT; i++) setTimeout(reader, Math.floor(i * 5000 / COUNT))

const report = setInterval(() => {
  process.stdout.write(JSON.stringify({ t: Date.now(), streaming, bytes, errors, completed, statuses }) + '\n')
  if (Date.now() >= end) {
    clearInterval(report)
    for (const r of live) r.destroy()
    setTimeout(() => process.exit(0), 200)
  }
}, REPORT_MS)
