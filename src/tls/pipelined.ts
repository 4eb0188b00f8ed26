// HTTP/1.1 pipelining: a client may send several requests before reading
// any answer. Node answers them in order and keeps the responses behind the
// first in a queue, without a socket. When the connection goes, Node closes
// the response on the socket but never the queued ones: no 'close', so their
// access records never got a completion, nasguard_active_streams stayed up,
// and their NAS streams (piped into a response nobody will read) held NAS
// connections for good. This ends them the way a closed connection ends
// the response in front of them.
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

const waiting = new WeakMap<Socket, Set<ServerResponse>>()

/** Makes sure `res` emits 'close' when `socket` closes, even while it is queued behind another response. */
export function closeWithConnection (socket: Socket, res: ServerResponse): void {
  let queue = waiting.get(socket)
  if (!queue) {
    const responses = new Set<ServerResponse>()
    queue = responses
    waiting.set(socket, responses)
    socket.once('close', () => {
      for (const r of responses) {
        // One on the socket was closed by Node itself.
        if (r.socket) continue
        r.destroy()
        r.emit('close')
      }
      responses.clear()
    })
  }
  const q = queue
  q.add(res)
  res.once('close', () => q.delete(res))
}
