// The NAS lockdown check run by the gateway (src/proxy/exposure-check.ts):
// at start and every upstream.exposureCheckSec. An exposed NAS sets
// nasguard_upstream_exposed to 1, logs a warning at every check it is still
// exposed, and shows in /readyz (failing it when upstream.readyWhenExposed is
// false). A NAS locked again is logged once.
import type { FastifyBaseLogger } from 'fastify'
import type { Dispatcher } from 'undici'
import type { Config } from '../config/schema.js'
import type { GatewayMetrics } from '../metrics/registry.js'
import { ExposureCheck, describeExposure, type ExposureState } from '../proxy/exposure-check.js'

export interface ExposureWatch {
  check: ExposureCheck
  /** Checks now and reports it (a caller while a check runs shares it). */
  once: () => Promise<ExposureState>
  /** What /readyz shows, and whether it keeps the gateway from being ready. */
  readiness: () => { check: string, blocks: boolean }
  start: () => void
  stop: () => void
}

export function exposureWatchOf (cfg: Config['upstream'], parts: {
  request: (o: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>
  metrics: GatewayMetrics
  log: () => FastifyBaseLogger
}): ExposureWatch {
  const check = new ExposureCheck({
    request: parts.request,
    // A directory asked for without its slash is often redirected to it: asked for with it.
    listingPaths: [...new Set(cfg.exposureCheckPaths.map((d) => d.endsWith('/') ? d : d + '/'))],
    canary: cfg.exposureCheckRecording,
    origin: new URL(cfg.url).origin,
    timeoutMs: Math.min(cfg.timeoutMs, 5000)
  })
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let previous: ExposureState['kind'] = 'unchecked'
  const report = (s: ExposureState): void => {
    parts.metrics.exposureChecks.inc({ result: s.kind })
    if (s.kind === 'exposed') {
      parts.metrics.upstreamExposed.set(1)
      parts.log().warn({ exposureCheckSec: cfg.exposureCheckSec }, `NAS lockdown check: ${describeExposure(s)}${cfg.username ? '' : ' (the gateway presents no credentials either, upstream.username: the NAS relies on its network alone)'}: anyone who reaches it needs no gateway`)
    } else if (s.kind === 'locked') {
      parts.metrics.upstreamExposed.set(0)
      if (previous === 'exposed') parts.log().info('NAS lockdown check: the NAS now refuses requests without credentials')
    } else if (s.kind === 'failed' && previous !== 'failed') {
      parts.log().warn({ error: s.error }, 'NAS lockdown check could not ask the NAS: its exposure is not known (nasguard_upstream_exposed keeps its last value)')
    }
    previous = s.kind
  }
  let running: Promise<ExposureState> | undefined
  const once = async (): Promise<ExposureState> => {
    running ??= check.run().then((s) => {
      if (!stopped) report(s)
      return s
    }).finally(() => { running = undefined })
    return await running
  }
  return {
    check,
    once,
    readiness: () => ({ check: cfg.exposureCheckSec === 0 && check.state.kind === 'unchecked' ? 'off (upstream.exposureCheckSec: 0): never checked' : describeExposure(check.state), blocks: check.state.kind === 'exposed' && !cfg.readyWhenExposed }),
    start: () => {
      if (cfg.exposureCheckSec === 0 || timer !== undefined || stopped) return
      void once()
      timer = setInterval(() => { void once() }, cfg.exposureCheckSec * 1000)
      timer.unref()
    },
    stop: () => {
      stopped = true
      if (timer !== undefined) clearInterval(timer)
      check.stop()
    }
  }
}
