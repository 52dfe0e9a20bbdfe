/**
 * Shared by the ws-*.test.ts files: the Python peer's processes, raw ws sockets for crafted
 * frames, and waiting with a bound (a test never hangs on a socket).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { NDArray } from '@picklewire/codec'
import {
  SUBPROTOCOL, WebSocket, connectPickleSocket, listenPickleSocket,
  type ConnectOptions, type ListenOptions, type PickleSocket, type PickleSocketServer,
} from '@picklewire/transport'
import { PYTHON, skipWithoutPython } from '../helpers/python.js'

export const PYTHON_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'packages', 'transport', 'python')
export const PEER = join(PYTHON_DIR, 'interop_peer.py')

/** What the Python peer imports beyond the standard library. */
export const PEER_MODULES = ['numpy', 'websockets', 'msgpack'] as const

/**
 * Why the Python tests cannot run here (python3 or one of the peer's modules missing), or null.
 * Under PICKLEWIRE_REQUIRE_PYTHON=1 a missing one also fails t.
 */
export function pythonMissing(t: Test): string | null {
  return skipWithoutPython(t, PEER_MODULES) || null
}

/** A python3 process running interop_peer.py: its stdout lines, parsed as JSON where they are. */
export class PythonPeer {
  readonly proc: ChildProcess
  readonly stderr: string[] = []
  readonly exited: Promise<number | null>
  readonly #lines: string[] = []
  readonly #waiters: ((line: string | null) => void)[] = []
  #ended = false

  /** @param script the Python file to run: interop_peer.py unless told otherwise */
  constructor(args: string[], script = PEER) {
    this.proc = spawn(PYTHON, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.exited = once(this.proc, 'exit').then(([code]) => code as number | null)
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      const w = this.#waiters.shift()
      if (w) w(line)
      else this.#lines.push(line)
    }).on('close', () => {
      this.#ended = true
      for (const w of this.#waiters.splice(0)) w(null)
    })
    createInterface({ input: this.proc.stderr! }).on('line', (line) => this.stderr.push(line))
  }

  /** The next line of stdout, parsed as JSON; rejects if the process ends or ms pass first. */
  async next(ms = 30_000): Promise<any> {
    const line = this.#lines.shift() ?? (this.#ended ? null : await within(ms, new Promise<string | null>((r) => this.#waiters.push(r)), 'a line from python'))
    if (line === null) throw new Error(`python ended without output; stderr:\n${this.stderr.join('\n')}`)
    try {
      return JSON.parse(line)
    } catch {
      return line
    }
  }

  /** Waits for the exit status (killing the process after ms). */
  async exit(ms = 30_000): Promise<number | null> {
    const timer = setTimeout(() => this.kill(), ms)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal)
  }
}

/** Starts `interop_peer.py echo-server ...` and returns it with its ws:// URL. */
export async function pythonEchoServer(args: string[] = []): Promise<{ peer: PythonPeer; url: string }> {
  const peer = new PythonPeer(['echo-server', ...args])
  const { port } = await peer.next()
  return { peer, url: `ws://127.0.0.1:${port}/` }
}

/** A server and one client connected to it, both closed at the end of the test. */
export async function pair(t: Test, serverOptions: ListenOptions = {}, clientOptions: ConnectOptions = {}): Promise<{ server: PickleSocketServer; a: PickleSocket; b: PickleSocket }> {
  const server = await listenPickleSocket(serverOptions)
  const accepted = once(server, 'connection')
  const a = await connectPickleSocket(server.url, clientOptions)
  const [b] = (await accepted) as [PickleSocket]
  t.teardown(async () => {
    a.terminate()
    await server.close()
  })
  return { server, a, b }
}

/** Rejects with a clear message when p takes longer than ms. */
/** The Float32Array data of a received NDArray (throws when the value is not one). */
export function dataOf(v: unknown): Float32Array {
  if (!(v instanceof NDArray)) throw new Error(`expected an NDArray, got ${String(v)}`)
  return v.data as Float32Array
}

/** Polls until ok() holds, every 5 ms, throwing after ms. */
export async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

export async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** A plain ws client (no picklewire) for crafting frames by hand; offers picklewire.v1 unless told otherwise. */
export async function rawClient(url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}, protocols: string[] = [SUBPROTOCOL]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false, ...options })
  await within(5000, once(ws, 'open'), 'the raw client to open')
  return ws
}

/** How a raw socket was closed: the code and reason the peer sent. */
export function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve({ code: -1, reason: 'already closed' })
  return within(10_000, once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) })), 'the close')
}

/** Collects what a server-side PickleSocket delivers, and how it ends. */
export function collect(sock: PickleSocket): { values: unknown[]; done: Promise<Error | null> } {
  const values: unknown[] = []
  const done = (async () => {
    try {
      for await (const v of sock) values.push(v)
      return null
    } catch (err) {
      return err as Error
    }
  })()
  return { values, done }
}

/**
 * A message's MAC computed as docs/wire-protocol.md specifies it, independently of the
 * carrier's code: HMAC-SHA256 over the sender's label, then each frame's u64 length and bytes.
 */
export function specMac(key: Uint8Array, frames: Uint8Array[], label = 'picklewire.v1 client'): Buffer {
  const hmac = createHmac('sha256', key)
  for (const f of [Buffer.from(label), ...frames]) {
    const n = Buffer.alloc(8)
    n.writeBigUInt64LE(BigInt(f.length))
    hmac.update(n)
    hmac.update(f)
  }
  return hmac.digest()
}
