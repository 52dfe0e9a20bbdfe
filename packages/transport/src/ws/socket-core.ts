/**
 * What a PickleSocket does whatever WebSocket it runs over, shared by the Node carrier
 * (ws/socket.ts, over ws) and the page's (browser/socket.ts, over the browser's WebSocket):
 * sending values and requests, the request/reply bookkeeping, delivering received values in
 * order (listeners, receive(), async iteration), answering requests with at most
 * maxConcurrentRequests at a time, and settling everything waiting when the connection fails
 * or closes. It imports no Node built-in. What differs between the two sockets (how frames
 * reach the receiver, how the socket is closed, whether reading can pause, events) comes in
 * through a SocketLink.
 */
import { TransportError } from '../errors.js'
import { decodeValue, encodeValueWith } from '../message.js'
import { badOptionType, optionNames } from '../options-check.js'
import { WAIT_OPTIONS, checkWaitOptions, waitFor, type WaitOptions } from '../waiting.js'
import { CLEAN_CLOSE_CODES, EXTRA, KIND, errorForCloseCode } from './constants.js'
import type { RequestHandler, ResolvedOptions } from './options.js'
import type { MessageReceiver, ReceivedMessage } from './receiver.js'
import type { MessageSender, Progress } from './sender.js'
import type { WebSocketStats } from './stats.js'
import { refuseFrame } from './wire.js'

/** What a 'message' listener gets besides the value. */
export interface MessageInfo {
  /** The message id (1, 2, 3, ... per sender). */
  id: number
  /** The header's extras the sender's application set, if any (picklewire's own, al and auth, left out). */
  x?: Record<string, unknown>
}

/** How a connection ended. `error` is null for a clean close (1000, 1001 or 1005, no message cut short). */
export interface CloseInfo {
  code: number
  reason: string
  error: Error | null
}

/**
 * How far a message has gone (the 'progress' event, send()'s onProgress): `bytes` of its pickle
 * and out-of-band buffers of `total`, and of the buffer the last frame belonged to (`buffer`
 * its index, -1 for the pickle; `bufferBytes` of `bufferTotal`). At most one per frame, so at
 * most one per chunk of a large buffer; the last has bytes === total.
 */
export type ProgressInfo = Progress

/** The events of both PickleSockets. */
export interface PickleSocketEvents {
  message: [value: unknown, info: MessageInfo]
  progress: [progress: ProgressInfo]
  cancel: [id: number]
  error: [err: Error]
  close: [info: CloseInfo]
}

/** The options send() takes on both sockets. */
export interface CoreSendOptions extends WaitOptions {
  x?: Record<string, unknown>
  onProgress?: (progress: ProgressInfo) => void
}

/** The options request() takes on both sockets. */
export interface CoreRequestOptions extends WaitOptions {
  x?: Record<string, unknown>
}

const SEND_OPTIONS = optionNames('x', 'timeout', 'signal', 'onProgress')
const REQUEST_OPTIONS = optionNames('x', 'timeout', 'signal')

/** What differs between the sockets, as the core needs it. */
export interface SocketLink {
  /** Who is at the other end, in messages: 'peer' (Node) or 'server' (a page). */
  readonly peerName: string
  /** The socket's events (node:events or the page's Emitter). */
  emit<K extends keyof PickleSocketEvents>(event: K, ...args: PickleSocketEvents[K]): boolean
  listenerCount(event: keyof PickleSocketEvents): number
  /** Why the WebSocket itself cannot take a message now (not open yet, closing), or null when it can. */
  socketRefusal(): TransportError | null
  /** Writes a text frame if the WebSocket is open (nothing otherwise). */
  sendText(text: string): void
  /** Pauses (true) or resumes reading frames; null where reading cannot pause. */
  readonly pauseReading: ((paused: boolean) => void) | null
  /** The connection failed with err (already settled and reported): tells the peer, ends timers. */
  failed(err: TransportError): void
  /** Starts the close handshake once close() has flushed what was sent. */
  closeSocket(code: number, reason: string): void
  /** Waits, during close(), for what must end before the close handshake (besides flushed sends). */
  drained(): Promise<void> | undefined
  /** Everything waiting is being settled: release what the socket holds (files of the same-host path). */
  released(): void
}

type Queued =
  | { value: unknown; error?: undefined; bytes: number; info: MessageInfo }
  | { value?: undefined; error: Error; bytes: number; info?: undefined }

interface PendingRequest {
  /** Ends the request: with the reply's value when err is null. */
  finish: (err: unknown, value?: unknown) => void
}

export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function checkExtras(what: string, x: unknown): void {
  if (x !== undefined && (typeof x !== 'object' || x === null || Array.isArray(x))) throw badOptionType(what, 'x', 'an object', x)
}

/** What a receiver reports of a message: its id, and the header extras that are the application's (not al, auth or sh). */
function infoOf(id: number, x: Record<string, unknown> | undefined): MessageInfo {
  if (x === undefined) return { id }
  let extras: Record<string, unknown> | undefined
  for (const k of Object.keys(x)) {
    if (k !== EXTRA.alignment && k !== EXTRA.auth && k !== EXTRA.sameHost) (extras ??= Object.create(null) as Record<string, unknown>)[k] = x[k]
  }
  return extras === undefined ? { id } : { id, x: extras }
}

/** The value of an 'err' reply: {'type': str, 'message': str}, as a Map or a plain object. */
function remoteError(value: unknown, re: number): TransportError {
  const get = (k: string): unknown => (value instanceof Map ? value.get(k) : typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[k] : undefined)
  const type = get('type')
  const message = get('message')
  const what = typeof message === 'string' ? `${typeof type === 'string' ? `${type}: ` : ''}${message}` : String(value)
  return new TransportError('REMOTE', `request ${re} failed on the other side: ${what}`)
}

/** String(value) (a Symbol too), or the fallback when even that throws (an object whose toString throws). */
function safeString(value: unknown, fallback: string): string {
  try {
    return String(value)
  } catch {
    return fallback
  }
}

export class SocketCore {
  /** Resolves (never rejects) when the connection has closed, cleanly or not. */
  readonly closed: Promise<CloseInfo>
  /** The protocol version the handshake selected; 0 until the connection is open. */
  version = 0
  #error: Error | null = null
  #closing = false
  #closeInfo: CloseInfo | null = null
  #resolveClosed!: (info: CloseInfo) => void
  #onRequest: RequestHandler | null
  readonly #queue: Queued[] = []
  #queuedBytes = 0
  /** Reading is paused while received messages wait unconsumed over receiveHighWaterMark. */
  #pausedForQueue = false
  /**
   * Requests being answered: from their arrival until the reply is handed to the socket (a
   * reply that waits for the high-water mark is still being answered). At most
   * maxConcurrentRequests; requests beyond that wait in #deferredRequests, in order, and
   * reading pauses (where it can) while any wait, so that a peer that sends requests and never
   * reads the replies cannot make this side make and hold replies without bound.
   */
  #answering = 0
  readonly #deferredRequests: ReceivedMessage[] = []
  readonly #takers: ((r: IteratorResult<unknown> | Error) => void)[] = []
  readonly #pending = new Map<number, PendingRequest>()

  constructor(
    readonly link: SocketLink,
    readonly options: ResolvedOptions,
    readonly stats: WebSocketStats,
    readonly sender: MessageSender,
    readonly receiver: MessageReceiver,
  ) {
    this.#onRequest = options.onRequest
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve))
    receiver.onCancel = (id) => link.emit('cancel', id)
    receiver.onRefuse = (id) => sender.refused(id)
  }

  /** The error that ended (or is ending) the connection, if any. */
  get error(): Error | null {
    return this.#error
  }

  /** True once close() was called or the connection closed. */
  get closingOrClosed(): boolean {
    return this.#closing || this.#closeInfo !== null
  }

  /** True once the connection failed or closed. */
  get ended(): boolean {
    return this.#error !== null || this.#closeInfo !== null
  }

  readonly #emitProgress = (p: ProgressInfo): void => {
    this.link.emit('progress', p)
  }

  /** A listener of `event` is being added. */
  listenerAdded(event: string | symbol): void {
    if (event === 'message' && this.#queue.length > 0) queueMicrotask(() => this.#flushToListeners())
    if (event === 'progress') this.receiver.onProgress = this.#emitProgress
  }

  /** A listener of `event` was removed. */
  listenerRemoved(event: string | symbol): void {
    if (event === 'progress' && this.link.listenerCount('progress') === 0) this.receiver.onProgress = null
  }

  /** PickleSocket.discard. */
  discard(id: number): boolean {
    if (!Number.isSafeInteger(id)) throw new TypeError(`discard needs a message id, got ${String(id)}`)
    if (!this.receiver.discard(id)) return false
    if (this.version >= 3) this.link.sendText(refuseFrame(id))
    return true
  }

  /** PickleSocket.send. */
  send(value: unknown, options: CoreSendOptions): Promise<void> {
    try {
      checkWaitOptions('PickleSocket.send', options, SEND_OPTIONS)
      checkExtras('PickleSocket.send', options.x)
      if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw badOptionType('PickleSocket.send', 'onProgress', 'a function', options.onProgress)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.refuseSend()
    if (closed) return Promise.reject(closed)
    try {
      // The pickle is lent by the pickler: the sender copies it, into the header frame (a small
      // one) or a frame of its own when the message is written now, else into the queue.
      return encodeValueWith(value, this.options.pickler, (parts) => this.sender.send(parts, { kind: KIND.message, x: options.x, onProgress: options.onProgress, signal: options.signal }, options))
    } catch (err) {
      return Promise.reject(asError(err))
    }
  }

  /** PickleSocket.request. */
  request<T>(value: unknown, options: CoreRequestOptions): Promise<T> {
    try {
      checkWaitOptions('PickleSocket.request', options, REQUEST_OPTIONS)
      checkExtras('PickleSocket.request', options.x)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.refuseSend()
    if (closed) return Promise.reject(closed)
    const timeout = options.timeout ?? this.options.requestTimeout
    const { signal } = options
    return new Promise<T>((resolve, reject) => {
      // Aborted when the request ends in failure: takes it out of the send queue if it waits there.
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
        // Framed while the pickler lends its output, as send() does. The id is the one the
        // message is framed with: it is registered then, before any reply can come.
        sent = encodeValueWith(value, this.options.pickler, (parts) => this.sender.send(parts, {
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

  /** PickleSocket.onRequest. */
  setRequestHandler(handler: RequestHandler | null): void {
    if (handler !== null && typeof handler !== 'function') throw new TypeError('onRequest needs a function or null')
    this.#onRequest = handler
  }

  /** PickleSocket.receive. */
  async receive<T>(options: WaitOptions): Promise<T> {
    checkWaitOptions('PickleSocket.receive', options, WAIT_OPTIONS)
    const r = await this.#take(options)
    if (r.done) throw new TransportError('CLOSED', 'the connection is closed and every message was received')
    return r.value as T
  }

  /** PickleSocket's async iteration. */
  async *values(): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      const r = await this.#take()
      if (r.done) return
      yield r.value
    }
  }

  /** PickleSocket.close, once the code is one this socket may send. */
  async close(code: number, reason: string): Promise<CloseInfo> {
    if (!this.#closing && this.#closeInfo === null) {
      this.#closing = true
      try {
        await this.sender.flushed()
        await this.link.drained()
      } catch {
        // the connection failed meanwhile; closing below is then a no-op
      }
      this.link.closeSocket(code, reason)
    }
    return this.closed
  }

  /** Why a message cannot be sent now, or null when it can. */
  refuseSend(): Error | null {
    if (this.#error) return this.#error
    if (this.#closing || this.#closeInfo) return new TransportError('CLOSED', 'the connection is closing or closed')
    return this.link.socketRefusal()
  }

  /** A frame broke the protocol (or the receiver threw): the connection fails with it. */
  failOnFrame(err: unknown): void {
    this.fail(err instanceof TransportError ? err : new TransportError('PROTOCOL', String(err), { cause: err }))
  }

  /** A whole message arrived (its MAC checked): delivers the value, answers the request or settles the request replied to. */
  dispatch(m: ReceivedMessage): void {
    const h = m.header
    switch (h.k) {
      case KIND.message: {
        let value: unknown
        try {
          value = decodeValue(m.parts, this.options.unpickler)
        } catch (err) {
          this.#deliver({ error: asError(err), bytes: 0 })
          return
        }
        this.#deliver({ value, bytes: m.bytes, info: infoOf(h.id, h.x) })
        return
      }
      case KIND.request:
        if (this.#deferredRequests.length > 0 || this.#answering >= this.options.maxConcurrentRequests) {
          this.#deferredRequests.push(m)
          if (this.#deferredRequests.length === 1 && this.link.pauseReading !== null) {
            this.stats.replyPauses++
            this.#updateReading()
          }
        } else {
          void this.#answer(m)
        }
        return
      case KIND.reply:
      case KIND.error: {
        const re = h.re!
        if (!this.#pending.has(re)) return // the request timed out: a late reply is dropped
        let value: unknown
        try {
          value = decodeValue(m.parts, this.options.unpickler)
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
    if (this.link.listenerCount('message') > 0 && this.#queue.length === 0) {
      this.#emitMessage(item)
      return
    }
    const taker = this.#takers.shift()
    if (taker !== undefined) {
      taker(item.error ?? { done: false, value: item.value })
      return
    }
    this.#queue.push(item)
    this.#queuedBytes += item.bytes
    if (!this.#pausedForQueue && this.link.pauseReading !== null && this.#queuedBytes > this.options.receiveHighWaterMark) {
      this.#pausedForQueue = true
      this.stats.receivePauses++
      this.#updateReading()
    }
  }

  /** Pauses or resumes reading from the socket as the receive queue and the reply backlog require. */
  #updateReading(): void {
    this.link.pauseReading?.(this.#pausedForQueue || this.#deferredRequests.length > 0)
  }

  /**
   * A message that could not be unpickled goes to 'error' listeners and the connection stays
   * open; with none, the connection fails with it (close code 4400), so that it never vanishes.
   */
  #emitMessage(item: Queued): void {
    if (item.error === undefined) this.link.emit('message', item.value, item.info!)
    else if (this.link.listenerCount('error') > 0) this.link.emit('error', item.error)
    else {
      this.fail(new TransportError('PROTOCOL', `a received message could not be unpickled and no 'error' listener takes it: ${item.error.message}`, { cause: item.error }))
    }
  }

  /** A 'message' listener was added: the queue goes to it first, in order. */
  #flushToListeners(): void {
    while (this.#queue.length > 0 && this.link.listenerCount('message') > 0) this.#emitMessage(this.#shift()!)
  }

  #shift(): Queued | undefined {
    const item = this.#queue.shift()
    if (item !== undefined) {
      this.#queuedBytes -= item.bytes
      if (this.#pausedForQueue && this.#queuedBytes <= this.options.receiveHighWaterMark) {
        this.#pausedForQueue = false
        this.#updateReading()
      }
    }
    return item
  }

  #take(wait: WaitOptions = {}): Promise<IteratorResult<unknown>> {
    const item = this.#shift()
    if (item !== undefined) {
      return item.error === undefined ? Promise.resolve({ done: false, value: item.value }) : Promise.reject(item.error)
    }
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
      this.#answerDeferred()
    }
  }

  async #answerNow(m: ReceivedMessage): Promise<void> {
    const { id, x } = m.header
    let reply: unknown
    let failure: Error | null = null
    try {
      const value = decodeValue(m.parts, this.options.unpickler)
      if (this.#onRequest === null) throw new Error('no request handler on this side')
      reply = await this.#onRequest(value, infoOf(id, x))
    } catch (err) {
      failure = asError(err)
    }
    if (this.refuseSend()) return
    // Framed while the pickler lends its output (encodeValueWith), as send() does.
    let sent: Promise<void> | null = null
    try {
      if (failure === null) sent = encodeValueWith(reply, this.options.pickler, (parts) => this.sender.send(parts, { kind: KIND.reply, re: id }))
    } catch (err) {
      failure = new Error(`the reply cannot be pickled: ${asError(err).message}`)
    }
    if (failure !== null) {
      // Strings whatever the handler threw, so that the error reply always pickles.
      const error = new Map([['type', safeString(failure.name, 'Error')], ['message', safeString(failure.message, '')]])
      try {
        sent = encodeValueWith(error, {}, (parts) => this.sender.send(parts, { kind: KIND.error, re: id }))
      } catch (err) {
        // Nothing can be sent (a broken connection): the requester's timeout or close ends its wait.
        sent = Promise.reject(err)
      }
    }
    await sent!.catch(() => {})
  }

  /** Starts answering deferred requests while fewer than maxConcurrentRequests are being answered. */
  #answerDeferred(): void {
    if (this.#error !== null || this.#closeInfo !== null) return
    while (this.#deferredRequests.length > 0 && this.#answering < this.options.maxConcurrentRequests) {
      const m = this.#deferredRequests.shift()!
      if (this.#deferredRequests.length === 0) this.#updateReading()
      void this.#answer(m)
    }
  }

  #settle(id: number, err: Error | null, value?: unknown): void {
    const p = this.#pending.get(id)
    if (p === undefined) return
    this.#pending.delete(id)
    p.finish(err, value)
  }

  /** Ends everything waiting on the connection: requests, queued sends, receivers. */
  #settleAll(err: Error | null): void {
    const closedErr = err ?? new TransportError('CLOSED', 'the connection closed before the reply')
    for (const id of [...this.#pending.keys()]) this.#settle(id, closedErr)
    this.sender.close(err ?? new TransportError('CLOSED', 'the connection is closed'))
    this.link.released()
    for (const taker of this.#takers.splice(0)) taker(err ?? { done: true, value: undefined })
  }

  /** Fails the connection: everything waiting gets `err`, and the peer gets the close code for it. */
  fail(err: TransportError): void {
    if (this.#error !== null || this.#closeInfo !== null) return
    this.#error = err
    this.#settleAll(err)
    if (this.link.listenerCount('error') > 0) this.link.emit('error', err)
    this.link.failed(err)
  }

  /** The WebSocket closed: a message cut short, an unclean code or unwritten sends make it an error. */
  socketClosed(code: number, reason: string): void {
    if (this.#error === null) {
      let err: TransportError | null = null
      if (this.receiver.inMessage) {
        err = new TransportError('CLOSED', `the connection closed (${code}${reason ? ` ${reason}` : ''}) ${this.receiver.progress()}: the message is lost`)
      } else if (!CLEAN_CLOSE_CODES.has(code)) {
        err = errorForCloseCode(code, reason)
      } else if (this.sender.unwritten > 0 || this.sender.queued > 0) {
        const n = this.sender.unwritten + this.sender.queued
        err = new TransportError('CLOSED', `the ${this.link.peerName} closed the connection (${code}${reason ? ` ${reason}` : ''}) before ${n} sent message${n === 1 ? ' was' : 's were'} written`)
      }
      if (err !== null) {
        this.#error = err
        if (this.link.listenerCount('error') > 0) this.link.emit('error', err)
      }
      this.#settleAll(err)
    }
    this.#closeInfo = { code, reason, error: this.#error }
    this.#resolveClosed(this.#closeInfo)
    this.link.emit('close', this.#closeInfo)
  }
}
