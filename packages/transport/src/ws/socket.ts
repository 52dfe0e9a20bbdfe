/**
 * PickleSocket: one picklewire connection over a ws WebSocket, the same object on the client
 * and the server side. It sends values (send, request), delivers received values in order
 * ('message' events, receive(), async iteration), answers requests (onRequest), and fails the
 * whole connection, with a documented close code, on the first frame that breaks the protocol.
 */
import { EventEmitter } from 'node:events'
import { WebSocket } from 'ws'
import { TransportError } from '../errors.js'
import { decodeValue, encodeValueWith } from '../message.js'
import { nodeMacs, type Role } from './auth.js'
import { CLEAN_CLOSE_CODES, CLOSE, EXTRA, KIND, closeCodeFor, closeReason, errorForCloseCode } from './constants.js'
import { Heartbeat } from './heartbeat.js'
import { badOptionType, optionNames } from '../options-check.js'
import { WAIT_OPTIONS, checkWaitOptions, waitFor, type WaitOptions } from '../waiting.js'
import { resolveOptions, type PickleSocketOptions, type RequestHandler, type ResolvedOptions } from './options.js'
import { MessageReceiver, VersionMismatch, type ReceivedMessage } from './receiver.js'
import { MessageSender, type Progress } from './sender.js'
import { newStats, type WebSocketStats } from './stats.js'
import { SameHostLink, sameHostAvailable } from './same-host.js'
import { NoSameHost } from './same-host-frames.js'
import { refuseFrame, versionOfSubprotocol } from './wire.js'

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

export interface SendOptions extends WaitOptions {
  /** Extras for the header's `x` (string keys; picklewire's own, al and auth, win). */
  x?: Record<string, unknown>
  /**
   * Called as the message's frames are written to the socket, at most once per frame (per
   * chunk on version 3), with bytes done and total. A throw from it is ignored.
   */
  onProgress?: (progress: ProgressInfo) => void
  /**
   * Milliseconds a send may wait while more than highWaterMark bytes are buffered; when they
   * pass, it rejects with TransportError('TIMEOUT') and the message is not sent. A send that
   * does not wait never times out. Default: no limit.
   */
  timeout?: number
}

export interface RequestOptions extends SendOptions {
  /**
   * Milliseconds for the whole request, the wait for the high-water mark and for the reply;
   * 0 waits as long as the connection lives. Default: the socket's requestTimeout.
   */
  timeout?: number
}

const SEND_OPTIONS = optionNames('x', 'timeout', 'signal', 'onProgress')
const REQUEST_OPTIONS = optionNames('x', 'timeout', 'signal')

function checkExtras(what: string, x: unknown): void {
  if (x !== undefined && (typeof x !== 'object' || x === null || Array.isArray(x))) throw badOptionType(what, 'x', 'an object', x)
}

interface PickleSocketEvents {
  message: [value: unknown, info: MessageInfo]
  progress: [progress: ProgressInfo]
  cancel: [id: number]
  error: [err: Error]
  close: [info: CloseInfo]
}

type Queued =
  | { value: unknown; error?: undefined; bytes: number; info: MessageInfo }
  | { value?: undefined; error: Error; bytes: number; info?: undefined }

interface PendingRequest {
  /** Ends the request: with the reply's value when err is null. */
  finish: (err: unknown, value?: unknown) => void
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

/**
 * ws's own errors (bad frames, maxPayload) as TransportErrors; `frame` names the frame ws was
 * reading and `limit` its size limit.
 */
function fromWsError(err: Error & { code?: string }, frame: string, limit: number): TransportError {
  if (err instanceof TransportError) return err
  if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
    return new TransportError('LIMIT', `${frame} is over the ${limit} bytes allowed for it: refused from its length, before its bytes were read`, { cause: err })
  }
  if (err.code?.startsWith('WS_ERR_')) return new TransportError('PROTOCOL', `bad WebSocket frame: ${err.message}`, { cause: err })
  return new TransportError('CLOSED', `connection failed: ${err.message}`, { cause: err })
}

/** What a receiver reports of a message: its id, and the header extras that are the application's (not al or auth). */
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

export class PickleSocket extends EventEmitter<PickleSocketEvents> implements AsyncIterable<unknown> {
  readonly #stats: WebSocketStats = newStats()
  /** Resolves (never rejects) when the connection has closed, cleanly or not. */
  readonly closed: Promise<CloseInfo>

  readonly #options: ResolvedOptions
  readonly #sender: MessageSender
  readonly #receiver: MessageReceiver
  readonly #heartbeat: Heartbeat
  #onRequest: RequestHandler | null
  readonly #queue: Queued[] = []
  #queuedBytes = 0
  /** Reading is paused while received messages wait unconsumed over receiveHighWaterMark. */
  #pausedForQueue = false
  /**
   * Requests being answered: from their arrival until the reply is handed to ws (a reply that
   * waits for the high-water mark is still being answered). At most maxConcurrentRequests;
   * requests beyond that wait in #deferredRequests, in order, and reading pauses while any
   * wait, so that a peer that sends requests and never reads the replies cannot make this side
   * make and hold replies without bound (TCP then makes that peer wait).
   */
  #answering = 0
  readonly #deferredRequests: ReceivedMessage[] = []
  readonly #takers: ((r: IteratorResult<unknown> | Error) => void)[] = []
  readonly #pending = new Map<number, PendingRequest>()
  #error: Error | null = null
  /** The size limit ws applies to the next data frame (see #limitNextFrame). */
  #frameLimit = 0
  /** ws's own maxPayload, from its options (-1 until read). */
  #wsMaxPayload = -1
  #closing = false
  #closeInfo: CloseInfo | null = null
  #resolveClosed!: (info: CloseInfo) => void
  #version = 0
  /** Version 3, same host: the files and the proof of each direction (null when off). */
  #sameHost: SameHostLink | null = null

  /**
   * Wraps a ws WebSocket (connecting or open). connectPickleSocket and PickleSocketServer make
   * these; construct one yourself to speak picklewire over a ws socket you made.
   * @param role which side of the connection this is: its messages are authenticated under that name
   */
  constructor(readonly ws: WebSocket, readonly role: Role, options: PickleSocketOptions = {}) {
    super()
    if (role !== 'client' && role !== 'server') throw new TypeError(`role must be 'client' or 'server', got ${String(role)}`)
    this.#options = resolveOptions(options)
    this.#onRequest = this.#options.onRequest
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve))
    const { key, limits, highWaterMark, heartbeatInterval, heartbeatTimeout } = this.#options
    ws.binaryType = 'nodebuffer'
    const macs = nodeMacs(key)
    this.#sender = new MessageSender(ws, role, macs, highWaterMark, this.#stats, (err) => {
      this.#fail(new TransportError('CLOSED', `the connection was lost while writing: ${err.message}`, { cause: err }))
    }, this.#options.chunkBytes)
    this.#receiver = new MessageReceiver(limits, macs, role === 'client' ? 'server' : 'client', this.#stats)
    this.#receiver.onCancel = (id) => this.emit('cancel', id)
    this.#receiver.onRefuse = (id) => this.#sender.refused(id)
    this.#heartbeat = new Heartbeat(ws, heartbeatInterval, heartbeatTimeout, () => {
      this.#fail(new TransportError('TIMEOUT', `no answer to a heartbeat ping within ${heartbeatTimeout} ms`))
    })
    ;(this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'message' && this.#queue.length > 0) queueMicrotask(() => this.#flushToListeners())
      if (event === 'progress') this.#receiver.onProgress = this.#emitProgress
    })
    ;(this as EventEmitter).on('removeListener', (event: string | symbol) => {
      if (event === 'progress' && this.listenerCount('progress') === 0) this.#receiver.onProgress = null
    })
    ws.on('message', (data, isBinary) => this.#onFrame(data as Buffer, isBinary))
    ws.on('pong', () => this.#heartbeat.alive())
    ws.on('ping', () => {
      this.#heartbeat.alive()
      this.#checkPingFlood()
    })
    ws.on('error', (err) => this.#fail(fromWsError(err, this.#receiver.nextFrameName(), this.#frameLimit)))
    ws.on('close', (code, reason) => this.#onClose(code, reason.toString()))
    if (ws.readyState === WebSocket.OPEN) this.#opened()
    else ws.once('open', () => this.#opened())
  }

  /**
   * The protocol version the handshake selected (docs/wire-protocol.md): 3 or 2 when the
   * subprotocol is picklewire.v3 or picklewire.v2, 1 otherwise (picklewire.v1, or none). 0
   * until the connection is open.
   */
  get protocolVersion(): number {
    return this.#version
  }

  readonly #emitProgress = (p: ProgressInfo): void => {
    this.emit('progress', p)
  }

  /**
   * Drops the message with this id while it arrives (from a 'progress' listener, say): nothing
   * of it is delivered, and the next message arrives as usual. On version 3 a refuse frame
   * tells the sender, which stops sending it (its send rejects with TransportError REMOTE);
   * frames already on their way are read, checked and dropped. True when that message was in
   * progress, false when it is not (not begun, already delivered, or another one).
   */
  discard(id: number): boolean {
    if (!Number.isSafeInteger(id)) throw new TypeError(`discard needs a message id, got ${String(id)}`)
    if (!this.#receiver.discard(id)) return false
    if (this.#version >= 3 && this.ws.readyState === WebSocket.OPEN) this.ws.send(refuseFrame(id), { binary: false })
    return true
  }

  /**
   * True while this side's out-of-band buffers of at least sameHostMinBytes travel through
   * files (the peer proved it runs on this host and accepted this side's proof; see
   * docs/websocket.md, "Same host"); false while they go as frames.
   */
  get sameHost(): boolean {
    return this.#sameHost?.active ?? false
  }

  /**
   * Version 3: the same-host path, when on and possible here (Linux with /proc); otherwise the
   * receiver only answers the peer's challenge with shm-no.
   */
  #startSameHost(): void {
    const sendText = (text: string): void => {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text, { binary: false })
    }
    if (!this.#options.sameHost || !sameHostAvailable()) {
      this.#receiver.sameHost = new NoSameHost(sendText)
      return
    }
    const link = new SameHostLink(true, this.#options.sameHostMinBytes, sendText, this.#stats)
    this.#sameHost = link
    this.#receiver.sameHost = link
    this.#sender.sameHost = link
    link.start()
  }

  /** The error that ended (or is ending) the connection, if any. */
  get error(): Error | null {
    return this.#error
  }

  /**
   * True until the connection closes, fails, or close() is called, or the peer starts closing
   * it; sends are refused from then on.
   */
  get open(): boolean {
    return !this.#closing && this.#closeInfo === null && this.#error === null && this.ws.readyState <= WebSocket.OPEN
  }

  /** A snapshot of the counters: messages and bytes each way, frames, copies, backpressure waits and pauses. */
  stats(): WebSocketStats {
    return { ...this.#stats }
  }

  /**
   * Sends a value as one message. Resolves once ws has the frames; waits first while more than
   * highWaterMark bytes are buffered (that wait is what options.timeout and options.signal
   * bound: a send that gives up is never sent). Out-of-band buffers are sent from your memory:
   * do not change them before flushed() resolves. Rejects with TransportError('CLOSED') once closing.
   */
  send(value: unknown, options: SendOptions = {}): Promise<void> {
    try {
      checkWaitOptions('PickleSocket.send', options, SEND_OPTIONS)
      checkExtras('PickleSocket.send', options.x)
    } catch (err) {
      return Promise.reject(err)
    }
    const closed = this.#refuseSend()
    if (closed) return Promise.reject(closed)
    try {
      // The pickle is lent by the pickler: the sender copies it, into the header frame (a small
      // one) or a frame of its own when the message is written now, else into the queue.
      if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw badOptionType('PickleSocket.send', 'onProgress', 'a function', options.onProgress)
      return encodeValueWith(value, this.#options.pickler ?? {}, (parts) => this.#sender.send(parts, { kind: KIND.message, x: options.x, onProgress: options.onProgress, signal: options.signal }, options))
    } catch (err) {
      return Promise.reject(asError(err))
    }
  }

  /**
   * Sends a value as a request and resolves with the peer's reply. Rejects with
   * TransportError('REMOTE') when the peer's handler failed, 'TIMEOUT' after the timeout,
   * the signal's reason when it aborts, 'CLOSED' (or the connection's error) when the
   * connection ends first. A request that gives up before it was written is not sent; a reply
   * that comes after it gave up is dropped.
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
      // Aborted when the request ends in failure: takes it out of the send queue if it waits there.
      const unsend = new AbortController()
      let id = -1
      let done = false
      let timer: NodeJS.Timeout | null = null
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
        sent = encodeValueWith(value, this.#options.pickler ?? {}, (parts) => this.#sender.send(parts, {
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

  /** Sets (or with null removes) the handler that answers the peer's requests. */
  onRequest(handler: RequestHandler | null): this {
    if (handler !== null && typeof handler !== 'function') throw new TypeError('onRequest needs a function or null')
    this.#onRequest = handler
    return this
  }

  /**
   * The next received value, for callers that do not listen to 'message' (values go to
   * listeners when there are any, else to a queue; a listener added later gets the queue
   * first). Rejects with the connection's error, or TransportError('CLOSED') after a clean
   * close once the queue is empty; with TransportError('TIMEOUT') after options.timeout ms
   * and with the signal's reason when options.signal aborts, and then the message it would
   * have had goes to the next receive.
   */
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

  /** Resolves when every message sent so far has been written to the socket. */
  flushed(): Promise<void> {
    return this.#sender.flushed()
  }

  /**
   * Closes cleanly: messages already sent are written first (and the peer has read those whose
   * buffers went through files, see sameHost), then the close handshake runs. Resolves with how
   * the connection ended.
   */
  async close(code: number = CLOSE.normal, reason = ''): Promise<CloseInfo> {
    if (!this.#closing && this.#closeInfo === null) {
      this.#closing = true
      try {
        await this.#sender.flushed()
        // buffers sent through files: the peer must have read them before they can go
        await this.#sameHost?.drained()
      } catch {
        // the connection failed meanwhile; closing below is then a no-op
      }
      this.ws.close(code, closeReason(reason))
    }
    return this.closed
  }

  /** Drops the connection at once, without a close handshake. */
  terminate(): void {
    this.ws.terminate()
  }

  /** The handshake is done: the subprotocol it selected fixes the version of every message, both ways. */
  #opened(): void {
    this.#version = versionOfSubprotocol(this.ws.protocol)
    this.#sender.version = this.#version
    this.#receiver.version = this.#version
    if (this.#version >= 3) this.#startSameHost()
    this.#limitNextFrame()
    this.#heartbeat.start()
  }

  /**
   * Sets ws's maxPayload for the frame expected next: the header's limit between messages,
   * ws's own maxPayload (from the limits) inside one. ws then refuses an oversized frame in
   * header position from its length, before it buffers a byte of it (close code 1009):
   * otherwise a peer could make ws hold a frame of the largest size any frame may have before
   * a header was checked or a MAC could fail. ws has no public setter; its receiver reads
   * `_maxPayload` afresh at each frame. Without that field, maxPayload still bounds every frame.
   */
  #limitNextFrame(): void {
    const receiver = (this.ws as unknown as { _receiver?: { _maxPayload?: unknown } })._receiver
    if (receiver === undefined || receiver === null || typeof receiver._maxPayload !== 'number') return
    if (this.#wsMaxPayload < 0) this.#wsMaxPayload = receiver._maxPayload
    const next = this.#receiver.nextFrameLimit()
    // ws's 0 means no limit
    this.#frameLimit = next === null || (this.#wsMaxPayload > 0 && this.#wsMaxPayload < next) ? this.#wsMaxPayload : next
    receiver._maxPayload = this.#frameLimit
  }

  /**
   * ws answers each ping with a pong, and cuts the connection (without a close frame) when more
   * than maxPendingAutoPongs (60 by default) of them are unwritten: a peer that floods pings
   * and does not read. ws says nothing of why; without this the cut would read as if the peer
   * had closed (1006). ws keeps the counts private; without them, that is what it reads as.
   */
  #checkPingFlood(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.#closing) return
    const { _pendingAutoPongs: pending, _maxPendingAutoPongs: max } = this.ws as unknown as { _pendingAutoPongs?: unknown; _maxPendingAutoPongs?: unknown }
    if (typeof pending === 'number' && typeof max === 'number' && max > 0 && pending >= max) {
      this.#fail(new TransportError('LIMIT', `the peer sent pings faster than it read the answers (${pending} pongs unwritten, ws's maxPendingAutoPongs): this side cut the connection`))
    }
  }

  #refuseSend(): Error | null {
    if (this.#error) return this.#error
    if (this.#closing || this.#closeInfo) return new TransportError('CLOSED', 'the connection is closing or closed')
    const state = this.ws.readyState
    if (state === WebSocket.CONNECTING) return new TransportError('CLOSED', 'the connection is not open yet')
    // CLOSING before our close handler ran: the peer sent a close frame or the socket ended.
    if (state !== WebSocket.OPEN) return new TransportError('CLOSED', 'the connection is closing: the peer closed it or the socket ended')
    return null
  }

  #onFrame(data: Buffer, isBinary: boolean): void {
    if (this.#error !== null) return
    this.#heartbeat.alive()
    let message: ReceivedMessage | null
    try {
      message = this.#receiver.push(data, isBinary)
    } catch (err) {
      this.#fail(err instanceof TransportError ? err : new TransportError('PROTOCOL', String(err), { cause: err }))
      return
    }
    this.#limitNextFrame()
    if (message !== null) this.#dispatch(message)
  }

  #dispatch(m: ReceivedMessage): void {
    const h = m.header
    switch (h.k) {
      case KIND.message: {
        let value: unknown
        try {
          value = decodeValue(m.parts, this.#options.unpickler)
        } catch (err) {
          this.#deliver({ error: asError(err), bytes: 0 })
          return
        }
        this.#deliver({ value, bytes: m.bytes, info: infoOf(h.id, h.x) })
        return
      }
      case KIND.request:
        if (this.#deferredRequests.length > 0 || this.#answering >= this.#options.maxConcurrentRequests) {
          this.#deferredRequests.push(m)
          if (this.#deferredRequests.length === 1) {
            this.#stats.replyPauses++
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
    this.#queuedBytes += item.bytes
    if (!this.#pausedForQueue && this.#queuedBytes > this.#options.receiveHighWaterMark) {
      this.#pausedForQueue = true
      this.#stats.receivePauses++
      this.#updateReading()
    }
  }

  /** Pauses or resumes reading from the socket as the receive queue and the reply backlog require. */
  #updateReading(): void {
    if (this.#pausedForQueue || this.#deferredRequests.length > 0) this.ws.pause()
    else this.ws.resume()
  }

  /**
   * A message that could not be unpickled goes to 'error' listeners and the connection stays
   * open; with none, the connection fails with it (close code 4400), so that it never vanishes.
   */
  #emitMessage(item: Queued): void {
    if (item.error === undefined) this.emit('message', item.value, item.info!)
    else if (this.listenerCount('error') > 0) this.emit('error', item.error)
    else {
      this.#fail(new TransportError('PROTOCOL', `a received message could not be unpickled and no 'error' listener takes it: ${item.error.message}`, { cause: item.error }))
    }
  }

  /** A 'message' listener was added: the queue goes to it first, in order. */
  #flushToListeners(): void {
    while (this.#queue.length > 0 && this.listenerCount('message') > 0) this.#emitMessage(this.#shift()!)
  }

  #shift(): Queued | undefined {
    const item = this.#queue.shift()
    if (item !== undefined) {
      this.#queuedBytes -= item.bytes
      if (this.#pausedForQueue && this.#queuedBytes <= this.#options.receiveHighWaterMark) {
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
      const value = decodeValue(m.parts, this.#options.unpickler)
      if (this.#onRequest === null) throw new Error('no request handler on this side')
      reply = await this.#onRequest(value, infoOf(id, x))
    } catch (err) {
      failure = asError(err)
    }
    if (this.#refuseSend()) return
    // Framed while the pickler lends its output (encodeValueWith), as send() does.
    let sent: Promise<void> | null = null
    try {
      if (failure === null) sent = encodeValueWith(reply, this.#options.pickler ?? {}, (parts) => this.#sender.send(parts, { kind: KIND.reply, re: id }))
    } catch (err) {
      failure = new Error(`the reply cannot be pickled: ${asError(err).message}`)
    }
    if (failure !== null) {
      // Strings whatever the handler threw, so that the error reply always pickles.
      const error = new Map([['type', safeString(failure.name, 'Error')], ['message', safeString(failure.message, '')]])
      try {
        sent = encodeValueWith(error, {}, (parts) => this.#sender.send(parts, { kind: KIND.error, re: id }))
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
    while (this.#deferredRequests.length > 0 && this.#answering < this.#options.maxConcurrentRequests) {
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
    this.#sender.close(err ?? new TransportError('CLOSED', 'the connection is closed'))
    this.#sameHost?.close()
    for (const taker of this.#takers.splice(0)) taker(err ?? { done: true, value: undefined })
  }

  /** Fails the connection: everything waiting gets `err`, and the peer gets the close code for it. */
  #fail(err: TransportError): void {
    if (this.#error !== null || this.#closeInfo !== null) return
    this.#error = err
    this.#heartbeat.stop()
    this.#settleAll(err)
    if (this.listenerCount('error') > 0) this.emit('error', err)
    const ws = this.ws
    if (ws.readyState === WebSocket.OPEN) ws.close(closeCodeFor(err, err instanceof VersionMismatch), closeReason(err.message))
    if (err.code === 'TIMEOUT') ws.terminate()
  }

  #onClose(code: number, reason: string): void {
    this.#heartbeat.stop()
    if (this.#error === null) {
      let err: TransportError | null = null
      if (this.#receiver.inMessage) {
        err = new TransportError('CLOSED', `the connection closed (${code}${reason ? ` ${reason}` : ''}) ${this.#receiver.progress()}: the message is lost`)
      } else if (!CLEAN_CLOSE_CODES.has(code)) {
        err = errorForCloseCode(code, reason)
      } else if (this.#sender.unwritten > 0 || this.#sender.queued > 0) {
        const n = this.#sender.unwritten + this.#sender.queued
        err = new TransportError('CLOSED', `the peer closed the connection (${code}${reason ? ` ${reason}` : ''}) before ${n} sent message${n === 1 ? ' was' : 's were'} written`)
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

/** String(value) (a Symbol too), or the fallback when even that throws (an object whose toString throws). */
function safeString(value: unknown, fallback: string): string {
  try {
    return String(value)
  } catch {
    return fallback
  }
}
