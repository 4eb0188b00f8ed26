// What a config reload may change in place (src/config/reload.ts lists the
// keys): the policy, extensions and per-request limits that each request
// reads afresh, the admission's and the send watch's limits, and the drain
// deadline. Everything else is reported as needing a restart.
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config/schema.js'
import { processShare } from '../config/derived.js'
import { RELOADABLE, changedKeys, changedMaterial, isJwtKey, materialDigests, type ReloadResult } from '../config/reload.js'
import type { LiveSettings } from '../gate/state.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { compileRules } from '../policy/rules.js'
import { compileRetention } from '../retention/rules.js'
import { budgetsByRule } from '../budgets/settings.js'
import type { Admission } from '../proxy/admission.js'
import type { SendWatch } from '../proxy/send-watch.js'
import { KeyExistsError, lockKeyring, newPeriodKey, type Keyring, type PeriodKey } from '../sealing/keyring.js'
import { recentPeriods } from '../sealing/period.js'
import { sealingOf, type SealingSettings } from '../sealing/settings.js'

/** How often a request for a recent period the keyring does not know may re-read it (another process may have made its key). */
const REREAD_MS = 1000

function liveSettings (c: Readonly<Config>): LiveSettings {
  return { rules: compileRules(c.policy), extensions: new Set(c.files.extensions), maxPathLength: c.limits.maxPathLength, maxRanges: c.limits.maxRanges, maxUploadBytes: c.limits.maxUploadBytes, sendTimeoutMs: c.limits.sendTimeoutMs, minSendRate: c.limits.minSendRate, retention: compileRetention(c.retention), budgets: budgetsByRule(c), budgetStoreError: c.limits.onStoreError }
}

export interface LiveParts {
  admission: Admission
  sendWatch: SendWatch
  metrics: GatewayMetrics
  log: () => FastifyBaseLogger
  /** Told the keyring now in use, after every load (what it no longer holds is forgotten). */
  keyringChanged: (keyring: Keyring | undefined) => void
  /** Takes the JWT verification keys afresh: the sources of keys that need a restart, or undefined when none could be read (Authenticator.replaceKeys). */
  replaceJwtKeys: (jwt: Readonly<Config>['auth']['jwt']) => string[] | undefined
}

export class LiveConfig {
  /** The settings a request reads afresh; a reload replaces them whole. */
  settings: LiveSettings
  /** How long close() lets downloads in flight go on before it cuts them. */
  drainTimeoutMs: number
  /** Sealed recordings' settings and keyring; undefined when sealing.mode is off. */
  sealing: SealingSettings | undefined

  /** The config last applied (this.config stays the one started with: what needs a restart is judged against it). */
  private current: Readonly<Config>
  private rereadAfter = 0
  /** What the key files held at the start (digests), for a reload to tell a file rewritten in place. */
  private readonly material: ReadonlyMap<string, string>

  constructor (private readonly config: Readonly<Config>, private readonly p: LiveParts) {
    this.current = config
    this.material = materialDigests(config)
    this.settings = liveSettings(config)
    this.drainTimeoutMs = config.limits.drainTimeoutMs
    this.sealing = sealingOf(config)
  }

  /**
   * Reads the keyring again (SIGHUP): new periods' keys are taken, destroyed
   * ones are gone. A keyring that no longer loads is refused, and the one in
   * use stays.
   */
  reloadKeyring (): boolean {
    try {
      this.sealing = sealingOf(this.current)
      if (this.sealing) this.p.log().info({ periods: this.sealing.keyring.list().length }, 'sealing keyring loaded')
      return true
    } catch (err) {
      // What was erased since is dropped all the same: an erased period is never opened from memory.
      if (this.sealing) this.sealing = { ...this.sealing, keyring: this.sealing.keyring.withoutErased() }
      this.p.log().error({ problem: (err as Error).message }, 'the sealing keyring could not be reloaded: the one in use stays, without the periods erased since')
      return false
    } finally {
      this.p.keyringChanged(this.sealing?.keyring)
    }
  }

  /**
   * The key a period's recordings are opened with (its primary), or, for an
   * upload, sealed to (during a rotation, the next one). The key of a
   * recent period (recentPeriods) this keyring does not know is looked for
   * again on disk, at most once a second: another worker's upload may have
   * made it. Older periods' keys come from an operator, with a SIGHUP.
   */
  periodKey (period: string, upload: boolean): PeriodKey | undefined {
    const pick = (): PeriodKey | undefined => upload ? this.sealing?.keyring.sealingKey(period) : this.sealing?.keyring.key(period)
    const key = pick()
    if (key || !this.sealing || !this.recent(period) || Date.now() < this.rereadAfter) return key
    this.reread()
    return pick()
  }

  /**
   * Makes a recent period's key for its first upload (once its body was
   * judged): of two processes making it at once one wins, and the other
   * reads its key. Undefined for a period that is not recent, or erased.
   */
  private makePeriodKey (period: string): PeriodKey | undefined {
    const s = this.current.sealing
    if (!this.sealing || !this.recent(period) || !s.makeKeysOnUpload) return undefined
    try {
      newPeriodKey(s.keyring as string, s.period, period)
      this.p.log().info({ period }, 'a new period\'s identity was made for its first upload')
    } catch (err) {
      if (!(err instanceof KeyExistsError)) throw err
    }
    this.reread()
    return this.sealing?.keyring.sealingKey(period)
  }

  /**
   * The key an upload seals to, read afresh from disk under the keyring's
   * shared lock, held (until release) while the upload is sealed and moved
   * into place: a rotation's retirement or an erasure (exclusive) cannot
   * destroy it meanwhile, and a gateway not yet reloaded after a rotation
   * seals to the identity on disk, not a retired one. Makes a recent
   * period's key on its first upload. Throws KeyringBusyError while a
   * retirement or an erasure holds the keyring.
   */
  holdSealingKey (period: string): { key: PeriodKey, release: () => void } | undefined {
    const dir = this.current.sealing.keyring
    if (!this.sealing || dir === undefined) return undefined
    const release = lockKeyring(dir, 'shared')
    try {
      this.reread()
      const key = this.sealing?.keyring.sealingKey(period) ?? this.makePeriodKey(period)
      if (key) return { key, release }
    } catch (err) {
      release()
      throw err
    }
    release()
    return undefined
  }

  private recent (period: string): boolean {
    return recentPeriods(this.current.sealing.period, new Date()).includes(period)
  }

  private reread (): void {
    this.reloadKeyring()
    // Timed from the end of the load: a keyring that takes long to read is not read back to back.
    this.rereadAfter = Date.now() + REREAD_MS
  }

  /** Applies a new, checked config: what can change in place now; the rest is reported as needing a restart. */
  reload (next: Readonly<Config>): ReloadResult {
    const changed = [...new Set([...changedKeys(this.config, next), ...changedMaterial(this.material, materialDigests(next))])]
    // Taken afresh at every reload, not only when they differ from the start's: a reload back to the start's keys must apply them too.
    const skipped = this.p.replaceJwtKeys(next.auth.jwt)
    const applied = changed.filter((k) => (RELOADABLE as readonly string[]).includes(k) || (skipped !== undefined && isJwtKey(k)))
    this.settings = liveSettings(next)
    this.p.admission.setLimits({ queueTimeoutMs: next.upstream.queueTimeoutMs, clientFetches: processShare(next, next.limits.clientFetches) })
    this.p.sendWatch.setLimits({ windowMs: next.limits.sendTimeoutMs, minBytesPerSec: next.limits.minSendRate })
    this.drainTimeoutMs = next.limits.drainTimeoutMs
    this.current = next
    this.reloadKeyring()
    // A key whose algorithms the verifier was not built for is not used until a restart.
    const restart = [...changed.filter((k) => !applied.includes(k)), ...(skipped ?? [])]
    this.p.metrics.configReloads.inc({ result: 'ok' })
    // What the file says and the gateway does differ until a restart: a warning (a key rotated out may still be accepted).
    if (restart.length > 0) this.p.log().warn({ applied, restart }, 'config reloaded; some changes are not applied until a restart: the running gateway still uses what it started with for them')
    else this.p.log().info({ applied }, 'config reloaded')
    return { applied, restart }
  }
}
