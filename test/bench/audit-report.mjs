#!/usr/bin/env node
// npm run build && node test/bench/audit-report.mjs: `nasguard audit report`
// over a trail of BENCH_RECORDS (1,000,000) records written by the real
// AuditWriter (durability batched, rotated at 64 MiB like the default), so
// they verify as a gateway's would. Times the report (--phone, then
// --subject) under /usr/bin/time -v: wall clock and peak RSS, and the
// number of rows. Not part of npm test: it measures, it does not assert.
// Env: BENCH_RECORDS (1000000), BENCH_KEEP=1 keeps the trail (its
// directory is printed), BENCH_DIR=<dir> reuses a kept one.
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { AuditWriter } from '../../dist/audit/writer.js'
import { createKey, loadAuditKey } from '../../dist/audit/key.js'

const N = Number(process.env.BENCH_RECORDS ?? 1_000_000)
const base = process.env.BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'nasguard-report-bench-'))
const dir = join(base, 'audit')
const keyFile = join(base, 'audit.key')

// One record in 1,000 is about the number, in one of its spellings; the
// rest are other numbers (some holding its digits inside a longer run).
const SPELLINGS = ['083012_46701234567.wav', '+46701234567.wav', '0046701234567.wav', '+46 70-123 45 67.wav', '2016-01-01 (070) 123 45 67.wav']
const OTHERS = (i) => `${String(i % 240000).padStart(6, '0')}_4670${String(1000000 + (i % 8999999)).slice(-7)}.wav`
const SUBJECTS = Array.from({ length: 200 }, (_, i) => `user-${i}`)

function recordOf (i) {
  const day = `2016/${String(1 + (i % 12)).padStart(2, '0')}/${String(1 + (i % 28)).padStart(2, '0')}`
  const file = i % 1000 === 7 ? encodeURIComponent(SPELLINGS[(i / 1000 | 0) % SPELLINGS.length]).replace(/%2B/g, '+') : i % 997 === 3 ? '101500_467012345670.wav' : OTHERS(i)
  const event = i % 2 === 0 ? 'access' : i % 50 === 1 ? 'refusal' : 'fetch'
  return {
    event,
    time: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    requestId: `req-${i}`,
    clientIp: `10.0.${(i >> 8) & 255}.${i & 255}`,
    method: 'GET',
    path: `/medicall/${day}/${file}`,
    subject: SUBJECTS[i % SUBJECTS.length],
    auth: 'jwt',
    jti: `jti-${i % 5000}`,
    rule: 'recordings',
    ...(event === 'fetch' ? { status: 200, bytes: 480000 + (i % 1000), durationMs: 12, outcome: 'complete' } : {}),
    ...(event === 'refusal' ? { status: 403, reason: 'insufficient_scope' } : {}),
    userAgent: 'curl/8.5.0'
  }
}

async function writeTrail () {
  const key = createKey(keyFile)
  const writer = await AuditWriter.open({ dir, durability: 'batched', batchMs: 1000, key, instance: 'bench', rotateBytes: 64 * 1024 * 1024 })
  const started = Date.now()
  const CHUNK = 20000
  for (let i = 0; i < N; i += CHUNK) {
    const group = []
    for (let j = i; j < Math.min(N, i + CHUNK); j++) group.push(writer.append(recordOf(j)))
    await Promise.all(group)
  }
  await writer.close()
  return (Date.now() - started) / 1000
}

function timed (args) {
  const r = spawnSync('/usr/bin/time', ['-v', process.execPath, 'dist/cli.js', ...args], { encoding: 'utf8', maxBuffer: 1 << 30 })
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)/.exec(r.stderr)?.[1]
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1]) / 1024
  const cpu = Number(/User time \(seconds\): ([\d.]+)/.exec(r.stderr)?.[1]) + Number(/System time \(seconds\): ([\d.]+)/.exec(r.stderr)?.[1])
  const chain = /chain intact[^\n]*|CHAIN NOT INTACT[^\n]*/.exec(r.stdout + r.stderr)?.[0]
  return { status: r.status, wall, cpu, rss, chain, stdout: r.stdout, stderr: r.stderr }
}

try {
  if (!existsSync(join(dir, 'audit.head'))) {
    console.log(`writing ${N} records with the AuditWriter (batched) into ${dir} ...`)
    console.log(`  written in ${await writeTrail()} s`)
  }
  loadAuditKey(keyFile)
  const loc = ['--dir', dir, '--key-file', keyFile]
  for (const [name, args] of [
    ['verify', ['audit', 'verify', ...loc]],
    ['report --phone (table)', ['audit', 'report', ...loc, '--phone', '+46 70-123 45 67', '--phone', '0701234567']],
    ['report --phone --json', ['audit', 'report', ...loc, '--phone', '46701234567', '--json']],
    ['report --subject --csv', ['audit', 'report', ...loc, '--subject', 'user-7', '--csv']]
  ]) {
    const r = timed(args)
    const rows = name.includes('json') ? JSON.parse(r.stdout).accesses.length : name.includes('csv') ? r.stdout.split('\r\n').length - 2 : name.startsWith('report') ? Number(/^(\d+) access record/m.exec(r.stdout)?.[1]) : undefined
    console.log(`${name}: exit ${r.status}, wall ${r.wall}, cpu ${r.cpu.toFixed(1)} s, max RSS ${r.rss.toFixed(0)} MiB${rows === undefined ? '' : `, ${rows} rows`}; ${r.chain ?? r.stderr.slice(0, 300)}`)
  }
} finally {
  if (process.env.BENCH_KEEP === '1' || process.env.BENCH_DIR) console.log(`trail kept in ${base}`)
  else rmSync(base, { recursive: true, force: true })
}
