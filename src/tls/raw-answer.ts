// Answers written straight onto a socket, where no HTTP response object
// exists (plain HTTP on the TLS port, an unparsable request, CONNECT over
// HTTP/1.1): the same JSON body as every other refusal, then the
// connection is closed.
import { STATUS_CODES } from 'node:http'

export function rawAnswer (status: number, body: { error: string, message: string }, headers: Readonly<Record<string, string>> = {}): string {
  const json = JSON.stringify(body) + '\n'
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    'Content-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(json)}\r\n` +
    'Cache-Control: no-store\r\n' +
    'Connection: close\r\n'
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
  return head + '\r\n' + json
}
