// A WebDAV NAS for upload tests: Debian's nginx with its dav module
// (dav_methods PUT DELETE MKCOL COPY MOVE), as Synology, QNAP and TrueNAS
// speak it, serving a directory of its own. create_full_put_path is off,
// as on most NAS boxes: collections are made with MKCOL. Every request it
// gets is in its access log (method, status, and the URI; a test may read
// them); /refusing/ answers every PUT with 507 Insufficient Storage.
// Options make it the other NAS shapes the lockdown check and the probe
// meet: autoindex on (the 2019 NAS), and Basic auth on the whole share.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import type { Teardown } from './gateway.js'
import { freePort } from './process.js'
import { waitFor } from './wait.js'

export interface DavNas {
  url: string
  /** The share's directory on disk. */
  root: string
  /** The requests nginx logged so far: "METHOD STATUS URI" (not the lockdown check's). */
  requests: () => string[]
  /** The lockdown check's anonymous requests (its user-agent), logged apart. */
  exposureChecks: () => string[]
  /** Every file under the share, relative, with its size. */
  files: () => Map<string, number>
  /** Request bodies nginx is receiving now (its client_body_temp_path files): a PUT in flight. */
  bodiesInFlight: () => number
}

const NGINX = '/usr/sbin/nginx'

export interface DavNasOptions {
  /** Directory listings on (nginx autoindex). Default off. */
  autoindex?: boolean
  /** Basic auth on every request (nginx auth_basic, a {PLAIN} password file). */
  basicAuth?: { user: string, password: string }
  /** TLS on its port, with these protocols (nginx ssl_protocols) and every cipher OpenSSL has: an old NAS's TLS. */
  tls?: { cert: string, key: string, protocols: string }
}

function config (dir: string, port: number, o: DavNasOptions): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  log_format nas '$request_method $status $uri';
  map $http_user_agent $exposure_check { "~^nasguard \\(exposure check" 1; default 0; }
  map $exposure_check $forwarded { 1 0; default 1; }
  access_log ${dir}/access.log nas if=$forwarded;
  access_log ${dir}/checks.log nas if=$exposure_check;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port}${o.tls ? ` ssl;
    ssl_certificate ${o.tls.cert};
    ssl_certificate_key ${o.tls.key};
    ssl_protocols ${o.tls.protocols};
    ssl_ciphers ALL:@SECLEVEL=0` : ''};
    root ${dir}/share;
    client_max_body_size 0;
    autoindex ${o.autoindex === true ? 'on' : 'off'};${o.basicAuth ? `
    auth_basic "nas";
    auth_basic_user_file ${dir}/htpasswd;` : ''}
    dav_methods PUT DELETE MKCOL COPY MOVE;
    create_full_put_path off;
    dav_access user:rw;
    location /refusing/ {
      if ($request_method = PUT) { return 507; }
      dav_methods PUT DELETE MKCOL COPY MOVE;
    }
  }
}
`
}

function listening (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

function walk (root: string, dir = root, out = new Map<string, number>()): Map<string, number> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const st = statSync(path)
    if (st.isDirectory()) walk(root, path, out)
    else out.set('/' + relative(root, path), st.size)
  }
  return out
}

export async function startDavNas (t: Teardown, o: DavNasOptions = {}): Promise<DavNas> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-dav-'))
  mkdirSync(join(dir, 'share'))
  const port = await freePort()
  if (o.basicAuth) writeFileSync(join(dir, 'htpasswd'), `${o.basicAuth.user}:{PLAIN}${o.basicAuth.password}\n`)
  writeFileSync(join(dir, 'nginx.conf'), config(dir, port, o))
  const child: ChildProcess = spawn(NGINX, ['-c', join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  t.teardown(() => new Promise<void>((resolve) => {
    if (child.exitCode !== null) { resolve(); return }
    child.once('exit', () => resolve())
    child.kill('SIGQUIT')
  }))
  await waitFor(`nginx on port ${port} (${stderr})`, async () => child.exitCode === null && await listening(port) ? true : undefined, { intervalMs: 50 })
  const lines = (file: string): string[] => existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []
  return {
    url: `${o.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    root: join(dir, 'share'),
    requests: () => lines(join(dir, 'access.log')),
    exposureChecks: () => lines(join(dir, 'checks.log')),
    files: () => walk(join(dir, 'share')),
    bodiesInFlight: () => existsSync(join(dir, 'body')) ? walk(join(dir, 'body')).size : 0
  }
}
