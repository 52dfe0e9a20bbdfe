/**
 * A Dask comm: one connection to a scheduler or worker (or from a Dask peer to us) that carries
 * whole messages both ways, over tcp:// or ws://, after Dask's handshake.
 *
 * Handshake (distributed/comm/core.py): the listening side writes its
 * {"compression", "python", "pickle-protocol"} first; the connecting side reads it, then writes
 * its own. Both then use the lower pickle protocol, and the compression only when both named
 * the same one. The connecting side retries refused connections until its timeout, as Dask's
 * connect() does.
 */
import { once } from 'node:events'
import net from 'node:net'
// ws is loaded on the first ws:// comm, so that a tcp:// client never loads it.
import type { WebSocket, WebSocketServer } from 'ws'
import { TransportError } from '../errors.js'
import { COMPRESSIONS, type DaskCompression } from './compression.js'
import { TcpFrameReader, WsFrameReader, encodeFrameCount, encodeTcpPrelude, resolveDaskLimits, type DaskLimits } from './framing.js'
import { FRESH_MEMORY, WarmMemory, sharedWarmMemory, type FrameMemory } from './warm-memory.js'
import { dumpsMessage, loadsMessage } from './protocol.js'
import { field, newStats, type DaskSerializerName, type DaskStats, type SerializeContext } from './serialize.js'
import type { PicklerOptions, UnpicklerOptions } from '@picklewire/codec'
import type { OptionNames } from '@picklewire/codec/internal'
import { checkOptions, checkPicklerOptions, checkUnpicklerOptions, optionNames } from '../options-check.js'
import { checkWaitOptions, waitFor, type Settle, type WaitOptions } from '../waiting.js'

/** What each side tells the other in the handshake. */
export interface DaskHandshake {
  compression: string | null
  python: number[]
  'pickle-protocol': number
}

/** What a comm uses after the handshake. */
export interface DaskCommSettings {
  pickleProtocol: number
  compression: DaskCompression | null
}

export interface DaskCommOptions {
  /** Milliseconds for connecting (with retries) and the handshake together. Default 10,000. */
  timeout?: number
  /** Limits on incoming messages, checked before allocation. Default DEFAULT_DASK_LIMITS. */
  limits?: Partial<DaskLimits>
  /**
   * The compression this side asks for: 'lz4', 'zlib' or null. A peer compresses toward us only
   * when it names the same one; frames compressed anyway (relayed from workers) are read
   * whatever this says. Default null.
   */
  compression?: DaskCompression | null
  /** Highest pickle protocol offered. Default 5 (out-of-band buffers). */
  pickleProtocol?: number
  /** Frames longer than this are sent as shards. Default: Dask's, 64 MiB on tcp and 8 MiB on ws. */
  shardBytes?: number
  /** Serializer families tried for values sent, in order. Default ['dask', 'pickle']. */
  serializers?: readonly DaskSerializerName[]
  /** How received pickles are loaded (globals, opaque, dict, ...). Default: the codec's defaults. */
  unpickler?: Omit<UnpicklerOptions, 'buffers'>
  /** How sent values are pickled (globals, dispatchTable, ...). Default: the codec's defaults. */
  pickler?: Omit<PicklerOptions, 'protocol' | 'bufferCallback'>
  /** Counters to add to (several comms may share one). Default: the comm's own. */
  stats?: DaskStats
  /**
   * tcp: read big messages into memory whose pages were written ahead, while the event loop
   * was idle (see warm-memory.ts and docs/dask.md): after a message of 4 MiB or more, a spare
   * of its size is prepared, and dropped after 30 s unused. true: the process's shared
   * WarmMemory; or a WarmMemory of your own. It costs the spare's memory and moves page faults
   * into idle time; it helps when big messages come with idle time between them. Default
   * false: fresh memory for every message.
   */
  warmReceive?: boolean | WarmMemory
}

export const DEFAULT_DASK_TIMEOUT = 10_000
/** Dask's distributed.comm.shard (tcp) and distributed.comm.websockets.shard (ws). */
export const TCP_SHARD_BYTES = 64 * 2 ** 20
export const WS_SHARD_BYTES = 8 * 2 ** 20
/**
 * The "python" this side announces: the oldest CPython that reads pickle protocol 5, which is
 * what this side writes. Dask stores the field and reads nothing from it.
 */
export const ANNOUNCED_PYTHON = [3, 8, 0]

export type DaskScheme = 'tcp' | 'ws'

/** "tcp://host:port", "ws://host:port" or "host:port" (tcp), split; IPv6 hosts in brackets. */
export function parseDaskAddress(address: string): { scheme: DaskScheme; host: string; port: number } {
  const m = /^(?:([a-z]+):\/\/)?(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(address)
  if (!m) throw new TypeError(`expected a Dask address like "tcp://127.0.0.1:8786" or "ws://host:port", got ${JSON.stringify(address)}`)
  const scheme = m[1] ?? 'tcp'
  if (scheme !== 'tcp' && scheme !== 'ws') {
    throw new TypeError(`Dask address ${JSON.stringify(address)}: this client speaks tcp:// and ws://, not ${scheme}://`)
  }
  const port = Number(m[3])
  if (port <= 0 || port > 65535) throw new TypeError(`Dask address ${JSON.stringify(address)}: bad port`)
  return { scheme, host: m[2]!.replace(/^\[|\]$/g, ''), port }
}

/** The memory a tcp comm reads messages into, as the warmReceive option says. */
function memoryOf(option: boolean | WarmMemory | undefined): FrameMemory {
  if (option === true) return sharedWarmMemory
  if (option === undefined || option === false) return FRESH_MEMORY
  if (option instanceof WarmMemory) return option
  throw new TypeError(`warmReceive must be true, false or a WarmMemory, got ${String(option)}`)
}

/** Checks the options before any connection is made; throws TypeError naming the bad one. */
/** The names DaskCommOptions takes; the client and the listener add their own to these. */
export const COMM_OPTION_NAMES = [
  'timeout', 'limits', 'compression', 'pickleProtocol', 'shardBytes', 'serializers', 'unpickler', 'pickler', 'stats', 'warmReceive',
] as const
const COMM_OPTIONS = optionNames(...COMM_OPTION_NAMES)
const LISTEN_OPTIONS = optionNames(...COMM_OPTION_NAMES, 'scheme', 'host', 'port')

/** Only the comm's own options of a larger options object (a client's), for connectDask. */
export function commOptionsOf(options: DaskCommOptions): DaskCommOptions {
  const out: Record<string, unknown> = {}
  for (const name of COMM_OPTION_NAMES) if (options[name] !== undefined) out[name] = options[name]
  return out as DaskCommOptions
}

/** Checks comm options; names: the caller's set (null when the caller checked the names). */
export function checkCommOptions(options: DaskCommOptions, what = 'connectDask', names: OptionNames | null = COMM_OPTIONS): void {
  if (names !== null) checkOptions(what, options, names)
  checkPicklerOptions(what, 'pickler', options.pickler, false)
  checkUnpicklerOptions(what, 'unpickler', options.unpickler)
  timeoutOf(options.timeout, 'timeout')
  resolveDaskLimits(options.limits)
  memoryOf(options.warmReceive)
  const compression = options.compression ?? null
  if (compression !== null && !COMPRESSIONS.includes(compression)) {
    throw new TypeError(`compression must be one of ${COMPRESSIONS.join(', ')} or null, got ${JSON.stringify(compression)}`)
  }
  const protocol = options.pickleProtocol ?? 5
  if (!Number.isInteger(protocol) || protocol < 0 || protocol > 5) throw new TypeError(`pickleProtocol must be 0 to 5, got ${String(protocol)}`)
  const shard = options.shardBytes
  if (shard !== undefined && (!Number.isSafeInteger(shard) || shard <= 0)) throw new TypeError(`shardBytes must be a positive integer, got ${String(shard)}`)
  for (const name of options.serializers ?? []) {
    if (name !== 'dask' && name !== 'pickle' && name !== 'msgpack') throw new TypeError(`unknown serializer ${JSON.stringify(name)} (dask, pickle or msgpack)`)
  }
}

function timeoutOf(v: number | undefined, what: string): number {
  const t = v ?? DEFAULT_DASK_TIMEOUT
  if (!Number.isFinite(t) || t <= 0) throw new TypeError(`${what} must be a positive number of milliseconds, got ${String(v)}`)
  return t
}

/**
 * err, with its stack trace made text now. Until V8 formats a stack it keeps each frame's
 * receiver: an error made inside a socket's event handler would keep the socket, and with it
 * the buffer of the message being read (up to maxMessageBytes), for as long as the
 * application keeps the error.
 */
function detached<E extends Error>(err: E): E {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 10; e = e.cause, depth++) void e.stack
  return err
}

/**
 * Moves frames; knows nothing of what they hold. What arrives before the comm attaches (a peer
 * may speak the moment the connection opens) is kept and handed over on attach.
 */
abstract class Carrier {
  #onMessage: ((frames: Uint8Array[]) => void) | null = null
  #onClose: ((err: TransportError, failed: boolean) => void) | null = null
  #early: Uint8Array[][] = []
  #closedWith: { err: TransportError; failed: boolean } | null = null

  abstract send(frames: Uint8Array[]): Promise<void>
  /** Ends the connection after what was sent. */
  abstract close(): void
  /** Drops the connection now. */
  abstract abort(): void

  /** onClose gets why the connection ended, and whether that was a failure (not an orderly end of either side). */
  attach(onMessage: (frames: Uint8Array[]) => void, onClose: (err: TransportError, failed: boolean) => void): void {
    this.#onMessage = onMessage
    this.#onClose = onClose
    for (const m of this.#early.splice(0)) onMessage(m)
    if (this.#closedWith) onClose(this.#closedWith.err, this.#closedWith.failed)
  }

  protected deliver(frames: Uint8Array[]): void {
    if (this.#onMessage) this.#onMessage(frames)
    else this.#early.push(frames)
  }

  protected closed(err: TransportError, failed: boolean): void {
    detached(err)
    if (this.#onClose) this.#onClose(err, failed)
    else this.#closedWith = { err, failed }
  }
}

class TcpCarrier extends Carrier {
  #reader: TcpFrameReader
  #error: TransportError | null = null

  /**
   * Connects; the socket reads through onread, so that big frames land straight in the buffer
   * they are delivered in (one copy fewer than 'data' events, which each bring a new chunk).
   *
   * How Node 20 drives a function-valued onread.buffer (lib/net.js, stream_base_commons.js):
   * it is called once when the handle starts reading, then after every read of n > 0 bytes,
   * right after callback(n, buf), and its result is where the next read lands (a result that is
   * not a Uint8Array keeps the previous target). buf is always the target of that read, data at
   * [0, n). EOF and read errors take the ordinary 'end' / 'error' / 'close' path and never reach
   * callback; callback returning false would pause reading (never done here: a message is
   * bounded by the limits, and the reader only ever holds the one being read).
   */
  static async connect(host: string, port: number, ms: number, limits: DaskLimits, peer: string, memory: FrameMemory): Promise<TcpCarrier> {
    const reader = new TcpFrameReader(limits, memory)
    const scratch = new Uint8Array(64 * 1024)
    let carrier: TcpCarrier | null = null
    const socket = net.connect({
      host,
      port,
      onread: {
        buffer: () => reader.readTarget(scratch),
        callback: (n, buf) => {
          carrier?.received(buf, n)
          return true
        },
      },
    })
    carrier = new TcpCarrier(socket, limits, peer, reader)
    const timer = setTimeout(() => socket.destroy(new Error(`no connection within ${ms} ms`)), ms)
    try {
      await once(socket, 'connect')
    } finally {
      clearTimeout(timer)
    }
    return carrier
  }

  /** reader: given when the socket reads through onread into it; otherwise 'data' events feed a reader of its own. */
  /** The socket until it closes; then dropped, since net keeps the target of its last read (maybe a frame's buffer) on it. */
  #socket: net.Socket | null

  constructor(socket: net.Socket, limits: DaskLimits, private readonly peer: string, reader?: TcpFrameReader) {
    super()
    this.#socket = socket
    this.#reader = reader ?? new TcpFrameReader(limits)
    socket.setNoDelay(true)
    if (!reader) socket.on('data', (chunk: Buffer) => this.received(chunk, chunk.length))
    socket.on('error', (err) => {
      this.#error ??= new TransportError('CLOSED', `connection to ${peer} failed: ${err.message}`, { cause: err })
    })
    socket.on('close', () => {
      const mid = this.#reader.idle ? '' : ' in the middle of a message'
      this.#reader.discard()
      this.#socket = null
      this.closed(this.#error ?? new TransportError('CLOSED', `connection to ${peer} closed${mid}`), this.#error !== null || mid !== '')
    })
  }

  /** n bytes arrived in buf. */
  received(buf: Uint8Array, n: number): void {
    if (this.#error) return
    let messages: Uint8Array[][]
    try {
      messages = this.#reader.afterRead(buf, n)
    } catch (err) {
      this.#error = err as TransportError
      this.#socket?.destroy()
      return
    }
    for (const m of messages) this.deliver(m)
  }

  send(frames: Uint8Array[]): Promise<void> {
    const socket = this.#socket
    if (socket === null || socket.destroyed || !socket.writable) return Promise.reject(new TransportError('CLOSED', `connection to ${this.peer} is closed`))
    return new Promise((resolve, reject) => {
      socket.cork()
      socket.write(encodeTcpPrelude(frames))
      const last = frames.length - 1
      const done = (err?: Error | null): void => {
        if (err) reject(new TransportError('CLOSED', `writing to ${this.peer} failed: ${err.message}`, { cause: err }))
        else resolve()
      }
      if (last < 0) socket.write(new Uint8Array(0), done)
      frames.forEach((f, i) => {
        if (i === last) socket.write(f, done)
        else if (f.byteLength > 0) socket.write(f)
      })
      socket.uncork()
    })
  }

  close(): void {
    this.#socket?.end()
    this.#socket?.destroySoon()
  }

  abort(): void {
    this.#socket?.destroy()
  }
}

class WsCarrier extends Carrier {
  #reader: WsFrameReader
  #error: TransportError | null = null

  constructor(private readonly ws: WebSocket, limits: DaskLimits, private readonly peer: string) {
    super()
    this.#reader = new WsFrameReader(limits)
    ws.binaryType = 'nodebuffer'
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let message: Uint8Array[] | null
      try {
        if (!isBinary) throw new TransportError('PROTOCOL', 'a Dask peer sent a text WebSocket message')
        message = this.#reader.push(data)
      } catch (err) {
        this.#error = err as TransportError
        ws.terminate()
        return
      }
      if (message !== null) this.deliver(message)
    })
    ws.on('error', (err) => {
      const code = (err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'LIMIT' : 'CLOSED'
      this.#error ??= new TransportError(code, `connection to ${peer} failed: ${err.message}`, { cause: err })
    })
    ws.on('close', () => {
      const mid = this.#reader.idle ? '' : ' in the middle of a message'
      this.#reader.discard()
      this.closed(this.#error ?? new TransportError('CLOSED', `connection to ${peer} closed${mid}`), this.#error !== null || mid !== '')
    })
  }

  send(frames: Uint8Array[]): Promise<void> {
    const ws = this.ws
    if (ws.readyState !== ws.OPEN) return Promise.reject(new TransportError('CLOSED', `connection to ${this.peer} is closed`))
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        if (err) reject(new TransportError('CLOSED', `writing to ${this.peer} failed: ${err.message}`, { cause: err }))
        else resolve()
      }
      ws.send(encodeFrameCount(frames.length), { binary: true }, frames.length === 0 ? done : undefined)
      frames.forEach((f, i) => ws.send(f, { binary: true }, i === frames.length - 1 ? done : undefined))
    })
  }

  close(): void {
    this.ws.close()
  }

  abort(): void {
    this.ws.terminate()
  }
}

/** A connection that carries Dask messages both ways. Made by connectDask or a DaskListener. */
export class DaskComm {
  readonly #stats: DaskStats
  /** What the peer announced in the handshake; null until it is done. */
  remote: DaskHandshake | null = null
  /** What this side announced. */
  readonly local: DaskHandshake
  /** The pickle protocol and compression in use (set by the handshake). */
  settings: DaskCommSettings = { pickleProtocol: 5, compression: null }
  readonly limits: DaskLimits
  /** Resolves (never rejects) once the connection is closed, by either side or by a failure. */
  readonly closed: Promise<void>
  #resolveClosed!: () => void
  #queue: Uint8Array[][] = []
  #waiters: Settle<Uint8Array[]>[] = []
  /** What waiting and later operations fail with once the connection is closed. */
  #closedWith: TransportError | null = null
  #error: TransportError | null = null
  #closing = false
  #closeListeners: ((err: TransportError) => void)[] = []

  /** @internal use connectDask or listenDask. */
  constructor(
    private readonly carrier: Carrier,
    /** The peer, as a Dask address. */
    readonly peer: string,
    readonly scheme: DaskScheme,
    private readonly options: DaskCommOptions,
  ) {
    this.limits = resolveDaskLimits(options.limits)
    this.#stats = options.stats ?? newStats()
    this.local = { compression: options.compression ?? null, python: ANNOUNCED_PYTHON, 'pickle-protocol': options.pickleProtocol ?? 5 }
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve))
    carrier.attach((frames) => {
      this.#stats.messagesReceived++
      for (const f of frames) this.#stats.bytesReceived += f.byteLength
      const w = this.#waiters.shift()
      if (w) w.resolve(frames)
      else this.#queue.push(frames)
    }, (err, failed) => {
      this.#closedWith ??= err
      if (failed) this.#error ??= err
      for (const w of this.#waiters.splice(0)) w.reject(this.#closedWith)
      for (const l of this.#closeListeners.splice(0)) l(this.#closedWith)
      this.#resolveClosed()
    })
  }

  /** True until the connection closes (by either side, or by a failure) or close() is called. */
  get open(): boolean {
    return this.#closedWith === null && !this.#closing
  }

  /** Why the connection closed when that was a failure (a broken connection, a bad frame, a message cut short), else null. */
  get error(): TransportError | null {
    return this.#error
  }

  /**
   * A snapshot of the counters: messages and bytes each way (all frames of a message, as
   * they travel), frames decompressed by compression, merges copied. Comms given the same
   * `stats` option count into one set, which each of them reports.
   */
  stats(): DaskStats {
    return { ...this.#stats, decompressed: { ...this.#stats.decompressed } }
  }

  /** Calls fn once when the connection closes, with the error pending and later operations fail with. */
  onClose(fn: (err: TransportError) => void): void {
    if (this.#closedWith) fn(this.#closedWith)
    else this.#closeListeners.push(fn)
  }

  /**
   * The next message's frames as they arrived. Rejects with TransportError('TIMEOUT') after
   * options.timeout ms, with the signal's reason when options.signal aborts (the message then
   * goes to the next read), with the connection's error once it is closed.
   */
  readFrames(options: WaitOptions = {}): Promise<Uint8Array[]> {
    try {
      checkWaitOptions('DaskComm.readFrames', options)
    } catch (err) {
      return Promise.reject(err)
    }
    const queued = this.#queue.shift()
    if (queued) return Promise.resolve(queued)
    if (this.#closedWith) return Promise.reject(this.#closedWith)
    return waitFor(`waiting for a message from ${this.peer}`, options, (settle) => {
      this.#waiters.push(settle)
      return () => {
        const i = this.#waiters.indexOf(settle)
        if (i >= 0) this.#waiters.splice(i, 1)
      }
    })
  }

  /**
   * The next message, with serialized values read; Dask's Comm calls this read(). Rejects as
   * readFrames does; errors in one message's values reject this receive only.
   */
  async receive<T = unknown>(options: WaitOptions = {}): Promise<T> {
    const frames = await this.readFrames(options)
    return loadsMessage(frames, { limits: this.limits, unpickler: this.options.unpickler, stats: this.#stats }) as T
  }

  /** receive(), under the name Dask's Comm gives it. */
  read<T = unknown>(options: WaitOptions = {}): Promise<T> {
    return this.receive<T>(options)
  }

  /** The messages as they arrive; ends when the connection closes normally, throws the error of a failure. */
  async *[Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      try {
        yield await this.receive()
      } catch (err) {
        if (err === this.#closedWith && this.#error === null) return
        throw err
      }
    }
  }

  /** The context values are serialized with. */
  get serializeContext(): SerializeContext {
    return {
      pickleProtocol: this.settings.pickleProtocol,
      compression: this.settings.compression,
      shardBytes: this.options.shardBytes ?? (this.scheme === 'ws' ? WS_SHARD_BYTES : TCP_SHARD_BYTES),
      serializers: this.options.serializers,
      pickler: this.options.pickler,
    }
  }

  /**
   * Sends a message; resolves when the socket has written its bytes; Dask's Comm calls this
   * write(). The socket takes every message at once (Node buffers what the peer has not read
   * yet), so a send never waits for room: options.signal, aborted already, refuses the send,
   * and nothing is left for options.timeout to bound. Rejects with the connection's error
   * (TransportError('CLOSED') after a normal close) once it is closed or closing.
   */
  send(msg: unknown, options: WaitOptions = {}): Promise<void> {
    try {
      checkWaitOptions('DaskComm.send', options)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.#refuseSend()
    if (closed) return Promise.reject(closed)
    let frames: Uint8Array[]
    try {
      frames = dumpsMessage(msg, this.serializeContext, this.#stats)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.writeFrames(frames)
  }

  /** send(), under the name Dask's Comm gives it. */
  write(msg: unknown, options: WaitOptions = {}): Promise<void> {
    return this.send(msg, options)
  }

  /** Sends a message's frames as they are. */
  writeFrames(frames: Uint8Array[]): Promise<void> {
    const closed = this.#refuseSend()
    if (closed) return Promise.reject(closed)
    this.#stats.messagesSent++
    for (const f of frames) this.#stats.bytesSent += f.byteLength
    return this.carrier.send(frames)
  }

  #refuseSend(): TransportError | null {
    if (this.#closedWith) return this.#closedWith
    if (this.#closing) return new TransportError('CLOSED', `the comm to ${this.peer} is closing`)
    return null
  }

  /**
   * Closes after what was written; resolves when closed (at most after timeout ms, then
   * aborts). Pending and later receives fail with TransportError('CLOSED'). Idempotent.
   */
  async close(timeout = 1000): Promise<void> {
    if (this.#closedWith || this.#closing) return this.closed
    this.#closing = true
    this.carrier.close()
    const timer = setTimeout(() => this.carrier.abort(), timeout)
    await this.closed
    clearTimeout(timer)
  }

  /** Drops the connection now. */
  abort(): void {
    this.carrier.abort()
  }

  /** @internal records the peer's handshake and settles protocol and compression. */
  settle(remote: unknown): void {
    const protocol = field(remote, 'pickle-protocol')
    if (!(remote instanceof Map) || typeof protocol !== 'number' || !remote.has('compression')) {
      throw new TransportError('PROTOCOL', `${this.peer} did not send a Dask handshake (a map with "compression" and "pickle-protocol")`)
    }
    const compression = field(remote, 'compression')
    const python = field(remote, 'python')
    this.remote = {
      compression: typeof compression === 'string' ? compression : null,
      python: Array.isArray(python) ? python.filter((x): x is number => typeof x === 'number') : [],
      'pickle-protocol': protocol,
    }
    this.settings = {
      pickleProtocol: Math.max(0, Math.min(this.local['pickle-protocol'], protocol)),
      compression: this.local.compression !== null && this.local.compression === this.remote.compression ? this.local.compression as DaskCompression : null,
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

async function openWs(host: string, port: number, ms: number, limits: DaskLimits, peer: string): Promise<WsCarrier> {
  const url = `ws://${host.includes(':') ? `[${host}]` : host}:${port}/`
  const { WebSocket } = await import('ws')
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: limits.maxMessageBytes, handshakeTimeout: ms })
  // Listening from the start: ws may deliver the peer's first message in the same turn as 'open'.
  const carrier = new WsCarrier(ws, limits, peer)
  const [event] = await Promise.race([once(ws, 'open').then(() => ['open']), once(ws, 'close').then(() => ['close'])])
  if (event !== 'open') throw new Error(`the WebSocket handshake with ${url} failed`)
  return carrier
}

/**
 * Connects to a Dask scheduler or worker ("tcp://host:port", "ws://host:port") and does the
 * handshake. Refused connections are retried with growing pauses until the timeout, as Dask's
 * connect() does. Rejects with TransportError('TIMEOUT') when the time runs out, ('PROTOCOL')
 * when the peer does not speak Dask.
 */
export async function connectDask(address: string, options: DaskCommOptions = {}): Promise<DaskComm> {
  const { scheme, host, port } = parseDaskAddress(address)
  checkCommOptions(options)
  const timeout = timeoutOf(options.timeout, 'timeout')
  const limits = resolveDaskLimits(options.limits)
  const deadline = Date.now() + timeout
  const peer = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`
  let carrier: Carrier | null = null
  let lastError: unknown = null
  for (let attempt = 0; carrier === null; attempt++) {
    const left = deadline - Date.now()
    if (left <= 0) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : ''
      throw new TransportError('TIMEOUT', `could not connect to ${peer} within ${timeout} ms${why}`, { cause: lastError })
    }
    try {
      carrier = scheme === 'tcp'
        ? await TcpCarrier.connect(host, port, left, limits, peer, memoryOf(options.warmReceive))
        : await openWs(host, port, left, limits, peer)
    } catch (err) {
      lastError = err
      await sleep(Math.min(Math.max(0, deadline - Date.now()), Math.random() * 10 * 2 ** Math.min(attempt, 8)))
    }
  }
  const comm = new DaskComm(carrier, peer, scheme, options)
  try {
    const left = Math.max(1, deadline - Date.now())
    // The listener speaks first.
    comm.settle(await comm.read({ timeout: left }))
    await comm.write(comm.local)
  } catch (err) {
    comm.abort()
    if (err instanceof TransportError && err.code === 'TIMEOUT') {
      throw new TransportError('TIMEOUT', `no Dask handshake from ${peer} within ${timeout} ms`, { cause: err })
    }
    throw err
  }
  return comm
}

export interface DaskListenOptions extends DaskCommOptions {
  /** 'tcp' or 'ws'. Default 'tcp'. */
  scheme?: DaskScheme
  /** Default '127.0.0.1'. */
  host?: string
  /** Default 0: a free port. */
  port?: number
}

/**
 * Accepts Dask comms: the handshake is done from the listening side (ours first, then the
 * peer's), then onComm gets the comm. A peer that does not complete the handshake within the
 * timeout is dropped.
 */
export class DaskListener {
  readonly #server: net.Server | WebSocketServer
  readonly #comms = new Set<DaskComm>()

  private constructor(server: net.Server | WebSocketServer, readonly address: string) {
    this.#server = server
  }

  static async listen(options: DaskListenOptions, onComm: (comm: DaskComm) => void): Promise<DaskListener> {
    checkCommOptions(options, 'listenDask', LISTEN_OPTIONS)
    const scheme = options.scheme ?? 'tcp'
    if (scheme !== 'tcp' && scheme !== 'ws') throw new TypeError(`scheme must be 'tcp' or 'ws', got ${JSON.stringify(scheme)}`)
    const host = options.host ?? '127.0.0.1'
    const limits = resolveDaskLimits(options.limits)
    const timeout = timeoutOf(options.timeout, 'timeout')
    let listener: DaskListener | null = null
    const accept = async (carrier: Carrier, peer: string): Promise<void> => {
      const comm = new DaskComm(carrier, peer, scheme, options)
      try {
        await comm.write(comm.local)
        comm.settle(await comm.read({ timeout }))
      } catch {
        comm.abort()
        return
      }
      listener!.#comms.add(comm)
      comm.onClose(() => listener!.#comms.delete(comm))
      onComm(comm)
    }
    if (scheme === 'tcp') {
      const server = net.createServer((socket) => {
        const peer = `tcp://${socket.remoteAddress}:${socket.remotePort}`
        void accept(new TcpCarrier(socket, limits, peer), peer)
      })
      server.listen(options.port ?? 0, host)
      await once(server, 'listening')
      const a = server.address() as net.AddressInfo
      listener = new DaskListener(server, `tcp://${host.includes(':') ? `[${host}]` : host}:${a.port}`)
    } else {
      const { WebSocketServer } = await import('ws')
      const server = new WebSocketServer({ host, port: options.port ?? 0, perMessageDeflate: false, maxPayload: limits.maxMessageBytes })
      await once(server, 'listening')
      server.on('connection', (ws, req) => {
        const peer = `ws://${req.socket.remoteAddress}:${req.socket.remotePort}`
        void accept(new WsCarrier(ws, limits, peer), peer)
      })
      const a = server.address() as net.AddressInfo
      listener = new DaskListener(server, `ws://${host.includes(':') ? `[${host}]` : host}:${a.port}`)
    }
    return listener
  }

  /** Stops accepting and closes every comm it made. */
  async close(): Promise<void> {
    for (const c of this.#comms) c.abort()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }
}

/** Opens a listener; see DaskListener. */
export function listenDask(options: DaskListenOptions, onComm: (comm: DaskComm) => void): Promise<DaskListener> {
  return DaskListener.listen(options, onComm)
}
