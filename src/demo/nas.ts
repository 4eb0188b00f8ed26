// The demo NAS: a plain-HTTP file server on loopback with directory listing
// ON and no password, on purpose, like the server that leaked. nasguard sits
// in front of it; nothing else should ever talk to it.
import fastifyStatic from '@fastify/static'
import Fastify, { type FastifyInstance } from 'fastify'

function escapeHtml (s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

export async function startDemoNas (root: string, port = 0): Promise<{ app: FastifyInstance, url: string }> {
  const app = Fastify({ logger: false })
  await app.register(fastifyStatic, {
    root,
    index: false,
    list: {
      format: 'html',
      render: (dirs: Array<{ href: string, name: string }>, files: Array<{ href: string, name: string }>) =>
        '<html><head><title>Index of /</title></head><body><h1>Index of /</h1><ul>' +
        [...dirs, ...files].map((e) => `<li><a href="${escapeHtml(e.href)}">${escapeHtml(e.name)}</a></li>`).join('') +
        '</ul></body></html>'
    }
  })
  await app.listen({ host: '127.0.0.1', port })
  const addr = app.server.address()
  const actual = typeof addr === 'object' && addr ? addr.port : port
  return { app, url: `http://127.0.0.1:${actual}` }
}
