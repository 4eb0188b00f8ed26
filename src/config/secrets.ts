import { readFileSync } from 'node:fs'

/** A secret kept in a file; one trailing newline (as editors add) is not part of it. */
export function readSecretFile (file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
}
