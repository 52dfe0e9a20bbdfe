/**
 * PickleSocket in a page: one picklewire connection over the browser's WebSocket, the client
 * side only, with the vocabulary of the Node PickleSocket (send, request, onRequest, receive,
 * async iteration, close, closed, open, error, stats(), the 'message', 'progress', 'cancel',
 * 'error' and 'close' events). The protocol core is the Node carrier's own (ws/receiver.ts,
 * ws/sender.ts, ws/wire.ts, ws/socket-core.ts); what differs is what the browser allows:
 *
 * - frames arrive as ArrayBuffers (binaryType 'arraybuffer'), one per frame, so every buffer is
 *   a view at offset 0 of its own frame and is never copied for alignment;
 * - a frame's size is checked once the browser has read all of it (there is no maxPayload to
 *   refuse it from its length), and reading cannot be paused: messages nobody takes are held;
 * - backpressure on sends follows bufferedAmount (sink.ts), as no write callback exists;
 * - HMAC uses WebCrypto, which signs a message in one go (hmac.ts): an authenticated message is
 *   delivered once its MAC has been checked, asynchronously, still in order;
 * - no pings (the page cannot send them), no custom headers, no compression settings, no server;
 * - no same-host path (docs/wire-protocol.md section 10): a page has no files to share, so it
 *   answers a server's `shm-challenge` with `shm-no` and buffers come as frames.
 */
import { TransportError } from '../errors.js'
import { checkOptions, optionNames } from '../options-check.js'
import type { WaitOptions } from '../waiting.js'
import { CLOSE, closeCodeFor, closeReason } from '../ws/constants.js'
import type { Role } from '../ws/mac.js'
import { PICKLE_SOCKET_OPTION_NAMES, offeredSubprotocols, resolveOptions, type PickleSocketOptions, type RequestHandler, type ResolvedOptions } from '../ws/options.js'
import { MessageReceiver, VersionMismatch, type ReceivedMessage } from '../ws/receiver.js'
import { NoSameHost } from '../ws/same-host-frames.js'
import { MessageSender } from '../ws/sender.js'
import { SocketCore, type CloseInfo, type PickleSocketEvents, type ProgressInfo, type SocketLink } from '../ws/socket-core.js'
import { newStats, type WebSocketStats } from '../ws/stats.js'
import { versionOfSubprotocol } from '../ws/wire.js'
import { Emitter } from './emitter.js'
import { webCryptoMacs } from './hmac.js'
import { BrowserSink, OPEN, type BrowserWebSocket } from './sink.js'

export type { CloseInfo, MessageInfo, ProgressInfo } from '../ws/socket-core.js'

export interface SendOptions extends WaitOptions {
  /** Extras for the header's `x` (string keys; picklewire's own, al and auth, win). */
  x?: Record<string, unknown>
  /** Called as the message's frames leave the page (bufferedAmount passes them), at most once per frame. */
  onProgress?: (progress: ProgressInfo) => void
}

export type RequestOptions = Omit<SendOptions, 'onProgress'>

/**
 * The options of a PickleSocket in a page: those of the Node PickleSocket the browser can honour
 * (limits, key, highWaterMark, requestTimeout, onRequest, maxConcurrentRequests, pickler,
 * unpickler, protocolVersion, chunkBytes), with the same defaults.
 */
export type BrowserSocketOptions = Omit<PickleSocketOptions, 'receiveHighWaterMark' | 'heartbeatInterval' | 'heartbeatTimeout' | 'recycleBytes'>

/** Options of the Node carrier a page cannot have, and why: giving one is a TypeError. */
const NOT_IN_BROWSER: Readonly<Record<string, string>> = Object.freeze({
  receiveHighWaterMark: 'the browser\'s WebSocket cannot pause reading, so unread messages are held whatever their size',
  heartbeatInterval: 'a page cannot send WebSocket pings (the browser answers the server\'s pings itself)',
  heartbeatTimeout: 'a page cannot send WebSocket pings (the browser answers the server\'s pings itself)',
  recycleBytes: 'a page has no recycle(): the memory of every buffer it receives is new',
  ws: 'the browser\'s WebSocket takes no options: no headers, no TLS settings, no perMessageDeflate (the browser negotiates compression itself)',
})

const BROWSER_OPTIONS = optionNames(...PICKLE_SOCKET_OPTION_NAMES.filter((n) => !(n in NOT_IN_BROWSER)))

/** A close code the browser lets a page send: 1000, or 3000 to 4999. */
function sendableCode(code: number): number {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : CLOSE.normal
}

/** The browser's WebSocket class, or a TypeError where there is none. */
function webSocketClass(): new (url: string, protocols: string[]) => BrowserWebSocket {
  const ctor = (globalThis as { WebSocket?: unknown }).WebSocket
  if (typeof ctor !== 'function') throw new TypeError('connectPickleSocket needs the browser\'s WebSocket (globalThis.WebSocket); on Node, use @picklewire/transport/ws')
  return ctor as new (url: string, protocols: string[]) => BrowserWebSocket
}

/** Checks a page's options: the Node-only ones are refused with the reason. */
function resolveBrowserOptions(options: BrowserSocketOptions, what: string): ResolvedOptions {
  if (typeof options === 'object' && options !== null) {
    for (const name of Object.keys(options)) {
      const why = NOT_IN_BROWSER[name]
      if (why !== undefined) throw new TypeError(`${what}: option ${name} is not available in a browser: ${why}`)
    }
  }
  checkOptions(what, options, BROWSER_OPTIONS)
  return resolveOptions(options, what)
}

export class PickleSocket extends Emitter<PickleSocketEvents> implements AsyncIterable<unknown> {
  readonly role: Role = 'client'
  /** Resolves (never rejects) when the connection has closed, cleanly or not. */
  readonly closed: Promise<CloseInfo>
  readonly #stats: WebSocketStats = newStats()
  readonly #sink: BrowserSink
  readonly #sender: MessageSender
  readonly #receiver: MessageReceiver
  /** Sending, delivering, answering and settling: what the Node PickleSocket does too. */
  readonly #core: SocketCore
  /** Messages waiting for their MAC check (WebCrypto), delivered in order behind this chain. */
  #verifying: Promise<void> = Promise.resolve()
  #unverified = 0

  /** Made by connectPickleSocket, over a socket that is open. */
  private constructor(readonly ws: BrowserWebSocket, options: ResolvedOptions, macs: Awaited<ReturnType<typeof webCryptoMacs>>) {
    super()
    this.#sink = new BrowserSink(ws)
    this.#sender = new MessageSender(this.#sink, 'client', macs, options.highWaterMark, this.#stats, (err) => {
      this.#core.fail(new TransportError('CLOSED', `the connection was lost while writing: ${err.message}`, { cause: err }))
    }, options.chunkBytes)
    this.#receiver = new MessageReceiver(options.limits, macs, 'server', this.#stats)
    this.#core = new SocketCore(this.#link(), options, this.#stats, this.#sender, this.#receiver)
    this.closed = this.#core.closed
    const version = versionOfSubprotocol(ws.protocol === '' ? undefined : ws.protocol)
    this.#core.version = version
    this.#sender.version = version
    this.#receiver.version = version
    // A page has no files to share: it never challenges, and answers a server's challenge with shm-no.
    if (version >= 3) this.#receiver.sameHost = new NoSameHost((text) => this.#sink.send(text, { binary: false }))
    ws.onmessage = (event) => this.#onFrame(event.data)
    ws.onclose = (event) => this.#whenVerified(() => {
      this.#sink.closed(new Error(`the connection closed (${event.code})`))
      this.#core.socketClosed(event.code, event.reason)
    })
    ws.onerror = null
  }

  /** What the core needs of this socket: the browser's WebSocket (through the sink) and the page's Emitter. */
  #link(): SocketLink {
    const ws = this.ws
    return {
      peerName: 'server',
      emit: (event, ...args) => this.emit(event, ...args),
      listenerCount: (event) => this.listenerCount(event),
      socketRefusal: () => (ws.readyState === OPEN ? null : new TransportError('CLOSED', 'the connection is closing: the server closed it or the network failed')),
      sendText: (text) => this.#sink.send(text, { binary: false }),
      // the browser's WebSocket cannot pause reading
      pauseReading: null,
      failed: (err) => {
        if (ws.readyState === OPEN) ws.close(sendableCode(closeCodeFor(err, err instanceof VersionMismatch)), closeReason(err.message))
      },
      closeSocket: (code, reason) => ws.close(code, closeReason(reason)),
      drained: () => undefined,
      released: () => {},
    }
  }

  /**
   * Opens a connection to a picklewire server (ws:// or wss://; Node's listenPickleSocket or the
   * Python peer's serve) and resolves once it is open. Rejects with TransportError('CLOSED') when
   * the server cannot be reached or refuses the handshake (the browser does not say why), and
   * with a TypeError for options a page cannot have.
   */
  static async connect(url: string | URL, options: BrowserSocketOptions = {}): Promise<PickleSocket> {
    const resolved = resolveBrowserOptions(options, 'connectPickleSocket')
    const macs = await webCryptoMacs(resolved.key)
    const Ctor = webSocketClass()
    const ws = new Ctor(String(url), offeredSubprotocols(resolved.protocolVersion))
    ws.binaryType = 'arraybuffer'
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve()
      ws.onclose = (event) => reject(new TransportError('CLOSED', `cannot connect to ${String(url)}: the connection closed during the handshake (${event.code}${event.reason ? ` ${event.reason}` : ''}); the browser gives no more detail, see its console`))
    })
    ws.onopen = null
    return new PickleSocket(ws, resolved, macs)
  }

  protected override listenersChanged(event: keyof PickleSocketEvents): void {
    if (this.listenerCount(event) > 0) this.#core.listenerAdded(event)
    else this.#core.listenerRemoved(event)
  }

  /** The protocol version the handshake selected: 3, 2 or 1. */
  get protocolVersion(): number {
    return this.#core.version
  }

  /** The error that ended (or is ending) the connection, if any. */
  get error(): Error | null {
    return this.#core.error
  }

  /** True until the connection closes, fails, or close() is called; sends are refused from then on. */
  get open(): boolean {
    return !this.#core.closingOrClosed && this.#core.error === null && this.ws.readyState === OPEN
  }

  /** A snapshot of the counters (receivePauses and replyPauses stay 0: a page cannot pause reading). */
  stats(): WebSocketStats {
    return { ...this.#stats }
  }

  /** Drops the message with this id while it arrives; on version 3 the sender is told to stop. */
  discard(id: number): boolean {
    return this.#core.discard(id)
  }

  /**
   * Sends a value as one message. Resolves once the browser has the frames; waits first while
   * more than highWaterMark bytes are in bufferedAmount (bounded by options.timeout and
   * options.signal: a send that gives up is never sent). Out-of-band buffers are sent from your
   * memory: do not change them before flushed() resolves.
   */
  send(value: unknown, options: SendOptions = {}): Promise<void> {
    return this.#core.send(value, options)
  }

  /**
   * Sends a value as a request and resolves with the server's reply. Rejects with
   * TransportError('REMOTE') when the server's handler failed, 'TIMEOUT' after the timeout
   * (default: requestTimeout), the signal's reason when it aborts, 'CLOSED' when the connection ends.
   */
  request<T = unknown>(value: unknown, options: RequestOptions = {}): Promise<T> {
    return this.#core.request<T>(value, options)
  }

  /** Sets (or with null removes) the handler that answers the server's requests. */
  onRequest(handler: RequestHandler | null): this {
    this.#core.setRequestHandler(handler)
    return this
  }

  /** The next received value, for callers that do not listen to 'message'. */
  receive<T = unknown>(options: WaitOptions = {}): Promise<T> {
    return this.#core.receive<T>(options)
  }

  /** The received values in order; ends after a clean close, throws the error of an unclean one. */
  [Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    return this.#core.values()
  }

  /** Resolves when every message sent so far has left the page (bufferedAmount has passed it). */
  flushed(): Promise<void> {
    return this.#sender.flushed()
  }

  /** Closes cleanly: messages already sent leave first, then the close handshake runs. */
  close(code: number = CLOSE.normal, reason = ''): Promise<CloseInfo> {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) return Promise.reject(new RangeError(`close code must be 1000 or 3000 to 4999 in a browser, got ${String(code)}`))
    return this.#core.close(code, reason)
  }

  #onFrame(data: unknown): void {
    if (this.#core.error !== null) return
    let message: ReceivedMessage | null = null
    try {
      if (typeof data === 'string') this.#receiver.pushText(data)
      else message = this.#receiver.push(new Uint8Array(data as ArrayBuffer), true)
    } catch (err) {
      this.#core.failOnFrame(err)
      return
    }
    if (message === null) return
    if (message.verified === undefined && this.#unverified === 0) {
      this.#core.dispatch(message)
      return
    }
    const m = message
    this.#unverified++
    this.#verifying = this.#verifying.then(() => m.verified).then(() => {
      this.#unverified--
      if (this.#core.error === null) this.#core.dispatch(m)
    }, (err: unknown) => {
      this.#unverified--
      this.#core.fail(err instanceof TransportError ? err : new TransportError('AUTH', String(err), { cause: err }))
    })
  }

  /** Runs `then` after the messages waiting for their MAC check (at once when none wait). */
  #whenVerified(then: () => void): void {
    if (this.#unverified === 0) then()
    else void this.#verifying.then(then)
  }
}

/** Opens a picklewire connection from a page: PickleSocket.connect. */
export function connectPickleSocket(url: string | URL, options: BrowserSocketOptions = {}): Promise<PickleSocket> {
  return PickleSocket.connect(url, options)
}
