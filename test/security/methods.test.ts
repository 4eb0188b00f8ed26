// A 405 says which methods its target takes (RFC 9110 §15.5.6: Allow),
// from the policy: on a path whose rules take only PUT, Allow: PUT; on a
// read-only path, GET, HEAD; a method the gateway never serves names every
// method some rule takes. Over HTTP/1.1 and HTTP/2, and the NAS is never
// asked.
import t from 'tap'
import { toneWav } from '../../src/demo/recordings.js'
import { recentPeriods } from '../../src/sealing/period.js'
import { bearer } from '../helpers/gateway.js'
import { h2Raw } from '../helpers/h2-raw.js'
import { fetchAs, PROTOCOLS } from '../helpers/protocols.js'
import { startSealed } from '../helpers/sealed-nas.js'
import { putAs } from '../helpers/upload.js'

const CUR = recentPeriods('month', new Date())[0].replace('-', '/')
const POLICY = [
  { name: 'read', path: '/medicall/**', methods: ['GET', 'HEAD'], scopes: ['recordings:read'] },
  { name: 'drop', path: '/inbox/**', methods: ['PUT'], scopes: ['recordings:write'] }
]

t.test('a 405 names the methods its target takes', async (t) => {
  const { gw, nas } = await startSealed(t, [], { policy: POLICY })
  const token = bearer(gw.token({ scope: 'recordings:read recordings:write' }))
  const body = toneWav(440, 0.2)
  const cases: Array<[string, (proto: 'h1' | 'h2') => Promise<{ status: number, headers: Record<string, unknown> }>, string]> = [
    ['DELETE of a recording', async (proto) => await fetchAs(proto, gw, `/medicall/${CUR}/a.wav`, token, 'DELETE'), 'GET, HEAD, PUT'],
    ['POST of a recording', async (proto) => await fetchAs(proto, gw, `/medicall/${CUR}/a.wav`, token, 'POST'), 'GET, HEAD, PUT'],
    ['PROPFIND of a directory', async (proto) => await fetchAs(proto, gw, `/medicall/${CUR}/`, { ...token, depth: '1' }, 'PROPFIND'), 'GET, HEAD, PUT'],
    ['PUT on a read-only path', async (proto) => await putAs(proto, gw, `/medicall/${CUR}/01/b.wav`, token, body), 'GET, HEAD'],
    ['GET on an upload-only path', async (proto) => await fetchAs(proto, gw, `/inbox/${CUR}/c.wav`, token), 'PUT'],
    ['HEAD on an upload-only path', async (proto) => await fetchAs(proto, gw, `/inbox/${CUR}/c.wav`, token, 'HEAD'), 'PUT']
  ]
  for (const proto of PROTOCOLS) {
    for (const [name, send, allow] of cases) {
      const asked = nas.requests.length
      const r = await send(proto)
      t.equal(r.status, 405, `${proto}: ${name}: 405`)
      t.equal(r.headers.allow, allow, `${proto}: ${name}: Allow: ${allow}`)
      t.equal(nas.requests.length, asked, `${proto}: ${name}: the NAS was not asked`)
    }
  }
  const foo = await h2Raw(gw, [{ headers: [[':method', 'FOO'], [':scheme', 'https'], [':authority', 'localhost'], [':path', `/medicall/${CUR}/a.wav`]] }])
  t.equal(foo.streams[0].status, 405, 'h2: FOO: 405')
  t.equal(foo.streams[0].headers.allow, 'GET, HEAD, PUT', 'h2: FOO: Allow names every method a rule takes')
})
