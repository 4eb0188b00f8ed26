// The container's HEALTHCHECK: GET /healthz on the admin listener, exit 0 if
// it answers 200, else 1. It runs every interval inside the container, where
// there is no shell and no curl, so it is a plain node script that loads
// nothing of the gateway (the CLI would load Fastify, ajv and the rest: about
// a second of CPU per check).
//
// The address follows the gateway's own precedence: NASGUARD_ADMIN_PORT and
// NASGUARD_ADMIN_HOST, then admin.port and admin.host in the NASGUARD_CONFIG
// file, then the defaults (127.0.0.1:9464). A wildcard host is asked on
// loopback. The check is made from inside the container's network namespace,
// so a loopback admin listener (the default) is reachable.
import { request } from 'node:http'
import { readFileSync } from 'node:fs'

const TIMEOUT_MS = 3000
const DEFAULT_PORT = 9464
const DEFAULT_HOST = '127.0.0.1'

interface AdminAddress { host: string, port: number }

/** admin.host and admin.port from the config file, if one is named and says so. */
async function fromConfigFile (file: string | undefined): Promise<Partial<AdminAddress>> {
  if (!file) return {}
  // Loaded only here: a check with the port in the environment needs no parser.
  const { parse } = await import('yaml')
  const doc = parse(readFileSync(file, 'utf8')) as { admin?: { host?: unknown, port?: unknown } } | null
  const admin = doc?.admin ?? {}
  return {
    host: typeof admin.host === 'string' ? admin.host : undefined,
    port: typeof admin.port === 'number' ? admin.port : undefined
  }
}

async function adminAddress (env: NodeJS.ProcessEnv): Promise<AdminAddress> {
  const envPort = env.NASGUARD_ADMIN_PORT
  const envHost = env.NASGUARD_ADMIN_HOST
  const file = envPort !== undefined && envHost !== undefined ? {} : await fromConfigFile(env.NASGUARD_CONFIG)
  const port = envPort !== undefined ? Number(envPort) : (file.port ?? DEFAULT_PORT)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`admin.port (NASGUARD_ADMIN_PORT or the config file) is not a port: ${String(envPort ?? file.port)}`)
  let host = envHost ?? file.host ?? DEFAULT_HOST
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1'
  if (host === '::') host = '::1'
  return { host, port }
}

function getHealthz ({ host, port }: AdminAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/healthz', method: 'GET', timeout: TIMEOUT_MS }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)))
    req.on('error', reject)
    req.end()
  })
}

async function main (): Promise<number> {
  const address = await adminAddress(process.env)
  const status = await getHealthz(address)
  if (status === 200) return 0
  process.stderr.write(`nasguard healthcheck: http://${address.host}:${address.port}/healthz answered ${status}\n`)
  return 1
}

// A hard stop as well, in case a lookup or the parser hangs: the check must
// end on its own, before the runtime's own timeout kills it.
setTimeout(() => {
  process.stderr.write(`nasguard healthcheck: no result within ${TIMEOUT_MS + 1000} ms\n`)
  process.exit(1)
}, TIMEOUT_MS + 1000).unref()

main().then((code) => { process.exitCode = code }, (err: Error) => {
  process.stderr.write(`nasguard healthcheck: ${err.message}\n`)
  process.exitCode = 1
})
