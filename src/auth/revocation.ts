// The token denylist: a JSON-lines file that `nasguard token revoke` writes
// and every running gateway (and worker) polls. An entry revokes one token
// (by jti) or every token of a subject issued before a time; it lapses once
// no token it could match can still be valid (maxLifetimeSec after it was
// written or after issuedBefore), so the list stays short.
import { closeSync, fchmodSync, fchownSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, unwatchFile, watchFile, writeSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'

export type RevocationEntry =
  | { type: 'jti', jti: string, expiresAt: number, at: number }
  | { type: 'sub', sub: string, issuedBefore: number, expiresAt: number, at: number }

/** What a token or grant is checked by: its subject, jti and issue time (seconds). */
export interface Revocable { sub: string, jti?: string, iat?: number }

function parse (text: string): RevocationEntry[] {
  const out: RevocationEntry[] = []
  for (const line of text.split('\n')) {
    if (!line.trim()) continue
    try {
      const e = JSON.parse(line) as RevocationEntry
      if ((e.type === 'jti' && typeof e.jti === 'string') || (e.type === 'sub' && typeof e.sub === 'string' && typeof e.issuedBefore === 'number')) {
        if (typeof e.expiresAt === 'number') out.push(e)
      }
    } catch {
      // A torn line (a writer that crashed mid-append) is skipped.
    }
  }
  return out
}

export class Denylist {
  private jtis = new Map<string, number>()
  private subs = new Map<string, { issuedBefore: number, expiresAt: number }>()
  private lastStat = ''
  loadError: string | null = null

  constructor (readonly file: string) {}

  /** Reads the file again if it changed. Missing file: empty list. */
  load (): void {
    let st: Stats
    try {
      st = statSync(this.file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.jtis.clear()
        this.subs.clear()
        this.lastStat = ''
        this.loadError = null
        return
      }
      this.loadError = (err as Error).message
      return
    }
    const sig = `${st.ino}:${st.size}:${st.mtimeMs}`
    if (sig === this.lastStat) return
    let text: string
    try {
      text = readFileSync(this.file, 'utf8')
    } catch (err) {
      this.loadError = (err as Error).message
      return
    }
    const jtis = new Map<string, number>()
    const subs = new Map<string, { issuedBefore: number, expiresAt: number }>()
    for (const e of parse(text)) {
      if (e.type === 'jti') jtis.set(e.jti, Math.max(e.expiresAt, jtis.get(e.jti) ?? 0))
      else {
        const prev = subs.get(e.sub)
        subs.set(e.sub, { issuedBefore: Math.max(e.issuedBefore, prev?.issuedBefore ?? 0), expiresAt: Math.max(e.expiresAt, prev?.expiresAt ?? 0) })
      }
    }
    this.jtis = jtis
    this.subs = subs
    this.lastStat = sig
    this.loadError = null
  }

  /** Polls the file every pollMs (stat only; cheap) until stop(). */
  watch (pollMs: number): () => void {
    this.load()
    const listener = (): void => this.load()
    watchFile(this.file, { interval: pollMs, persistent: false }, listener)
    return () => unwatchFile(this.file, listener)
  }

  /** Why a token or grant is revoked, or null. */
  check (t: Revocable, now = Math.floor(Date.now() / 1000)): string | null {
    if (t.jti !== undefined) {
      const until = this.jtis.get(t.jti)
      if (until !== undefined && until >= now) return 'token revoked'
    }
    const s = this.subs.get(t.sub)
    if (s && s.expiresAt >= now && (t.iat === undefined || t.iat < s.issuedBefore)) return 'subject revoked'
    return null
  }
}

/**
 * Adds an entry (the CLI side). Lapsed entries are dropped, and the file is
 * replaced atomically (write, fsync, rename), so a gateway never reads half
 * of it.
 */
export function addRevocation (file: string, entry: RevocationEntry, now = Math.floor(Date.now() / 1000)): number {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const unlock = lock(`${file}.lock`)
  try {
    let existing: RevocationEntry[] = []
    let owner: Stats | undefined
    try {
      existing = parse(readFileSync(file, 'utf8'))
      owner = statSync(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const kept = [...existing.filter((e) => e.expiresAt >= now), entry]
    const tmp = `${file}.${process.pid}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, kept.map((e) => JSON.stringify(e)).join('\n') + '\n')
      // Keep the file readable by whoever could read it before (the
      // gateway's user), whoever runs this command.
      if (owner) {
        try { fchownSync(fd, owner.uid, owner.gid) } catch { /* not root: the owner is us anyway */ }
        fchmodSync(fd, owner.mode & 0o777)
      }
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, file)
    return kept.length
  } finally {
    unlock()
  }
}

/**
 * An exclusive lock file, so two revocations at once do not lose one
 * another's entries. A lock older than 30 s is a crashed writer's.
 */
function lock (path: string): () => void {
  const deadline = Date.now() + 10000
  for (;;) {
    try {
      closeSync(openSync(path, 'wx', 0o600))
      return () => { try { unlinkSync(path) } catch { /* already gone */ } }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      try {
        if (Date.now() - statSync(path).mtimeMs > 30000) { unlinkSync(path); continue }
      } catch { continue }
      if (Date.now() > deadline) throw new Error(`${path} is held by another revocation; try again`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
    }
  }
}
