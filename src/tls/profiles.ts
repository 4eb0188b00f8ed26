// TLS settings per profile, after Mozilla's server-side TLS guidelines (v5.7).
// Intermediate: TLS 1.2 + 1.3, AEAD ciphers with forward secrecy only. The
// DHE suites of that list are left out: they need a DH parameter file and add
// nothing for current clients. Modern: TLS 1.3 only.
// The server's cipher order is enforced (Mozilla leaves it to the client):
// every suite on the list is AEAD with forward secrecy, so it costs nothing,
// and scanners such as testssl rate an unordered server HIGH.
import type { SecureContextOptions, TlsOptions } from 'node:tls'

const TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256'
/** Mozilla's intermediate TLS 1.2 ciphers (v5.7), in its order; `nasguard probe` judges servers by it. */
export const MOZILLA_INTERMEDIATE_TLS12 = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305'
] as const
const INTERMEDIATE_TLS12 = MOZILLA_INTERMEDIATE_TLS12.filter((c) => !c.startsWith('DHE-')).join(':')

export type TlsProfile = 'intermediate' | 'modern'

export function tlsProfileOptions (profile: TlsProfile): Pick<TlsOptions & SecureContextOptions, 'minVersion' | 'maxVersion' | 'ciphers' | 'ecdhCurve' | 'honorCipherOrder'> {
  return {
    minVersion: profile === 'modern' ? 'TLSv1.3' : 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    ciphers: profile === 'modern' ? TLS13_SUITES : `${TLS13_SUITES}:${INTERMEDIATE_TLS12}`,
    ecdhCurve: 'X25519:prime256v1:secp384r1',
    honorCipherOrder: true
  }
}
