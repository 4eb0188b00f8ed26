// `node --import=./test/helpers/ts-loader.mjs file.ts`: runs a test (and the
// src/ it imports) from TypeScript. See ts-loader-hooks.mjs for why not tsx.
import { register } from 'node:module'

register('./ts-loader-hooks.mjs', import.meta.url)
