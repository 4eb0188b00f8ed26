import { readFileSync } from 'node:fs'

/**
 * A secret kept in a file; one trailing newline (as editors add) is not
 * part of it. With `key`, a file that cannot be read is an error naming
 * the config key (a worker restarted after the file was removed says which
 * setting points at it, not only ENOENT).
 */
export function readSecretFile (file: string, key?: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
  } catch (err) {
    if (key === undefined) throw err
    throw new Error(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}
