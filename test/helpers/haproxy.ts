// Debian's HAProxy in front of several gateways, as an admin would run it:
// mode tcp (TLS passes through; the gateways terminate it), a health check
// of each gateway's /readyz on its admin port, and retries with redispatch
// so that a connection refused by a dead gateway goes to another one. Runs
// in the foreground (-db) from a generated config in a temporary
// directory; its stats socket says what it thinks of each server.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Teardown } from './stub-nas.js'
import { freePort } from './process.js'
import { waitFor } from './wait.js'

export const HAPROXY = '/usr/sbin/haproxy'

export interface Backend { name: string, port: number, adminPort: number }

/** One server's row of `show stat`: its status (UP, DOWN, ...) and counters. */
export interface ServerStat {
  name: string
  status: string
  /** Sessions (connections) sent to it in all. */
  stot: number
  /** Connection errors, retries and redispatches seen on it. */
  econ: number
  wretr: number
  wredis: number
  /** Failed health checks, and transitions from UP to DOWN. */
  chkfail: number
  chkdown: number
}

export interface TestHaproxy {
  port: number
  dir: string
  /** The servers' rows of `show stat`. */
  servers: () => Promise<ServerStat[]>
  /** A command on the stats socket (disable health gateways/gw2, ...): its answer. */
  command: (c: string) => Promise<string>
  /** The config it runs with (for the README's example and for failures). */
  config: string
  output: () => string
  stop: () => Promise<void>
}

/** The config: the README's example, with test ports and a short check interval. */
export function haproxyConfig (o: { port: number, statsSocket: string, backends: Backend[] }): string {
  return [
    'global',
    `  stats socket ${o.statsSocket} mode 600 level admin`,
    '  log stderr format raw local0 info',
    'defaults',
    '  mode tcp',
    '  log global',
    '  option tcplog',
    // A refused connection is retried after min(timeout connect, 1 s): short here.
    '  timeout connect 500ms',
    // A check's answer may take this long. Without it the bound is inter
    // (200 ms here): /readyz asks the NAS each time, and under load a slow
    // answer took every gateway out of rotation at once.
    '  timeout check 3s',
    '  timeout client 30s',
    '  timeout server 30s',
    '  retries 3',
    // Every retry goes to another server (the default redispatches only on the last).
    '  option redispatch 1',
    'frontend gateways',
    `  bind 127.0.0.1:${o.port}`,
    '  default_backend gateways',
    'backend gateways',
    '  balance roundrobin',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    '  default-server inter 200ms fall 2 rise 2',
    ...o.backends.map((b) => `  server ${b.name} 127.0.0.1:${b.port} check port ${b.adminPort} send-proxy-v2`)
  ].join('\n') + '\n'
}

/** One command on the stats socket (HAProxy answers and closes): its answer. */
export function statsCommand (socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socket)
    let text = ''
    s.setTimeout(5000, () => { s.destroy(); reject(new Error(`haproxy stats socket: no answer to ${command}`)) })
    s.once('connect', () => s.write(command + '\n'))
    s.on('data', (c: Buffer) => { text += c.toString() })
    s.once('error', reject)
    s.once('close', () => resolve(text))
  })
}

/** `show stat` over the stats socket, parsed (CSV, its header line starting with `# `). */
export async function showStat (socket: string): Promise<Array<Record<string, string>>> {
  const text = await statsCommand(socket, 'show stat')
  const lines = text.split('\n').filter((l) => l !== '')
  if (lines.length === 0 || !lines[0].startsWith('# ')) throw new Error(`haproxy stats socket: unexpected answer ${JSON.stringify(text.slice(0, 200))}`)
  const cols = lines[0].slice(2).split(',')
  return lines.slice(1).map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])))
}

/** Starts HAProxy; resolved once every backend's health check says UP. */
export async function startHaproxy (t: Teardown, backends: Backend[]): Promise<TestHaproxy> {
  if (!existsSync(HAPROXY)) throw new Error(`${HAPROXY} is missing: apt install haproxy (.ci/run installs it)`)
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-haproxy-'))
  const port = await freePort()
  const statsSocket = join(dir, 'stats.sock')
  const config = haproxyConfig({ port, statsSocket, backends })
  writeFileSync(join(dir, 'haproxy.cfg'), config)
  let out = ''
  const child: ChildProcess = spawn(HAPROXY, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] })
  const keep = (c: Buffer): void => { out = (out + c.toString()).slice(-50000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await exited
  }
  t.teardown(stop)
  const servers = async (): Promise<ServerStat[]> => (await showStat(statsSocket))
    .filter((r) => r.pxname === 'gateways' && r.svname !== 'BACKEND' && r.svname !== 'FRONTEND')
    .map((r) => ({ name: r.svname, status: r.status, stot: Number(r.stot), econ: Number(r.econ || 0), wretr: Number(r.wretr || 0), wredis: Number(r.wredis || 0), chkfail: Number(r.chkfail || 0), chkdown: Number(r.chkdown || 0) }))
  await waitFor('haproxy to see every gateway UP', async () => {
    if (child.exitCode !== null) throw new Error('haproxy exited:\n' + out)
    try {
      const s = await servers()
      return s.length === backends.length && s.every((b) => b.status === 'UP') ? true : undefined
    } catch {
      return undefined
    }
  }, { intervalMs: 100, tries: 600 })
  return { port, dir, servers, command: async (c) => await statsCommand(statsSocket, c), config, output: () => out, stop }
}
