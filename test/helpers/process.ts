// Helpers for tests that run the built CLI or need a port nobody listens on.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { readFileSync, readdirSync } from 'node:fs'
import { resolve } from 'node:path'

export const CLI = resolve('dist/cli.js')

/** The kernel's ephemeral ports (listen(0) and every outgoing connection take theirs from here). */
function ephemeralRange (): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low > 0 && high >= low) return [low, high]
  } catch {}
  return [32768, 60999]
}

/**
 * Handed-out ports come from the widest gap outside the ephemeral range
 * (below it, above the well-known services, on Linux's default), split
 * into one slice per tap job (TAP_JOB_ID), so that the test files running
 * at once never draw the same port.
 */
const [LOW, HIGH] = (() => {
  const [ephemeralLow, ephemeralHigh] = ephemeralRange()
  const below: [number, number] = [10000, ephemeralLow - 1]
  const above: [number, number] = [Math.max(10000, ephemeralHigh + 1), 65535]
  const [low, high] = below[1] - below[0] >= above[1] - above[0] ? below : above
  if (high - low < 2000) throw new Error(`no room for test ports outside the ephemeral range ${ephemeralLow}-${ephemeralHigh} (/proc/sys/net/ipv4/ip_local_port_range)`)
  const slices = 8
  const size = Math.floor((high - low + 1) / slices)
  const job = Number(process.env.TAP_JOB_ID ?? 0) % slices
  return [low + job * size, low + (job + 1) * size - 1]
})()

/** Ports this process handed out already: never twice (callers take several before binding any). */
const handedOut = new Set<number>()

function bindsNow (port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer()
    s.once('error', () => res(false))
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)))
  })
}

/**
 * A loopback port that was free a moment ago (nothing listens on it now),
 * for a server started later (a child gateway, nginx, Redis) or one that
 * must stay unused. It is outside the kernel's ephemeral range, which
 * listen(0) and outgoing connections of the test files running beside this
 * one take theirs from: a port taken from there could be taken by one of
 * them in the seconds before it is used (or while a server restarts on it).
 */
export async function freePort (): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW + 1))
    if (handedOut.has(port) || !await bindsNow(port)) continue
    handedOut.add(port)
    return port
  }
  throw new Error(`no free loopback port in ${LOW}-${HIGH} after 200 tries`)
}

export interface Run { status: number | null, stdout: string, stderr: string }

/** Runs the built CLI to its end, with a clean environment; timeoutMs bounds a run that should end by itself (it is then sent SIGTERM). */
export function runCli (args: string[], timeoutMs?: number): Promise<Run> {
  return run(process.execPath, [CLI, ...args], { PATH: process.env.PATH }, timeoutMs)
}

/** Runs a command to its end without blocking this process (a stub NAS may answer from it). */
export function run (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs?: number): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('error', rej)
    child.on('close', (status) => res({ status, stdout, stderr }))
  })
}

/** The pids of a process's children (a gateway's workers), from /proc. */
export function childPids (ppid: number): number[] {
  const out: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(d))
    } catch {}
  }
  return out.sort()
}
