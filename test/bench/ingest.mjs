#!/usr/bin/env node
// npm run build && node test/bench/ingest.mjs: uploads (PUT) of one WAV,
// through nasguard (sealed on the way in, then PUT + MOVE over WebDAV) and
// through nginx + auth_request (TLS, the same JWT check, proxy_pass of the
// PUT, no sealing), both to one nginx dav NAS; also straight to the NAS
// (plain HTTP, no TLS, no auth): the floor. curl does each upload, over
// HTTP/1.1, in interleaved rounds; medians of MB/s, and nasguard's ratio
// to the nginx peer (whose validator wants recordings:read; the token
// holds both scopes). Not part of npm test: it measures, it does not assert.
// Env: BENCH_ROUNDS (3), BENCH_UPLOAD_MB (200).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { initKeyring } from '../../dist/sealing/keyring.js'
import { periodAt } from '../../dist/sealing/period.js'
import { credentials, run, sleep, writeWav } from './lib/setup.mjs'
import { startDavNas, startNasguard, startNginxPeer, startValidator } from './lib/peers.mjs'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const MB = Number(process.env.BENCH_UPLOAD_MB ?? 200)
const PORTS = { nas: 18091, validator: 18092, nginx: 18093, nasguard: 18094, admin: 18095 }

const dir = mkdtempSync(join(tmpdir(), 'nasguard-ingest-bench-'))
const { cert, key, secretFile } = credentials(dir)
const token = createSigner({ key: 'b'.repeat(48), algorithm: 'HS256' })({ sub: 'bench', scope: 'recordings:read recordings:write', exp: Math.floor(Date.now() / 1000) + 3600 })
const file = join(dir, 'upload.wav')
writeWav(dir, 'upload.wav', MB * 1024 * 1024)
const keyring = join(dir, 'keyring')
initKeyring(keyring)
const month = periodAt('month', new Date()).replace('-', '/')

const targets = [
  startDavNas(dir, join(dir, 'nas'), PORTS.nas),
  startValidator(dir, PORTS.validator, secretFile),
  startNginxPeer(dir, { name: 'nginx-auth', port: PORTS.nginx, workers: 2, nasPort: PORTS.nas, validatorPort: PORTS.validator, cert, key }),
  startNasguard(dir, {
    name: 'nasguard',
    cli: 'dist/cli.js',
    config: {
      listen: { host: '127.0.0.1', port: PORTS.nasguard },
      tls: { cert, key, watch: false },
      upstream: { url: `http://127.0.0.1:${PORTS.nas}`, fileSystem: 'posix' },
      auth: { jwt: { secretFile } },
      policy: [{ name: 'recorder', path: '/medicall/**', methods: ['PUT'], scopes: ['recordings:write'], overwrite: true }],
      sealing: { mode: 'require', keyring, periodPattern: '/medicall/{yyyy}/{mm}/**' },
      audit: { dir: join(dir, 'audit') },
      admin: { port: PORTS.admin },
      workers: 2
    }
  })
]

/** One upload with curl: MB/s, or throws with the status. */
async function upload (url, extra = []) {
  const { stdout } = await run('curl', ['-sk', '--http1.1', '-o', '/dev/null', '-w', '%{http_code} %{speed_upload}', '-T', file, '-H', `Authorization: Bearer ${token}`, ...extra, url])
  const [status, speed] = stdout.split(' ')
  if (!['200', '201', '204'].includes(status)) throw new Error(`${url}: ${status}`)
  return Number(speed) / 1048576
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

try {
  await sleep(1500)
  const path = (who, i) => `/medicall/${month}/01/${who}-${i}.wav`
  const runs = { nas: [], 'nginx-auth': [], nasguard: [] }
  for (let i = 0; i < ROUNDS; i++) {
    runs.nas.push(await upload(`http://127.0.0.1:${PORTS.nas}${path('nas', i)}`))
    runs['nginx-auth'].push(await upload(`https://127.0.0.1:${PORTS.nginx}${path('nginx', i)}`))
    runs.nasguard.push(await upload(`https://127.0.0.1:${PORTS.nasguard}${path('nasguard', i)}`))
    rmSync(join(dir, 'nas', 'medicall'), { recursive: true, force: true })
  }
  const m = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, median(v)]))
  console.log(`upload of ${MB} MB, ${ROUNDS} rounds, median MB/s:`)
  for (const [k, v] of Object.entries(m)) console.log(`  ${k.padEnd(12)} ${v.toFixed(1)}${k === 'nasguard' ? `  (${(v / m['nginx-auth']).toFixed(2)}x nginx + auth_request)` : ''}`)
} finally {
  for (const t of targets.reverse()) t.stop()
  await sleep(500)
  rmSync(dir, { recursive: true, force: true })
}
