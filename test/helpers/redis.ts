// A real Redis for tests of shared state: Debian's redis-server on a
// loopback port of its own, with its data in a temporary directory (AOF
// on and fsync'd on every write, so a restart keeps what was acknowledged;
// the directory is in /dev/shm where there is one, so that a reply never
// waits on a disk busy with the other test files' work). stop() and
// start() take it down and bring it back on the same port: the tests of
// "Redis is down" use them. It is initialised as `nasguard state init`
// does (the epoch gateways need before they trust it), unless asked not to.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initSharedRevocations } from '../../src/auth/shared-revocations.js'
import type { Teardown } from './gateway.js'
import { freePort } from './process.js'
import { waitFor } from './wait.js'

export const REDIS_SERVER = '/usr/bin/redis-server'

export interface TestRedis {
  url: string
  port: number
  /** Stops the server (SIGKILL: as a crash or a cut cable), resolved once it has exited. */
  stop: () => Promise<void>
  /** Starts it again on the same port with the same data, resolved once it answers PING. */
  start: () => Promise<void>
}

function ping (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    s.setTimeout(2000, () => { s.destroy(); resolve(false) })
    s.once('connect', () => s.write('PING\r\n'))
    s.on('data', (c: Buffer) => {
      got += c.toString()
      if (got.includes('\r\n')) { s.destroy(); resolve(got.startsWith('+PONG')) }
    })
    s.once('error', () => resolve(false))
  })
}

export async function startRedis (t: Teardown, opts: { init?: boolean } = {}): Promise<TestRedis> {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'nasguard-redis-'))
  const port = await freePort()
  writeFileSync(join(dir, 'redis.conf'), [
    `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'appendonly yes', 'appendfsync always',
    'save ""', 'daemonize no', 'protected-mode yes', 'loglevel warning', `logfile ${join(dir, 'redis.log')}`
  ].join('\n') + '\n')
  let child: ChildProcess | undefined
  const stop = async (): Promise<void> => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    await new Promise<void>((resolve) => { c.once('exit', () => resolve()); c.kill('SIGKILL') })
  }
  const start = async (): Promise<void> => {
    const c = spawn(REDIS_SERVER, [join(dir, 'redis.conf')], { stdio: 'ignore' })
    child = c
    await waitFor(`redis-server on port ${port}`, async () => c.exitCode === null && await ping(port) ? true : undefined, { intervalMs: 50 })
  }
  // /dev/shm is memory: emptied when the test is done with it.
  t.teardown(async () => { await stop(); rmSync(dir, { recursive: true, force: true }) })
  await start()
  const url = `redis://127.0.0.1:${port}`
  if (opts.init !== false) await initSharedRevocations({ url, keyPrefix: 'nasguard:', timeoutMs: 5000 }, [], 30)
  return { url, port, stop, start }
}
