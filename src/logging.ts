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

/** The message of the line each request ends with: the one line that is gathered rather than written at once. */
export const REQUEST_LINE = 'request'

/** Lines are gathered up to this many bytes before a write (one write per ~10 request lines, not one each)... */
const LOG_GATHER_BYTES = 2048
/** ...and written at least this often when fewer come (a line waits up to twice this: a tick during a write is skipped). */
const LOG_FLUSH_MS = 250

/**
 * The process logger. On a terminal, pino-pretty; otherwise JSON lines to
 * stdout through an asynchronous destination: a log line does not block the
 * request that wrote it; request lines are gathered into writes of 2-4 KB
 * (or whatever came within 250-500 ms), not one write each; any other line
 * goes out at once, and what is buffered is flushed when the process exits. Each
 * write holds whole lines and at most 4096 bytes (PIPE_BUF), which a pipe,
 * a socket to journald or an O_APPEND file takes whole, so the lines of
 * processes sharing stdout (the primary and its workers) never mix; only a
 * single line longer than that (an error with a long stack) is written
 * alone in a larger write.
 */
export function createLogger (level: string, bindings: Record<string, unknown> = {}): pino.Logger {
  const opts = loggerOptions(level) as pino.LoggerOptions
  const base = { pid: process.pid, hostname: hostname(), ...bindings }
  if (process.stdout.isTTY === true) return pino({ ...opts, base })
  const dest = pino.destination({ dest: 1, sync: false, maxWrite: 4096, minLength: LOG_GATHER_BYTES, periodicFlush: LOG_FLUSH_MS })
  // Only the request lines (one per request) are gathered. Any other line
  // (a start, a reload, a warning, an error) is handed to the kernel at
  // once, with whatever was gathered before it (or, when a write is in
  // flight, as soon as that one is done): an operator watching sees it now,
  // and the lines that explain a crash are not the ones left in memory
  // when a process is killed (SIGKILL, out of memory).
  let urgent = false
  let closed = false
  dest.once('close', () => { closed = true })
  dest.on('drain', () => {
    if (!urgent || closed) return
    urgent = false
    dest.flush()
  })
  return pino({
    ...opts,
    base,
    hooks: {
      logMethod (args, method, level) {
        method.apply(this, args)
        if (closed || (level < WARN && args[args.length - 1] === REQUEST_LINE)) return
        urgent = true
        dest.flush()
      }
    }
  }, dest)
}

/** pino's level number for warn. */
const WARN = 40

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
