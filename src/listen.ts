// Opening a listener, with an error an operator can act on. Apart from
// server.ts so that the workers' primary can use it without loading the app.

/** Listens, or throws an error that names the listener, its address and the reason (EADDRINUSE, EACCES…). */
export async function listen (name: string, at: { host: string, port: number }, fn: () => Promise<string>): Promise<string> {
  try {
    return await fn()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new Error(`the ${name} listener cannot listen on ${at.host}:${at.port}: ${e.code ?? e.message}${e.code === 'EADDRINUSE' ? ' (another process holds that port)' : e.code === 'EACCES' ? ' (a port below 1024 needs a capability or socket activation)' : ''}`)
  }
}
