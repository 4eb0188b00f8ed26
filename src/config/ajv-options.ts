// The Ajv options the config schema is compiled with: at run time from src
// (tests through tsx), and at build time into dist/config/config-validator.js
// (scripts/precompile-config-validator.mjs). One object, so the two agree.
// verbose: the anyOf errors carry their branches, which the messages list.
export const CONFIG_AJV_OPTIONS = { allErrors: true, useDefaults: true, coerceTypes: false, strict: false, verbose: true } as const
