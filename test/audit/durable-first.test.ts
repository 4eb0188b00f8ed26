// Every recording response has a prior durable record: the access record is
// written and synced before the NAS is asked and before the client gets a
// single header. The sync is stalled through the writer's beforeSync hook
// (set at runtime on the running gateway's writer), and the test watches
// what happens on every socket meanwhile.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RECORDING, bearer, get, requestOptions, startStubNas, startTestGateway, type Response } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait.js'
import { AuditWriter, HEAD_FILE, AUDIT_FILE, type AuditWriterOptions } from '../../src/audit/writer.js'
import { open as openLine } from '../../src/audit/chain.js'
import { walkTrail } from '../../src/audit/verify.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'
const KEY = Buffer.from('d'.repeat(64))

/** A controllable stall for beforeSync: entered counts the syncs waiting on it. */
function stall (): { hook: () => Promise<void>, release: () => void, entered: () => number } {
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let entered = 0
  return { hook: () => { entered++; return gate }, release, entered: () => entered }
}

function setBeforeSync (w: AuditWriter, hook: AuditWriterOptions['beforeSync']): void {
  (w as unknown as { opts: AuditWriterOptions }).opts.beforeSync = hook
}

interface Watched { headers: boolean, done: Promise<Response> }

/** A request whose response headers are watched as they (do not) arrive. */
function watch (gw: { port: number }, path: string, opts: { method?: string, headers?: Record<string, string>, body?: string } = {}): Watched {
  const w: Watched = { headers: false, done: Promise.resolve(undefined as unknown as Response) }
  w.done = new Promise((resolve, reject) => {
    const req = httpsRequest(requestOptions(gw, path, { method: opts.method, headers: opts.headers }), (res) => {
      w.headers = true
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
  return w
}

function fileRecords (dir: string): Array<Record<string, unknown>> {
  const f = join(dir, AUDIT_FILE)
  if (!existsSync(f)) return []
  return readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('gateway: the access record is on disk before the NAS is asked or the client gets a header', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const s = stall()
  setBeforeSync(gw.gateway.audit, s.hook)

  const pending = watch(gw, PATH, { headers: bearer(gw.token({ jti: 'jti-durable' })) })
  const access = await waitFor('the access record in the file, its sync stalled', () =>
    s.entered() > 0 ? fileRecords(gw.auditDir).find((r) => r.event === 'access' && r.jti === 'jti-durable') : undefined)
  t.match(access, { event: 'access', path: PATH, subject: 'alice' })

  // The gateway is not stuck: a refused request is answered meanwhile
  // (a refusal is recorded without waiting for the disk).
  const refused = await get(gw, PATH)
  t.equal(refused.status, 401, 'the gateway answers other requests while the sync is stalled')

  t.equal(nas.requests.length, 0, 'the NAS has not been asked while the access record is not synced')
  t.equal(pending.headers, false, 'the client has no response headers while the access record is not synced')

  s.release()
  const res = await pending.done
  t.equal(res.status, 200, 'served once the record is durable')
  t.same(res.body, RECORDING)
  t.equal(res.headers['x-request-id'], access.requestId, 'the record written first is this response\'s')
  t.equal(nas.requests.length, 1)
  t.equal(nas.requests[0].url, PATH)
  await waitFor('the fetch record', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === access.requestId))
  t.same(gw.auditRecords().filter((r) => r.requestId === access.requestId).map((r) => r.event), ['access', 'fetch'])
})

t.test('gateway: a Range request and a grant wait for their records the same way', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { authExtra: { grants: { secret: 'grant-secret-'.padEnd(48, 'x') } } })
  const s = stall()
  setBeforeSync(gw.gateway.audit, s.hook)

  const ranged = watch(gw, PATH, { headers: { ...bearer(gw.token({ jti: 'jti-range' })), range: 'bytes=0-99' } })
  await waitFor('the ranged access record in the file', () =>
    s.entered() > 0 ? fileRecords(gw.auditDir).find((r) => r.event === 'access' && r.jti === 'jti-range') : undefined)
  // Queued behind the stalled group: the grant record is not even written yet.
  const body = JSON.stringify({ path: PATH })
  const grant = watch(gw, '/_nasguard/grants', { method: 'POST', headers: { ...bearer(gw.token({ jti: 'jti-grant' })), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, body })
  const queued = (): Array<{ record: { event: string, jti?: string } }> => (gw.gateway.audit as unknown as { queue: Array<{ record: { event: string, jti?: string } }> }).queue
  await waitFor('the grant record queued behind the stalled sync', () => queued().some((p) => p.record.event === 'grant' && p.record.jti === 'jti-grant') ? true : undefined)
  t.equal((await get(gw, PATH)).status, 401, 'the gateway is live')
  t.equal(ranged.headers, false, 'no headers for the Range request')
  t.equal(grant.headers, false, 'no grant handed out before its record is durable')
  t.equal(nas.requests.length, 0)

  s.release()
  const r = await ranged.done
  t.equal(r.status, 206)
  t.equal(r.body.length, 100)
  const g = await grant.done
  t.equal(g.status, 201, g.body.toString())
  const records = gw.auditRecords()
  t.ok(records.some((x) => x.event === 'grant' && x.jti === 'jti-grant'), 'the grant record is in the trail')
  t.equal(nas.requests.length, 1)
})

t.test('writer: append resolves only after beforeSync and the fsync, never before', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-durable-')), 'audit')
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const events: string[] = []
  const s = stall()
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'durable', rotateBytes: 1 << 26, beforeSync: () => { events.push('beforeSync'); return s.hook() } })
  t.teardown(() => w.close())
  // Watch the sync itself on the file handle the writer opened.
  const h = (w as unknown as { handle: { datasync: () => Promise<void> } }).handle
  const datasync = h.datasync.bind(h)
  h.datasync = async () => { events.push('datasync:start'); await datasync(); events.push('datasync:done') }

  let resolved = false
  const p = w.append({ event: 'access', time: new Date().toISOString(), requestId: 'w-1' }).then(() => { resolved = true; events.push('resolved') })
  await waitFor('the record written, its sync stalled', () => s.entered() > 0 && fileRecords(dir).some((r) => r.requestId === 'w-1') ? true : undefined)
  // A few turns of the event loop: nothing may resolve while stalled.
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
  t.equal(resolved, false, 'not acknowledged while the sync is stalled')
  s.release()
  await p
  t.same(events, ['beforeSync', 'datasync:start', 'datasync:done', 'resolved'], 'acknowledged after the fsync completed')
})

t.test('writer: audit.head never claims a record that is not yet durable', async (t) => {
  // The head is what `audit verify` compares the end of the trail with: if
  // it named a record whose write or sync then failed (or was lost in a
  // power cut), verify would call an honest trail tampered with.
  const dir = join(mkdtempSync(join(tmpdir(), 'nasguard-durable-')), 'audit')
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const s = stall()
  const w = await AuditWriter.open({ dir, durability: 'strict', batchMs: 100, key: KEY, instance: 'durable', rotateBytes: 1 << 26 })
  await w.append({ event: 'access', time: new Date().toISOString(), requestId: 'h-1' }) // durable; the head is due within a second
  setBeforeSync(w, s.hook)
  let acknowledged = false
  const second = w.append({ event: 'access', time: new Date().toISOString(), requestId: 'h-2' }).then(() => { acknowledged = true })
  // The new trail's first head names seq 0; the one written after record 1 is the one to read.
  const headAfterFirst = (): string | undefined => {
    const text = existsSync(join(dir, HEAD_FILE)) ? readFileSync(join(dir, HEAD_FILE), 'utf8').trim() : ''
    const o = openLine(text, KEY)
    return o.ok && o.value.record.seq > 0 ? text : undefined
  }
  const head = await waitFor('audit.head after record 1', headAfterFirst, { tries: 150, intervalMs: 20 })
  t.equal(acknowledged, false, 'record 2 is still waiting for its sync')
  const opened = openLine(head, KEY)
  t.ok(opened.ok, 'the head is sealed')
  if (opened.ok) t.equal(opened.value.record.seq, 1, 'the head names the last durable record (seq 1), not the one still syncing')
  s.release()
  await second
  await w.close()
  const r = await walkTrail(dir, KEY)
  t.same(r.problems, [])
  t.equal(r.lastSeq, 2)
})
