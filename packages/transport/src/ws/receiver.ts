/**
 * Reassembles messages from WebSocket frames, as an explicit state machine:
 *
 *   HEADER --header--> PICKLE --pickle--> BUFFER (once per buffer) --> [MAC] --> HEADER
 *
 * A version 2 header that carries the pickle (`pk`) goes straight on to the buffers, the MAC
 * or, for a message of one frame, the end of the message. On version 3 a buffer may come in
 * several frames (chunks): the first chunk shorter than the buffer allocates one ArrayBuffer of
 * the buffer's announced size (already checked against the limits) and every chunk is copied
 * into place. A version 3 text frame `cancel <id>` ends the message in progress: it is dropped.
 *
 * Every frame is checked against what the header announced before it is kept; the header is
 * checked against the limits before any frame of the message arrives. A violation throws a
 * TransportError and the message is dropped whole: nothing partial ever leaves this file.
 */
import { TransportError, shown } from '../errors.js'
import type { MessageHeader } from './wire.js'
import type { Limits } from '../limits.js'
import type { BufferPart, MessageParts } from '../message.js'
import { alignedView } from './alignment.js'
import { MAC_BYTES, type MacFactory, type MessageMac, type Role } from './mac.js'
import { ALIGNMENTS, AUTH_SCHEME, EXTRA, KIND, KINDS } from './constants.js'
import type { WebSocketStats } from './stats.js'
import { MAX_HEADER_BYTES, VersionMismatch, decodeWireHeader, parseControlFrame } from './wire.js'
import { isSameHostFrame, placesOf, type BufferPlace, type SameHostReader } from './same-host-frames.js'
import type { Progress } from './sender.js'
import type { RecycledBuffers } from './recycle.js'

/** A complete message: its header and parts, and how many bytes its frames held. */
export interface ReceivedMessage {
  header: MessageHeader
  parts: MessageParts
  bytes: number
  /**
   * Set when the message's MAC is checked asynchronously (WebCrypto): it resolves once the MAC
   * matched and rejects with TransportError AUTH when it did not. Deliver the message only
   * after it resolves. Never set with a synchronous MAC (Node).
   */
  verified?: Promise<void>
}

const enum State {
  HEADER,
  PICKLE,
  BUFFER,
  MAC,
}

export { VersionMismatch }

const EMPTY = new Uint8Array(0)

/** The largest Uint8Array Node 20 makes is 2^32 bytes; a larger buffer is a DataView over its ArrayBuffer. */
const MAX_VIEW_BYTES = 2 ** 32 - 1

function alignments(h: MessageHeader): number[] | null {
  const al = h.x?.[EXTRA.alignment]
  if (al === undefined || al === null) return null
  if (!Array.isArray(al) || al.length !== h.b.length || !al.every((a) => ALIGNMENTS.has(a))) {
    throw new TransportError('PROTOCOL', `bad message header: x.al must list 1, 2, 4 or 8 for each of the ${h.b.length} buffers`)
  }
  return al as number[]
}

/**
 * A received buffer's memory as the unpickler takes it: a Uint8Array over it, or, over what one
 * Uint8Array may span, a DataView; nothing (a discarded message's buffer) is an empty part.
 */
function partOf(memory: ArrayBuffer | null): BufferPart {
  return memory === null ? EMPTY : memory.byteLength <= MAX_VIEW_BYTES ? new Uint8Array(memory) : new DataView(memory)
}

const textDecoder = new TextDecoder()

function macFailure(id: number): TransportError {
  return new TransportError('AUTH', `message ${id} failed authentication (HMAC-SHA256): its frames were altered, reordered or signed with another key`)
}

export class MessageReceiver {
  #state = State.HEADER
  #nextId = 1
  #header: MessageHeader | null = null
  #align: number[] | null = null
  #pickle: Uint8Array | null = null
  #buffers: BufferPart[] = []
  #bytes = 0
  #mac: MessageMac | null = null
  #inline = false
  /** The buffer being filled chunk by chunk (null when discarding), and its bytes so far. */
  #partial: ArrayBuffer | null = null
  #filled = 0
  /** Payload bytes of the message so far, and in all. */
  #done = 0
  #total = 0
  /** The current message was discard()ed: its frames are checked and dropped. */
  #discarding = false
  /** Version 3, same host: where the current message's buffers are (null: all come as frames), their bytes read, and whether shm-done is owed. */
  #places: (BufferPlace | null)[] | null = null
  #placedBytes = 0
  #owesDone = false
  /**
   * Version 3: reads buffers that come through files and takes the `shm-*` text frames
   * (same-host.ts on Node, NoSameHost where there are no files). Null: such frames and `x.sm`
   * are protocol errors.
   */
  sameHost: SameHostReader | null = null
  /**
   * Memory the application handed back (PickleSocket.recycle): a buffer read from a file or
   * assembled from chunks fills one of exactly its size when there is one. Null: always new memory.
   */
  recycled: RecycledBuffers | null = null
  /** Called after each payload frame when set (the socket's 'progress' event). */
  onProgress: ((p: Progress) => void) | null = null
  /** Called when the peer cancels the message in progress (its id). */
  onCancel: ((id: number) => void) | null = null
  /** Called when the peer refuses a message this side sends (a refuse frame; its id). */
  onRefuse: ((id: number) => void) | null = null
  /** The connection's protocol version (from the handshake's subprotocol); set before the first frame. */
  version = 1

  /**
   * @param peer which side sends the frames this receiver reads (its MAC label)
   * @param macs makes the MAC of each message (under the shared key); null when messages are not authenticated
   */
  constructor(
    private readonly limits: Limits,
    private readonly macs: MacFactory | null,
    private readonly peer: Role,
    private readonly stats: WebSocketStats,
  ) {}

  /** True between a message's header and its last frame. */
  get inMessage(): boolean {
    return this.#state !== State.HEADER
  }

  /**
   * The largest data frame acceptable next, when it is smaller than what the limits allow any
   * frame: a header's limit between messages, null inside a message (where the header has
   * announced, and the limits have bounded, what comes). The socket hands it to ws before each
   * frame, so that an oversized frame in header position is refused from its length alone,
   * before its bytes are buffered and before anything authenticated the peer.
   */
  nextFrameLimit(): number | null {
    return this.#state === State.HEADER ? MAX_HEADER_BYTES : null
  }

  /** What the next frame is, for error messages: 'a header frame', 'the pickle frame of message 3', ... */
  nextFrameName(): string {
    const id = this.#header?.id
    switch (this.#state) {
      case State.HEADER: return 'a frame in header position'
      case State.PICKLE: return `the pickle frame of message ${id}`
      case State.BUFFER: return this.#filled > 0 ? `a chunk of buffer ${this.#buffers.length} of message ${id}` : `buffer ${this.#buffers.length} of message ${id}`
      case State.MAC: return `the MAC frame of message ${id}`
    }
  }

  /** Where the current message stands, for error messages. */
  progress(): string {
    const h = this.#header
    if (h === null) return 'between messages'
    const first = this.#inline ? 1 : 2
    const frames = first + h.b.length + (this.#mac ? 1 : 0)
    const got = this.#state === State.PICKLE ? 1 : this.#state === State.BUFFER ? first + this.#buffers.length : frames - 1
    return `in message ${h.id} after ${got} of its ${frames} frames`
  }

  /** Takes one WebSocket data frame; returns the message it completes, if it completes one. */
  push(frame: Uint8Array, isBinary: boolean): ReceivedMessage | null {
    if (!isBinary) {
      if (this.version < 3) throw new TransportError('PROTOCOL', `a text frame ${this.progress()}; picklewire sends binary frames only`)
      this.pushText(textDecoder.decode(frame))
      return null
    }
    this.#bytes += frame.byteLength
    this.stats.framesReceived++
    switch (this.#state) {
      case State.HEADER: return this.#onHeader(frame)
      case State.PICKLE: return this.#onPickle(frame)
      case State.BUFFER: return this.#onBuffer(frame)
      case State.MAC: return this.#onMac(frame)
    }
  }

  /** Takes one WebSocket text frame (a version 3 cancel or refuse frame). */
  pushText(text: string): void {
    if (this.version < 3) throw new TransportError('PROTOCOL', `a text frame ${this.progress()}; picklewire sends binary frames only`)
    if (isSameHostFrame(text)) {
      if (this.sameHost === null) throw new TransportError('PROTOCOL', `a same-host frame (${text.slice(0, 20)}...) to a side without a same-host path`)
      this.sameHost.control(text)
      return
    }
    const c = parseControlFrame(text)
    if (c.kind === 'refuse') this.onRefuse?.(c.id)
    else this.#onCancel(c.id)
  }

  /**
   * The id of the message in progress, when it is `id`: its frames from now on are checked and
   * dropped, and nothing of it is delivered. False when that message is not in progress.
   */
  discard(id: number): boolean {
    if (this.#state === State.HEADER || this.#header?.id !== id || this.#discarding) return false
    this.#discarding = true
    this.#partial = null
    this.#buffers = []
    this.#pickle = null
    return true
  }

  #onCancel(id: number): void {
    const h = this.#header
    if (h === null) throw new TransportError('PROTOCOL', `a cancel frame for message ${id} between messages: no message is in progress`)
    if (h.id !== id) throw new TransportError('PROTOCOL', `a cancel frame for message ${id} ${this.progress()}`)
    // A message this side discarded first (the sender heard and stopped) counts as discarded.
    if (this.#discarding) this.stats.messagesDiscarded++
    else this.stats.messagesCancelledByPeer++
    if (this.#owesDone) this.sameHost?.done(id)
    this.#nextId++
    this.#reset()
    this.onCancel?.(id)
  }

  #report(buffer: number, bytes: number, bufferBytes: number, bufferTotal: number): void {
    this.#done += bytes
    if (!this.#discarding) this.onProgress?.({ id: this.#header!.id, bytes: this.#done, total: this.#total, buffer, bufferBytes, bufferTotal })
  }

  #onHeader(frame: Uint8Array): ReceivedMessage | null {
    const h = decodeWireHeader(frame, this.limits, this.version)
    if (!KINDS.has(h.k)) throw new TransportError('PROTOCOL', `message ${h.id} has unknown kind ${shown(h.k)}`)
    if (h.id !== this.#nextId) {
      throw new TransportError('PROTOCOL', `message id ${h.id} out of sequence: expected ${this.#nextId} (a message was lost, repeated or reordered)`)
    }
    if ((h.k === KIND.reply || h.k === KIND.error) && h.re === undefined) {
      throw new TransportError('PROTOCOL', `message ${h.id} of kind '${h.k}' does not name the request it answers (re)`)
    }
    const auth = h.x?.[EXTRA.auth]
    if (auth !== undefined && auth !== AUTH_SCHEME) throw new TransportError('AUTH', `message ${h.id} uses unknown authentication ${shown(auth)}`)
    if (this.macs !== null && auth === undefined) throw new TransportError('AUTH', `message ${h.id} is not authenticated, and this side requires ${AUTH_SCHEME}`)
    if (this.macs === null && auth !== undefined) throw new TransportError('AUTH', `message ${h.id} is authenticated with ${AUTH_SCHEME}, and this side has no key`)
    this.#align = alignments(h)
    this.#places = this.sameHost === null ? placesOf(h, null) : this.sameHost.places(h)
    this.#owesDone = this.#places !== null
    this.#header = h
    this.#done = 0
    this.#total = h.p
    for (const n of h.b) this.#total += n
    if (this.macs !== null) {
      this.#mac = this.macs(this.peer)
      this.#mac.update(frame)
    }
    if (h.pk !== undefined) {
      this.#inline = true
      this.#pickle = new Uint8Array(h.pk.buffer, h.pk.byteOffset, h.pk.byteLength)
      if (this.onProgress !== null) this.#report(-1, h.p, h.p, h.p)
      return this.#next()
    }
    this.#state = State.PICKLE
    return null
  }

  #expectLength(frame: Uint8Array, expected: number, what: string): void {
    if (frame.byteLength !== expected) {
      throw new TransportError('PROTOCOL', `${what} of message ${this.#header!.id} is ${frame.byteLength} bytes; its header announced ${expected} (frames truncated, lost or out of order)`)
    }
  }

  #onPickle(frame: Uint8Array): ReceivedMessage | null {
    this.#expectLength(frame, this.#header!.p, 'the pickle frame')
    this.#mac?.update(frame)
    if (!this.#discarding) this.#pickle = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength)
    if (this.onProgress !== null) this.#report(-1, frame.byteLength, frame.byteLength, frame.byteLength)
    return this.#next()
  }

  #onBuffer(frame: Uint8Array): ReceivedMessage | null {
    const i = this.#buffers.length
    const size = this.#header!.b[i]!
    if (this.version < 3 || (this.#filled === 0 && frame.byteLength === size)) {
      this.#expectLength(frame, size, `buffer ${i}`)
      this.#mac?.update(frame)
      this.#buffers.push(this.#discarding ? EMPTY : alignedView(frame, this.#align?.[i] ?? 1, this.stats))
      if (this.onProgress !== null) this.#report(i, size, size, size)
      return this.#next()
    }
    const n = frame.byteLength
    const id = this.#header!.id
    if (n === 0) throw new TransportError('PROTOCOL', `an empty chunk of buffer ${i} of message ${id}`)
    if (this.#filled + n > size) {
      throw new TransportError('PROTOCOL', `a chunk of ${n} bytes of buffer ${i} of message ${id} goes past its ${size} bytes (${this.#filled} already arrived): frames beyond the announced size`)
    }
    if (this.#filled === 0) {
      this.#mac?.begin(size)
      // One memory of the announced size (checked against the limits with the header): an
      // ArrayBuffer, not a Buffer, so that it may pass 4 GiB; fresh, so aligned for any element.
      if (!this.#discarding) this.#partial = this.#memory(size)
    }
    this.#mac?.data(frame)
    // A view per chunk: Node 20 makes no Uint8Array over more than 4 GiB, but one at any offset.
    if (this.#partial !== null) new Uint8Array(this.#partial, this.#filled, n).set(frame)
    this.#filled += n
    if (this.onProgress !== null) this.#report(i, n, this.#filled, size)
    if (this.#filled < size) return null
    this.#buffers.push(partOf(this.#partial))
    this.#partial = null
    this.#filled = 0
    return this.#next()
  }

  #onMac(frame: Uint8Array): ReceivedMessage | null {
    const id = this.#header!.id
    const ok = frame.byteLength === MAC_BYTES && this.#mac!.matches(frame)
    if (ok === true) return this.#complete()
    if (ok === false) throw macFailure(id)
    // Checked asynchronously: the message completes now (the next frames are the next
    // message's) and is delivered once its MAC has matched.
    const message = this.#complete()
    const verified = ok.then((good) => {
      if (!good) throw macFailure(id)
    })
    if (message === null) verified.catch(() => {})
    else message.verified = verified
    return message
  }

  /** After the pickle or a buffer: the next buffer, the MAC, or the end of the message. */
  #next(): ReceivedMessage | null {
    const places = this.#places
    if (places !== null) while (this.#buffers.length < places.length && places[this.#buffers.length] !== null) this.#readPlaced()
    if (this.#buffers.length < this.#header!.b.length) {
      this.#state = State.BUFFER
      return null
    }
    if (this.#mac !== null) {
      this.#state = State.MAC
      return null
    }
    return this.#complete()
  }

  /**
   * Reads the next buffer from the file its place names, into one new memory of its announced
   * size (a discarded message's too, when a MAC needs its bytes), and tells the peer once the
   * message's last such buffer is read.
   */
  #readPlaced(): void {
    const i = this.#buffers.length
    const h = this.#header!
    const size = h.b[i]!
    const mac = this.#mac
    mac?.begin(size)
    let filled = 0
    const memory = this.#discarding && mac === null ? null : this.sameHost!.read(this.#places![i]!, size, `buffer ${i} of message ${h.id}`, this.#memory(size), (piece) => {
      mac?.data(piece)
      filled += piece.byteLength
      if (this.onProgress !== null) this.#report(i, piece.byteLength, filled, size)
    })
    this.#placedBytes += size
    this.#buffers.push(partOf(this.#discarding ? null : memory))
    if (this.#places!.slice(i + 1).every((p) => p === null)) {
      this.#owesDone = false
      this.sameHost!.done(h.id)
    }
  }

  /** Memory for a buffer of `size` bytes: a recycled ArrayBuffer of that size, else a new one. */
  #memory(size: number): ArrayBuffer {
    return this.recycled?.take(size) ?? new ArrayBuffer(size)
  }

  #complete(): ReceivedMessage | null {
    const header = this.#header!
    const message: ReceivedMessage = {
      header,
      parts: { pickle: this.#pickle!, buffers: this.#buffers, readonly: header.ro },
      // what it holds in memory (a receive queue counts it), files' bytes too
      bytes: this.#bytes + this.#placedBytes,
    }
    const frameBytes = this.#bytes
    const discarded = this.#discarding
    this.#nextId++
    this.#reset()
    if (discarded) {
      this.stats.messagesDiscarded++
      return null
    }
    this.stats.messagesReceived++
    this.stats.bytesReceived += frameBytes
    return message
  }

  #reset(): void {
    this.#state = State.HEADER
    this.#header = null
    this.#align = null
    this.#pickle = null
    this.#buffers = []
    this.#bytes = 0
    this.#mac = null
    this.#inline = false
    this.#partial = null
    this.#filled = 0
    this.#discarding = false
    this.#places = null
    this.#placedBytes = 0
    this.#owesDone = false
  }
}
