/**
 * PickleSocket in a page: one picklewire connection over the browser's WebSocket, the client
 * side only, with the vocabulary of the Node PickleSocket (send, request, onRequest, receive,
 * async iteration, close, closed, open, error, stats(), the 'message', 'progress', 'cancel',
 * 'error' and 'close' events). The protocol core is the Node carrier's own (ws/receiver.ts,
 * ws/sender.ts, ws/wire.ts); what differs is what the browser allows:
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
import { decodeValue, encodeValueWith } from '../message.js'
import { badOptionType, checkOptions, optionNames } from '../options-check.js'
import { WAIT_OPTIONS, checkWaitOptions, waitFor, type WaitOptions } from '../waiting.js'
import { CLEAN_CLOSE_CODES, CLOSE, EXTRA, KIND, closeCodeFor, closeReason, errorForCloseCode } from '../ws/constants.js'
import type { Role } from '../ws/mac.js'
import { PICKLE_SOCKET_OPTION_NAMES, offeredSubprotocols, resolveOptions, type PickleSocketOptions, type RequestHandler, type ResolvedOptions } from '../ws/options.js'
import { MessageReceiver, VersionMismatch, type ReceivedMessage } from '../ws/receiver.js'
import { NoSameHost } from '../ws/same-host-frames.js'
import { MessageSender, type Progress } from '../ws/sender.js'
import { newStats, type WebSocketStats } from '../ws/stats.js'
import { refuseFrame, versionOfSubprotocol } from '../ws/wire.js'
import { Emitter } from './emitter.js'
import { webCryptoMacs } from './hmac.js'
import { BrowserSink, OPEN, type BrowserWebSocket } from './sink.js'

/** What a 'message' listener gets besides the value. */
export interface MessageInfo {
  id: number
  /** The header's extras the sender's application set, if any. */
  x?: Record<string, unknown>
}

/** How a connection ended. `error` is null for a clean close (1000, 1001 or 1005, no message cut short). */
export interface CloseInfo {
  code: number
  reason: string
  error: Error | null
}

export type ProgressInfo = Progress

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
export type BrowserSocketOptions = Omit<PickleSocketOptions, 'receiveHighWaterMark' | 'heartbeatInterval' | 'heartbeatTimeout'>

/** Options of the Node carrier a page cannot have, and why: giving one is a TypeError. */
const NOT_IN_BROWSER: Readonly<Record<string, string>> = Object.freeze({
  receiveHighWaterMark: 'the browser\'s WebSocket cannot pause reading, so unread messages are held whatever their size',
  heartbeatInterval: 'a page cannot send WebSocket pings (the browser answers the server\'s pings itself)',
  heartbeatTimeout: 'a page cannot send WebSocket pings (the browser answers the server\'s pings itself)',
  ws: 'the browser\'s WebSocket takes no options: no headers, no TLS settings, no perMessageDeflate (the browser negotiates compression itself)',
})

const BROWSER_OPTIONS = optionNames(...PICKLE_SOCKET_OPTION_NAMES.filter((n) => !(n in NOT_IN_BROWSER)))
const SEND_OPTIONS = optionNames('x', 'timeout', 'signal', 'onProgress')
const REQUEST_OPTIONS = optionNames('x', 'timeout', 'signal')

interface PickleSocketEvents {
  message: [value: unknown, info: MessageInfo]
  progress: [progress: ProgressInfo]
  cancel: [id: number]
  error: [err: Error]
  close: [info: CloseInfo]
}

type Queued =
  | { value: unknown; error?: undefined; info: MessageInfo }
  | { value?: undefined; error: Error; info?: undefined }

interface PendingRequest {
  finish: (err: unknown, value?: unknown) => void
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function checkExtras(what: string, x: unknown): void {
  if (x !== undefined && (typeof x !== 'object' || x === null || Array.isArray(x))) throw badOptionType(what, 'x', 'an object', x)
}

function infoOf(id: number, x: Record<string, unknown> | undefined): MessageInfo {
  if (x === undefined) return { id }
  let extras: Record<string, unknown> | undefined
  for (const k of Object.keys(x)) {
    if (k !== EXTRA.alignment && k !== EXTRA.auth) (extras ??= Object.create(null) as Record<string, unknown>)[k] = x[k]
  }
  return extras === undefined ? { id } : { id, x: extras }
}

function remoteError(value: unknown, re: number): TransportError {
  const get = (k: string): unknown => (value instanceof Map ? value.get(k) : typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[k] : undefined)
  const type = get('type')
  const message = get('message')
  const what = typeof message === 'string' ? `${typeof type === 'string' ? `${type}: ` : ''}${message}` : String(value)
  return new TransportError('REMOTE', `request ${re} failed on the other side: ${what}`)
}

function safeString(value: unknown, fallback: string): string {
  try {
    return String(value)
  } catch {
    return fallback
  }
}

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
  readonly #options: ResolvedOptions
  readonly #sink: BrowserSink
  readonly #sender: MessageSender
  readonly #receiver: MessageReceiver
  #onRequest: RequestHandler | null
  readonly #queue: Queued[] = []
  #answering = 0
  readonly #deferredRequests: ReceivedMessage[] = []
  readonly #takers: ((r: IteratorResult<unknown> | Error) => void)[] = []
  readonly #pending = new Map<number, PendingRequest>()
  /** Messages waiting for their MAC check (WebCrypto), delivered in order behind this chain. */
  #verifying: Promise<void> = Promise.resolve()
  #unverified = 0
  #error: Error | null = null
  #closing = false
  #closeInfo: CloseInfo | null = null
  #resolveClosed!: (info: CloseInfo) => void
  #version = 0

  /** Made by connectPickleSocket, over a socket that is open. */
  private constructor(readonly ws: BrowserWebSocket, options: ResolvedOptions, macs: Awaited<ReturnType<typeof webCryptoMacs>>) {
    super()
    this.#options = options
    this.#onRequest = options.onRequest
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve))
    this.#sink = new BrowserSink(ws)
    this.#sender = new MessageSender(this.#sink, 'client', macs, options.highWaterMark, this.#stats, (err) => {
      this.#fail(new TransportError('CLOSED', `the connection was lost while writing: ${err.message}`, { cause: err }))
    }, options.chunkBytes)
    this.#receiver = new MessageReceiver(options.limits, macs, 'server', this.#stats)
    this.#receiver.onCancel = (id) => this.emit('cancel', id)
    this.#receiver.onRefuse = (id) => this.#sender.refused(id)
    this.#version = versionOfSubprotocol(ws.protocol === '' ? undefined : ws.protocol)
    this.#sender.version = this.#version
    this.#receiver.version = this.#version
    // A page has no files to share: it never challenges, and answers a server's challenge with shm-no.
    if (this.#version >= 3) this.#receiver.sameHost = new NoSameHost((text) => this.#sink.send(text, { binary: false }))
    ws.onmessage = (event) => this.#onFrame(event.data)
    ws.onclose = (event) => this.#whenVerified(() => this.#onClose(event.code, event.reason))
    ws.onerror = null
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
    if (event === 'message' && this.#queue.length > 0 && this.listenerCount('message') > 0) queueMicrotask(() => this.#flushToListeners())
    if (event === 'progress') this.#receiver.onProgress = this.listenerCount('progress') > 0 ? this.#emitProgress : null
  }

  readonly #emitProgress = (p: ProgressInfo): void => {
    this.emit('progress', p)
  }

  /** The protocol version the handshake selected: 3, 2 or 1. */
  get protocolVersion(): number {
    return this.#version
  }

  /** The error that ended (or is ending) the connection, if any. */
  get error(): Error | null {
    return this.#error
  }

  /** True until the connection closes, fails, or close() is called; sends are refused from then on. */
  get open(): boolean {
    return !this.#closing && this.#closeInfo === null && this.#error === null && this.ws.readyState === OPEN
  }

  /** A snapshot of the counters (receivePauses and replyPauses stay 0: a page cannot pause reading). */
  stats(): WebSocketStats {
    return { ...this.#stats }
  }

  /** Drops the message with this id while it arrives; on version 3 the sender is told to stop. */
  discard(id: number): boolean {
    if (!Number.isSafeInteger(id)) throw new TypeError(`discard needs a message id, got ${String(id)}`)
    if (!this.#receiver.discard(id)) return false
    if (this.#version >= 3 && this.ws.readyState === OPEN) this.ws.send(refuseFrame(id))
    return true
  }

  /**
   * Sends a value as one message. Resolves once the browser has the frames; waits first while
   * more than highWaterMark bytes are in bufferedAmount (bounded by options.timeout and
   * options.signal: a send that gives up is never sent). Out-of-band buffers are sent from your
   * memory: do not change them before flushed() resolves.
   */
  send(value: unknown, options: SendOptions = {}): Promise<void> {
    try {
      checkWaitOptions('PickleSocket.send', options, SEND_OPTIONS)
      checkExtras('PickleSocket.send', options.x)
      if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw badOptionType('PickleSocket.send', 'onProgress', 'a function', options.onProgress)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.#refuseSend()
    if (closed) return Promise.reject(closed)
    try {
      return encodeValueWith(value, this.#options.pickler, (parts) => this.#sender.send(parts, { kind: KIND.message, x: options.x, onProgress: options.onProgress, signal: options.signal }, options))
    } catch (err) {
      return Promise.reject(asError(err))
    }
  }

  /**
   * Sends a value as a request and resolves with the server's reply. Rejects with
   * TransportError('REMOTE') when the server's handler failed, 'TIMEOUT' after the timeout
   * (default: requestTimeout), the signal's reason when it aborts, 'CLOSED' when the connection ends.
   */
  request<T = unknown>(value: unknown, options: RequestOptions = {}): Promise<T> {
    try {
      checkWaitOptions('PickleSocket.request', options, REQUEST_OPTIONS)
      checkExtras('PickleSocket.request', options.x)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.#refuseSend()
    if (closed) return Promise.reject(closed)
    const timeout = options.timeout ?? this.#options.requestTimeout
    const { signal } = options
    return new Promise<T>((resolve, reject) => {
      const unsend = new AbortController()
      let id = -1
      let done = false
      let timer: ReturnType<typeof setTimeout> | null = null
      const onAbort = (): void => entry.finish(signal!.reason)
      const entry: PendingRequest = {
        finish: (err, reply) => {
          if (done) return
          done = true
          if (id >= 0) this.#pending.delete(id)
          if (timer !== null) clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          if (err === null) resolve(reply as T)
          else {
            unsend.abort()
            reject(err)
          }
        },
      }
      let sent: Promise<void>
      try {
        sent = encodeValueWith(value, this.#options.pickler, (parts) => this.#sender.send(parts, {
          kind: KIND.request,
          x: options.x,
          onId: (n) => {
            id = n
            if (!done) this.#pending.set(n, entry)
          },
        }, { signal: unsend.signal }))
      } catch (err) {
        entry.finish(asError(err))
        return
      }
      if (timeout > 0) {
        timer = setTimeout(() => entry.finish(new TransportError('TIMEOUT', `no reply to request ${id >= 0 ? id : '(not yet sent)'} within ${timeout} ms`)), timeout)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      sent.catch((err: unknown) => entry.finish(err))
    })
  }

  /** Sets (or with null removes) the handler that answers the server's requests. */
  onRequest(handler: RequestHandler | null): this {
    if (handler !== null && typeof handler !== 'function') throw new TypeError('onRequest needs a function or null')
    this.#onRequest = handler
    return this
  }

  /** The next received value, for callers that do not listen to 'message'. */
  async receive<T = unknown>(options: WaitOptions = {}): Promise<T> {
    checkWaitOptions('PickleSocket.receive', options, WAIT_OPTIONS)
    const r = await this.#take(options)
    if (r.done) throw new TransportError('CLOSED', 'the connection is closed and every message was received')
    return r.value as T
  }

  /** The received values in order; ends after a clean close, throws the error of an unclean one. */
  async *[Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      const r = await this.#take()
      if (r.done) return
      yield r.value
    }
  }

  /** Resolves when every message sent so far has left the page (bufferedAmount has passed it). */
  flushed(): Promise<void> {
    return this.#sender.flushed()
  }

  /** Closes cleanly: messages already sent leave first, then the close handshake runs. */
  async close(code: number = CLOSE.normal, reason = ''): Promise<CloseInfo> {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) throw new RangeError(`close code must be 1000 or 3000 to 4999 in a browser, got ${String(code)}`)
    if (!this.#closing && this.#closeInfo === null) {
      this.#closing = true
      try {
        await this.#sender.flushed()
      } catch {
        // the connection failed meanwhile; closing below is then a no-op
      }
      this.ws.close(code, closeReason(reason))
    }
    return this.closed
  }

  #refuseSend(): Error | null {
    if (this.#error) return this.#error
    if (this.#closing || this.#closeInfo) return new TransportError('CLOSED', 'the connection is closing or closed')
    if (this.ws.readyState !== OPEN) return new TransportError('CLOSED', 'the connection is closing: the server closed it or the network failed')
    return null
  }

  #onFrame(data: unknown): void {
    if (this.#error !== null) return
    let message: ReceivedMessage | null = null
    try {
      if (typeof data === 'string') this.#receiver.pushText(data)
      else message = this.#receiver.push(new Uint8Array(data as ArrayBuffer), true)
    } catch (err) {
      this.#fail(err instanceof TransportError ? err : new TransportError('PROTOCOL', String(err), { cause: err }))
      return
    }
    if (message === null) return
    if (message.verified === undefined && this.#unverified === 0) {
      this.#dispatch(message)
      return
    }
    const m = message
    this.#unverified++
    this.#verifying = this.#verifying.then(() => m.verified).then(() => {
      this.#unverified--
      if (this.#error === null) this.#dispatch(m)
    }, (err: unknown) => {
      this.#unverified--
      this.#fail(err instanceof TransportError ? err : new TransportError('AUTH', String(err), { cause: err }))
    })
  }

  /** Runs `then` after the messages waiting for their MAC check (at once when none wait). */
  #whenVerified(then: () => void): void {
    if (this.#unverified === 0) then()
    else void this.#verifying.then(then)
  }

  #dispatch(m: ReceivedMessage): void {
    const h = m.header
    switch (h.k) {
      case KIND.message: {
        let value: unknown
        try {
          value = decodeValue(m.parts, this.#options.unpickler)
        } catch (err) {
          this.#deliver({ error: asError(err) })
          return
        }
        this.#deliver({ value, info: infoOf(h.id, h.x) })
        return
      }
      case KIND.request:
        if (this.#deferredRequests.length > 0 || this.#answering >= this.#options.maxConcurrentRequests) this.#deferredRequests.push(m)
        else void this.#answer(m)
        return
      case KIND.reply:
      case KIND.error: {
        const re = h.re!
        if (!this.#pending.has(re)) return
        let value: unknown
        try {
          value = decodeValue(m.parts, this.#options.unpickler)
        } catch (err) {
          this.#settle(re, asError(err))
          return
        }
        if (h.k === KIND.reply) this.#settle(re, null, value)
        else this.#settle(re, remoteError(value, re))
      }
    }
  }

  #deliver(item: Queued): void {
    if (this.listenerCount('message') > 0 && this.#queue.length === 0) {
      this.#emitMessage(item)
      return
    }
    const taker = this.#takers.shift()
    if (taker !== undefined) {
      taker(item.error ?? { done: false, value: item.value })
      return
    }
    this.#queue.push(item)
  }

  #emitMessage(item: Queued): void {
    if (item.error === undefined) this.emit('message', item.value, item.info!)
    else if (this.listenerCount('error') > 0) this.emit('error', item.error)
    else this.#fail(new TransportError('PROTOCOL', `a received message could not be unpickled and no 'error' listener takes it: ${item.error.message}`, { cause: item.error }))
  }

  #flushToListeners(): void {
    while (this.#queue.length > 0 && this.listenerCount('message') > 0) this.#emitMessage(this.#queue.shift()!)
  }

  #take(wait: WaitOptions = {}): Promise<IteratorResult<unknown>> {
    const item = this.#queue.shift()
    if (item !== undefined) return item.error === undefined ? Promise.resolve({ done: false, value: item.value }) : Promise.reject(item.error)
    if (this.#error !== null) return Promise.reject(this.#error)
    if (this.#closeInfo !== null) return Promise.resolve({ done: true, value: undefined })
    return waitFor<IteratorResult<unknown>>('receive: waiting for a message', wait, (settle) => {
      const taker = (r: IteratorResult<unknown> | Error): void => (r instanceof Error ? settle.reject(r) : settle.resolve(r))
      this.#takers.push(taker)
      return () => {
        const i = this.#takers.indexOf(taker)
        if (i >= 0) this.#takers.splice(i, 1)
      }
    })
  }

  async #answer(m: ReceivedMessage): Promise<void> {
    this.#answering++
    try {
      await this.#answerNow(m)
    } finally {
      this.#answering--
      while (this.#error === null && this.#closeInfo === null && this.#deferredRequests.length > 0 && this.#answering < this.#options.maxConcurrentRequests) {
        void this.#answer(this.#deferredRequests.shift()!)
      }
    }
  }

  async #answerNow(m: ReceivedMessage): Promise<void> {
    const { id, x } = m.header
    let reply: unknown
    let failure: Error | null = null
    try {
      const value = decodeValue(m.parts, this.#options.unpickler)
      if (this.#onRequest === null) throw new Error('no request handler on this side')
      reply = await this.#onRequest(value, infoOf(id, x))
    } catch (err) {
      failure = asError(err)
    }
    if (this.#refuseSend()) return
    let sent: Promise<void> | null = null
    try {
      if (failure === null) sent = encodeValueWith(reply, this.#options.pickler, (parts) => this.#sender.send(parts, { kind: KIND.reply, re: id }))
    } catch (err) {
      failure = new Error(`the reply cannot be pickled: ${asError(err).message}`)
    }
    if (failure !== null) {
      const error = new Map([['type', safeString(failure.name, 'Error')], ['message', safeString(failure.message, '')]])
      try {
        sent = encodeValueWith(error, {}, (parts) => this.#sender.send(parts, { kind: KIND.error, re: id }))
      } catch (err) {
        sent = Promise.reject(err)
      }
    }
    await sent!.catch(() => {})
  }

  #settle(id: number, err: Error | null, value?: unknown): void {
    const p = this.#pending.get(id)
    if (p === undefined) return
    this.#pending.delete(id)
    p.finish(err, value)
  }

  #settleAll(err: Error | null): void {
    const closedErr = err ?? new TransportError('CLOSED', 'the connection closed before the reply')
    for (const id of [...this.#pending.keys()]) this.#settle(id, closedErr)
    this.#sender.close(err ?? new TransportError('CLOSED', 'the connection is closed'))
    for (const taker of this.#takers.splice(0)) taker(err ?? { done: true, value: undefined })
  }

  #fail(err: TransportError): void {
    if (this.#error !== null || this.#closeInfo !== null) return
    this.#error = err
    this.#settleAll(err)
    if (this.listenerCount('error') > 0) this.emit('error', err)
    if (this.ws.readyState === OPEN) this.ws.close(sendableCode(closeCodeFor(err, err instanceof VersionMismatch)), closeReason(err.message))
  }

  #onClose(code: number, reason: string): void {
    this.#sink.closed(new Error(`the connection closed (${code})`))
    if (this.#error === null) {
      let err: TransportError | null = null
      if (this.#receiver.inMessage) {
        err = new TransportError('CLOSED', `the connection closed (${code}${reason ? ` ${reason}` : ''}) ${this.#receiver.progress()}: the message is lost`)
      } else if (!CLEAN_CLOSE_CODES.has(code)) {
        err = errorForCloseCode(code, reason)
      } else if (this.#sender.unwritten > 0 || this.#sender.queued > 0) {
        const n = this.#sender.unwritten + this.#sender.queued
        err = new TransportError('CLOSED', `the server closed the connection (${code}${reason ? ` ${reason}` : ''}) before ${n} sent message${n === 1 ? ' was' : 's were'} written`)
      }
      if (err !== null) {
        this.#error = err
        if (this.listenerCount('error') > 0) this.emit('error', err)
      }
      this.#settleAll(err)
    }
    this.#closeInfo = { code, reason, error: this.#error }
    this.#resolveClosed(this.#closeInfo)
    this.emit('close', this.#closeInfo)
  }
}

/** Opens a picklewire connection from a page: PickleSocket.connect. */
export function connectPickleSocket(url: string | URL, options: BrowserSocketOptions = {}): Promise<PickleSocket> {
  return PickleSocket.connect(url, options)
}
