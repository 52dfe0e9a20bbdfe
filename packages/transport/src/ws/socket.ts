/**
 * PickleSocket: one picklewire connection over a ws WebSocket, the same object on the client
 * and the server side. It sends values (send, request), delivers received values in order
 * ('message' events, receive(), async iteration), answers requests (onRequest), and fails the
 * whole connection, with a documented close code, on the first frame that breaks the protocol.
 */
import { EventEmitter } from 'node:events'
import { WebSocket } from 'ws'
import { TransportError } from '../errors.js'
import { nodeMacs, type Role } from './auth.js'
import { CLOSE, closeCodeFor, closeReason } from './constants.js'
import { Heartbeat } from './heartbeat.js'
import type { WaitOptions } from '../waiting.js'
import { resolveOptions, type PickleSocketOptions, type RequestHandler, type ResolvedOptions } from './options.js'
import { MessageReceiver, VersionMismatch } from './receiver.js'
import { MessageSender } from './sender.js'
import { SocketCore, type CloseInfo, type PickleSocketEvents, type ProgressInfo, type SocketLink } from './socket-core.js'
import { newStats, type WebSocketStats } from './stats.js'
import { SameHostLink, sameHostAvailable } from './same-host.js'
import { NoSameHost } from './same-host-frames.js'
import { RecycledBuffers, recyclableMemory } from './recycle.js'
import { versionOfSubprotocol } from './wire.js'

export type { CloseInfo, MessageInfo, ProgressInfo } from './socket-core.js'

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

export class PickleSocket extends EventEmitter<PickleSocketEvents> implements AsyncIterable<unknown> {
  readonly #stats: WebSocketStats = newStats()
  /** Resolves (never rejects) when the connection has closed, cleanly or not. */
  readonly closed: Promise<CloseInfo>

  readonly #options: ResolvedOptions
  readonly #sender: MessageSender
  readonly #receiver: MessageReceiver
  readonly #heartbeat: Heartbeat
  /** Sending, delivering, answering and settling: what the page's PickleSocket does too. */
  readonly #core: SocketCore
  /** The size limit ws applies to the next data frame (see #limitNextFrame). */
  #frameLimit = 0
  /** ws's own maxPayload, from its options (-1 until read). */
  #wsMaxPayload = -1
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
    const { key, limits, highWaterMark, heartbeatInterval, heartbeatTimeout } = this.#options
    ws.binaryType = 'nodebuffer'
    const macs = nodeMacs(key)
    this.#sender = new MessageSender(ws, role, macs, highWaterMark, this.#stats, (err) => {
      this.#core.fail(new TransportError('CLOSED', `the connection was lost while writing: ${err.message}`, { cause: err }))
    }, this.#options.chunkBytes)
    this.#receiver = new MessageReceiver(limits, macs, role === 'client' ? 'server' : 'client', this.#stats)
    if (this.#options.recycleBytes > 0) this.#receiver.recycled = new RecycledBuffers(this.#options.recycleBytes, this.#stats)
    this.#heartbeat = new Heartbeat(ws, heartbeatInterval, heartbeatTimeout, () => {
      this.#core.fail(new TransportError('TIMEOUT', `no answer to a heartbeat ping within ${heartbeatTimeout} ms`))
    })
    this.#core = new SocketCore(this.#link(), this.#options, this.#stats, this.#sender, this.#receiver)
    this.closed = this.#core.closed
    ;(this as EventEmitter).on('newListener', (event: string | symbol) => this.#core.listenerAdded(event))
    ;(this as EventEmitter).on('removeListener', (event: string | symbol) => this.#core.listenerRemoved(event))
    ws.on('message', (data, isBinary) => this.#onFrame(data as Buffer, isBinary))
    ws.on('pong', () => this.#heartbeat.alive())
    ws.on('ping', () => {
      this.#heartbeat.alive()
      this.#checkPingFlood()
    })
    ws.on('error', (err) => this.#core.fail(fromWsError(err, this.#receiver.nextFrameName(), this.#frameLimit)))
    ws.on('close', (code, reason) => {
      this.#heartbeat.stop()
      this.#core.socketClosed(code, reason.toString())
    })
    if (ws.readyState === WebSocket.OPEN) this.#opened()
    else ws.once('open', () => this.#opened())
  }

  /** What the core needs of this socket: ws's WebSocket, node:events, the heartbeat and the same-host path. */
  #link(): SocketLink {
    const ws = this.ws
    return {
      peerName: 'peer',
      emit: this.emit.bind(this) as SocketLink['emit'],
      listenerCount: (event) => this.listenerCount(event),
      socketRefusal: () => {
        const state = ws.readyState
        if (state === WebSocket.CONNECTING) return new TransportError('CLOSED', 'the connection is not open yet')
        // CLOSING before our close handler ran: the peer sent a close frame or the socket ended.
        if (state !== WebSocket.OPEN) return new TransportError('CLOSED', 'the connection is closing: the peer closed it or the socket ended')
        return null
      },
      sendText: (text) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(text, { binary: false })
      },
      pauseReading: (paused) => (paused ? ws.pause() : ws.resume()),
      failed: (err) => {
        this.#heartbeat.stop()
        if (ws.readyState === WebSocket.OPEN) ws.close(closeCodeFor(err, err instanceof VersionMismatch), closeReason(err.message))
        if (err.code === 'TIMEOUT') ws.terminate()
      },
      closeSocket: (code, reason) => ws.close(code, closeReason(reason)),
      // buffers sent through files: the peer must have read them before they can go
      drained: () => this.#sameHost?.drained(),
      released: () => {
        this.#sameHost?.close()
        this.#receiver.recycled?.clear()
      },
    }
  }

  /**
   * The protocol version the handshake selected (docs/wire-protocol.md): 3 or 2 when the
   * subprotocol is picklewire.v3 or picklewire.v2, 1 otherwise (picklewire.v1, or none). 0
   * until the connection is open.
   */
  get protocolVersion(): number {
    return this.#core.version
  }

  /**
   * Drops the message with this id while it arrives (from a 'progress' listener, say): nothing
   * of it is delivered, and the next message arrives as usual. On version 3 a refuse frame
   * tells the sender, which stops sending it (its send rejects with TransportError REMOTE);
   * frames already on their way are read, checked and dropped. True when that message was in
   * progress, false when it is not (not begun, already delivered, or another one).
   */
  discard(id: number): boolean {
    return this.#core.discard(id)
  }

  /**
   * Hands back memory of a received value that the application no longer uses (an ArrayBuffer,
   * or a typed array, Buffer or DataView over all of one), for streams of same-size tensors: a
   * later buffer of exactly its size that arrives through a same-host file or in chunks is
   * written into it instead of into new memory, which spares the page faults of fresh memory.
   * After this call the application must not use that memory or any view of it: a later message
   * overwrites it. Keeps at most recycleBytes (the oldest dropped beyond); memory of another size
   * is never used. TypeError for a SharedArrayBuffer or anything else that is not an ArrayBuffer
   * or a view of one; RangeError for a view that covers only part of its ArrayBuffer (a buffer
   * that came as one frame is such a view of ws's memory, and is not recyclable).
   */
  recycle(memory: ArrayBuffer | ArrayBufferView): void {
    const whole = recyclableMemory(memory)
    if (!this.#core.ended) this.#receiver.recycled?.add(whole)
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
    return this.#core.error
  }

  /**
   * True until the connection closes, fails, or close() is called, or the peer starts closing
   * it; sends are refused from then on.
   */
  get open(): boolean {
    return !this.#core.closingOrClosed && this.#core.error === null && this.ws.readyState <= WebSocket.OPEN
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
    return this.#core.send(value, options)
  }

  /**
   * Sends a value as a request and resolves with the peer's reply. Rejects with
   * TransportError('REMOTE') when the peer's handler failed, 'TIMEOUT' after the timeout,
   * the signal's reason when it aborts, 'CLOSED' (or the connection's error) when the
   * connection ends first. A request that gives up before it was written is not sent; a reply
   * that comes after it gave up is dropped.
   */
  request<T = unknown>(value: unknown, options: RequestOptions = {}): Promise<T> {
    return this.#core.request<T>(value, options)
  }

  /** Sets (or with null removes) the handler that answers the peer's requests. */
  onRequest(handler: RequestHandler | null): this {
    this.#core.setRequestHandler(handler)
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
  receive<T = unknown>(options: WaitOptions = {}): Promise<T> {
    return this.#core.receive<T>(options)
  }

  /** The received values in order; ends after a clean close, throws the error of an unclean one. */
  [Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    return this.#core.values()
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
  close(code: number = CLOSE.normal, reason = ''): Promise<CloseInfo> {
    return this.#core.close(code, reason)
  }

  /** Drops the connection at once, without a close handshake. */
  terminate(): void {
    this.ws.terminate()
  }

  /** The handshake is done: the subprotocol it selected fixes the version of every message, both ways. */
  #opened(): void {
    const version = versionOfSubprotocol(this.ws.protocol)
    this.#core.version = version
    this.#sender.version = version
    this.#receiver.version = version
    if (version >= 3) this.#startSameHost()
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
    if (this.ws.readyState === WebSocket.OPEN || this.#core.closingOrClosed) return
    const { _pendingAutoPongs: pending, _maxPendingAutoPongs: max } = this.ws as unknown as { _pendingAutoPongs?: unknown; _maxPendingAutoPongs?: unknown }
    if (typeof pending === 'number' && typeof max === 'number' && max > 0 && pending >= max) {
      this.#core.fail(new TransportError('LIMIT', `the peer sent pings faster than it read the answers (${pending} pongs unwritten, ws's maxPendingAutoPongs): this side cut the connection`))
    }
  }

  #onFrame(data: Buffer, isBinary: boolean): void {
    if (this.#core.error !== null) return
    this.#heartbeat.alive()
    let message
    try {
      message = this.#receiver.push(data, isBinary)
    } catch (err) {
      this.#core.failOnFrame(err)
      return
    }
    this.#limitNextFrame()
    if (message !== null) this.#core.dispatch(message)
  }
}
