// A completion record the trail does not take when it comes (a full disk,
// a trail moved away) used to be counted, logged and lost: the trail held
// an access with no completion. Now it is kept and written again once the
// trail takes records again, every second and at close.
import t from 'tap'
import type { AuditRecord, AuditWriter } from '../../src/audit/writer.js'
import { bearer, startStubNas, startTestGateway } from '../helpers/gateway.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'
import { waitFor } from '../helpers/wait.js'

const PATH = '/medicall/2016/01/01/083012_46701234567.wav'

/** Makes the writer refuse completion records while `refusing.on` (as a full disk refuses them). */
function refuseCompletions (audit: AuditWriter): { on: boolean } {
  const refusing = { on: false }
  const append = audit.append.bind(audit)
  audit.append = async (record: AuditRecord) => {
    if (refusing.on && record.event === 'fetch') throw Object.assign(new Error('no space left (simulated)'), { code: 'ENOSPC' })
    return await append(record)
  }
  return refusing
}

t.test('a completion the trail refused is written once it takes records again', async (t) => {
  for (const proto of PROTOCOLS) {
    t.test(proto, async (t) => {
      const nas = await startStubNas(t)
      const gw = await startTestGateway(t, nas)
      const refusing = refuseCompletions(gw.gateway.audit)
      refusing.on = true
      const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
      t.equal(res.status, 200, 'the fetch is served (its access record is on disk)')
      const reqId = res.headers['x-request-id']
      await waitFor('the failure in the log', () => gw.logs.some((l) => l.includes('audit record could not be written')) ? true : undefined)
      t.notOk(gw.auditRecords().some((r) => r.event === 'fetch' && r.requestId === reqId), 'no completion yet')
      refusing.on = false
      const done = await waitFor('the completion, written late', () => gw.auditRecords().find((r) => r.event === 'fetch' && r.requestId === reqId), { tries: 100, intervalMs: 50 })
      t.equal(done.outcome, 'complete', 'the completion says how the fetch ended')
      // The record is in the file as soon as it is written; the line comes once its write is acknowledged (after the fsync).
      t.ok(await waitFor('the late write in the log', () => gw.logs.some((l) => l.includes('audit records written late')) ? true : undefined), 'the late write is said in the log')
    })
  }
})

t.test('records still kept at close get one more try', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const refusing = refuseCompletions(gw.gateway.audit)
  refusing.on = true
  const ids: string[] = []
  for (const proto of PROTOCOLS) {
    const res = await fetchAs(proto, gw, PATH, bearer(gw.token()))
    t.equal(res.status, 200)
    ids.push(String(res.headers['x-request-id']))
  }
  await waitFor('both failures', () => gw.logs.filter((l) => l.includes('audit record could not be written')).length >= 1 ? true : undefined)
  refusing.on = false
  await gw.gateway.close()
  const completions = gw.auditRecords().filter((r) => r.event === 'fetch').map((r) => r.requestId)
  t.same(completions.sort(), ids.sort(), 'both completions are in the trail after the close')
})

t.test('many refusals kept while the trail refuses them are all in it after a close that comes as it recovers', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas)
  const refusing = { on: true }
  const append = gw.gateway.audit.append.bind(gw.gateway.audit)
  gw.gateway.audit.append = async (record: AuditRecord) => {
    if (refusing.on && record.event === 'refusal') throw Object.assign(new Error('no space left (simulated)'), { code: 'ENOSPC' })
    return await append(record)
  }
  const N = 60
  for (let i = 0; i < N; i++) {
    const res = await fetchAs(PROTOCOLS[i % 2], gw, PATH, { 'user-agent': `ua-${i}-` + 'x'.repeat(4000) })
    t.equal(res.status, 401)
  }
  await waitFor('the refusals kept', () => gw.logs.some((l) => l.includes('audit record could not be written')) ? true : undefined)
  refusing.on = false
  // The 1 s retry may be under way, or not yet: either way, the close waits for it and tries the rest.
  await waitFor('a late try', () => gw.logs.some((l) => l.includes('audit records written late')) ? true : undefined, { tries: 100, intervalMs: 20 }).catch(() => undefined)
  await gw.gateway.close()
  const refusals = gw.auditRecords().filter((r) => r.event === 'refusal' && String(r.userAgent).startsWith('ua-'))
  t.equal(refusals.length, N, `all ${N} refusals are in the trail`)
  t.ok(refusals.every((r) => String(r.userAgent).length <= 256), 'each at its bound')
  t.notOk(gw.logs.some((l) => l.includes('audit record lost')), 'none lost')
})
