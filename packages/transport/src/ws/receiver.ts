/**
 * Reassembles messages from WebSocket frames, as an explicit state machine:
 *
 *   HEADER --header--> PICKLE --pickle--> BUFFER (once per buffer) --> [MAC] --> HEADER
 *
 * A version 2 header that carries the pickle (`pk`) goes straight on to the buffers, the MAC
 * or, for a message of one frame, the end of the message.
 *
 * Every frame is checked against what the header announced before it is kept; the header is
 * checked against the limits before any frame of the message arrives. A violation throws a
 * TransportError and the message is dropped whole: nothing partial ever leaves this file.
 */
import { TransportError, shown } from '../errors.js'
import type { MessageHeader } from './wire.js'
import type { Limits } from '../limits.js'
import type { MessageParts } from '../message.js'
import { alignedView } from './alignment.js'
import { FrameMac, MAC_BYTES, type Role } from './auth.js'
import { ALIGNMENTS, AUTH_SCHEME, EXTRA, KIND, KINDS } from './constants.js'
import type { WebSocketStats } from './stats.js'
import { MAX_HEADER_BYTES, VersionMismatch, decodeWireHeader } from './wire.js'

/** A complete message: its header and parts, and how many bytes its frames held. */
export interface ReceivedMessage {
  header: MessageHeader
  parts: MessageParts
  bytes: number
}

const enum State {
  HEADER,
  PICKLE,
  BUFFER,
  MAC,
}

export { VersionMismatch }

function alignments(h: MessageHeader): number[] | null {
  const al = h.x?.[EXTRA.alignment]
  if (al === undefined || al === null) return null
  if (!Array.isArray(al) || al.length !== h.b.length || !al.every((a) => ALIGNMENTS.has(a))) {
    throw new TransportError('PROTOCOL', `bad message header: x.al must list 1, 2, 4 or 8 for each of the ${h.b.length} buffers`)
  }
  return al as number[]
}

export class MessageReceiver {
  #state = State.HEADER
  #nextId = 1
  #header: MessageHeader | null = null
  #align: number[] | null = null
  #pickle: Uint8Array | null = null
  #buffers: Uint8Array[] = []
  #bytes = 0
  #mac: FrameMac | null = null
  #inline = false
  /** The connection's protocol version (from the handshake's subprotocol); set before the first frame. */
  version = 1

  /**
   * @param peer which side sends the frames this receiver reads (its MAC label)
   * @param key the shared HMAC key; null when messages are not authenticated
   */
  constructor(
    private readonly limits: Limits,
    private readonly key: Uint8Array | null,
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
      case State.BUFFER: return `buffer ${this.#buffers.length} of message ${id}`
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
    if (!isBinary) throw new TransportError('PROTOCOL', `a text frame ${this.progress()}; picklewire sends binary frames only`)
    this.#bytes += frame.byteLength
    this.stats.framesReceived++
    switch (this.#state) {
      case State.HEADER: return this.#onHeader(frame)
      case State.PICKLE: return this.#onPickle(frame)
      case State.BUFFER: return this.#onBuffer(frame)
      case State.MAC: return this.#onMac(frame)
    }
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
    if (this.key !== null && auth === undefined) throw new TransportError('AUTH', `message ${h.id} is not authenticated, and this side requires ${AUTH_SCHEME}`)
    if (this.key === null && auth !== undefined) throw new TransportError('AUTH', `message ${h.id} is authenticated with ${AUTH_SCHEME}, and this side has no key`)
    this.#align = alignments(h)
    this.#header = h
    if (this.key !== null) {
      this.#mac = new FrameMac(this.key, this.peer)
      this.#mac.update(frame)
    }
    if (h.pk !== undefined) {
      this.#inline = true
      this.#pickle = new Uint8Array(h.pk.buffer, h.pk.byteOffset, h.pk.byteLength)
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
    this.#pickle = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength)
    return this.#next()
  }

  #onBuffer(frame: Uint8Array): ReceivedMessage | null {
    const i = this.#buffers.length
    this.#expectLength(frame, this.#header!.b[i]!, `buffer ${i}`)
    this.#mac?.update(frame)
    this.#buffers.push(alignedView(frame, this.#align?.[i] ?? 1, this.stats))
    return this.#next()
  }

  #onMac(frame: Uint8Array): ReceivedMessage | null {
    const id = this.#header!.id
    if (frame.byteLength !== MAC_BYTES || !this.#mac!.matches(frame)) {
      throw new TransportError('AUTH', `message ${id} failed authentication (HMAC-SHA256): its frames were altered, reordered or signed with another key`)
    }
    return this.#complete()
  }

  /** After the pickle or a buffer: the next buffer, the MAC, or the end of the message. */
  #next(): ReceivedMessage | null {
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

  #complete(): ReceivedMessage {
    const header = this.#header!
    const message: ReceivedMessage = {
      header,
      parts: { pickle: this.#pickle!, buffers: this.#buffers, readonly: header.ro },
      bytes: this.#bytes,
    }
    this.#nextId++
    this.#state = State.HEADER
    this.#header = null
    this.#align = null
    this.#pickle = null
    this.#buffers = []
    this.#bytes = 0
    this.#mac = null
    this.#inline = false
    this.stats.messagesReceived++
    this.stats.bytesReceived += message.bytes
    return message
  }
}
