// systemd: listening sockets it passes (socket activation, sd_listen_fds(3))
// and the readiness notification of Type=notify (sd_notify(3)). Both are
// off unless systemd set LISTEN_FDS or NOTIFY_SOCKET: a gateway run by hand
// or in a container behaves as before.
import { execFile } from 'node:child_process'
import cluster from 'node:cluster'
import { listen } from './listen.js'

/** sd_listen_fds(3): passed descriptors start at 3 (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3

/**
 * What a worker of `workers: N` is told by its primary: the number of the
 * gateway socket in the primary. node:cluster lets the primary own the
 * listener (round-robin: the primary accepts on that fd and hands out the
 * connections; shared-handle: it opens the handle from that fd and sends
 * it), so a worker's listen({ fd }) means the primary's fd, never its own
 * (in a worker, fd 3 is the IPC channel). Not NASGUARD_*: those are config keys.
 */
export const CLUSTER_GATEWAY_FD_ENV = 'CLUSTER_GATEWAY_FD'

export interface PassedSocket { fd: number, name: string }

/** The sockets this process uses: the gateway's and the admin listener's, each when systemd passed one. */
export interface InheritedSockets { gateway?: number, admin?: number, passed: PassedSocket[] }

/**
 * Parses LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES as sd_listen_fds_with_names(3)
 * does: nothing unless LISTEN_PID is this process (the variables may have been
 * inherited from a parent they were meant for); names default to "unknown",
 * and a name list of the wrong length is ignored.
 */
export function parseListenFds (env: NodeJS.ProcessEnv, pid: number): PassedSocket[] {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return []
  const count = Number(env.LISTEN_FDS)
  if (!Number.isInteger(count) || count <= 0) return []
  const names = env.LISTEN_FDNAMES?.split(':') ?? []
  return Array.from({ length: count }, (_, i) => ({ fd: LISTEN_FDS_START + i, name: names.length === count ? names[i] : 'unknown' }))
}

/**
 * Which passed socket serves what: the one named `gateway` (FileDescriptorName=
 * in the .socket unit) or else the first not named `admin`; `admin` for the
 * admin listener.
 */
export function assignSockets (passed: PassedSocket[]): InheritedSockets {
  const gateway = passed.find((s) => s.name === 'gateway') ?? passed.find((s) => s.name !== 'admin')
  const admin = passed.find((s) => s.name === 'admin')
  return { gateway: gateway?.fd, admin: admin?.fd, passed }
}

let inherited: InheritedSockets | undefined

/**
 * The sockets systemd passed this process, read once. The variables are then
 * unset, as sd_listen_fds(1) does with unset_environment, so that no child
 * (a worker, systemd-notify) takes them for its own. A worker of `workers: N`
 * gets the gateway socket of its primary (CLUSTER_GATEWAY_FD_ENV).
 */
export function inheritedSockets (env: NodeJS.ProcessEnv = process.env): InheritedSockets {
  if (inherited) return inherited
  if (cluster.isWorker) {
    const fd = Number(env[CLUSTER_GATEWAY_FD_ENV])
    inherited = { gateway: Number.isInteger(fd) && fd >= LISTEN_FDS_START ? fd : undefined, passed: [] }
    return inherited
  }
  inherited = assignSockets(parseListenFds(env, process.pid))
  delete env.LISTEN_PID
  delete env.LISTEN_FDS
  delete env.LISTEN_FDNAMES
  return inherited
}

export type ListenAt = { host: string, port: number } | { fd: number, host: string }

/**
 * Listens on systemd's socket when there is one (fd), else on host:port.
 * Fastify passes these options on to net.Server#listen, where `fd` wins over
 * host and port; host is set so that Fastify does not add a second binding,
 * which it does for "localhost". Errors name the listener and the socket.
 */
export async function listenOn (name: string, at: { host: string, port: number }, fd: number | undefined, fn: (o: ListenAt) => Promise<string>): Promise<string> {
  if (fd === undefined) return await listen(name, at, () => fn({ host: at.host, port: at.port }))
  try {
    return await fn({ fd, host: '0.0.0.0' })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new Error(`the ${name} listener cannot listen on the socket systemd passed (fd ${fd}): ${e.code ?? e.message} (see ListenStream= in the .socket unit)`)
  }
}

/** What a listening line adds when the socket came from systemd. */
export function socketNote (fd: number | undefined): string {
  return fd === undefined ? '' : ` (socket fd ${fd} from systemd)`
}

/** With admin.enabled false, an admin socket systemd passes is answered by nothing: say so. */
export function warnUnusedAdminSocket (sockets: InheritedSockets, log: NotifyLog): void {
  if (sockets.admin !== undefined) log.warn({ fd: sockets.admin }, 'systemd passed an admin socket but admin.enabled is false: nothing answers on it (disable nasguard-admin.socket)')
}

/** Where a notification failure is reported. */
export interface NotifyLog { warn: (o: object, msg: string) => void }

/**
 * Tells systemd (Type=notify) about this service: READY=1 once every listener
 * is up, STOPPING=1 when it starts closing. Only when NOTIFY_SOCKET is set,
 * and never in a worker (its primary speaks for the service). A failure is
 * logged; the gateway keeps serving (systemd's TimeoutStartSec= then decides).
 *
 * Node has no AF_UNIX datagram sockets, and the npm packages that add them
 * (unix-dgram, sd-notify, notify) are native addons, so they need a compiler
 * at install time. This runs systemd-notify(1), which comes with systemd.
 * Its message comes from another pid than the service's main one, so the unit
 * says NotifyAccess=all; and systemd-notify (systemd >= 246) waits on
 * BARRIER=1 until systemd has processed the message, so systemd finds the
 * sender in the unit's cgroup before it exits (the old race that lost
 * READY=1 is gone).
 */
export async function notifySystemd (state: 'ready' | 'stopping', log: NotifyLog, status?: string): Promise<boolean> {
  const socket = process.env.NOTIFY_SOCKET
  if (!socket || cluster.isWorker) return false
  const args = state === 'ready' ? ['--ready', `--pid=${process.pid}`] : ['STOPPING=1']
  if (status !== undefined) args.push(`--status=${status}`)
  return await new Promise((resolve) => {
    // Only what systemd-notify needs: no LISTEN_* and no secrets from this environment.
    execFile('systemd-notify', args, { env: { NOTIFY_SOCKET: socket, PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeout: 15000 }, (err, _stdout, stderr) => {
      if (err) log.warn({ state, reason: (stderr.trim() || err.message).slice(0, 300) }, 'could not notify systemd (systemd-notify failed); the service goes on')
      resolve(err === null)
    })
  })
}
