// `nasguard quota show|reset` against a running gateway: through its admin
// listener, with the admin token the config names; a reset is audited and
// gives the subject its budget back; without an admin credential the
// budgets are not served at all.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { bearer, get, startStubNas, startTestGateway, testCerts, type TestGateway } from '../helpers/gateway.js'
import { runCli } from '../helpers/process.js'
import { named } from '../../src/budgets/control.js'
import { PROTOCOLS, fetchAs } from '../helpers/protocols.js'

const ADMIN_TOKEN = 'quota-cli-admin-token-0123456789'

/** A gateway with the admin credential and a per-subject budget, and a config for the command line that reaches its admin listener. */
async function quotaSite (t: Test, recordingsPerHour: number): Promise<{ gw: TestGateway, config: string, tokenFile: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'nasguard-quota-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const tokenFile = join(dir, 'admin.token')
  writeFileSync(tokenFile, ADMIN_TOKEN + '\n', { mode: 0o600 })
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { admin: { tokenFile }, limits: { perSubject: { recordingsPerHour } } })
  const certs = testCerts()
  const config = join(dir, 'nasguard.yaml')
  writeFileSync(config, `tls: { cert: ${certs.cert}, key: ${certs.key} }
upstream: { url: "${nas.url}" }
auth: { jwt: { secret: "0123456789abcdef0123456789abcdef" } }
policy: [{ name: recordings, path: "/medicall/**", scopes: [recordings:read] }]
audit: { dir: ${join(dir, 'audit')} }
admin: { host: 127.0.0.1, port: ${new URL(gw.adminUrl).port}, tokenFile: ${tokenFile} }
`)
  return { gw, config, tokenFile }
}

t.test('quota show and reset through the admin listener; a reset is audited', async (t) => {
  const { gw, config, tokenFile } = await quotaSite(t, 3)
  const token = gw.token({ sub: 'carol' })
  for (let i = 0; i < 3; i++) t.equal((await get(gw, `/medicall/2026/11/30/${i}.wav`, { headers: bearer(token) })).status, 200, `recording ${i + 1}`)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, '/medicall/2026/11/30/9.wav', bearer(token))).status, 429, `${proto}: the fourth distinct recording in the hour`)

  const shown = await runCli(['quota', 'show', '--config', config, '--sub', 'carol', '--json'])
  t.equal(shown.status, 0, shown.stderr)
  t.match(JSON.parse(shown.stdout), { subject: 'carol', token: { used: { recordingsPerHour: 3, recordingsPerDay: 3 }, budgets: { recordingsPerHour: 3 } }, certificate: { used: { recordingsPerHour: 0 } } })
  const table = await runCli(['quota', 'show', '--config', config, '--sub', 'carol'])
  t.match(table.stdout, /recordingsPerHour\s+3 of 3/)

  const reset = await runCli(['quota', 'reset', '--config', config, '--sub', 'carol'])
  t.equal(reset.status, 0, reset.stderr)
  t.match(gw.auditRecords().find((r) => r.event === 'quota-reset'), { event: 'quota-reset', reason: 'the budgets of subject "carol" were reset' }, 'the reset is in the audit trail')
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, `/medicall/2026/11/30/${proto}.wav`, bearer(token))).status, 200, `${proto}: after the reset the subject may fetch again`)

  // The wrong admin token: refused, nothing reset.
  writeFileSync(tokenFile, 'not-the-admin-token-000000000000\n')
  const wrong = await runCli(['quota', 'reset', '--config', config, '--sub', 'carol'])
  t.equal(wrong.status, 1, 'a wrong admin credential fails the command')
  t.match(wrong.stderr, /answered 401/)
})

t.test('without an admin credential the budgets are not served', async (t) => {
  const nas = await startStubNas(t)
  const gw = await startTestGateway(t, nas, { limits: { perSubject: { recordingsPerHour: 3 } } })
  const asked = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub: 'carol' }) }
  const res = await fetch(`${gw.adminUrl}/quota`, asked)
  t.equal(res.status, 403)
  const reset = await fetch(`${gw.adminUrl}/quota/reset`, asked)
  t.equal(reset.status, 403, 'nor reset')
})

t.test('a subject as long as a token can carry is shown and reset too; a body without one is refused, naming what it must hold', async (t) => {
  const { gw, config } = await quotaSite(t, 1)
  // Over 5,000 characters that a query string would have to escape (past the admin listener's 16 KiB of headers as a URL), within the gateway's headers as a token.
  const sub = 'https://idp.example/users/' + 'é&=?#%'.repeat(850)
  t.ok(sub.length > 5000, `the subject is ${sub.length} characters`)
  const token = gw.token({ sub })
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, `/medicall/2026/11/30/${proto}.wav`, bearer(token))).status, proto === PROTOCOLS[0] ? 200 : 429, `${proto}: its budget is charged`)

  const shown = await runCli(['quota', 'show', '--config', config, '--sub', sub, '--json'])
  t.equal(shown.status, 0, shown.stderr.slice(0, 300))
  t.match(JSON.parse(shown.stdout || '{}'), { token: { used: { recordingsPerHour: 1 } } }, 'shown: the one recording it took')
  t.equal((JSON.parse(shown.stdout || '{}') as { subject?: string }).subject, sub, 'for that very subject')
  const reset = await runCli(['quota', 'reset', '--config', config, '--sub', sub])
  t.equal(reset.status, 0, reset.stderr.slice(0, 300))
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, `/medicall/2026/12/01/${proto}.wav`, bearer(token))).status, proto === PROTOCOLS[0] ? 200 : 429, `${proto}: after the reset, one recording again`)
  // The record's reason is cut at 256 characters: a long subject is named by its start, its length and a digest.
  const digest = createHash('sha256').update(JSON.stringify(sub)).digest('hex')
  const resets = gw.auditRecords().filter((r) => r.event === 'quota-reset')
  t.equal(resets.length, 1)
  t.match(String(resets[0]?.reason), new RegExp(`\\(${sub.length} characters; sha256 of its JSON string ${digest}\\) were reset$`), 'the reset record names that very subject')

  // A subject a command line cannot carry (a lone surrogate arrives as U+FFFD): --sub is refused rather than resetting another ledger; --sub-json reaches it.
  const odd = 'eve\ud800'
  const oddToken = gw.token({ sub: odd })
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, `/medicall/2026/12/02/${proto}.wav`, bearer(oddToken))).status, proto === PROTOCOLS[0] ? 200 : 429, `${proto}: its budget is charged`)
  const refused = await runCli(['quota', 'reset', '--config', config, '--sub', odd])
  t.equal(refused.status, 1, 'a --sub that reached the command as U+FFFD is refused')
  t.match(refused.stderr, /U\+FFFD.*--sub-json/)
  t.equal(gw.auditRecords().filter((r) => r.event === 'quota-reset').length, 1, 'and nothing was reset or recorded')
  const oddShown = await runCli(['quota', 'show', '--config', config, '--sub-json', JSON.stringify(odd), '--json'])
  t.equal(oddShown.status, 0, oddShown.stderr)
  t.match(JSON.parse(oddShown.stdout || '{}'), { token: { used: { recordingsPerHour: 1 } } }, '--sub-json shows it')
  t.equal((await runCli(['quota', 'reset', '--config', config, '--sub-json', JSON.stringify(odd)])).status, 0)
  for (const proto of PROTOCOLS) t.equal((await fetchAs(proto, gw, `/medicall/2026/12/03/${proto}.wav`, bearer(oddToken))).status, proto === PROTOCOLS[0] ? 200 : 429, `${proto}: and resets it (one recording again)`)
  for (const args of [[], ['--sub', 'a', '--sub-json', '"a"'], ['--sub-json', '7'], ['--sub-json', '""'], ['--sub-json', 'nope']]) {
    const r = await runCli(['quota', 'show', '--config', config, ...args])
    t.equal(r.status, 1, `${args.join(' ') || 'no subject'}: refused`)
    t.match(r.stderr, /--sub/, 'naming the option')
  }

  const ask = async (body: string): Promise<{ status: number, message: string }> => {
    const res = await fetch(`${gw.adminUrl}/quota`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body })
    return { status: res.status, message: String(((await res.json()) as { message?: unknown }).message) }
  }
  // Two members are refused rather than one chosen (JSON.parse would take the last "sub"; a proxy or log in front may read the first).
  const twoMembers = ['{"sub": "carol", "sub": "mallory"}', '{"sub":"carol","s\\u0075b":"mallory"}', '{"sub": "carol", "operator": "x"}', '{"sub": "carol", "sub": "carol"}', '{"sub": {"a": 1, "b": [1, 2]}, "sub": "carol"}']
  const refusedBodies = ['{}', '{"sub": ""}', '{"sub": 7}', '[]', '["sub"]', 'null', '', '{"sub": "carol"', JSON.stringify({ sub: 'x'.repeat(16 * 1024 + 1) }), ...twoMembers]
  for (const body of refusedBodies) {
    const r = await ask(body)
    t.equal(r.status, 400, `${body.slice(0, 40)}: refused`)
    t.match(r.message, /\{"sub": S\}.*1 to 16384 characters/, 'naming what the body must hold')
  }
  const resetsBefore = gw.auditRecords().filter((r) => r.event === 'quota-reset').length
  for (const body of twoMembers) {
    const res = await fetch(`${gw.adminUrl}/quota/reset`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body })
    t.equal(res.status, 400, `reset ${body}: refused`)
  }
  t.equal(gw.auditRecords().filter((r) => r.event === 'quota-reset').length, resetsBefore, 'nothing was reset or recorded')
  // Only JSON: a text/plain POST (which a browser sends cross-site without asking first) is refused, whatever it holds.
  for (const type of ['text/plain', 'TEXT/PLAIN;charset=UTF-8', 'application/x-www-form-urlencoded']) {
    for (const route of ['/quota', '/quota/reset']) {
      const res = await fetch(`${gw.adminUrl}${route}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': type }, body: '{"sub": "carol"}' })
      t.equal(res.status, 415, `${type} to ${route}: refused`)
    }
  }
  t.equal(gw.auditRecords().filter((r) => r.event === 'quota-reset').length, resetsBefore, 'nothing was reset or recorded')
  // One member, however it is spelled, is the subject: commas, braces and quotes inside it are its own; a leading byte order mark is not part of the JSON.
  for (const [body, subject] of [['\ufeff{"sub": "carol"}', 'carol'], [' { "sub" : "a,\\"b{[}, \\"sub\\": 1" } ', 'a,"b{[}, "sub": 1'], ['{"s\\u0075b":"carol"}', 'carol']]) {
    const res = await fetch(`${gw.adminUrl}/quota`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json; charset=utf-8' }, body })
    t.equal(res.status, 200, `${body}: answered`)
    t.equal(((await res.json()) as { subject?: unknown }).subject, subject, 'for that subject')
  }
})

t.test('a reset record names any subject within the reason\'s 256 characters, and tells long ones apart', async (t) => {
  const reason = (s: string): string => `the budgets of subject ${named(s)} were reset`
  const subjects = ['carol', 'x'.repeat(200), 'x'.repeat(200) + 'y', '\u0001'.repeat(500), '\ud800'.repeat(300), 'é'.repeat(16384)]
  for (const s of subjects) t.ok(reason(s).length <= 256, `${JSON.stringify(s).slice(0, 12)}... (${s.length}): ${reason(s).length} characters`)
  t.equal(new Set(subjects.map(reason)).size, subjects.length, 'no two alike')
  t.equal(named('carol'), '"carol"', 'a short one whole')
})
