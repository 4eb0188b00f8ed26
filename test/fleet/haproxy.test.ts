// Three gateways behind HAProxy, one Redis (issue 18's evidence): real
// processes throughout. gw1..gw3 share the JWT secret, the grants secret
// and the audit key; HAProxy (mode tcp: TLS passes through) checks each
// gateway's /readyz and redispatches a refused connection, and sends a
// PROXY header (send-proxy-v2) that the gateways trust from 127.0.0.1.
//   1. A token revoked through gw1 (`token revoke --config gw1.yaml`) is
//      refused by all three, directly and through HAProxy; the NAS sees no
//      request made with it after the refusal.
//   1b. A client connecting from 127.0.0.2 is audited as 127.0.0.2 by
//      whichever gateway served it, not as HAProxy's 127.0.0.1.
//   2. gw2 is SIGKILLed under load (each request a new TLS connection,
//      HTTP/1.1 and HTTP/2 in turn): no request started after its exit
//      fails, HAProxy marks it DOWN and sends it nothing more.
//   3. The three audit dirs, collected as an admin would, verify
//      (`audit verify --dir <collected> --expect gw1 gw2 gw3`).
// Ordered by events, not by time: each request takes a sequence number
// when it starts. The revocation's propagation time is measured and
// checked against the 1 s the README promises (pub/sub takes milliseconds;
// the polls use kept-alive connections, so no handshake is in the time).
import t from 'tap'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, request as httpsRequest } from 'node:https'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createSigner } from 'fast-jwt'
import { testCerts } from '../helpers/certs.js'
import { bearer, get } from '../helpers/gateway-client.js'
import { startHaproxy } from '../helpers/haproxy.js'
import { runCli } from '../helpers/process.js'
import { fetchAs } from '../helpers/protocols.js'
import { startRedis } from '../helpers/redis.js'
import { RECORDING, startStubNas } from '../helpers/stub-nas.js'
import { waitFor, within } from '../helpers/wait.js'
import { JWT_SECRET, startGateway, stopGateway } from './gateways.js'

const CONCURRENCY = 8
/** Requests sent through HAProxy after it marked gw2 DOWN. */
const AFTER_DOWN = 40
/** Requests started after gw2's exit while HAProxy, its checks paused, still takes it for up. */
const DEAD_BUT_UP = 24
/** The README's promise: a revocation applies on every gateway within this. */
const PROPAGATION_MS = 1000

const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256' })
const token = (jti: string): string => sign({ sub: 'alice', scope: 'recordings:read', jti, exp: Math.floor(Date.now() / 1000) + 600 })

/**
 * A request on a kept-alive connection of `agent` (one socket per gateway),
 * straight to a gateway: from 127.0.0.5, since 127.0.0.1 is HAProxy's
 * address, trusted for PROXY headers, and a connection from it without one
 * is refused.
 */
function getOn (agent: Agent, port: number, path: string, headers: Record<string, string>): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', localAddress: '127.0.0.5', servername: 'localhost', port, path, headers, agent, ca: readFileSync(testCerts().ca) }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString('latin1') })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('three gateways behind HAProxy, one Redis', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'nasguard-fleet-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const nas = await startStubNas(t)
  const redis = await startRedis(t)
  const auditKeyFile = join(base, 'audit.key')
  writeFileSync(auditKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const fleet = { base, nasUrl: nas.url, redisUrl: redis.url, auditKeyFile }
  const gws = await Promise.all(['gw1', 'gw2', 'gw3'].map(async (name) => await startGateway(t, { ...fleet, name })))
  const [gw1, gw2, gw3] = gws
  const hp = await startHaproxy(t, gws.map((g) => ({ name: g.name, port: g.port, adminPort: g.adminPort })))
  // On a failure, what HAProxy and the gateways said (stderr: the test's own output is TAP).
  t.teardown(() => { if (t.passing()) return; console.error('haproxy:\n' + hp.output().slice(-3000)); for (const g of gws) console.error(`${g.name}:\n${g.output().slice(-2000)}`) })

  await t.test('a token revoked through gw1 is refused by all three', async (t) => {
    const jti = `fleet-${randomBytes(6).toString('hex')}`
    const auth = bearer(token(jti))
    const agents = gws.map(() => new Agent({ keepAlive: true, maxSockets: 1 }))
    t.teardown(() => { for (const a of agents) a.destroy() })
    // Accepted everywhere first (and each agent's connection is open).
    for (const [i, g] of gws.entries()) t.equal((await getOn(agents[i], g.port, `/medicall/pre/${g.name}.wav`, auth)).status, 200, `${g.name} accepts the token before`)

    const revoke = await runCli(['token', 'revoke', '--config', gw1.config, '--jti', jti])
    const revokedAt = performance.now()
    t.equal(revoke.status, 0, 'token revoke exits 0', { output: revoke.stdout + revoke.stderr })
    t.comment(revoke.stdout.trim())

    // Each gateway, directly, until it refuses: the time to the refusal
    // (an upper bound of its propagation), and the polls it accepted.
    let accepted = 0
    const measured = await Promise.all(gws.map(async (g, i) => {
      let polls = 0
      return await waitFor(`${g.name} to refuse the revoked token`, async () => {
        const r = await getOn(agents[i], g.port, `/medicall/poll/${g.name}/${++polls}.wav`, auth)
        if (r.status === 200) { accepted++; return undefined }
        return { name: g.name, status: r.status, body: r.body, polls, ms: performance.now() - revokedAt }
      }, { intervalMs: 10 })
    }))
    for (const m of measured) {
      t.equal(m.status, 401, `${m.name} refuses it`)
      t.match(m.body, /NASGUARD_ERR_TOKEN_INVALID/, `${m.name}: as an invalid token`)
      t.ok(m.ms < PROPAGATION_MS, `${m.name} refused it ${m.ms.toFixed(1)} ms after token revoke exited (< ${PROPAGATION_MS})`)
    }
    t.comment(`revocation propagation (revoke exited -> refusal received): ${measured.map((m) => `${m.name} ${m.ms.toFixed(1)} ms (poll ${m.polls})`).join(', ')}`)

    // Through HAProxy (round robin: each of the three), on new connections: refused, and the NAS never asked.
    for (let i = 0; i < 6; i++) {
      const r = await get({ port: hp.port }, `/medicall/after-revoke/${i}.wav`, { headers: auth })
      t.equal(r.status, 401, `through haproxy, request ${i} is refused`)
    }
    t.same(nas.requests.filter((r) => r.url.startsWith('/medicall/after-revoke/')), [], 'the NAS got no request with the revoked token through haproxy')
    // And none from a refused poll: only the polls answered 200 reached it.
    t.equal(nas.requests.filter((r) => r.url.startsWith('/medicall/poll/')).length, accepted, `the NAS saw only the ${accepted} poll(s) accepted before the revocation applied`)
    // Another token still works through HAProxy.
    t.equal((await get({ port: hp.port }, '/medicall/after-revoke/other.wav', { headers: bearer(token(`other-${jti}`)) })).status, 200, 'another token is still served')
  })

  await t.test('send-proxy-v2: each gateway audits the client\'s address, not HAProxy\'s', async (t) => {
    const auth = bearer(token(`pp-${randomBytes(6).toString('hex')}`))
    // The client connects from 127.0.0.2; HAProxy connects on from 127.0.0.1.
    for (let i = 0; i < 3; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port: hp.port, path: `/medicall/proxied/${i}.wav`, servername: 'localhost', ca: readFileSync(testCerts().ca), headers: auth, localAddress: '127.0.0.2', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
        req.on('error', reject)
        req.end()
      })
      t.equal(status, 200, `request ${i} through haproxy is served`)
    }
    const access = (): Array<Record<string, unknown>> => gws.flatMap((g) => readFileSync(join(g.auditDir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)).filter((r) => r.event === 'access' && String(r.path).startsWith('/medicall/proxied/'))
    await waitFor('three access records', () => access().length === 3 ? true : undefined)
    t.same(access().map((r) => r.clientIp), ['127.0.0.2', '127.0.0.2', '127.0.0.2'], 'the audit clientIp is the client behind HAProxy')
  })

  await t.test('gw2 killed under load: HAProxy stops sending to it; only requests in flight at the kill fail', async (t) => {
    const auth = bearer(token(`load-${randomBytes(6).toString('hex')}`))
    interface Outcome { seq: number, proto: 'h1' | 'h2', ok: boolean, error?: string }
    const outcomes: Outcome[] = []
    const inflight = new Set<number>()
    let seq = 0
    let stopAt = Infinity
    const one = async (): Promise<void> => {
      const s = ++seq
      inflight.add(s)
      const proto = s % 2 === 0 ? 'h2' : 'h1'
      try {
        const r = await within(`request ${s}`, fetchAs(proto, { port: hp.port }, `/medicall/load/${s}.wav`, auth))
        outcomes.push({ seq: s, proto, ok: r.status === 200 && r.body.equals(RECORDING), error: r.status === 200 ? undefined : `status ${r.status}` })
      } catch (err) {
        outcomes.push({ seq: s, proto, ok: false, error: (err as Error).message })
      } finally {
        inflight.delete(s)
      }
    }
    const loops = Array.from({ length: CONCURRENCY }, async () => { while (seq < stopAt) await one() })
    // However this test ends, the load stops.
    t.teardown(async () => { stopAt = 0; await Promise.all(loops) })

    // Under way on all three first.
    await waitFor('load on every gateway', async () => (await hp.servers()).every((s) => s.stot >= 5) && outcomes.length >= 30 ? true : undefined, { intervalMs: 50 })
    // gw2's checks are paused across the kill, so that the stretch in which
    // HAProxy still takes gw2 for up surely holds requests (with 200 ms
    // checks it may hold none on a slow machine): each of them sent to gw2
    // is refused at connect and must be redispatched. Then the checks
    // resume, and HAProxy must mark gw2 DOWN by itself.
    t.match(await hp.command('disable health gateways/gw2'), /^\s*$/, 'gw2\'s health checks paused')
    const before = await hp.servers()
    let atExit: { seq: number, inflight: number[] } | undefined
    void gw2.exited.then(() => { atExit = { seq, inflight: [...inflight] } })
    const atKill = { seq, inflight: [...inflight] }
    gw2.child.kill('SIGKILL')
    const exit = await gw2.exited
    t.equal(exit.signal, 'SIGKILL', 'gw2 died of SIGKILL')
    const exitSeq = seq
    await waitFor(`${DEAD_BUT_UP} requests started after gw2's exit`, () => seq >= exitSeq + DEAD_BUT_UP ? true : undefined)
    const paused = await hp.servers()
    t.match(await hp.command('enable health gateways/gw2'), /^\s*$/, 'gw2\'s health checks resumed')
    const down = await waitFor('haproxy to mark gw2 DOWN', async () => {
      const s = (await hp.servers()).find((x) => x.name === 'gw2')
      return s?.status.startsWith('DOWN') === true ? { seq, stat: s } : undefined
    }, { intervalMs: 20 })
    stopAt = down.seq + AFTER_DOWN
    await Promise.all(loops)
    const after = await hp.servers()
    const exited = atExit as unknown as { seq: number, inflight: number[] }

    const failed = outcomes.filter((o) => !o.ok)
    const ok = outcomes.filter((o) => o.ok)
    const gw2After = after.find((s) => s.name === 'gw2')
    t.comment(`${outcomes.length} requests (${outcomes.filter((o) => o.proto === 'h2').length} over HTTP/2), ${ok.length} served, ${failed.length} failed: ${failed.map((f) => `#${f.seq} ${f.proto} (${f.error ?? ''})`).join(', ') || 'none'}`)
    t.comment(`kill at seq ${atKill.seq} with ${atKill.inflight.length} in flight; exit seen at seq ${exited.seq}; checks resumed at seq ${exitSeq + DEAD_BUT_UP}+; DOWN seen at seq ${down.seq}; load stopped at seq ${seq}`)
    const gw2Paused = paused.find((s) => s.name === 'gw2')
    const gw2Before = before.find((s) => s.name === 'gw2')
    t.comment(`haproxy before the kill: ${JSON.stringify(before)}`)
    t.comment(`haproxy with gw2 dead, checks paused: ${JSON.stringify(paused)}`)
    t.comment(`haproxy after: ${JSON.stringify(after)}`)
    t.comment(`haproxy's log: ${hp.output().split('\n').find((l) => /gw2 is DOWN/.test(l)) ?? '(no DOWN line)'}`)
    t.ok((gw2Paused?.wredis ?? 0) > (gw2Before?.wredis ?? 0), `HAProxy redispatched ${(gw2Paused?.wredis ?? 0) - (gw2Before?.wredis ?? 0)} connection(s) refused by the dead gw2 while it still took it for up`)
    t.ok(outcomes.length >= down.seq + AFTER_DOWN - CONCURRENCY, 'the load went on past DOWN')
    t.same(failed.filter((f) => f.seq > exited.seq), [], 'no request started after gw2\'s exit was seen failed (a refused connection is redispatched)')
    // A request started between the kill and its exit event may have been
    // accepted by the dying gateway's listening socket (the kernel keeps
    // completing handshakes until the process's files are closed): HAProxy
    // had connected, so it could not redispatch. Those were on gw2 too.
    t.same(failed.filter((f) => !atKill.inflight.includes(f.seq) && f.seq <= atKill.seq), [], 'a request that failed and started before the kill was in flight at the kill')
    t.ok(failed.length <= CONCURRENCY, `failures (${failed.length}) are at most the requests in flight (${CONCURRENCY}); ${failed.filter((f) => f.seq > atKill.seq).length} of them started after the kill signal was sent`)
    t.same(failed.filter((f) => f.seq > down.seq), [], 'no request failed after gw2 was DOWN')
    t.equal(gw2After?.stot, down.stat.stot, 'HAProxy sent gw2 no connection after marking it DOWN')
    t.same(after.filter((s) => s.name !== 'gw2').map((s) => [s.name, s.status, s.chkdown]), [['gw1', 'UP', 0], ['gw3', 'UP', 0]], 'gw1 and gw3 were UP throughout (never marked DOWN)')
  })

  await t.test('the three audit dirs, collected, verify', async (t) => {
    for (const g of [gw1, gw3]) {
      const e = await stopGateway(g)
      t.equal(e.code, 0, `${g.name} closed gracefully on SIGTERM`)
    }
    const collected = join(base, 'collected')
    mkdirSync(collected)
    // As rsync of each host's audit.dir into <collection>/<audit.instance>/.
    for (const g of gws) cpSync(g.auditDir, join(collected, g.name), { recursive: true })
    const r = await runCli(['audit', 'verify', '--dir', collected, '--key-file', auditKeyFile, '--expect', 'gw1', 'gw2', 'gw3'])
    t.comment(r.stdout.trim())
    t.equal(r.status, 0, 'audit verify passes over the collection', { output: r.stdout + r.stderr })
    for (const g of gws) t.match(r.stdout, new RegExp(`^${g.name}: intact`, 'm'))
    // A kill in the middle of a write can leave a torn last line (never
    // acknowledged: strict durability answers after fsync); verify notes
    // it and passes. Seen or not, it is reported here.
    t.comment(/truncated record/.test(r.stdout) ? 'gw2 left a torn last line (noted by verify, not tampering)' : 'gw2 left no torn line')

    // With a gateway's config, the instances that registered in Redis are
    // the ones expected: a host whose whole directory is missing is named.
    const registered = await runCli(['audit', 'verify', '--config', gw1.config, '--dir', collected, '--key-file', auditKeyFile])
    t.equal(registered.status, 0, 'verify with the registry of Redis passes', { output: registered.stdout + registered.stderr })
    t.match(registered.stderr, /expecting the 3 instances registered in Redis: gw1, gw2, gw3/)
    rmSync(join(collected, 'gw3'), { recursive: true })
    const missing = await runCli(['audit', 'verify', '--config', gw1.config, '--dir', collected, '--key-file', auditKeyFile])
    t.equal(missing.status, 1, 'a collection without gw3 fails')
    t.match(missing.stdout, /gw3/, 'and names it')
  })
})
