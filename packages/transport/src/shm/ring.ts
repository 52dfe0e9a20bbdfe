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
import { sleep, waitAsync, wake } from './wait.js'

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
/** A channel end that sends into this ring: 0 never opened, 1 open, 2 closed by its opener. */
const R_END = 9
/** Messages of this ring the receiving application was handed (wraps at 2^32). */
const R_DELIVERED = 10
/** Set by the thread of the channel end that sends into this ring as it exits with the end open. */
const R_EXITED = 11

/** What openEnd found: the end was free (and is now open), is open, or was closed. */
export type EndState = 'opened' | 'open' | 'closed'

const MAGIC = 0x70777269 // 'pwri'
/** Records read out of the ring are copied into chunks of this size; larger ones get a buffer of their own. */
const CHUNK_BYTES = 64 * 1024
const CHUNK_RECORD = 8 * 1024
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
  #nextHead = 0
  #chunk: Uint8Array | null = null
  #chunkUsed = 0
  /** The run of records last copied into #chunk: from ring counter #runFrom, #runBytes bytes at #runBase. */
  #runFrom = 0
  #runBase = 0
  #runBytes = 0
  /** A DataView and bytes over the whole SharedArrayBuffer, to write reserved records in place. */
  readonly dv: DataView
  readonly bytes: Uint8Array

  constructor(sab: SharedArrayBuffer, controlOffset: number, dataOffset: number, size: number, init = false) {
    checkRingBytes(size)
    this.size = size
    this.#i32 = new Int32Array(sab)
    this.#u8 = new Uint8Array(sab)
    this.bytes = this.#u8
    this.dv = new DataView(sab)
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

  /** Claims the channel end that sends into this ring, once for all threads. */
  openEnd(): EndState {
    const was = Atomics.compareExchange(this.#i32, this.#c + R_END, 0, 1)
    return was === 0 ? 'opened' : was === 1 ? 'open' : 'closed'
  }

  /** The end's opener closed it: it is never opened again. */
  closeEnd(): void {
    Atomics.store(this.#i32, this.#c + R_END, 2)
  }

  /** True once the end that sends into this ring was closed by its opener (not merely gone). */
  get endClosed(): boolean {
    return Atomics.load(this.#i32, this.#c + R_END) === 2
  }

  /**
   * The end's thread is exiting with the end open (process.exit, an uncaught error, or its
   * event loop ran out): the other side learns it at once, from the memory, instead of after
   * the thread's teardown closes its port.
   */
  markExited(): void {
    Atomics.store(this.#i32, this.#c + R_EXITED, 1)
    this.wakeAll()
  }

  get exited(): boolean {
    return Atomics.load(this.#i32, this.#c + R_EXITED) !== 0
  }

  /** Marks the ring closed (first closer wins) and wakes every waiter. */
  close(by: number): void {
    Atomics.compareExchange(this.#i32, this.#c + R_CLOSED, 0, by)
    Atomics.notify(this.#i32, this.#c + R_CLOSED)
    this.wakeAll()
  }

  /** Resolves once the ring is closed, by any thread. The wait costs nothing per message and does not keep the thread alive. */
  async whenClosed(): Promise<void> {
    while (Atomics.load(this.#i32, this.#c + R_CLOSED) === 0) {
      const r = waitAsync(this.#i32, this.#c + R_CLOSED, 0)
      if (r.async) await r.value
    }
  }

  wakeAll(): void {
    Atomics.add(this.#i32, this.#c + R_PUBLISHED, 1)
    Atomics.add(this.#i32, this.#c + R_CONSUMED, 1)
    wake(this.#i32, this.#c + R_PUBLISHED, this.#c + R_RECEIVE_WAITERS)
    wake(this.#i32, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
  }

  /** Under the mutex: writes one record made of `parts`, or returns false when the ring has no room now. */
  writeLocked(parts: readonly Uint8Array[], length: number, wakeNow = true): boolean {
    let o = this.reserveLocked(length)
    if (o < 0) return false
    for (const p of parts) {
      this.#u8.set(p, o)
      o += p.length
    }
    this.publishLocked(wakeNow)
    return true
  }

  /**
   * Under the mutex: room for a record of `length` bytes. Returns the byte offset in the
   * SharedArrayBuffer where its bytes go (write them there, then publishLocked), or -1 when
   * the ring has no room now. Nothing is visible to receivers before publishLocked.
   */
  reserveLocked(length: number): number {
    const i = this.#i32
    const size = this.size
    const need = (4 + length + 7) & ~7
    if (need > size) throw new RangeError(`a record of ${length} bytes cannot fit a ring of ${size}`)
    const head = i[this.#c + R_HEAD]!
    const used = (head - Atomics.load(i, this.#c + R_TAIL)) >>> 0
    const pos = head & (size - 1)
    const skip = need > size - pos ? size - pos : 0
    if (used + skip + need > size) return -1
    if (skip !== 0) i[(this.#data + pos) >> 2] = WRAP
    const at = skip !== 0 ? 0 : pos
    i[(this.#data + at) >> 2] = length
    this.#nextHead = (head + skip + need) | 0
    return this.#data + at + 4
  }

  /**
   * Under the mutex: publishes the record reserved last (one store: it is whole or absent) and
   * wakes a sleeping receiver; with `wakeNow` false the caller calls wakeReceivers() itself
   * once it has let go of the arena's lock, so that the receiver it wakes does not find the
   * lock still held (and sleep again on it) when it comes to take the message's blocks.
   */
  publishLocked(wakeNow = true): void {
    const i = this.#i32
    Atomics.store(i, this.#c + R_HEAD, this.#nextHead)
    Atomics.add(i, this.#c + R_PUBLISHED, 1)
    if (wakeNow) this.wakeReceivers()
  }

  /** Wakes receivers asleep waiting for a record (after publishLocked(false)). */
  wakeReceivers(): void {
    wake(this.#i32, this.#c + R_PUBLISHED, this.#c + R_RECEIVE_WAITERS)
  }

  /**
   * Under the mutex: takes the next record, as a copy, or null when the ring is empty.
   * `onlyReader`: this object is the ring's only reader (a channel's receiving side), so
   * records published after the one asked for may be copied out with it, in one copy, and
   * handed out by the next calls (see #copyRun).
   */
  readLocked(onlyReader = false): Uint8Array | null {
    const i = this.#i32
    const size = this.size
    const head = Atomics.load(i, this.#c + R_HEAD)
    let tail = Atomics.load(i, this.#c + R_TAIL)
    if (head === tail) return null
    let pos = tail & (size - 1)
    let length = i[(this.#data + pos) >> 2]!
    if (length === WRAP) {
      tail = (tail + size - pos) | 0
      pos = 0
      length = i[this.#data >> 2]!
    }
    if (length < 0 || length + 4 > size) throw new TransportError('PROTOCOL', `record ring is corrupt: a record of ${length} bytes`)
    const record = onlyReader ? this.#copyRun(tail, pos, length, head) : this.#copyOut(this.#data + pos + 4, length)
    const newTail = (tail + ((4 + length + 7) & ~7)) | 0
    Atomics.store(i, this.#c + R_TAIL, newTail)
    Atomics.add(i, this.#c + R_CONSUMED, 1)
    // A sender sleeps only when its record (at most a quarter of the ring) did not fit, so it is
    // woken once half the ring is free: one wake-up per half ring, not one per record.
    if (((head - newTail) >>> 0) <= size / 2) wake(i, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
    return record
  }

  /**
   * A copy of `length` bytes of the ring, in ordinary memory: small records are copied into
   * a shared chunk (one allocation for many records; TypedArray.set from shared memory is a
   * memcpy, where slice() of it is a slow path), larger ones into a buffer of their own.
   */
  #copyOut(from: number, length: number): Uint8Array {
    const src = this.#u8.subarray(from, from + length)
    if (length > CHUNK_RECORD) {
      const own = new Uint8Array(length)
      own.set(src)
      return own
    }
    let chunk = this.#chunk
    let at = this.#chunkUsed
    if (chunk === null || at + length > chunk.length) {
      chunk = this.#chunk = new Uint8Array(CHUNK_BYTES)
      at = 0
    }
    chunk.set(src, at)
    this.#chunkUsed = (at + length + 7) & ~7
    return chunk.subarray(at, at + length)
  }

  /**
   * The record at ring counter `tail` (position `pos`, `length` bytes) from a copy of the run
   * of published records it starts: the whole run up to `head` or the ring's end (at most a
   * chunk) is copied at once, and the records after it are cut from that copy by the next
   * calls, as long as they fall inside it. TypedArray.set from shared memory costs about
   * half a microsecond a call whatever the size below a few KiB: one call serves many records.
   * Only for a ring's only reader: the counters it is given are then consecutive.
   */
  #copyRun(tail: number, pos: number, length: number, head: number): Uint8Array {
    const chunk = this.#chunk
    const offset = (tail - this.#runFrom) >>> 0
    if (chunk !== null && offset < this.#runBytes && offset + 4 + length <= this.#runBytes) {
      const at = this.#runBase + offset + 4
      return chunk.subarray(at, at + length)
    }
    const need = 4 + length
    let n = Math.min((head - tail) >>> 0, this.size - pos, CHUNK_BYTES)
    if (n < need) n = need
    if (need > CHUNK_RECORD) {
      this.#runBytes = 0
      return this.#copyOut(this.#data + pos + 4, length)
    }
    let base = this.#chunkUsed
    if (chunk === null || base + n > chunk.length) {
      this.#chunk = new Uint8Array(CHUNK_BYTES)
      base = 0
    }
    this.#chunk!.set(this.#u8.subarray(this.#data + pos, this.#data + pos + n), base)
    this.#chunkUsed = (base + n + 7) & ~7
    this.#runFrom = tail
    this.#runBase = base
    this.#runBytes = n
    return this.#chunk!.subarray(base + 4, base + 4 + length)
  }

  /** Under the mutex: drops every record (the only receiver is gone). */
  clearLocked(): void {
    this.#runBytes = 0
    Atomics.store(this.#i32, this.#c + R_TAIL, Atomics.load(this.#i32, this.#c + R_HEAD))
  }

  /** Waits for a record to be published after `observed` (a value of `published`); `keepAlive` false when the caller keeps the loop alive itself. */
  waitPublished(observed: number, deadline: number, signal?: AbortSignal, keepAlive = true): Promise<unknown> {
    return sleep(this.#i32, this.#c + R_PUBLISHED, this.#c + R_RECEIVE_WAITERS, observed, deadline, { signal, keepAlive })
  }

  /** Waits for a record to be taken after `observed` (a value of `consumed`). */
  waitConsumed(observed: number, deadline: number, signal?: AbortSignal): Promise<unknown> {
    return sleep(this.#i32, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS, observed, deadline, { signal })
  }

  /** Port signalling counts messages here too: a message posted (published) or taken (consumed). */
  /** A message handed to the receiving application (exact, unlike consumed, which close() also moves). */
  countDelivered(): void {
    Atomics.add(this.#i32, this.#c + R_DELIVERED, 1)
  }

  /** Messages handed to the receiving application so far, modulo 2^32. */
  get delivered(): number {
    return Atomics.load(this.#i32, this.#c + R_DELIVERED) >>> 0
  }

  countPublished(): void {
    Atomics.add(this.#i32, this.#c + R_PUBLISHED, 1)
  }

  /** A message taken; senders waiting for the window to open are woken when `window` of it is open. */
  countConsumed(window = 1): void {
    const i = this.#i32
    const consumed = Atomics.add(i, this.#c + R_CONSUMED, 1) + 1
    if (((Atomics.load(i, this.#c + R_PUBLISHED) - consumed) | 0) <= window) wake(i, this.#c + R_CONSUMED, this.#c + R_SEND_WAITERS)
  }
}
