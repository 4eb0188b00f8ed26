// App logs: pino JSON with a request id. They never hold tokens,
// Authorization headers, grants or recording paths (paths hold phone
// numbers): request logging is off, nothing logs a URL, and the serializers
// and redaction below are a second line in case something tries.
import { hostname } from 'node:os'
import type { FastifyServerOptions } from 'fastify'
import pino from 'pino'

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.url', 'req.query',
  'headers.authorization', 'headers.cookie', 'authorization', 'token', 'grant', 'url', 'path'
]

/** JSON lines; readable colours only when a person is watching (stdout is a terminal). */
export function loggerOptions (level: string, tty = process.stdout.isTTY === true): NonNullable<Exclude<FastifyServerOptions['logger'], boolean>> {
  return {
    level,
    ...(tty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      // Error messages can quote a request URL (Fastify's do): keep the type,
      // the code and the stack frames, never the message.
      err: (err: { name?: string, type?: string, code?: string, stack?: string }) => ({
        type: err.type ?? err.name ?? 'Error',
        code: err.code,
        message: `(message withheld: ${err.code ?? err.type ?? err.name ?? 'error'})`,
        stack: typeof err.stack === 'string' ? err.stack.split('\n').slice(1).join('\n') : ''
      }),
      req: (req: { method?: string, ip?: string }) => ({ method: req.method, remoteAddress: req.ip }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode })
    }
  }
}

/**
 * The process logger. On a terminal, pino-pretty; otherwise JSON lines to
 * stdout, by default through an asynchronous destination: a log line does not block
 * the request that wrote it, lines written while one is in flight go out
 * together, and what is buffered is flushed when the process exits. With
 * sync (processes that share stdout), through sharedStdout() below.
 */
export function createLogger (level: string, bindings: Record<string, unknown> = {}, { sync = false } = {}): pino.Logger {
  const opts = loggerOptions(level) as pino.LoggerOptions
  const base = { pid: process.pid, hostname: hostname(), ...bindings }
  if (process.stdout.isTTY === true) return pino({ ...opts, base })
  if (sync) return pino({ ...opts, base }, sharedStdout())
  return pino({ ...opts, base }, pino.destination({ dest: 1, sync: false }))
}

/**
 * stdout for processes that share it (the workers and the primary): lines
 * are gathered and written together, synchronously, in writes of whole
 * lines no longer than PIPE_BUF (4096 bytes), which a pipe, a socket to
 * journald or an O_APPEND file takes whole: two processes' lines never mix.
 * What is gathered goes out once 2 KB are in, every 250 ms, and at exit.
 * (A write per line cost about 15% of W1's throughput.)
 */
function sharedStdout (): pino.DestinationStream {
  const dest = pino.destination({ dest: 1, sync: true, minLength: 2048, maxWrite: 4096, periodicFlush: 250 })
  process.once('exit', () => { try { dest.flushSync() } catch {} })
  return dest
}

/**
 * A log line that may repeat in a storm (one per failed audit record on a
 * full disk: 48,000 lines in 20 s) goes out at most once per interval; the
 * next one says how many it stands for (`repeated`). What each line is about
 * is still counted in full by its metric.
 */
export class LogThrottle {
  private last = -Infinity
  private held = 0

  constructor (private readonly intervalMs = 1000) {}

  /** Calls emit(repeated) when a line is due: repeated counts the lines held back since the last one. */
  line (emit: (repeated: number) => void, now = Date.now()): void {
    if (now - this.last < this.intervalMs) {
      this.held++
      return
    }
    const repeated = this.held
    this.last = now
    this.held = 0
    emit(repeated)
  }
}
