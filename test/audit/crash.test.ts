// kill -9 under load: the gateway runs as a real process (the built CLI),
// eight clients fetch recordings through it, and it is killed mid-stream.
// Whatever a client saw the headers of has its access record in the trail,
// the trail verifies (a torn last line is a crash, not tampering), and the
// gateway starts again on the same directory and carries the chain on.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { RECORDING, startStubNas } from '../helpers/stub-nas.js'
import { get, requestOptions } from '../helpers/gateway-client.js'
import { waitFor } from '../helpers/wait.js'
import { walkTrail } from '../../src/audit/verify.js'
import { loadAuditKey } from '../../src/audit/key.js'
import { lineHash, seal } from '../../src/audit/chain.js'
import { freePort, runCli } from '../helpers/process.js'

const CLI = resolve('dist/cli.js')
const SECRET = 'crash-test-secret-that-is-long-enough-0123456789'
const CLIENTS = 8
const PER_CLIENT = 60
const KILL_AFTER = 100



interface Gw { child: ChildProcess, exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>, output: () => string }

async function startGatewayProcess (t: { teardown: (fn: () => void) => void }, config: string, port: number): Promise<Gw> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', config], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const keep = (c: Buffer): void => { out = (out + c.toString()).slice(-20000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  // Ready when it answers: an unauthenticated request is refused with 401.
  await waitFor('the gateway process to answer', async () => {
    if (child.exitCode !== null) throw new Error('the gateway exited:\n' + out)
    try {
      return (await get({ port }, '/medicall/x.wav')).status === 401 ? true : undefined
    } catch {
      return undefined
    }
  }, { tries: 150, intervalMs: 50 })
  return { child, exited, output: () => out }
}

/** One fetch; resolves with the request id once the headers are in (and the body read or cut). */
function fetchOnce (port: number, path: string, token: string, onHeaders: (status: number, id: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions({ port }, path, { headers: { authorization: `Bearer ${token}` } }), (res) => {
      onHeaders(res.statusCode ?? 0, String(res.headers['x-request-id']))
      res.on('data', () => {})
      res.on('end', () => resolve())
      res.on('error', reject)
      res.on('aborted', () => reject(new Error('aborted')))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('kill -9 under load: every response seen has its access record; the trail verifies; the restart carries on', async (t) => {
  const nas = await startStubNas(t)
  const base = mkdtempSync(join(tmpdir(), 'nasguard-crash-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const auditDir = join(base, 'audit')
  const port = await freePort()
  const certs = testCerts()
  const config = join(base, 'nasguard.yaml')
  writeFileSync(config, [
    'listen: { host: 127.0.0.1, port: ' + String(port) + ' }',
    'tls:', `  cert: ${certs.cert}`, `  key: ${certs.key}`,
    `upstream: { url: "${nas.url}" }`,
    `auth: { jwt: { secret: "${SECRET}" } }`,
    'policy:', '  - { name: recordings, path: /medicall/**, scopes: [recordings:read] }',
    `audit: { dir: ${JSON.stringify(auditDir)}, durability: strict }`,
    'admin: { host: 127.0.0.1, port: 0 }',
    'log: { level: warn }'
  ].join('\n') + '\n')
  const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 600 })

  const gw = await startGatewayProcess(t, config, port)
  const seen = new Map<string, number>()
  let responses = 0
  let killed = false
  let errors = 0
  const loop = async (c: number): Promise<void> => {
    for (let i = 0; i < PER_CLIENT; i++) {
      const path = `/medicall/2016/01/${String(c + 1).padStart(2, '0')}/${String(i).padStart(6, '0')}_46701234567.wav`
      try {
        await fetchOnce(port, path, token, (status, id) => {
          seen.set(id, status)
          responses++
          if (responses >= KILL_AFTER && !killed) {
            killed = true
            gw.child.kill('SIGKILL')
          }
        })
      } catch {
        // The gateway is gone: this client stops.
        errors++
        return
      }
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => loop(c)))
  t.ok(killed, `killed after ${KILL_AFTER} responses (${responses} seen, ${errors} clients cut off)`)
  const exit = await gw.exited
  t.equal(exit.signal, 'SIGKILL', 'the gateway died of SIGKILL')
  t.ok(responses >= KILL_AFTER)
  t.ok([...seen.values()].every((s) => s === 200), 'every response whose headers arrived was a 200')
  t.comment(`${responses} responses seen, ${nas.requests.length} NAS requests, ${errors} clients cut off`)

  // The trail, as the crash left it.
  const verify = await runCli(['audit', 'verify', '--dir', auditDir])
  t.equal(verify.status, 0, 'audit verify after the crash:\n' + verify.stdout + verify.stderr)
  t.match(verify.stdout, /chain intact/)
  const torn = /note: (\S+) ends in a truncated record \((\d+) bytes\)/.exec(verify.stdout)
  t.comment(torn ? `torn tail: ${torn[0]}` : 'no torn tail')

  const key = loadAuditKey(`${auditDir}.key`)
  const access = new Set<string>()
  const afterCrash = await walkTrail(auditDir, key, (r) => { if (r.event === 'access') access.add(String(r.requestId)) })
  t.same(afterCrash.problems, [])
  const missing = [...seen.keys()].filter((id) => !access.has(id))
  t.same(missing, [], `every one of the ${seen.size} responses seen has an access record`)
  t.ok(access.size >= seen.size)

  // SIGKILL leaves whole write()s behind; a power cut can leave half of
  // one. If this crash did not, make it so: the start must recover either way.
  let tornBytes = torn ? Number(torn[2]) : 0
  if (!torn) {
    const f = join(auditDir, 'audit.jsonl')
    const lines = readFileSync(f, 'utf8').split('\n').filter(Boolean)
    const half = seal({ event: 'access', time: new Date().toISOString(), requestId: 'never-acknowledged', path: '/medicall/2016/09/09/000000_46700000000.wav' }, afterCrash.lastSeq + 1, lineHash(lines[lines.length - 1]), key).slice(0, 100)
    appendFileSync(f, half)
    tornBytes = Buffer.byteLength(half)
    const v = await runCli(['audit', 'verify', '--dir', auditDir])
    t.equal(v.status, 0, 'a torn tail is not tampering:\n' + v.stdout)
    t.match(v.stdout, `note: audit.jsonl ends in a truncated record (${tornBytes} bytes)`)
  }

  // The same directory, a new process: the chain runs on.
  const again = await startGatewayProcess(t, config, port)
  const res = await get({ port }, '/medicall/2016/02/02/000000_46701234567.wav', { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)
  t.same(res.body, RECORDING)
  again.child.kill('SIGTERM')
  const exit2 = await again.exited
  t.equal(exit2.code, 0, 'the restarted gateway closes cleanly:\n' + again.output())

  const records: Array<Record<string, unknown>> = []
  const after = await walkTrail(auditDir, key, (r) => { records.push(r) })
  t.same(after.problems, [], 'intact after the restart')
  t.equal(after.truncatedTail, undefined, 'no torn tail is left')
  t.same(records.map((r) => r.seq), records.map((_, i) => i + 1), 'seq contiguous across the crash')
  const recoveries = records.filter((r) => r.event === 'recovery')
  t.equal(recoveries.length, 1, 'the torn tail was recorded, once')
  t.equal(recoveries[0]?.droppedBytes, tornBytes, 'with the bytes dropped')
  t.equal(records.indexOf(recoveries[0]), afterCrash.records, 'right after the last record before the crash')
  t.notOk(records.some((r) => r.requestId === 'never-acknowledged'), 'the torn record is gone')
  t.ok(records.some((r) => r.event === 'fetch' && r.requestId === res.headers['x-request-id'] && r.outcome === 'complete'), 'the new fetch is recorded')
  const final = await runCli(['audit', 'verify', '--dir', auditDir])
  t.equal(final.status, 0, final.stdout + final.stderr)
  t.match(final.stdout, /chain intact/)
  t.equal(readFileSync(join(auditDir, 'audit.jsonl'), 'utf8').endsWith('\n'), true)
})
