// Helpers for tests that run the built CLI or need a port nobody listens on.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { resolve } from 'node:path'

export const CLI = resolve('dist/cli.js')

/** A loopback port that was free a moment ago (nothing listens on it now). */
export function freePort (): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => res(port))
    })
  })
}

export interface Run { status: number | null, stdout: string, stderr: string }

/** Runs the built CLI to its end, with a clean environment. */
export function runCli (args: string[]): Promise<Run> {
  return run(process.execPath, [CLI, ...args], { PATH: process.env.PATH })
}

/** Runs a command to its end without blocking this process (a stub NAS may answer from it). */
export function run (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('error', rej)
    child.on('close', (status) => res({ status, stdout, stderr }))
  })
}
