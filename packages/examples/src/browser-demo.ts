/**
 * The browser example's launcher: python/field_server.py streams a moving 2-D field (numpy
 * float32, 256x256) over picklewire, and a page (browser/index.html, browser/app.js) draws each
 * frame on a canvas and sends its slider's value back. This file starts the Python server and a
 * small static server on 127.0.0.1 for the page and the browser bundle
 * (@picklewire/transport/browser/picklewire.js), and prints the URL to open.
 *
 *   node packages/examples/dist/browser-demo.js [--http-port 8080] [--ws-port 8765]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, extname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { codecPython } from './needs.js'

const HERE = dirname(fileURLToPath(import.meta.url))
export const PAGE_DIR = join(HERE, '..', 'browser')
export const FIELD_SERVER = join(HERE, '..', 'python', 'field_server.py')
/** The one-file browser bundle, from the transport package's exports. */
export const BUNDLE = fileURLToPath(import.meta.resolve('@picklewire/transport/browser/picklewire.js'))

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.map': 'application/json' }

/** What the demo needs in Python: numpy and the WebSocket peer's modules. */
export const BROWSER_DEMO_NEEDS = { ...codecPython(['numpy', 'websockets.asyncio', 'msgpack']) }

/** Serves the page and the bundle on 127.0.0.1 only. */
function staticServer(port: number, bundle: string): Promise<Server> {
  const files: Record<string, string> = {
    '/': join(PAGE_DIR, 'index.html'),
    '/index.html': join(PAGE_DIR, 'index.html'),
    '/app.js': join(PAGE_DIR, 'app.js'),
    '/picklewire.js': bundle,
    '/picklewire.js.map': `${bundle}.map`,
  }
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://127.0.0.1').pathname]
    if (file === undefined || !existsSync(file)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(readFileSync(file))
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

/** Starts field_server.py and resolves with its port once it listens. */
function fieldServer(port: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(BROWSER_DEMO_NEEDS.python, [FIELD_SERVER, '--port', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`field_server.py exited (${code}) before it listened`)))
    createInterface({ input: child.stdout! }).once('line', (line) => resolve({ child, port: (JSON.parse(line) as { port: number }).port }))
  })
}

export interface BrowserDemo {
  /** The page to open, with the picklewire server's URL in its query. */
  url: string
  close(): Promise<void>
}

/** Starts both servers (port 0: any free port) and returns the page's URL; `bundle` is the picklewire.js the page loads. */
export async function startBrowserDemo(httpPort = 8080, wsPort = 8765, bundle = BUNDLE): Promise<BrowserDemo> {
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: build first (npm run build)`)
  const field = await fieldServer(wsPort)
  let http: Server
  try {
    http = await staticServer(httpPort, bundle)
  } catch (err) {
    field.child.kill()
    throw err
  }
  const ws = `ws://127.0.0.1:${field.port}/`
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/?ws=${encodeURIComponent(ws)}`
  return {
    url,
    async close() {
      field.child.stdin!.end() // the server stops when its stdin closes
      await new Promise<void>((resolve) => http.close(() => resolve()))
      http.closeAllConnections()
    },
  }
}

/** The lines `npm run demo` prints for this example (it does not start it: it would wait for a browser). */
export function browserDemoHint(): string {
  return [
    'A page receives a moving 2-D field (numpy float32, 256x256) from Python and draws it on a',
    'canvas; its slider changes what Python computes. Start it with',
    '  node packages/examples/dist/browser-demo.js',
    'and open http://127.0.0.1:8080/ in a browser (Ctrl-C stops it).',
  ].join('\n')
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const demo = await startBrowserDemo(option('--http-port', 8080), option('--ws-port', 8765))
  console.log(`open ${demo.url} in a browser (Ctrl-C stops the demo)`)
  process.once('SIGINT', () => void demo.close().then(() => process.exit(0)))
}
