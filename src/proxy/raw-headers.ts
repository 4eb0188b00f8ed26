// undici's dispatch controller keeps the NAS's raw response headers for the
// whole answer (controller.rawHeaders). They are views into the socket read
// that carried them, and with a NAS that sends its headers and first bytes
// in one write (nginx's sendfile does) that read is a whole 64 KiB buffer:
// held for as long as the download lasts, hours for a slow reader, by
// bytes nobody reads again. The exchanges have parsed headers; the raw ones
// are let go as the answer starts.
import type { Dispatcher } from 'undici'

/** Lets the NAS's raw header bytes (and the socket read they point into) be collected. */
export function dropRawHeaders (controller: Dispatcher.DispatchController): void {
  const c = controller as { rawHeaders?: unknown }
  if (c.rawHeaders !== undefined) c.rawHeaders = null
}
