/**
 * The record ring: a byte ring inside a SharedArrayBuffer that carries each message's small
 * part (its record: block list, header and pickle) from senders to receivers, in order, under
 * the arena's mutex. Several threads may send and several may receive: each record goes to
 * exactly one receiver. The ring's size bounds how many messages wait (backpressure for small
 * messages, as the arena's capacity is for big ones).
 *
 * Head and tail are byte counters that wrap at 2^32; the ring's size is a power of two, so a
 * counter's low bits are its position. A record is a 4-byte length, its bytes and padding to
 * 8 bytes; a length of -1 means "continue at the start". Publishing a record is one store of
 * the head, so a sender killed mid-write publishes nothing.
 */
import { TransportError } from '../errors.js'
import { sleep, wake } from './wait.js'

/** Bytes of the ring's control words. */
export const RING_CONTROL_BYTES = 64
/** Default ring size in bytes. */
export const DEFAULT_RING_BYTES = 1 << 20

const R_MAGIC = 0
const R_HEAD = 1
const R_TAIL = 2
const R_PUBLISHED = 3
const R_CONSUMED = 4
const R_RECEIVE_WAITERS = 5
const R_SEND_WAITERS = 6
const R_CLOSED = 7
const R_SIZE = 8

const MAGIC = 0x70777269 // 'pwri'
const WRAP = -1

export function checkRingBytes(n: number): number {
  if (!Number.isSafeInteger(n) || n < 256 || n > 2 ** 30 || (n & (n - 1)) !== 0) {
    throw new TypeError(`ringBytes must be a power of two from 256 to 2^30, got ${String(n)}`)
  }
  return n
}

export class RecordRing {
  readonly size: number
  readonly #i32: Int32Array
  readonly #u8: Uint8Array
  readonly #c: number
  readonly #data: number // byte offset of the ring's bytes

  constructor(sab: SharedArrayBuffer, controlOffset: number, dataOffset: number, size: number, init = false) {
    checkRingBytes(size)
    this.size = size
    this.#i32 = new Int32Array(sab)
    this.#u8 = new Uint8Array(sab)
    this.#c = controlOffset >> 2
    this.#data = dataOffset
    if (init) {
      this.#i32[this.#c + R_SIZE] = size
      Atomics.store(this.#i32, this.#c + R_MAGIC, MAGIC)
    } else if (Atomics.load(this.#i32, this.#c + R_MAGIC) !== MAGIC || this.#i32[this.#c + R_SIZE] !== size) {
      throw new TransportError('PROTOCOL', 'not a picklewire record ring, or one of another size')
    }
  }

  /** The largest record written into the ring itself; larger ones travel in an arena block. */
  get maxInlineRecord(): number {
    return this.size / 4
  }

  get empty(): boolean {
    return Atomics.load(this.#i32, this.#c + R_HEAD) === Atomics.load(this.#i32, this.#c + R_TAIL)
  }

  /** Messages published so far (wraps); receivers wait on it. */
  get published(): number {
    return Atomics.load(this.#i32, this.#c + R_PUBLISHED)
  }

  /** Messages taken so far (wraps); senders waiting for room wait on it. */
  get consumed(): number {
    return Atomics.load(this.#i32, this.#c + R_CONSUMED)
  }

  /** 0 while open; otherwise the id of the endpoint that closed it. */
  get closedBy(): number {
    return Atomics.load(this.#i32, this.#c + R_CLOSED)
  }

  /** Marks the ring closed (first closer wins) and wakes every waiter. */
  close(by: number): void {
    Atomics.compareExchange(this.#i32, this.#c + R_CLOSED, 0, by)
    this.wakeAll()
  }

  wakeAll(): void {
    Atomics.add(this.#i32, this.#c + R_PUBLISHED, 1)
    Atomics.add(this.#i32, this.#c + R_CONSUMED, 1)
    wake(this.#i32, this.#c + R_PUBLISHED, this.#c + R_RECEIVE_WAITERS)
    wake(this.#i32, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
  }

  /** Under the mutex: writes one record made of `parts`, or returns false when the ring has no room now. */
  writeLocked(parts: readonly Uint8Array[], length: number): boolean {
    const i = this.#i32
    const size = this.size
    const need = (4 + length + 7) & ~7
    if (need > size) throw new RangeError(`a record of ${length} bytes cannot fit a ring of ${size}`)
    const head = i[this.#c + R_HEAD]!
    const used = (head - i[this.#c + R_TAIL]!) >>> 0
    const pos = head & (size - 1)
    const skip = need > size - pos ? size - pos : 0
    if (used + skip + need > size) return false
    if (skip !== 0) i[(this.#data + pos) >> 2] = WRAP
    const at = skip !== 0 ? 0 : pos
    i[(this.#data + at) >> 2] = length
    let o = this.#data + at + 4
    for (const p of parts) {
      this.#u8.set(p, o)
      o += p.length
    }
    Atomics.store(i, this.#c + R_HEAD, (head + skip + need) | 0)
    Atomics.add(i, this.#c + R_PUBLISHED, 1)
    wake(i, this.#c + R_PUBLISHED, this.#c + R_RECEIVE_WAITERS)
    return true
  }

  /** Under the mutex: takes the next record, as a copy, or null when the ring is empty. */
  readLocked(): Uint8Array | null {
    const i = this.#i32
    const size = this.size
    const head = i[this.#c + R_HEAD]!
    let tail = i[this.#c + R_TAIL]!
    if (head === tail) return null
    let pos = tail & (size - 1)
    let length = i[(this.#data + pos) >> 2]!
    if (length === WRAP) {
      tail = (tail + size - pos) | 0
      pos = 0
      length = i[this.#data >> 2]!
    }
    if (length < 0 || length + 4 > size) throw new TransportError('PROTOCOL', `record ring is corrupt: a record of ${length} bytes`)
    const record = this.#u8.slice(this.#data + pos + 4, this.#data + pos + 4 + length)
    const newTail = (tail + ((4 + length + 7) & ~7)) | 0
    Atomics.store(i, this.#c + R_TAIL, newTail)
    Atomics.add(i, this.#c + R_CONSUMED, 1)
    // A sender sleeps only when its record (at most a quarter of the ring) did not fit, so it is
    // woken once half the ring is free: one wake-up per half ring, not one per record.
    if (((head - newTail) >>> 0) <= size / 2) wake(i, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
    return record
  }

  /** Under the mutex: drops every record (the only receiver is gone). */
  clearLocked(): void {
    Atomics.store(this.#i32, this.#c + R_TAIL, Atomics.load(this.#i32, this.#c + R_HEAD))
  }

  /** Waits for a record to be published after `observed` (a value of `published`). */
  async waitPublished(observed: number, deadline: number, signal?: AbortSignal): Promise<void> {
    await this.#wait(R_RECEIVE_WAITERS, R_PUBLISHED, observed, deadline, signal)
  }

  /** Waits for a record to be taken after `observed` (a value of `consumed`). */
  async waitConsumed(observed: number, deadline: number, signal?: AbortSignal): Promise<void> {
    await this.#wait(R_SEND_WAITERS, R_CONSUMED, observed, deadline, signal)
  }

  /** Port signalling counts messages here too: a message posted (published) or taken (consumed). */
  countPublished(): void {
    Atomics.add(this.#i32, this.#c + R_PUBLISHED, 1)
  }

  /** A message taken; senders waiting for the window to open are woken when `window` of it is open. */
  countConsumed(window = 1): void {
    const i = this.#i32
    const consumed = Atomics.add(i, this.#c + R_CONSUMED, 1) + 1
    if (((Atomics.load(i, this.#c + R_PUBLISHED) - consumed) | 0) <= window) wake(i, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
  }

  async #wait(waiters: number, word: number, observed: number, deadline: number, signal?: AbortSignal): Promise<void> {
    await sleep(this.#i32, this.#c + word, this.#c + waiters, observed, deadline, signal)
  }
}
