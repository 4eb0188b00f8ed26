// The processes of a bench run: the NAS, the JWT validator, the peers
// (nginx with and without auth_request, Caddy with forward_auth) and
// nasguard itself. Each start function returns { name, pids(), stop() }.
import { spawn, spawnSync } from 'node:child_process'
import { createReadStream, statSync, writeFileSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs'
import { createServer } from 'node:http'
import { join, normalize, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))

export function have (cmd) { return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0 }

/** The pid and all its descendants (from /proc), for RSS. */
export function treePids (root) {
  const children = new Map()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (!children.has(ppid)) children.set(ppid, [])
      children.get(ppid).push(Number(d))
    } catch {}
  }
  const out = []
  const walk = (p) => { out.push(p); for (const c of children.get(p) ?? []) walk(c) }
  walk(root)
  return out
}

/** One kB figure of each process's /proc file (the first match of `field`), summed, in MiB. */
function procKbSum (pids, file, field) {
  let kb = 0
  for (const p of pids) {
    try {
      const m = field.exec(readFileSync(`/proc/${p}/${file}`, 'utf8'))
      if (m) kb += Number(m[1])
    } catch {}
  }
  return kb / 1024
}

/** Resident set size of the processes, MB. */
export const rssMb = (pids) => procKbSum(pids, 'status', /VmRSS:\s+(\d+)/)

/**
 * The processes' proportional set size summed (MiB): each shared page (the
 * Node binary, mapped by every process) counted once across them, where
 * the sum of RSS counts it once per process.
 */
export const pssMb = (pids) => procKbSum(pids, 'smaps_rollup', /^Pss:\s+(\d+)/m)

/** CPU seconds (user + system) the processes used so far. */
export function cpuSeconds (pids) {
  let ticks = 0
  for (const p of pids) {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8')
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ')
      ticks += Number(rest[11]) + Number(rest[12])
    } catch {}
  }
  return ticks / 100
}

function tracked (name, children) {
  return {
    name,
    pids: () => children.flatMap((c) => (c.exitCode === null ? treePids(c.pid) : [])),
    stop: () => { for (const c of children) if (c.exitCode === null) c.kill('SIGTERM') }
  }
}

// As root, nginx's workers would run as nobody and could not read the 0700 temp dir.
const nginxCommon = (dir, name) => `${process.getuid?.() === 0 ? 'user root;' : ''} pid ${dir}/${name}.pid; error_log ${dir}/${name}-error.log warn; daemon off;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }`
const nginxHttp = (dir, name) => `access_log off; client_body_temp_path ${dir}/${name}-tmp; proxy_temp_path ${dir}/${name}-tmp;
  fastcgi_temp_path ${dir}/${name}-tmp; uwsgi_temp_path ${dir}/${name}-tmp; scgi_temp_path ${dir}/${name}-tmp;`

function startNginx (dir, name, body) {
  mkdirSync(join(dir, `${name}-tmp`), { recursive: true })
  const conf = join(dir, `${name}.conf`)
  writeFileSync(conf, body)
  const test = spawnSync('nginx', ['-t', '-c', conf], { encoding: 'utf8' })
  if (test.status !== 0) throw new Error(`nginx config ${name}: ${test.stderr}`)
  return tracked(name, [spawn('nginx', ['-c', conf], { stdio: 'ignore' })])
}

/** A WebDAV NAS for uploads: nginx's dav module writing under root (what nasguard and the nginx peer PUT to). */
export function startDavNas (dir, root, port) {
  mkdirSync(root, { recursive: true })
  return startNginx(dir, 'dav-nas', `worker_processes 1; ${nginxCommon(dir, 'dav-nas')}
http { ${nginxHttp(dir, 'dav-nas')}
  server {
    listen 127.0.0.1:${port};
    root ${root};
    client_max_body_size 0;
    dav_methods PUT DELETE MKCOL COPY MOVE;
    create_full_put_path on;
    dav_access user:rw;
  } }`)
}

/**
 * The NAS: nginx serving the fixture tree when installed, else a small Node
 * static server. No tcp_nopush: over loopback, nginx corked with sendfile
 * held the last partial segment of a 64 KiB + 16 byte range (one sealed
 * chunk) for a delayed ACK, 44 ms each (0.7 ms without), which measured the
 * NAS's TCP settings rather than the gateway.
 */
export async function startNas (dir, root, port) {
  if (have('nginx')) {
    const p = startNginx(dir, 'nas', `worker_processes 1; ${nginxCommon(dir, 'nas')}
http { ${nginxHttp(dir, 'nas')} sendfile on; keepalive_requests 100000;
  types { audio/wav wav; audio/mpeg mp3; }
  server { listen 127.0.0.1:${port}; root ${root}; autoindex on; } }`)
    return { ...p, kind: 'nginx' }
  }
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(req.url.split('?')[0]))
    const file = join(root, path)
    let st
    try { st = statSync(file) } catch { res.writeHead(404).end(); return }
    if (!st.isFile()) { res.writeHead(403).end(); return }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    const start = m ? Number(m[1]) : 0
    const last = m && m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1
    res.writeHead(m ? 206 : 200, {
      'content-type': file.endsWith('.mp3') ? 'audio/mpeg' : 'audio/wav',
      'content-length': last - start + 1,
      'accept-ranges': 'bytes',
      ...(m ? { 'content-range': `bytes ${start}-${last}/${st.size}` } : {})
    })
    createReadStream(file, { start, end: last }).pipe(res)
  })
  server.keepAliveTimeout = 60000
  await new Promise((r) => server.listen(port, '127.0.0.1', r))
  return { name: 'nas', kind: 'node', pids: () => [process.pid], stop: () => { server.close(); server.closeAllConnections() } }
}

export function startValidator (dir, port, secretFile) {
  const child = spawn(process.execPath, [join(here, '..', 'jwt-validator.mjs'), String(port), secretFile], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  return tracked('jwt-validator', [child])
}

/** nginx as a TLS reverse proxy, with auth_request to the validator or without auth. */
export function startNginxPeer (dir, { name, port, workers, nasPort, validatorPort, cert, key }) {
  const auth = validatorPort !== undefined
  return startNginx(dir, name, `worker_processes ${workers}; ${nginxCommon(dir, name)}
http { ${nginxHttp(dir, name)}
  upstream nas { server 127.0.0.1:${nasPort}; keepalive 128; keepalive_requests 100000; }
  ${auth ? `upstream validator { server 127.0.0.1:${validatorPort}; keepalive 64; keepalive_requests 100000; }` : ''}
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${cert}; ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    keepalive_requests 100000;
    client_max_body_size 0;
    location / {
      ${auth ? 'auth_request /_auth;' : ''}
      proxy_pass http://nas; proxy_http_version 1.1; proxy_set_header Connection "";
    }
    ${auth
      ? `location = /_auth {
      internal;
      proxy_pass http://validator/auth; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header X-Original-URI $request_uri;
    }`
      : ''}
  } }`)
}

/** Caddy with forward_auth to the validator, TLS from the same certificate. */
export function startCaddy (dir, { port, workers, nasPort, validatorPort, cert, key }) {
  const conf = join(dir, 'Caddyfile')
  writeFileSync(conf, `{
  admin off
  auto_https off
}
https://127.0.0.1:${port} {
  tls ${cert} ${key}
  forward_auth 127.0.0.1:${validatorPort} {
    uri /auth
  }
  reverse_proxy 127.0.0.1:${nasPort}
}
`)
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'caddy-data'), XDG_CONFIG_HOME: join(dir, 'caddy-config'), GOMAXPROCS: String(workers) }
  const log = openSync(join(dir, 'caddy.log'), 'a')
  return tracked('caddy', [spawn('caddy', ['run', '--config', conf, '--adapter', 'caddyfile'], { env, stdio: ['ignore', log, log] })])
}

/** nasguard as shipped: `nasguard start --config`, its log to a file as a service manager would keep it. */
export function startNasguard (dir, { name, cli, config, env }) {
  const file = join(dir, `${name}.json`)
  writeFileSync(file, JSON.stringify(config, null, 2))
  const log = openSync(join(dir, `${name}.log`), 'a')
  const child = spawn(process.execPath, [resolve(cli), 'start', '--config', file], { stdio: ['ignore', log, log], env: { ...process.env, ...env } })
  return tracked(name, [child])
}

/** The bare Node proxy (test/bench/bare-proxy.mjs): the calibration target for nasguard's features. */
export function startBareProxy (dir, { port, workers, nasPort, cert, key, secretFile }) {
  const log = openSync(join(dir, 'bare-proxy.log'), 'a')
  return tracked('bare-node', [spawn(process.execPath, [join(here, '..', 'bare-proxy.mjs'), String(port), String(nasPort), cert, key, secretFile, String(workers)], { stdio: ['ignore', log, log] })])
}
