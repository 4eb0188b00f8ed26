// limits.clientConnections: connections one client address may hold open.
// Counted at accept, before TLS, so a client over its cap costs a closed
// socket and no handshake.
import type { Socket } from 'node:net'
import { PerClientCount } from '../limits/per-client.js'

export class ConnectionCaps {
  private readonly open: PerClientCount

  constructor (perAddress: number) {
    this.open = new PerClientCount(perAddress)
  }

  /** Counts the socket against its address until it closes; false when the address is at its cap. */
  take (socket: Socket): boolean {
    const address = socket.remoteAddress ?? ''
    if (!this.open.take(address)) return false
    socket.once('close', () => { this.open.give(address) })
    return true
  }
}
