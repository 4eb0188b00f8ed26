// deploy/kubernetes/: every document is checked against the Kubernetes
// schemas (kubernetes-models, and the Prometheus Operator's for the
// ServiceMonitor), then against what the schemas cannot know: the pods run
// non-root on a read-only root with no capabilities, the probes reach the
// admin listener, the shipped nasguard.yaml passes nasguard's own checks
// with every file it names where the pod mounts it, secrets are read-only
// and private, the NetworkPolicy lets the gateways reach only the NAS,
// Redis and DNS, and the Services, PDB and ServiceMonitor select what exists.
import { spawnSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'
import { pino } from 'pino'
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1'
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { loadConfig } from '../../src/config/load.js'
import { startProblems } from '../../src/config/preflight.js'
import { buildAdmin } from '../../src/admin.js'
import { initKeyring, Keyring, newPeriodKey } from '../../src/sealing/keyring.js'
import { testCerts } from '../helpers/certs.js'

const DIR = new URL('../../deploy/kubernetes/', import.meta.url).pathname

// The manifests are read as plain data: any field may be anything until checked.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any
interface Doc { file: string, obj: Obj }

/** apiVersion/kind -> the model that validates it. A kind not listed here fails the test. */
const MODELS: Record<string, new (data: Obj) => { validate: () => void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor
}

/**
 * Every document of every manifest. YAML 1.1, as kubectl reads it (so that
 * `defaultMode: 0400` is the octal it means there).
 */
function readManifests (dir = DIR): Doc[] {
  const docs: Doc[] = []
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort()) {
    for (const d of parseAllDocuments(readFileSync(join(dir, file), 'utf8'), { version: '1.1' })) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0].message}`)
      const obj = d.toJS() as Obj
      if (obj !== null) docs.push({ file, obj })
    }
  }
  return docs
}

const docs = readManifests()
const ofKind = (kind: string): Obj[] => docs.filter((d) => d.obj.kind === kind).map((d) => d.obj)
const named = (kind: string, name: string): Obj => {
  const o = ofKind(kind).find((x) => x.metadata?.name === name)
  if (!o) throw new Error(`no ${kind} ${name} in deploy/kubernetes`)
  return o
}
const workloads = [...ofKind('StatefulSet'), ...ofKind('Deployment')]
const gateway = named('StatefulSet', 'nasguard')
const pod = gateway.spec.template.spec
const main = pod.containers.find((c: Obj) => c.name === 'nasguard')
const configText: string = named('ConfigMap', 'nasguard-config').data['nasguard.yaml']
const config = parse(configText) as Obj
const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v)
const podLabels: Record<string, string> = gateway.spec.template.metadata.labels
const volumeOf = (name: string): Obj => pod.volumes.find((v: Obj) => v.name === name) ??
  gateway.spec.volumeClaimTemplates?.find((v: Obj) => v.metadata.name === name)
const portNamed = (name: string): Obj => main.ports.find((p: Obj) => p.name === name)
/** The mount that holds an absolute path in the main container (the longest prefix). */
const mountOf = (path: string): Obj => main.volumeMounts
  .filter((m: Obj) => path === m.mountPath || path.startsWith(m.mountPath.replace(/\/?$/, '/')))
  .sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length)[0]
const preStopSeconds = (): number => main.lifecycle?.preStop?.sleep?.seconds ?? 0

t.test('the kustomization lists every manifest, and only those', async (t) => {
  const k = parse(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8')) as Obj
  const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort()
  t.same([...k.resources].sort(), files)
  t.equal(k.namespace, 'nasguard')
  for (const d of docs) t.equal(d.obj.kind === 'Namespace' ? d.obj.metadata.name : d.obj.metadata.namespace, 'nasguard', `${d.obj.kind} ${d.obj.metadata.name} is in the nasguard namespace`)
})

t.test('every document validates against its schema', async (t) => {
  t.ok(docs.length >= 9, `${docs.length} documents`)
  for (const { file, obj } of docs) {
    const key = `${obj.apiVersion}/${obj.kind}`
    const Model = MODELS[key]
    if (!Model) { t.fail(`${file}: no schema known for ${key}`); continue }
    t.doesNotThrow(() => new Model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata?.name}`)
  }
})

t.test('the schema check finds a broken manifest', async (t) => {
  // The check above is only worth something if it can fail.
  const broken = structuredClone(gateway)
  broken.spec.template.spec.containers[0].ports[0].containerPort = '8443'
  t.throws(() => new StatefulSet(broken).validate(), /containerPort must be integer/)
  const noSelector = structuredClone(gateway)
  delete noSelector.spec.selector
  t.throws(() => new StatefulSet(noSelector).validate(), /selector/)
  const sm = structuredClone(named('ServiceMonitor', 'nasguard'))
  sm.spec.endpoints[0].interval = 30
  t.throws(() => new ServiceMonitor(sm).validate(), /interval must be string/)
})

t.test('kubectl kustomize builds it', { skip: spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0 ? false : 'no kubectl here' }, async (t) => {
  const r = spawnSync('kubectl', ['kustomize', DIR], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  const kinds = parseAllDocuments(r.stdout).map((d) => (d.toJS() as Obj).kind).sort()
  t.same(kinds, docs.map((d) => d.obj.kind).sort())
})

t.test('every container runs non-root, read-only, without capabilities', async (t) => {
  t.ok(workloads.length > 0)
  for (const w of workloads) {
    const spec = w.spec.template.spec
    const podSc = spec.securityContext ?? {}
    t.equal(spec.automountServiceAccountToken, false, `${w.metadata.name}: no API token in the pod`)
    // A Service named nasguard(-admin) would inject NASGUARD_PORT=tcp://...,
    // which nasguard refuses as an unknown config variable.
    t.equal(spec.enableServiceLinks, false, `${w.metadata.name}: no service-link environment`)
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      const sc = { ...podSc, ...c.securityContext }
      const who = `${w.metadata.name}/${c.name}`
      t.equal(sc.runAsNonRoot, true, `${who}: runAsNonRoot`)
      t.equal(sc.runAsUser, 10001, `${who}: runs as 10001`)
      t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${who}: read-only root`)
      t.equal(c.securityContext?.allowPrivilegeEscalation, false, `${who}: no privilege escalation`)
      t.not(c.securityContext?.privileged, true, `${who}: not privileged`)
      t.ok(c.securityContext?.capabilities?.drop?.includes('ALL'), `${who}: drops ALL capabilities`)
      t.same(c.securityContext?.capabilities?.add ?? [], [], `${who}: adds none`)
      t.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${who}: seccomp RuntimeDefault`)
      t.ok(c.resources?.limits?.memory, `${who}: a memory limit`)
    }
  }
})

t.test('secrets are mounted read-only and private; the keyring 0400', async (t) => {
  for (const w of workloads) {
    const spec = w.spec.template.spec
    const secretVolumes = new Map<string, Obj>(spec.volumes.filter((v: Obj) => v.secret || v.projected).map((v: Obj) => [v.name, v]))
    t.ok(secretVolumes.size >= 8, `${secretVolumes.size} secret volumes`)
    for (const v of secretVolumes.values()) {
      t.notOk(v.projected, `${v.name}: a plain secret volume`)
      const mode = v.secret.defaultMode
      t.type(mode, 'number', `${v.name}: defaultMode is set`)
      t.equal(mode & 0o377, 0, `${v.name}: mode ${mode.toString(8)} gives no one but the owner anything (fsGroup adds group read)`)
      for (const item of v.secret.items ?? []) t.equal((item.mode ?? 0) & 0o377, 0, `${v.name}/${item.key}: mode`)
    }
    t.equal(secretVolumes.get('keyring')?.secret.defaultMode, 0o400, 'the keyring is 0400')
    t.equal(spec.securityContext.fsGroup, spec.securityContext.runAsUser, 'fsGroup lets the gateway (and only it) read root-owned secret files')
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      for (const m of c.volumeMounts ?? []) {
        const v = spec.volumes.find((x: Obj) => x.name === m.name)
        if (v?.secret || v?.configMap) t.equal(m.readOnly, true, `${c.name}: ${m.name} at ${m.mountPath} is read-only`)
      }
    }
  }
  // The keyring Secret is mounted only where it is copied, never in the gateway.
  t.notOk(main.volumeMounts.some((m: Obj) => m.name === 'keyring'), 'the gateway sees only the private copy')
})

t.test('the probes ask the admin listener for /healthz and /readyz', async (t) => {
  const admin = portNamed('admin')
  t.equal(admin?.containerPort, config.admin.port, 'container port "admin" is admin.port')
  t.equal(portNamed('https')?.containerPort, config.listen.port, 'container port "https" is listen.port')
  t.equal(config.admin.host, '0.0.0.0', 'the admin listener is reachable from the kubelet and Prometheus')
  for (const probe of ['livenessProbe', 'startupProbe']) {
    t.equal(main[probe].httpGet.path, '/healthz', `${probe} asks /healthz`)
    t.ok([admin.name, admin.containerPort].includes(main[probe].httpGet.port), `${probe} on the admin port`)
    t.notOk(main[probe].httpGet.httpHeaders, `${probe} carries no credential`)
  }
  const script: string = main.readinessProbe.exec.command.at(-1)
  t.match(script, `http://127.0.0.1:${config.admin.port}/readyz`)
  t.match(script, config.admin.tokenFile, 'the readiness probe reads the admin token from its Secret file')
})

t.test('the readiness probe passes on ready, fails on not ready and on a wrong token', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-k8s-probe-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const token = randomBytes(24).toString('hex')
  writeFileSync(join(dir, 'token'), token + '\n')
  let ready = true
  const admin = buildAdmin({ contentType: 'text/plain', text: async () => '' }, pino({ level: 'silent' }), async () => ({ ready, checks: {} }), `Bearer ${token}`)
  t.teardown(() => admin.close())
  await admin.listen({ host: '127.0.0.1', port: 0 })
  const port = (admin.server.address() as { port: number }).port
  const [, flag, script] = main.readinessProbe.exec.command as string[]
  const probe = (tokenFile: string): Promise<number | null> => new Promise((resolve) => {
    const s = script.replace(config.admin.tokenFile, tokenFile).replace(`127.0.0.1:${config.admin.port}`, `127.0.0.1:${port}`)
    spawn(process.execPath, [flag, s], { stdio: 'ignore' }).on('exit', resolve)
  })
  t.equal(await probe(join(dir, 'token')), 0, 'ready')
  ready = false
  t.equal(await probe(join(dir, 'token')), 1, 'not ready')
  ready = true
  writeFileSync(join(dir, 'other'), 'x'.repeat(48))
  t.equal(await probe(join(dir, 'other')), 1, 'a wrong token is not ready')
})

/** A directory laid out the way the kubelet writes a Secret volume: files in a timestamped directory, ..data, and symlinks. */
function secretVolume (dir: string, files: Record<string, string>): void {
  const stamp = '..2026_11_30_12_00_00.000000001'
  mkdirSync(join(dir, stamp), { recursive: true })
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, stamp, name), text, { mode: 0o440 })
    symlinkSync(join('..data', name), join(dir, name))
  }
  symlinkSync(stamp, join(dir, '..data'))
}

/** Runs the init container's copy with the paths moved under `root`. */
function runKeyringCopy (root: string): ReturnType<typeof spawnSync> {
  const init = pod.initContainers.find((c: Obj) => c.name === 'keyring')
  const [, flag, script] = init.command as string[]
  const moved = init.volumeMounts.reduce((s: string, m: Obj) => s.replaceAll(`'${m.mountPath}`, `'${root}${m.mountPath}`), script)
  return spawnSync(process.execPath, [flag, moved], { encoding: 'utf8' })
}

t.test('the init container makes a keyring nasguard accepts out of a Secret volume', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nasguard-k8s-keyring-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const made = join(root, 'made')
  initKeyring(made)
  newPeriodKey(made, 'month', '2026-11')
  const files = Object.fromEntries(readdirSync(made).filter((n) => !n.startsWith('.')).map((n) => [n, readFileSync(join(made, n), 'utf8')]))
  const init = pod.initContainers.find((c: Obj) => c.name === 'keyring')
  const source = init.volumeMounts.find((m: Obj) => m.name === 'keyring').mountPath
  secretVolume(root + source, files)
  t.throws(() => Keyring.load(root + source), 'nasguard refuses the Secret volume itself (symlinks): hence the copy')
  mkdirSync(root + '/run/nasguard', { recursive: true })
  const r = runKeyringCopy(root)
  t.equal(r.status, 0, String(r.stderr))
  const copy = Keyring.load(root + config.sealing.keyring)
  t.same(copy.list().map((k) => k.keyId), Keyring.load(made).list().map((k) => k.keyId), 'the same identities')
  t.equal(runKeyringCopy(root).status, 0, 'a second run (a restarted pod) replaces the copy')
})

/** Config keys that name files or directories the pod must provide. */
const PATH_KEYS: Array<[string, (c: Obj) => string | undefined, 'secret' | 'audit' | 'memory']> = [
  ['tls.cert', (c) => c.tls?.cert, 'secret'],
  ['tls.key', (c) => c.tls?.key, 'secret'],
  ['upstream.passwordFile', (c) => c.upstream?.passwordFile, 'secret'],
  ['auth.jwt.secretFile', (c) => c.auth?.jwt?.secretFile, 'secret'],
  ['auth.grants.secretFile', (c) => c.auth?.grants?.secretFile, 'secret'],
  ['audit.keyFile', (c) => c.audit?.keyFile, 'secret'],
  ['admin.tokenFile', (c) => c.admin?.tokenFile, 'secret'],
  ['state.redis.passwordFile', (c) => c.state?.redis?.passwordFile, 'secret'],
  ['audit.dir', (c) => c.audit?.dir, 'audit'],
  ['sealing.keyring', (c) => c.sealing?.keyring, 'memory']
]

t.test('every file the config names is where the pod mounts it', async (t) => {
  for (const [key, get, kind] of PATH_KEYS) {
    const path = get(config)
    if (path === undefined) continue
    const m = mountOf(path)
    t.ok(m, `${key} (${path}) is under a mount`)
    if (!m) continue
    const v = volumeOf(m.name)
    if (kind === 'secret') t.ok(v?.secret, `${key} is in a Secret volume (${m.name})`)
    if (kind === 'audit') t.ok(v?.spec?.accessModes?.includes('ReadWriteOnce'), `${key} is on the pod's own claim (${m.name}): the trail outlives the pod`)
    if (kind === 'memory') t.equal(v?.emptyDir?.medium, 'Memory', `${key} is in memory only (${m.name})`)
  }
  t.equal(config.admin.tokenFile, `${mountOf(config.admin.tokenFile).mountPath}/token`)
  const sm = named('ServiceMonitor', 'nasguard')
  const adminVolume = volumeOf(mountOf(config.admin.tokenFile).name)
  t.same(sm.spec.endpoints[0].authorization.credentials, { name: adminVolume.secret.secretName, key: 'token' }, 'Prometheus sends the token the gateway reads')
})

t.test("the shipped nasguard.yaml passes nasguard's own checks", async (t) => {
  // Every path under a mount is moved into a temp root and filled the way
  // the Secrets and the init container fill it; then the config loads and
  // start's preflight (certificate, audit dir, listeners, keyring) is clean.
  const root = mkdtempSync(join(tmpdir(), 'nasguard-k8s-config-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const mounts: string[] = main.volumeMounts.map((m: Obj) => m.mountPath)
  const move = (v: Obj): Obj => typeof v === 'string' && mounts.some((m) => v.startsWith(m + '/')) ? root + v
    : Array.isArray(v) ? v.map(move) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, move(x)])) : v
  const moved = move(config)
  const certs = testCerts()
  const fill = (file: string, from: string | Buffer): void => { mkdirSync(dirname(file), { recursive: true }); writeFileSync(file, from, { mode: 0o600 }) }
  for (const [key, get, kind] of PATH_KEYS) {
    const file = get(moved)
    if (file === undefined || kind !== 'secret') continue
    if (key === 'tls.cert') { mkdirSync(dirname(file), { recursive: true }); copyFileSync(certs.cert, file) } else if (key === 'tls.key') { mkdirSync(dirname(file), { recursive: true }); copyFileSync(certs.key, file) } else fill(file, randomBytes(32).toString('hex') + '\n')
  }
  // The keyring, as the init container makes it from the Secret.
  const made = join(root, 'made')
  initKeyring(made)
  newPeriodKey(made, 'month', '2026-11')
  const init = pod.initContainers.find((c: Obj) => c.name === 'keyring')
  secretVolume(root + init.volumeMounts.find((m: Obj) => m.name === 'keyring').mountPath,
    Object.fromEntries(readdirSync(made).filter((n) => !n.startsWith('.')).map((n) => [n, readFileSync(join(made, n), 'utf8')])))
  mkdirSync(root + '/run/nasguard', { recursive: true })
  t.equal(runKeyringCopy(root).status, 0)
  mkdirSync(root + '/var/lib/nasguard', { recursive: true })
  chmodSync(root + '/var/lib/nasguard', 0o700)
  // The pod's environment, the downward API's value filled in.
  const env = Object.fromEntries(main.env.map((e: Obj) => [e.name, e.value ?? (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name' ? 'nasguard-0' : undefined)]))
  t.same(main.env.find((e: Obj) => e.name === 'NASGUARD_AUDIT_INSTANCE')?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } }, 'audit.instance is the pod name')
  const loaded = loadConfig({ object: moved, baseDir: root, env })
  t.equal(loaded.audit.instance, 'nasguard-0')
  // Why enableServiceLinks is off: the environment a service link for the Service nasguard-admin would add.
  t.throws(() => loadConfig({ object: moved, baseDir: root, env: { ...env, NASGUARD_ADMIN_PORT: 'tcp://10.0.0.9:9464', NASGUARD_ADMIN_SERVICE_HOST: '10.0.0.9' } }), /NASGUARD_ADMIN_PORT must be a number|unknown environment variable/)
  t.ok(loaded.state.redis, 'revocations are shared through Redis')
  t.ok(loaded.auth.grants.secretFile, 'grants are shared between gateways (one key)')
  t.same(startProblems(loaded), [], 'start would accept it')
  t.equal(main.args.at(-1), '/etc/nasguard/nasguard.yaml')
  t.equal(mountOf('/etc/nasguard/nasguard.yaml').name, 'config')
  t.equal(volumeOf('config').configMap.name, 'nasguard-config')
  t.equal(loaded.workers, Number(main.resources.limits.cpu), 'one worker per CPU of the limit ("auto" would count the node\'s)')
})

t.test('the pod outlives a drain: grace period, preStop, PDB, spread', async (t) => {
  const drainS = (config.limits?.drainTimeoutMs ?? 10000) / 1000
  t.ok(pod.terminationGracePeriodSeconds > preStopSeconds() + drainS, `grace ${pod.terminationGracePeriodSeconds} s > preStop ${preStopSeconds()} s + drain ${drainS} s`)
  t.ok(gateway.spec.replicas >= 2, `${gateway.spec.replicas} replicas`)
  const pdb = named('PodDisruptionBudget', 'nasguard')
  t.ok(matches(pdb.spec.selector.matchLabels, podLabels), 'the PDB selects the gateways')
  t.ok(pdb.spec.maxUnavailable < gateway.spec.replicas, 'a drain leaves one serving')
  t.ok(matches(gateway.spec.selector.matchLabels, podLabels), 'the StatefulSet selects its pods')
  t.ok(pod.topologySpreadConstraints.some((c: Obj) => c.topologyKey === 'kubernetes.io/hostname' && c.whenUnsatisfiable === 'DoNotSchedule' && matches(c.labelSelector.matchLabels, podLabels)), 'never two on one node')
  t.same(gateway.spec.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Retain', whenScaled: 'Retain' }, 'audit claims are kept')
})

t.test('the Services reach ports that exist', async (t) => {
  const pub = named('Service', 'nasguard')
  t.ok(matches(pub.spec.selector, podLabels))
  t.same(pub.spec.ports.map((p: Obj) => [p.port, p.targetPort]), [[443, 'https']])
  const headless = named('Service', gateway.spec.serviceName)
  t.equal(headless.spec.clusterIP, 'None', 'the StatefulSet\'s Service is headless')
  t.ok(matches(headless.spec.selector, podLabels))
  for (const svc of ofKind('Service')) {
    for (const p of svc.spec.ports) {
      const target = typeof p.targetPort === 'string' ? portNamed(p.targetPort) : main.ports.find((x: Obj) => x.containerPort === p.targetPort)
      t.ok(target, `${svc.metadata.name}:${p.port} -> ${p.targetPort} is a container port`)
    }
  }
  const sm = named('ServiceMonitor', 'nasguard')
  const scraped = ofKind('Service').filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels))
  t.same(scraped.map((s) => s.metadata.name), [headless.metadata.name], 'the ServiceMonitor scrapes the admin Service, not the public one')
  t.ok(headless.spec.ports.some((p: Obj) => p.name === sm.spec.endpoints[0].port), 'its endpoint port exists')
  t.equal(sm.spec.endpoints[0].path, '/metrics')
})

t.test('NetworkPolicy: the gateways reach only the NAS, Redis and DNS', async (t) => {
  const deny = named('NetworkPolicy', 'default-deny')
  t.same(deny.spec.podSelector, {}, 'default-deny covers every pod of the namespace')
  t.same([...deny.spec.policyTypes].sort(), ['Egress', 'Ingress'])
  t.notOk(deny.spec.egress ?? deny.spec.ingress, 'and allows nothing')
  const gw = named('NetworkPolicy', 'nasguard-gateway')
  t.ok(matches(gw.spec.podSelector.matchLabels, podLabels), 'selects the gateway pods')
  t.same([...gw.spec.policyTypes].sort(), ['Egress', 'Ingress'])
  // No other policy opens egress for anyone.
  for (const p of ofKind('NetworkPolicy')) if (p !== gw) t.notOk(p.spec.egress, `${p.metadata.name} allows no egress`)
  const nasPort = Number(new URL(config.upstream.url).port || (config.upstream.url.startsWith('https:') ? 443 : 80))
  const redisPort = Number(new URL(config.state.redis.url).port || 6379)
  const rules: Obj[] = gw.spec.egress
  for (const r of rules) {
    t.ok(r.to?.length > 0, 'every egress rule names its destination')
    t.ok(r.ports?.length > 0, 'and its ports')
  }
  const nas = rules.filter((r) => r.to.some((x: Obj) => x.ipBlock))
  t.equal(nas.length, 1, 'one rule leaves the cluster: the NAS')
  t.same(nas[0].ports, [{ port: nasPort, protocol: 'TCP' }], `to upstream.url's port ${nasPort}`)
  for (const x of nas[0].to) t.ok(Number(x.ipBlock.cidr.split('/')[1]) >= 24, `${x.ipBlock.cidr} is narrow`)
  const inCluster = rules.filter((r) => !nas.includes(r))
  const redis = inCluster.filter((r) => r.ports.some((p: Obj) => p.port === redisPort))
  t.equal(redis.length, 1, 'one rule for Redis')
  t.ok(redis[0].to.every((x: Obj) => x.podSelector && x.namespaceSelector), 'Redis by namespace and pod, not by address')
  const dns = inCluster.filter((r) => !redis.includes(r))
  t.equal(dns.length, 1, 'and one for DNS')
  t.same(dns[0].ports.map((p: Obj) => p.port), [53, 53])
  t.same(dns[0].to[0].podSelector.matchLabels, { 'k8s-app': 'kube-dns' })
  const ingress: Obj[] = gw.spec.ingress
  const tls = ingress.find((r) => r.ports.some((p: Obj) => p.port === config.listen.port))
  t.notOk(tls.from, 'the TLS port from anywhere')
  const adminRule = ingress.find((r) => r.ports.some((p: Obj) => p.port === config.admin.port))
  t.same(adminRule.from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], 'the admin port from monitoring only')
  t.equal(ingress.length, 2, 'nothing else comes in')
})

t.test('the checks fail on a broken manifest directory', async (t) => {
  // A kind without a schema is refused rather than waved through.
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-k8s-bad-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'x.yaml'), 'apiVersion: example.com/v1\nkind: Widget\nmetadata: { name: w }\n')
  const [w] = readManifests(dir)
  t.notOk(MODELS[`${w.obj.apiVersion}/${w.obj.kind}`], 'Widget has no model: the schema test would fail it')
  t.ok(existsSync(join(DIR, 'kustomization.yaml')))
})
