// What a config reload may change in place (src/config/reload.ts lists the
// keys): the policy, extensions and per-request limits that each request
// reads afresh, the admission's and the send watch's limits, and the drain
// deadline. Everything else is reported as needing a restart.
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config/schema.js'
import { processShare } from '../config/derived.js'
import { RELOADABLE, changedKeys, type ReloadResult } from '../config/reload.js'
import type { LiveSettings } from '../gate/state.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { compileRules } from '../policy/rules.js'
import type { Admission } from '../proxy/admission.js'
import type { SendWatch } from '../proxy/send-watch.js'
import { KeyExistsError, newPeriodKey, type PeriodKey } from '../sealing/keyring.js'
import { sealingOf, type SealingSettings } from '../sealing/settings.js'

/** How often a request for a period the keyring does not know may re-read it (another process may have made its key). */
const REREAD_MS = 1000

function liveSettings (c: Readonly<Config>): LiveSettings {
  return { rules: compileRules(c.policy), extensions: new Set(c.files.extensions), maxPathLength: c.limits.maxPathLength, maxRanges: c.limits.maxRanges, maxUploadBytes: c.limits.maxUploadBytes, sendTimeoutMs: c.limits.sendTimeoutMs }
}

export interface LiveParts {
  admission: Admission
  sendWatch: SendWatch
  metrics: GatewayMetrics
  log: () => FastifyBaseLogger
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
  private rereadAt = 0

  constructor (private readonly config: Readonly<Config>, private readonly p: LiveParts) {
    this.current = config
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
      this.p.log().error({ problem: (err as Error).message }, 'the sealing keyring could not be reloaded: the one in use stays')
      return false
    }
  }

  /**
   * The key a period's recordings are opened with (its primary), or, for an
   * upload, sealed to (during a rotation, the next one). A period this
   * keyring does not know is looked for again on disk, at most once a
   * second: another worker, or nasguard seal, may have made its key. An
   * upload to a period with no key makes it (the period's first recording);
   * of two processes making it at once one wins, and the other reads its key.
   */
  periodKey (period: string, upload: boolean): PeriodKey | undefined {
    const pick = (): PeriodKey | undefined => upload ? this.sealing?.keyring.sealingKey(period) : this.sealing?.keyring.key(period)
    let key = pick()
    if (key || !this.sealing) return key
    if (upload) {
      const s = this.current.sealing
      try {
        newPeriodKey(s.keyring as string, s.period, period)
        this.p.log().info({ period }, 'a new period\'s identity was made for its first upload')
      } catch (err) {
        if (!(err instanceof KeyExistsError)) throw err
      }
    } else if (Date.now() - this.rereadAt < REREAD_MS) {
      return undefined
    }
    this.rereadAt = Date.now()
    this.reloadKeyring()
    key = pick()
    return key
  }

  /** Applies a new, checked config: what can change in place now; the rest is reported as needing a restart. */
  reload (next: Readonly<Config>): ReloadResult {
    const changed = changedKeys(this.config, next)
    const applied = changed.filter((k) => (RELOADABLE as readonly string[]).includes(k))
    this.settings = liveSettings(next)
    this.p.admission.setLimits({ queueTimeoutMs: next.upstream.queueTimeoutMs, clientFetches: processShare(next, next.limits.clientFetches) })
    this.p.sendWatch.setLimits({ windowMs: next.limits.sendTimeoutMs, minBytesPerSec: next.limits.minSendRate })
    this.drainTimeoutMs = next.limits.drainTimeoutMs
    this.current = next
    this.reloadKeyring()
    const restart = changed.filter((k) => !applied.includes(k))
    this.p.metrics.configReloads.inc({ result: 'ok' })
    this.p.log().info({ applied, ...(restart.length > 0 ? { restart } : {}) }, restart.length > 0 ? 'config reloaded; some changes need a restart' : 'config reloaded')
    return { applied, restart }
  }
}
