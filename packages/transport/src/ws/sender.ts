/**
 * Writes messages as frames: header, pickle, one frame per out-of-band buffer, then the MAC
 * when messages are authenticated. On a version 2 connection a small pickle rides inside the
 * header frame (`pk`), so that a message without buffers is one frame. All frames of a
 * message go to ws in one synchronous run, so no other message's frames can come between
 * them. Backpressure: while more than the high-water mark of bytes handed to ws is not yet
 * written to the socket, new messages wait in a queue, in order, and their send() promises
 * with them.
 *
 * A message counts as sent (stats.messagesSent) only once ws reports it written to the
 * socket. When a write fails (the peer is gone), the sender closes at once: queued messages
 * are rejected, later sends fail, and every message that had been handed to ws but was not
 * written is counted in stats.messagesNotWritten instead.
 */
import { bytesOfPart, type MessageParts } from '../message.js'
import { naturalAlignment } from './alignment.js'
import type { MacFactory, Role } from './mac.js'
import { AUTH_SCHEME, EXTRA } from './constants.js'
import type { SameHostWriter } from './same-host-frames.js'
import type { WebSocketStats } from './stats.js'
import { waitFor, type Settle, type WaitOptions } from '../waiting.js'
import { TransportError } from '../errors.js'
import { MAX_HEADER_BYTES, MAX_INLINE_PICKLE_BYTES, cancelFrame, encodeWireHeader, type WireHeader } from './wire.js'

/**
 * How far a message has gone: bytes of its pickle and buffers done and in all, and of the
 * buffer the last frame belonged to (`buffer` -1 for the pickle). Sent: written to the socket;
 * received: arrived and checked.
 */
export interface Progress {
  id: number
  bytes: number
  total: number
  buffer: number
  bufferBytes: number
  bufferTotal: number
}

/**
 * Where the sender writes frames: a ws WebSocket on Node, a wrapper of the browser's WebSocket
 * in a page. `cb` is called once the frame is written to the socket (with an error when it
 * cannot be), in the order the frames were handed over.
 */
export interface FrameSink {
  send(data: Uint8Array | string, options: { binary: boolean }, cb?: (err?: Error | null) => void): void
}

/** What a message says besides its parts. */
export interface Envelope {
  kind: string
  /** The request answered (replies and errors). */
  re?: number
  /** Extras of the caller's own, merged into the header's `x`. */
  x?: Record<string, unknown>
  /** Called with the message's id once it is framed (a request registers for its reply then). */
  onId?: (id: number) => void
  /** Called as the message's frames are written to the socket (at most once per frame). */
  onProgress?: (p: Progress) => void
  /** Aborts the message: while it waits, or on version 3 between two of its frames (a cancel frame follows). */
  signal?: AbortSignal
}

/** A message's frames and, for each, what it carries of the payload: buffer index (-1 the pickle, -2 nothing) and bytes. */
interface Framed {
  id: number
  frames: Uint8Array[]
  /** Per frame: the buffer it belongs to (-1 the pickle, -2 nothing: the header without pk, the MAC). */
  part: number[]
  total: number
  /** The buffers' bytes (total less the pickle). */
  bufferTotal: number
  lengths: number[]
  /** The buffers that went through a file (same host): no frame carries them. */
  placed: number[]
  /** The MAC frame while it is being computed (an asynchronous MAC): the last frame waits for it. */
  macFrame?: Promise<Uint8Array> | undefined
}

/** The message being written frame by frame (progress, chunks, cancellation). */
interface Stream {
  framed: Framed
  next: number
  /** Payload bytes written so far, of the message and per buffer. */
  done: number
  bufferDone: number[]
  onProgress: ((p: Progress) => void) | undefined
  signal: AbortSignal | undefined
  onAbort: () => void
  settle: { resolve: () => void; reject: (err: unknown) => void }
  ended: boolean
}


/**
 * A message waiting for the high-water mark. It is framed only when its turn comes, so that a
 * send that gives up in line (its timeout, its signal) leaves no gap in the ids the peer checks.
 */
interface Pending {
  parts: MessageParts
  envelope: Envelope
  settle: Settle<void>
}

interface Corkable {
  cork(): void
  uncork(): void
}

/** How many bytes a corked batch of messages may hold before it is written. */
const CORK_BYTES = 64 * 1024

/** Frames handed to ws and not yet written: their bytes, whether they end a message, and what to call once written. */
interface Unwritten {
  bytes: number
  frames: number
  end: boolean
  onDone: (() => void) | undefined
}

const EMPTY = new Uint8Array(0)

/** ws.send's options for every frame (ws copies them). */
const BINARY = Object.freeze({ binary: true })

export class MessageSender {
  #nextId = 1
  #queue: Pending[] = []
  #closedWith: Error | null = null
  #flushWaiters: (() => void)[] = []
  /** The socket while this sender has it corked, and the bytes written since. */
  #corked: Corkable | null = null
  #corkedBytes = 0
  /** Byte counts of the messages handed to ws and not yet written, in order (ws calls back in write order). */
  readonly #unwritten: Unwritten[] = []
  readonly #onWritten = (err?: Error | null): void => this.#written(this.#unwritten.shift()!, err ?? null)
  readonly #uncorkNow = (): void => this.#uncork()
  /** The message being written frame by frame, if any: other messages wait behind it. */
  #stream: Stream | null = null
  /** The connection's protocol version (from the handshake's subprotocol); set before the first send. */
  version = 1
  /** Version 3, same host: writes large buffers into files and names their places (same-host.ts on Node). */
  sameHost: SameHostWriter | null = null

  constructor(
    private readonly ws: FrameSink,
    private readonly self: Role,
    /** Makes each message's MAC (under the shared key); null when messages are not authenticated. */
    private readonly macs: MacFactory | null,
    private readonly highWaterMark: number,
    private readonly stats: WebSocketStats,
    /** Called once, with the first failed write: the connection is lost. */
    private readonly onWriteError: (err: Error) => void,
    /** Version 3: buffers larger than this travel as several frames. */
    private readonly chunkBytes: number = 2 ** 20,
  ) {}

  /** The id the next message will carry (request() registers it before sending). */
  get nextId(): number {
    return this.#nextId
  }

  /**
   * Writes a message now when the buffered bytes allow, else queues it (ids follow the order
   * of writing). Resolves once ws has it; ws writes out-of-band buffers from the caller's
   * memory, so that memory must not change until flushed() resolves. A queued message gives
   * up, and leaves the queue unsent, when `wait`'s timeout passes or its signal aborts.
   */
  send(parts: MessageParts, envelope: Envelope, wait: WaitOptions = {}): Promise<void> {
    if (this.#closedWith) return Promise.reject(this.#closedWith)
    if (envelope.signal?.aborted) return Promise.reject(envelope.signal.reason)
    if (this.#queue.length === 0 && this.#stream === null && this.stats.bufferedBytes <= this.highWaterMark) {
      const framed = this.#frame(parts, envelope)
      if (framed.macFrame !== undefined || this.#streams(parts, envelope)) return new Promise((resolve, reject) => this.#startStream(framed, envelope, { resolve, reject }))
      this.#write(framed.frames)
      return Promise.resolve()
    }
    this.stats.sendWaits++
    // The queue keeps its own copy of a lent pickle and of the extras.
    const own: MessageParts = parts.transient === true ? { ...parts, pickle: parts.pickle.slice(), transient: false } : parts
    const env: Envelope = envelope.x === undefined ? envelope : { ...envelope, x: { ...envelope.x } }
    return waitFor<void>(`send: waiting while more than ${this.highWaterMark} bytes are buffered`, wait, (settle) => {
      const p: Pending = { parts: own, envelope: env, settle }
      this.#queue.push(p)
      return () => {
        const i = this.#queue.indexOf(p)
        if (i >= 0) this.#queue.splice(i, 1)
      }
    })
  }

  /** Resolves when every message sent so far has been written to the socket. */
  flushed(): Promise<void> {
    if (this.#queue.length === 0 && this.stats.bufferedBytes === 0) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const poll = (): void => {
        if (this.#closedWith) reject(this.#closedWith)
        else if (this.#queue.length === 0 && this.stats.bufferedBytes === 0) resolve()
        else this.#flushWaiters.push(poll)
      }
      poll()
    })
  }

  /** Messages handed to ws and not yet written (or failed). */
  get unwritten(): number {
    let n = 0
    for (const u of this.#unwritten) if (u.end) n++
    return n
  }

  /** Messages waiting for the high-water mark, not yet handed to ws. */
  get queued(): number {
    return this.#queue.length
  }

  /** Fails every queued message; later sends fail at once. */
  close(err: Error): void {
    this.#closedWith ??= err
    const s = this.#stream
    if (s !== null) this.#endStream(s, err)
    for (const p of this.#queue.splice(0)) p.settle.reject(err)
    for (const w of this.#flushWaiters.splice(0)) w()
  }

  /** Whether a message goes out frame by frame: it wants progress, or (version 3) a buffer is over chunkBytes. */
  #streams(parts: MessageParts, envelope: Envelope): boolean {
    if (envelope.onProgress !== undefined) return true
    if (this.version < 3) return false
    for (const b of parts.buffers) if (b.byteLength > this.chunkBytes) return true
    return false
  }

  #frame(parts: MessageParts, envelope: Envelope): Framed {
    const { pickle, buffers } = parts
    // The id is used up only once the frames are built: a header that cannot be encoded (a
    // circular `x`, say) sends nothing and must leave no gap in the ids the peer checks.
    const id = this.#nextId
    const h: WireHeader = { v: this.version, id, k: envelope.kind, p: pickle.byteLength, b: [], ro: parts.readonly }
    if (envelope.re !== undefined) h.re = envelope.re
    let x: Record<string, unknown> | undefined = envelope.x === undefined ? undefined : { ...envelope.x }
    if (buffers.length > 0) {
      const al: number[] = []
      let aligned = false
      for (const b of buffers) {
        h.b.push(b.byteLength)
        const a = naturalAlignment(b)
        if (a > 1) aligned = true
        al.push(a)
      }
      if (aligned) (x ??= {})[EXTRA.alignment] = al
    }
    if (this.macs !== null) (x ??= {})[EXTRA.auth] = AUTH_SCHEME
    const places = this.sameHost !== null && this.version >= 3 && buffers.length > 0 ? this.sameHost.place(id, buffers) : null
    if (places !== null) (x ??= {})[EXTRA.sameHost] = places
    if (x !== undefined) h.x = x
    let header: Uint8Array | null = null
    try {
      if (this.version >= 2 && pickle.byteLength <= MAX_INLINE_PICKLE_BYTES) {
        h.pk = pickle
        header = encodeWireHeader(h)
        if (header.byteLength > MAX_HEADER_BYTES) {
          // large extras: the pickle goes in a frame of its own after all
          header = null
          delete h.pk
        }
      }
      if (header === null) header = encodeWireHeader(h)
    } catch (err) {
      if (places !== null) this.sameHost!.unplace(id)
      throw err
    }
    let frames: Uint8Array[]
    let part: number[]
    if (h.pk !== undefined) {
      frames = [header!]
      part = [-1]
    } else {
      // A lent pickle is copied: ws may write this frame after the pickler has reused its memory.
      const own = parts.transient === true ? pickle.slice() : pickle
      frames = [header!, own]
      part = [-2, -1]
    }
    const mac = this.macs === null ? null : this.macs(this.self)
    if (mac !== null) for (const f of frames) mac.update(f)
    const chunk = this.version >= 3 ? this.chunkBytes : Infinity
    let total = pickle.byteLength
    const placed: number[] = []
    for (let i = 0; i < buffers.length; i++) {
      const b = buffers[i]!
      total += b.byteLength
      if (places?.[i] != null) {
        // In a file: no frame; the MAC covers its bytes as if they were one.
        placed.push(i)
        if (mac !== null) {
          mac.begin(b.byteLength)
          for (let at = 0; at < b.byteLength; at += 2 ** 30) mac.data(new Uint8Array(b.buffer, b.byteOffset + at, Math.min(2 ** 30, b.byteLength - at)))
        }
        continue
      }
      if (b.byteLength <= chunk) {
        const whole = bytesOfPart(b, `WebSocket protocol version ${this.version} (one frame per buffer)`)
        frames.push(whole)
        part.push(i)
        mac?.update(whole)
        continue
      }
      mac?.begin(b.byteLength)
      for (let at = 0; at < b.byteLength; at += chunk) {
        // A window per chunk: the buffer may be a DataView longer than any Uint8Array.
        const piece = new Uint8Array(b.buffer, b.byteOffset + at, Math.min(chunk, b.byteLength - at))
        frames.push(piece)
        part.push(i)
        mac?.data(piece)
      }
    }
    let macFrame: Promise<Uint8Array> | undefined
    if (mac !== null) {
      const digest = mac.digest()
      if (digest instanceof Uint8Array) frames.push(digest)
      else {
        // Signed in one go (WebCrypto): the message's frames go out, its MAC frame when ready.
        frames.push(EMPTY)
        macFrame = digest
      }
      part.push(-2)
    }
    this.#nextId = id + 1
    envelope.onId?.(id)
    return { id, frames, part, total, bufferTotal: total - pickle.byteLength, lengths: h.b, placed, macFrame }
  }

  /** Starts writing a message frame by frame; resolves `settle` once every frame is handed to ws. */
  #startStream(framed: Framed, envelope: Envelope, settle: Stream['settle']): void {
    const s: Stream = {
      framed, next: 0, done: 0, bufferDone: framed.lengths.map(() => 0), onProgress: envelope.onProgress, signal: envelope.signal,
      onAbort: () => this.#abortStream(s), settle, ended: false,
    }
    this.#stream = s
    s.signal?.addEventListener('abort', s.onAbort, { once: true })
    framed.macFrame?.then((mac) => {
      framed.frames[framed.frames.length - 1] = mac
      framed.macFrame = undefined
      if (this.#stream === s) this.#pump()
    }, (err: unknown) => {
      this.#endStream(s, err)
      if (this.#closedWith === null) this.onWriteError(err instanceof Error ? err : new Error(String(err)))
    })
    this.#pump()
  }

  /** Hands the current stream's frames to ws while the buffered bytes allow. */
  #pump(): void {
    const s = this.#stream
    if (s === null) return
    const { frames, part } = s.framed
    const stats = this.stats
    while (s.next < frames.length && stats.bufferedBytes <= this.highWaterMark) {
      if (s.next === frames.length - 1 && s.framed.macFrame !== undefined) return // the MAC is being computed
      const i = s.next++
      const f = frames[i]!
      const last = i === frames.length - 1
      stats.bufferedBytes += f.byteLength
      if (stats.bufferedBytes > stats.maxBufferedBytes) stats.maxBufferedBytes = stats.bufferedBytes
      const p = part[i]!
      const bytes = p === -1 ? s.framed.total - s.framed.bufferTotal : f.byteLength
      const onDone = s.onProgress === undefined || p === -2 ? undefined : (): void => {
        this.#progress(s, p, bytes)
        // buffers that went through files are done once the frame carrying the pickle is
        if (p === -1) for (const b of s.framed.placed) this.#progress(s, b, s.framed.lengths[b]!)
      }
      this.#unwritten.push({ bytes: f.byteLength, frames: 1, end: last, onDone })
      this.ws.send(f, BINARY, this.#onWritten)
    }
    if (s.next === frames.length) this.#endStream(s, null)
  }

  #progress(s: Stream, buffer: number, bytes: number): void {
    if (s.onProgress === undefined || (s.ended && s.next < s.framed.frames.length)) return // cancelled
    s.done += bytes
    let bufferBytes = 0
    let bufferTotal = 0
    if (buffer >= 0) {
      bufferBytes = s.bufferDone[buffer]! + bytes
      s.bufferDone[buffer] = bufferBytes
      bufferTotal = s.framed.lengths[buffer]!
    } else {
      bufferBytes = bufferTotal = bytes
    }
    try {
      s.onProgress({ id: s.framed.id, bytes: s.done, total: s.framed.total, buffer, bufferBytes, bufferTotal })
    } catch {
      // a failing progress callback must not break the connection's bookkeeping
    }
  }

  /**
   * The stream's signal aborted. Version 3: unless every frame is already with ws, a cancel
   * frame follows the frames written so far and the peer drops the message. Earlier versions
   * cannot cancel a message once its header is out: it is finished.
   */
  #abortStream(s: Stream, reason: unknown = s.signal?.reason ?? new Error('aborted')): void {
    if (s.ended || this.#stream !== s || this.version < 3) return
    this.ws.send(cancelFrame(s.framed.id), { binary: false })
    this.stats.messagesCancelled++
    this.#endStream(s, reason)
    this.#drainQueue()
  }

  /**
   * The peer refused message `id` (a version 3 refuse frame): when it is still being sent, the
   * rest is not sent (a cancel frame ends it) and its send rejects with TransportError REMOTE.
   * A refuse for a message already wholly handed to ws changes nothing. A refuse for an id
   * this side has not used yet is a protocol error.
   */
  refused(id: number): void {
    if (id >= this.#nextId || id === 0) throw new TransportError('PROTOCOL', `a refuse frame for message ${id}, which this side has not sent`)
    const s = this.#stream
    if (s !== null && s.framed.id === id) this.#abortStream(s, new TransportError('REMOTE', `the peer refused message ${id} while it was being sent`))
  }

  #endStream(s: Stream, err: unknown): void {
    if (s.ended) return
    s.ended = true
    s.signal?.removeEventListener('abort', s.onAbort)
    if (this.#stream === s) this.#stream = null
    if (err === null) s.settle.resolve()
    else s.settle.reject(err)
  }

  /**
   * Corks the socket while messages are written in one go, so that their frames leave in one
   * writev instead of one system call per frame (a small message is two frames, and the calls
   * cost more than its bytes). The cork comes off after CORK_BYTES, so that the receiver gets
   * bytes while a sender loop is still running, and at the end of the tick in any case. ws has
   * no public cork: its socket is the private `_socket`; without one, frames are written one by one.
   */
  #cork(bytes: number): void {
    const socket = (this.ws as unknown as { _socket?: Partial<Corkable> })._socket
    if (typeof socket?.cork !== 'function' || typeof socket.uncork !== 'function') return
    if (this.#corked === null) {
      socket.cork()
      this.#corked = socket as Corkable
      this.#corkedBytes = 0
      process.nextTick(this.#uncorkNow)
    }
    this.#corkedBytes += bytes
  }

  #uncork(): void {
    const socket = this.#corked
    this.#corked = null
    socket?.uncork()
  }

  #write(frames: Uint8Array[]): void {
    let bytes = 0
    for (const f of frames) bytes += f.byteLength
    this.#cork(bytes)
    const stats = this.stats
    stats.bufferedBytes += bytes
    if (stats.bufferedBytes > stats.maxBufferedBytes) stats.maxBufferedBytes = stats.bufferedBytes
    const last = frames.length - 1
    for (let i = 0; i < last; i++) this.ws.send(frames[i]!, BINARY)
    // ws calls back in write order, so the last frame's callback means the whole message is
    // out; when the connection is not open (any more) it calls back with an error instead.
    this.#unwritten.push({ bytes, frames: frames.length, end: true, onDone: undefined })
    this.ws.send(frames[last]!, BINARY, this.#onWritten)
    if (this.#corkedBytes >= CORK_BYTES) this.#uncork()
  }

  #written(message: Unwritten, err: Error | null): void {
    const stats = this.stats
    stats.bufferedBytes -= message.bytes
    if (err !== null) {
      if (message.end) stats.messagesNotWritten++
      if (this.#closedWith === null) this.onWriteError(err)
      return
    }
    if (message.end) stats.messagesSent++
    stats.bytesSent += message.bytes
    stats.framesSent += message.frames
    message.onDone?.()
    if (this.#stream !== null) this.#pump()
    this.#drainQueue()
    if (this.#flushWaiters.length > 0) for (const w of this.#flushWaiters.splice(0)) w()
  }

  /** Writes queued messages while the high-water mark allows and no message is being streamed. */
  #drainQueue(): void {
    while (this.#queue.length > 0 && this.#stream === null && this.stats.bufferedBytes <= this.highWaterMark && !this.#closedWith) {
      const p = this.#queue.shift()!
      let framed: Framed
      try {
        framed = this.#frame(p.parts, p.envelope)
      } catch (err) {
        p.settle.reject(err)
        continue
      }
      if (framed.macFrame !== undefined || this.#streams(p.parts, p.envelope)) {
        // The wait is over (its timeout no longer applies); the send's promise follows the
        // stream, which the signal may still cancel between frames.
        const streamed = new Promise<void>((resolve, reject) => this.#startStream(framed, p.envelope, { resolve, reject }))
        p.settle.resolve(streamed as unknown as void)
      } else {
        this.#write(framed.frames)
        p.settle.resolve()
      }
    }
  }
}
