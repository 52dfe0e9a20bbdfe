/**
 * How Dask's comms cut messages into frames (distributed/comm/tcp.py and ws.py).
 *
 * tcp://  one message = u64 prefix size, u64 frame count n, n u64 frame lengths, then the
 *         frames back to back; every integer little-endian. Up to 2023.10 the prefix size
 *         counts every byte after it; from 2023.11 (distributed PR 8308) it may count only the
 *         prelude and the first k frames, and the later frames follow it, each as long as its
 *         announced length. The reader accepts both: the prefix must end exactly where one
 *         of the frames ends, and the limits bound the sum of every announced length.
 * ws://   one message = a binary WebSocket message holding the u64 frame count, then one
 *         binary WebSocket message per frame.
 *
 * The readers are explicit state machines that check every announced length against the limits
 * before allocating anything, and hand over whole messages only.
 */
import { optionNames } from '@picklewire/codec/internal'
import { TransportError } from '../errors.js'
import { resolvePositive } from '../limits.js'
import { FRESH_MEMORY, type FrameMemory } from './warm-memory.js'

/** Limits on what a Dask peer may announce. */
export interface DaskLimits {
  /** Largest message (all frames, and the tcp prelude), in bytes. Default 2 GiB. */
  maxMessageBytes: number
  /** Most frames in one message. Default 100,000 (a gather of many keys has 2 or more per key). */
  maxFrames: number
  /** Largest msgpack frame (frame 0 and every sub-header), in bytes. Default 64 MiB. */
  maxHeaderBytes: number
}

export const DEFAULT_DASK_LIMITS: Readonly<DaskLimits> = Object.freeze({
  maxMessageBytes: 2 ** 31,
  maxFrames: 100_000,
  maxHeaderBytes: 64 * 2 ** 20,
})

/** The defaults with the caller's overrides, each checked to be a positive integer. */
export function resolveDaskLimits(partial: Partial<DaskLimits> = {}): DaskLimits {
  return resolvePositive(DEFAULT_DASK_LIMITS, partial, DASK_LIMIT_NAMES)
}

const DASK_LIMIT_NAMES = optionNames(...Object.keys(DEFAULT_DASK_LIMITS))

/**
 * Frames of a received message start at multiples of this within the buffer they are read
 * into, so that typed views over them (float64, int64) need no copy.
 */
export const FRAME_ALIGNMENT = 64

function u64(bytes: Uint8Array, at: number, what: string): number {
  const lo = bytes[at]! + bytes[at + 1]! * 2 ** 8 + bytes[at + 2]! * 2 ** 16 + bytes[at + 3]! * 2 ** 24
  const hi = bytes[at + 4]! + bytes[at + 5]! * 2 ** 8 + bytes[at + 6]! * 2 ** 16 + bytes[at + 7]! * 2 ** 24
  if (hi >= 2 ** 21) throw new TransportError('PROTOCOL', `${what} of ${BigInt(hi) * 2n ** 32n + BigInt(lo)} is not a safe integer`)
  return hi * 2 ** 32 + lo
}

/**
 * Throws when the first 16 bytes cannot start a Dask message and look like another protocol:
 * an HTTP server (a dashboard's port, a proxy) answers "HTTP/1.1 ...", which would otherwise
 * read as an absurd message length.
 */
function notDask(first: Uint8Array): void {
  const text = String.fromCharCode(...first.subarray(0, 16))
  if (/^HTTP\/\d/.test(text) || /^(GET|POST|PUT|HEAD) \//.test(text)) {
    throw new TransportError('PROTOCOL', `the peer is not a Dask comm: it speaks HTTP (it sent ${JSON.stringify(text)}); is this a dashboard or proxy port instead of the scheduler's?`)
  }
  if (first[6]! >= 0x20 && first[7]! >= 0x20 && /^[\x20-\x7e\r\n\t]{16}$/.test(text)) {
    throw new TransportError('PROTOCOL', `the peer is not a Dask comm: it sent text (${JSON.stringify(text)}) where a message length belongs`)
  }
}

function putU64(out: Uint8Array, at: number, n: number): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  view.setBigUint64(at, BigInt(n), true)
}

/** The u64 frame count a ws message starts with. */
export function encodeFrameCount(n: number): Uint8Array {
  const out = new Uint8Array(8)
  putU64(out, 0, n)
  return out
}

/** The prelude of a tcp message: u64 total, u64 count, u64 lengths. */
export function encodeTcpPrelude(frames: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(16 + 8 * frames.length)
  let total = 8 + 8 * frames.length
  for (let i = 0; i < frames.length; i++) {
    putU64(out, 16 + 8 * i, frames[i]!.byteLength)
    total += frames[i]!.byteLength
  }
  putU64(out, 0, total)
  putU64(out, 8, frames.length)
  return out
}

/** Frames with at least this much still to come are read straight into place. */
export const DIRECT_READ_BYTES = 64 * 1024

function roundUp(n: number): number {
  return Math.ceil(n / FRAME_ALIGNMENT) * FRAME_ALIGNMENT
}

const enum TcpState {
  /** Waiting for the u64 total and the u64 frame count. */
  PRELUDE,
  /** Waiting for the n u64 frame lengths. */
  LENGTHS,
  /** Copying frame bytes into the message's buffer. */
  FRAMES,
}

/**
 * Reassembles tcp:// messages from socket chunks. Each message's frames are copied once, into
 * one buffer allocated when the lengths are known, each frame at a 64-byte aligned offset;
 * the frames handed over are views of it. Adjacent frames whose lengths are multiples of 64
 * (Dask's 64 MiB shards) are contiguous in it, so shards merge back without a copy.
 */
export class TcpFrameReader {
  #state = TcpState.PRELUDE
  /** Bytes of the current small field (prelude, lengths) gathered so far. */
  #field = new Uint8Array(16)
  #fieldHave = 0
  #total = 0
  #count = 0
  #lengths: number[] = []
  #buffer: Uint8Array | null = null
  #offsets: number[] = []
  #frame = 0
  #frameHave = 0
  #direct: Uint8Array | null = null

  /** memory: where each message's buffer comes from (fresh by default; see warm-memory.ts). */
  constructor(
    private readonly limits: DaskLimits,
    private readonly memory: FrameMemory = FRESH_MEMORY,
  ) {}

  /** True when no message is partly read. */
  get idle(): boolean {
    return this.#state === TcpState.PRELUDE && this.#fieldHave === 0
  }

  /** Bytes held for the message being read (its buffer, allocated once its lengths are known). */
  get heldBytes(): number {
    return this.#buffer?.byteLength ?? 0
  }

  /**
   * Drops the message being read, when the connection ends in its middle: whatever still
   * refers to the reader (the comm, an error kept by the application) must not keep its
   * buffer, which may be as large as maxMessageBytes. Idle afterwards.
   */
  discard(): void {
    this.#buffer = null
    this.#direct = null
    this.#lengths = []
    this.#offsets = []
    this.#field = new Uint8Array(16)
    this.#fieldHave = 0
    this.#frame = 0
    this.#frameHave = 0
    this.#state = TcpState.PRELUDE
  }

  /**
   * Where the next socket read may land (for net's onread): straight into the current frame
   * when at least DIRECT_READ_BYTES of it are still to come, so that big frames are read into
   * place without a second copy; otherwise scratch, to be handed to push().
   */
  readTarget(scratch: Uint8Array): Uint8Array {
    if (this.#state === TcpState.FRAMES) {
      const left = this.#lengths[this.#frame]! - this.#frameHave
      if (left >= DIRECT_READ_BYTES) {
        const at = this.#offsets[this.#frame]! + this.#frameHave
        this.#direct = this.#buffer!.subarray(at, at + left)
        return this.#direct
      }
    }
    this.#direct = null
    return scratch
  }

  /** After a read of n bytes into what readTarget() returned: the messages completed, in order. */
  afterRead(buf: Uint8Array, n: number): Uint8Array[][] {
    if (this.#direct === null || buf !== this.#direct) return this.push(buf.subarray(0, n))
    this.#direct = null
    const done: Uint8Array[][] = []
    this.#frameHave += n
    this.#skipFullFrames(done)
    return done
  }

  /** Takes a chunk; returns the messages it completed, in order. Throws TransportError on a bad message. */
  push(chunk: Uint8Array): Uint8Array[][] {
    const done: Uint8Array[][] = []
    let at = 0
    while (at < chunk.length) {
      switch (this.#state) {
        case TcpState.PRELUDE: {
          at = this.#fill(chunk, at, 16)
          if (this.#fieldHave < 16) break
          notDask(this.#field)
          this.#total = u64(this.#field, 0, 'message length')
          this.#count = u64(this.#field, 8, 'frame count')
          this.#checkPrelude()
          this.#startLengths()
          if (this.#count === 0) this.#finishLengths(done)
          break
        }
        case TcpState.LENGTHS: {
          at = this.#fill(chunk, at, 8 * this.#count)
          if (this.#fieldHave < 8 * this.#count) break
          this.#finishLengths(done)
          break
        }
        case TcpState.FRAMES: {
          const want = this.#lengths[this.#frame]! - this.#frameHave
          const n = Math.min(want, chunk.length - at)
          this.#buffer!.set(chunk.subarray(at, at + n), this.#offsets[this.#frame]! + this.#frameHave)
          this.#frameHave += n
          at += n
          this.#skipFullFrames(done)
          break
        }
      }
    }
    return done
  }

  #fill(chunk: Uint8Array, at: number, need: number): number {
    const n = Math.min(need - this.#fieldHave, chunk.length - at)
    this.#field.set(chunk.subarray(at, at + n), this.#fieldHave)
    this.#fieldHave += n
    return at + n
  }

  #checkPrelude(): void {
    const { maxMessageBytes, maxFrames } = this.limits
    if (this.#total > maxMessageBytes) {
      throw new TransportError('LIMIT', `message of ${this.#total} bytes is over maxMessageBytes (${maxMessageBytes})`)
    }
    if (this.#count > maxFrames) throw new TransportError('LIMIT', `${this.#count} frames is over maxFrames (${maxFrames})`)
    if (8 + 8 * this.#count > this.#total) {
      throw new TransportError('PROTOCOL', `message of ${this.#total} bytes cannot hold the lengths of ${this.#count} frames`)
    }
  }

  #startLengths(): void {
    this.#state = TcpState.LENGTHS
    this.#fieldHave = 0
    if (this.#field.length < 8 * this.#count) this.#field = new Uint8Array(8 * this.#count)
  }

  #finishLengths(done: Uint8Array[][]): void {
    const lengths: number[] = []
    const offsets: number[] = []
    const { maxMessageBytes } = this.limits
    let sum = 8 + 8 * this.#count
    let prefixEnds = sum === this.#total
    let size = 0
    for (let i = 0; i < this.#count; i++) {
      const n = u64(this.#field, 8 * i, `frame ${i} length`)
      sum += n
      if (sum > maxMessageBytes) {
        throw new TransportError('LIMIT', `message whose frame lengths add up to more than ${maxMessageBytes} bytes is over maxMessageBytes`)
      }
      if (sum === this.#total) prefixEnds = true
      lengths.push(n)
      offsets.push(size)
      size += roundUp(n)
    }
    if (!prefixEnds) {
      throw new TransportError('PROTOCOL', `the message's ${this.#total}-byte prefix does not end where one of its frames ends (frame lengths ${lengths.slice(0, 8).join(', ')}${lengths.length > 8 ? ', ...' : ''}; ${sum - 8 - 8 * this.#count} bytes of frames in all)`)
    }
    if (this.#field.length > 4096) this.#field = new Uint8Array(16)
    this.#lengths = lengths
    this.#offsets = offsets
    // Uninitialised memory, as Dask's numpy.empty: every byte is overwritten before it is handed over.
    this.#buffer = this.memory.take(size)
    this.#frame = 0
    this.#frameHave = 0
    this.#state = TcpState.FRAMES
    this.#skipFullFrames(done)
  }

  /** Moves past complete (and empty) frames; hands the message over when the last is complete. */
  #skipFullFrames(done: Uint8Array[][]): void {
    while (this.#frame < this.#count && this.#frameHave === this.#lengths[this.#frame]) {
      this.#frame++
      this.#frameHave = 0
    }
    if (this.#frame < this.#count) return
    const buffer = this.#buffer!
    done.push(this.#lengths.map((n, i) => buffer.subarray(this.#offsets[i]!, this.#offsets[i]! + n)))
    this.memory.done?.()
    this.#buffer = null
    this.#lengths = []
    this.#offsets = []
    this.#state = TcpState.PRELUDE
    this.#fieldHave = 0
  }
}

const enum WsState {
  /** Waiting for the ws message with the frame count. */
  COUNT,
  /** Waiting for the frames, one ws message each. */
  FRAMES,
}

/** Reassembles ws:// messages: a count message, then that many frame messages. */
export class WsFrameReader {
  #state = WsState.COUNT
  #count = 0
  #frames: Uint8Array[] = []
  #bytes = 0

  constructor(private readonly limits: DaskLimits) {}

  get idle(): boolean {
    return this.#state === WsState.COUNT
  }

  /** Drops the frames of a message read in part (see TcpFrameReader.discard). */
  discard(): void {
    this.#frames = []
    this.#bytes = 0
    this.#state = WsState.COUNT
  }

  /** Takes one ws message; returns the Dask message it completed, if any. */
  push(data: Uint8Array): Uint8Array[] | null {
    if (this.#state === WsState.COUNT) {
      if (data.length !== 8) throw new TransportError('PROTOCOL', `expected the 8-byte frame count, got a ws message of ${data.length} bytes`)
      const n = u64(data, 0, 'frame count')
      if (n > this.limits.maxFrames) throw new TransportError('LIMIT', `${n} frames is over maxFrames (${this.limits.maxFrames})`)
      this.#count = n
      this.#frames = []
      this.#bytes = 0
      if (n === 0) return []
      this.#state = WsState.FRAMES
      return null
    }
    this.#bytes += data.length
    if (this.#bytes > this.limits.maxMessageBytes) {
      throw new TransportError('LIMIT', `message of more than ${this.limits.maxMessageBytes} bytes is over maxMessageBytes`)
    }
    this.#frames.push(data)
    if (this.#frames.length < this.#count) return null
    const frames = this.#frames
    this.#frames = []
    this.#state = WsState.COUNT
    return frames
  }
}
