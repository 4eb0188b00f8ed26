// The JWT algorithms a config may name. Kept apart from the config schema,
// which the key loader would otherwise pull (with TypeBox) into every
// gateway process.
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const
export const PUBLIC_KEY_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'] as const
