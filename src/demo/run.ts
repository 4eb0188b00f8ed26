// The demo that `npm start` runs when no config is given: a local CA and
// server certificate, synthetic recordings sealed on a demo NAS, and the
// gateway in front of it, with the commands to try printed.
import { randomBytes } from 'node:crypto'
import { join, relative, resolve } from 'node:path'
import { loadConfig } from '../config/load.js'
import { ensureLocalCertificates } from '../tls/certificates.js'
import { demoRecordings } from './recordings.js'
import { DEMO_PERIOD_PATTERN, sealDemoTree } from './sealed-tree.js'
import { startDemoNas } from './nas.js'
import { describeExposure } from '../proxy/exposure-check.js'
import { DEMO_CASE, DEMO_RETENTION, ensureDemoHold } from './hold.js'
import { issueToken } from '../auth/tokens.js'
import { closeOnSignals, startGateway } from '../server.js'

export async function runDemo (env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const cwd = process.cwd()
  const dataDir = resolve(cwd, '.nasguard-demo')
  const certs = ensureLocalCertificates(resolve(cwd, 'certs'), ['localhost', '127.0.0.1', '::1'])
  const keyring = join(dataDir, 'keyring')
  const sealed = await sealDemoTree(join(dataDir, 'nas'), keyring, demoRecordings())
  const nas = await startDemoNas(join(dataDir, 'nas'))
  const secret = randomBytes(32).toString('hex')
  const config = loadConfig({
    object: {
      listen: { host: '127.0.0.1', port: 8443 },
      tls: { cert: certs.serverCert, key: certs.serverKey },
      upstream: { url: nas.url },
      auth: { jwt: { secret, algorithms: ['HS256'] } },
      policy: [{ name: 'recordings', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] }],
      audit: { dir: join(dataDir, 'audit') },
      admin: { host: '127.0.0.1', port: 9464 },
      sealing: { mode: 'require', keyring, periodPattern: DEMO_PERIOD_PATTERN },
      retention: DEMO_RETENTION
    },
    env
  })
  await ensureDemoHold(config)
  const running = await startGateway(config)
  closeOnSignals(running, async () => { await nas.app.close() })
  const { token } = issueToken(config.auth.jwt, { sub: 'demo-user', scope: 'recordings:read', ttlSeconds: 3600 })
  const base = running.url.replace('127.0.0.1', 'localhost')
  const first = sealed.files.find((r) => r.path.endsWith('.wav')) ?? sealed.files[0]
  const file = first.path
  const dir = file.slice(0, file.lastIndexOf('/') + 1)
  const expired = (sealed.files.find((r) => r.path.startsWith('/medicall/2019/') && r.path.endsWith('.wav')) ?? first).path
  const rel = (f: string): string => relative(cwd, f)
  const ca = certs.caCert
  const line = '='.repeat(78)
  // The lockdown check finds the demo NAS open: shown, as an admin would see it.
  const lockdown = describeExposure(await running.gateway.exposure.once())
  process.stdout.write([
    '', line,
    '  nasguard DEMO MODE: synthetic recordings, a throw-away signing secret,',
    '  loopback only. For real use: nasguard start --config FILE (see README).',
    line,
    `  gateway   ${base}   (in front of the demo NAS at ${nas.url})`,
    `  metrics   ${running.adminUrl ?? '(admin off)'}/metrics`,
    `  audit     ${config.audit.dir}/audit.jsonl`,
    `  CA        ${ca}`,
    '',
    '  Demo token (sub demo-user, scope recordings:read, valid 1 hour):',
    `  TOKEN=${token}`,
    '',
    '  1) No token: 401',
    `     curl -i --cacert ${ca} ${base}${file}`,
    '  2) With the token: the recording',
    `     curl --cacert ${ca} -H "Authorization: Bearer $TOKEN" -o call.wav ${base}${file}`,
    '  3) A directory, even with the token: 403, no listing',
    `     curl -i --cacert ${ca} -H "Authorization: Bearer $TOKEN" ${base}${dir}`,
    '  4) What the NAS holds: sealed names and ciphertext only (the demo NAS lists, on purpose)',
    `     curl -s ${nas.url}${dir}`,
    '  5) Open one offline with age, no nasguard involved (the key stays off the NAS)',
    `     age -d -i ${rel(first.identityFile)} ${rel(first.sealedFile)} > call.wav`,
    '  6) Retention keeps calls 365 days: this 2019 call is past it, 410, and the NAS is not asked',
    `     curl -i --cacert ${ca} -H "Authorization: Bearer $TOKEN" ${base}${expired}`,
    `     (the 2016 calls are older still: a legal hold, case ${DEMO_CASE}, keeps them)`,
    '  7) The gateway checks that the NAS refuses everyone else. This one does not, on purpose:',
    `     ${lockdown}`,
    `     curl -s ${running.adminUrl ?? 'http://127.0.0.1:9464'}/metrics | grep '^nasguard_upstream_exposed'   # 1`,
    '     (a NAS that asks for the gateway\'s credentials, upstream.username, refuses it: then it is 0)',
    line, ''
  ].join('\n'))
}
