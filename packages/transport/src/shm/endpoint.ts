/**
 * One endpoint's side of the arenas it shares with others: what it holds (blocks it allocated
 * and has not sent, blocks it received and has not released), how a value becomes a record
 * whose buffers sit in arena blocks, and how a record becomes a value over views of them.
 * Channels, pipes and the piscina pool differ only in how records travel; they all use this.
 */
import type { PickleBuffer } from '@picklewire/codec'
import { TransportError } from '../errors.js'
import { checkLengths, resolveLimits, type Limits } from '../limits.js'
import { ValueCodec, bytesOfPart, type DecodeOptions, type EncodeOptions, type MessageParts, type ValuesMode } from '../message.js'
import { BLOCK_ALIGN, unitsFor, type Arena, type BlockRef } from './arena.js'
import { Held, Received } from './received.js'
import { EMPTY, KIND_MESSAGE, TRANSFERRED, dataView, headerBytes, readHeader, recordPrefixBytes, writeHeader, writePrefix, type RecordPrefix } from './record.js'
import { checkWaitOptions, type WaitOptions } from '../waiting.js'
import { badOptionRange, badOptionType, checkOptions, checkPicklerOptions, checkUnpicklerOptions, optionNames } from '../options-check.js'
import type { OptionNames } from '@picklewire/codec/internal'

/** The names EndpointOptions takes; the carriers add their own to these. */
export const ENDPOINT_OPTION_NAMES: readonly string[] = ['pickler', 'unpickler', 'values', 'limits', 'gcRelease']
const ENDPOINT_OPTIONS = optionNames(...ENDPOINT_OPTION_NAMES)

/**
 * Checks endpoint options where a carrier is opened (names: the carrier's own set when it takes
 * more than EndpointOptions; null when another library checks the names, as piscina does for ArenaPool).
 */
export function checkEndpointOptions(what: string, options: unknown, names: OptionNames | null = ENDPOINT_OPTIONS): void {
  if (names !== null) checkOptions(what, options, names)
  if (options === undefined) return
  if (typeof options !== 'object' || options === null) throw badOptionType(what, 'options', 'an object', options)
  const o = options as Record<string, unknown>
  checkPicklerOptions(what, 'pickler', o.pickler, true)
  checkUnpicklerOptions(what, 'unpickler', o.unpickler)
  if (o.values !== undefined && o.values !== 'javascript' && o.values !== 'python') {
    throw badOptionRange(what, 'values', "'javascript' or 'python'", o.values)
  }
  if (o.gcRelease !== undefined && typeof o.gcRelease !== 'boolean') throw badOptionType(what, 'gcRelease', 'a boolean', o.gcRelease)
}

/** Options every shared-memory endpoint takes. */
export interface EndpointOptions {
  /** How values are pickled (protocol 5 always); outOfBand picks the buffers that go to the arena. Default: every buffer of 1 KiB or more. */
  pickler?: EncodeOptions
  /** How received pickles are loaded (buffers excepted). Default: the codec's defaults. */
  unpickler?: DecodeOptions
  /**
   * What values come back as. 'javascript' (the default): the JavaScript types they were sent
   * as, as structuredClone gives them (plain objects, Maps, Sets, the same TypedArray class
   * over the arena, undefined, bigint, Date, ...). 'python': the codec's Python mapping (dicts
   * as Map, TypedArrays as NDArray, tuples as Tuple, ...), for values made for or by Python.
   * Both ends of a carrier use the same.
   */
  values?: ValuesMode
  /** Limits checked on every message sent and received. Default: DEFAULT_LIMITS. */
  limits?: Partial<Limits>
  /**
   * Release a received message's blocks when the views over them are garbage collected, and an
   * allocated block when the view alloc() returned is. Default true. Collection happens when V8
   * gets to it: release() explicitly where memory must come back at a known time.
   */
  gcRelease?: boolean
}

/*
 * Release on collection, safely: every view of a block, and everything made from one (a
 * Float32Array over view.buffer, an NDArray loaded from it), holds the view's ArrayBuffer. So
 * each block handed out gets a SharedArrayBuffer object of its own over the arena's memory
 * (structuredClone of a SharedArrayBuffer shares the memory, it copies nothing), and the
 * block is released when that object is collected: when nothing can reach the block any more.
 */

/** SharedArrayBuffer objects made ahead per arena, for the blocks of the next messages (see #freshSab). */
const SAB_STOCK = 4

/** Per-endpoint counters; bytes are out-of-band buffer bytes unless said otherwise. */
export interface ShmStats {
  messagesSent: number
  messagesReceived: number
  /** Out-of-band bytes of the messages sent, however they went. */
  bytesSent: number
  /** Bytes this endpoint copied into an arena (buffers that were not already there). */
  bytesCopied: number
  /** Bytes sent by transferring their ArrayBuffer (no copy; the sender loses it). */
  bytesTransferred: number
  bytesReceived: number
  /** Arena payload bytes this endpoint holds now: allocated and not sent, received and not released. */
  bytesHeld: number
  /** Bytes of records (block list, header and pickle) sent; they travel by copy, as postMessage would. */
  recordBytesSent: number
  recordBytesReceived: number
  /** Blocks released because their views were garbage collected. */
  gcReleases: number
}

export function emptyStats(): ShmStats {
  return {
    messagesSent: 0, messagesReceived: 0, bytesSent: 0, bytesCopied: 0, bytesTransferred: 0, bytesReceived: 0,
    bytesHeld: 0, recordBytesSent: 0, recordBytesReceived: 0, gcReleases: 0,
  }
}

export interface PrepareOptions {
  /** ArrayBuffers that may be transferred instead of copied. */
  transfer?: readonly ArrayBuffer[] | undefined
  /** 'wait' (default): a copy waits for arena space. 'transfer': it goes in an ArrayBuffer of its own, transferred. */
  whenFull?: 'wait' | 'transfer'
  wait?: WaitOptions
  /** Asked whenever a wait for space wakes; throws to give up (a closed channel). */
  stop?: () => void
}

/** A message being prepared: see Endpoint.draft. */
export interface Draft {
  out: number
  options: PrepareOptions
  parts: MessageParts
  at: number[]
  blocks: Held[]
  index: Map<Held, number> | null
  transfers: ArrayBuffer[]
  copies: Held[]
  /** Indexes of buffers still to copy into the arena. */
  toCopy: number[]
  bufferBytes: number
  transferredBytes: number
}

function blockIndex(d: Draft, held: Held): number {
  if (d.index === null) {
    // Most messages have one block or none: a map only from the second.
    if (d.blocks.length === 0) return d.blocks.push(held) - 1
    if (d.blocks[0] === held) return 0
    d.index = new Map([[d.blocks[0]!, 0]])
  }
  let k = d.index.get(held)
  if (k === undefined) {
    k = d.blocks.push(held) - 1
    d.index.set(held, k)
  }
  return k
}

/** A message made ready to go: its buffers are in blocks this endpoint holds, its record is built. */
export interface Outgoing {
  /** 0 until its record is written: ids are given in the order records are written, and one not published is given back (abandon). */
  id: number
  /** The blocks the message hands over, in record order. */
  blocks: Held[]
  /** Blocks this endpoint allocated for copies of the message's buffers (a subset of blocks). */
  copies: Held[]
  transfers: ArrayBuffer[]
  pickle: Uint8Array
  /** Each out-of-band buffer's length and read-only flag, and where it is (two numbers a buffer: see record.ts). */
  lengths: number[]
  readonly: boolean[]
  at: number[]
  bufferBytes: number
  transferredBytes: number
}

type TypedArrayConstructor<T> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; readonly BYTES_PER_ELEMENT: number }

let nextEndpoint = 0

export class Endpoint {
  /** This endpoint's owner id in the arenas: the thread id plus one. */
  readonly id: number
  readonly arenas: readonly Arena[]
  readonly stats: ShmStats = emptyStats()
  readonly limits: Limits
  /** value <-> pickle and buffers, with this endpoint's codec options. */
  readonly #values: ValueCodec
  readonly #owned: Map<number, Held>[]
  readonly #registry: FinalizationRegistry<Held> | null
  /** The block each SharedArrayBuffer object of a block is over (release on collection only). */
  readonly #byBuffer = new WeakMap<SharedArrayBuffer, Held>()
  readonly #pending: Held[] = []
  #flushing = false
  #nextId = 0
  readonly #releaseHeld = (held: readonly Held[]): void => this.release(held)
  /** A number unique to this endpoint within its thread, for ids of things it posts. */
  readonly serial = ++nextEndpoint

  constructor(arenas: readonly Arena[], id: number, options: EndpointOptions = {}) {
    if (!Number.isSafeInteger(id) || id <= 0) throw new TypeError(`an endpoint id must be a positive integer, got ${String(id)}`)
    this.id = id
    this.arenas = arenas
    this.limits = resolveLimits(options.limits)
    this.#values = new ValueCodec({ pickler: options.pickler, unpickler: options.unpickler, values: options.values ?? 'javascript' })
    this.#owned = arenas.map(() => new Map())
    this.#registry = options.gcRelease === false ? null : new FinalizationRegistry((held) => this.#collected(held))
  }

  // ---- allocation in place ----

  /** A block of `byteLength` bytes in arena `a`, waiting for space; its view is the caller's to fill. */
  async alloc(a: number, byteLength: number, wait: WaitOptions = {}, stop?: () => void): Promise<Uint8Array> {
    checkWaitOptions('alloc', wait)
    checkByteLength(byteLength)
    this.#checkSelfDeadlock(a, unitsFor(byteLength), `a buffer of ${byteLength} bytes`)
    const ref = await this.arenas[a]!.alloc(byteLength, this.id, wait, stop)
    return this.#viewOf(this.#adopt(a, ref, true), byteLength)
  }

  /** As alloc, without waiting: null when the arena has no room now. */
  tryAlloc(a: number, byteLength: number): Uint8Array | null {
    checkByteLength(byteLength)
    this.arenas[a]!.checkFits(unitsFor(byteLength), `a buffer of ${byteLength} bytes`)
    const ref = this.arenas[a]!.tryAlloc(byteLength, this.id)
    return ref === null ? null : this.#viewOf(this.#adopt(a, ref, true), byteLength)
  }

  /** A block held by this endpoint with no view handed out (for records too large for a ring). */
  async allocBlock(a: number, byteLength: number, wait: WaitOptions = {}, stop?: () => void): Promise<Held> {
    this.#checkSelfDeadlock(a, unitsFor(byteLength), `a record of ${byteLength} bytes`)
    return this.#adopt(a, await this.arenas[a]!.alloc(byteLength, this.id, wait, stop), false)
  }

  /** A TypedArray of `length` elements in arena `a` (blocks are 64-byte aligned, so any element type fits). */
  async allocArray<T>(a: number, ctor: TypedArrayConstructor<T>, length: number, wait: WaitOptions = {}, stop?: () => void): Promise<T> {
    checkWaitOptions('allocArray', wait)
    if (!Number.isSafeInteger(length) || length < 0) throw new TypeError(`length must be a non-negative integer, got ${String(length)}`)
    const bytes = length * ctor.BYTES_PER_ELEMENT
    checkByteLength(bytes)
    this.#checkSelfDeadlock(a, unitsFor(bytes), `a buffer of ${bytes} bytes`)
    const ref = await this.arenas[a]!.alloc(bytes, this.id, wait, stop)
    const held = this.#adopt(a, ref, true)
    const view = new ctor(held.sab!, this.arenas[a]!.payloadOffset(ref.unit), length)
    held.sab = null
    return view
  }

  /** Frees a block this endpoint allocated (or received) and still holds; false if the view is not over one. */
  free(view: ArrayBufferView | PickleBuffer): boolean {
    const bytes = toBytes(view)
    const found = this.#find(bytes)
    if (found === null) return false
    this.release([found.held])
    return true
  }

  /** Records a block as held; `handedOut`: views of it will be handed out (and released on collection). */
  #adopt(a: number, ref: BlockRef, handedOut: boolean): Held {
    const arena = this.arenas[a]!
    const own = handedOut && this.#registry !== null
    const sab = own ? this.#freshSab(a) : arena.sab
    const held = new Held(a, ref.unit, ref.ticket, arena.payloadBytes(ref.unit), sab)
    if (own) {
      this.#byBuffer.set(sab, held)
      this.#registry.register(sab, held, held)
    }
    this.#owned[a]!.set(ref.unit, held)
    this.stats.bytesHeld += held.bytes
    return held
  }

  /**
   * A SharedArrayBuffer object of its own over arena a's memory. structuredClone makes one in
   * several microseconds, so a few are made ahead, after the message that used the last one
   * (setImmediate: when this thread would otherwise wait for the other side), and handed out
   * from that stock. Each is used for one block only, as if made on the spot.
   */
  #freshSab(a: number): SharedArrayBuffer {
    const stock = (this.#sabStock[a] ??= [])
    const sab = stock.pop() ?? structuredClone(this.arenas[a]!.sab)
    if (!this.#restocking) {
      this.#restocking = true
      setImmediate(this.#restock)
    }
    return sab
  }

  readonly #sabStock: SharedArrayBuffer[][] = []
  #restocking = false
  readonly #restock = (): void => {
    this.#restocking = false
    for (let a = 0; a < this.arenas.length; a++) {
      const stock = this.#sabStock[a]
      if (stock === undefined) continue
      while (stock.length < SAB_STOCK) stock.push(structuredClone(this.arenas[a]!.sab))
    }
  }

  #viewOf(held: Held, byteLength: number): Uint8Array {
    const view = new Uint8Array(held.sab!, this.arenas[held.arena]!.payloadOffset(held.unit), byteLength)
    held.sab = null
    return view
  }

  /** Units of arena `a` this endpoint holds and has not sent: what no other thread will ever free. */
  #selfUnits(a: number): number {
    let units = 0
    for (const h of this.#owned[a]!.values()) units += 1 + h.bytes / BLOCK_ALIGN
    return units
  }

  /** A wait for `units` that only this endpoint could end would never end: CAPACITY instead. */
  #checkSelfDeadlock(a: number, units: number, what: string): void {
    const arena = this.arenas[a]!
    arena.checkFits(units, what)
    const mine = this.#selfUnits(a)
    if (units + mine > arena.heapUnits) {
      throw new TransportError('CAPACITY', `the arena (${arena.capacity} bytes) is too small: this endpoint holds ${mine * BLOCK_ALIGN} bytes ` +
        `of it and ${what} needs ${units * BLOCK_ALIGN} more; release or send what it holds, or give a larger capacity`)
    }
  }

  /** The held block a view lies in, if it is in one of this endpoint's arenas and held by it. */
  #find(bytes: Uint8Array): { held: Held; offset: number } | null {
    const own = this.#byBuffer.get(bytes.buffer as SharedArrayBuffer)
    if (own !== undefined) {
      const start = this.arenas[own.arena]!.payloadOffset(own.unit)
      const inside = bytes.byteOffset >= start && bytes.byteOffset + bytes.byteLength <= start + own.bytes
      return own.state === 'held' && inside ? { held: own, offset: bytes.byteOffset - start } : null
    }
    for (let a = 0; a < this.arenas.length; a++) {
      const arena = this.arenas[a]!
      if (bytes.buffer !== arena.sab) continue
      const owned = this.#owned[a]!
      const exact = arena.unitAt(bytes.byteOffset)
      const held = exact >= 0 ? owned.get(exact) : undefined
      if (held !== undefined && bytes.byteLength <= held.bytes) return { held, offset: 0 }
      for (const h of owned.values()) {
        const start = arena.payloadOffset(h.unit)
        if (bytes.byteOffset >= start && bytes.byteOffset + bytes.byteLength <= start + h.bytes) return { held: h, offset: bytes.byteOffset - start }
      }
      return null
    }
    return null
  }

  // ---- sending ----

  /**
   * Pickles `value` and puts each out-of-band buffer in place: a buffer already in a block this
   * endpoint holds goes as it is (no copy); one over an ArrayBuffer listed in `transfer` is
   * transferred; any other is copied once into a new block of arena `out`, waiting for space.
   */
  async prepare(value: unknown, out: number, options: PrepareOptions = {}): Promise<Outgoing> {
    const draft = this.draft(value, out, options)
    if (draft.toCopy.length > 0) await this.fill(draft)
    return this.finish(draft)
  }

  /**
   * What prepare does without waiting: the value pickled, its buffers classified, and copied
   * into the arena where a block can be had at once. Copies left to make are in `toCopy`.
   */
  draft(value: unknown, out: number, options: PrepareOptions = {}): Draft {
    return this.#draftParts(this.encode(value), out, options)
  }

  /**
   * draft, for a caller that may finish the message at once: use gets the draft with its
   * pickle lent from the pickler's output memory (dumpsTransient), valid only until use
   * returns. A draft kept beyond use must be given its own copy first (keepPickle).
   */
  draftTransient<R>(value: unknown, out: number, options: PrepareOptions, use: (d: Draft) => R): R {
    return this.#encodeWith(value, (parts) => use(this.#draftParts(parts, out, options)))
  }

  /** Gives a draft (and the message made from it, if any) a pickle of its own. */
  keepPickle(d: Draft, made?: Outgoing): void {
    const own = d.parts.pickle.slice()
    d.parts = { ...d.parts, pickle: own }
    if (made !== undefined) made.pickle = own
  }

  #draftParts(parts: MessageParts, out: number, options: PrepareOptions): Draft {
    const lengths = parts.buffers.map((b) => b.byteLength)
    checkLengths(parts.pickle.length, lengths, this.limits)
    const transferable = options.transfer === undefined || options.transfer.length === 0 ? null : new Set<unknown>(options.transfer)
    const d: Draft = {
      out, options, parts, at: new Array(parts.buffers.length * 2), blocks: [], index: null, transfers: [],
      copies: [], toCopy: [], bufferBytes: 0, transferredBytes: 0,
    }
    let tIndex: Map<ArrayBuffer, number> | null = null
    for (let i = 0; i < parts.buffers.length; i++) {
      const buf = bytesOfPart(parts.buffers[i]!, SHM_CARRIER)
      d.bufferBytes += buf.byteLength
      if (buf.byteLength === 0) {
        d.at[2 * i] = EMPTY
        d.at[2 * i + 1] = 0
        continue
      }
      const found = this.#find(buf)
      if (found !== null) {
        d.at[2 * i] = blockIndex(d, found.held)
        d.at[2 * i + 1] = found.offset
      } else if (transferable !== null && transferable.has(buf.buffer)) {
        const ab = buf.buffer as ArrayBuffer
        tIndex ??= new Map()
        let k = tIndex.get(ab)
        if (k === undefined) {
          k = d.transfers.push(ab) - 1
          tIndex.set(ab, k)
        }
        d.transferredBytes += buf.byteLength
        d.at[2 * i] = TRANSFERRED - k
        d.at[2 * i + 1] = buf.byteOffset
      } else {
        d.toCopy.push(i)
      }
    }
    if (d.toCopy.length === 0) return d
    if (options.whenFull !== 'transfer') this.#checkSelfDeadlock(out, d.toCopy.reduce((n, i) => n + unitsFor(parts.buffers[i]!.byteLength), 0), copiesShown(d))
    const arena = this.arenas[out]!
    try {
      while (d.toCopy.length > 0) {
        const i = d.toCopy[0]!
        const len = parts.buffers[i]!.byteLength
        const ref = unitsFor(len) > arena.heapUnits ? null : arena.tryAlloc(len, this.id)
        if (ref === null) break
        this.#copyInto(d, i, ref)
        d.toCopy.shift()
      }
    } catch (err) {
      this.release(d.copies)
      throw err
    }
    return d
  }

  /** Makes the copies a draft still needs, waiting for space (or, with whenFull 'transfer', not). */
  async fill(d: Draft): Promise<void> {
    const arena = this.arenas[d.out]!
    const { options, parts } = d
    try {
      while (d.toCopy.length > 0) {
        const i = d.toCopy[0]!
        const buf = bytesOfPart(parts.buffers[i]!, SHM_CARRIER)
        let ref: BlockRef | null
        if (options.whenFull === 'transfer') {
          ref = unitsFor(buf.byteLength) > arena.heapUnits ? null : await arena.locked(this.id, () => arena.allocLocked(buf.byteLength, this.id))
          if (ref === null) {
            // No room now: a copy of its own, transferred, rather than a wait that could stall.
            const ab = new ArrayBuffer(buf.byteLength)
            new Uint8Array(ab).set(buf)
            d.at[2 * i] = TRANSFERRED - (d.transfers.push(ab) - 1)
            d.at[2 * i + 1] = 0
            this.stats.bytesCopied += buf.byteLength
            d.transferredBytes += buf.byteLength
            d.toCopy.shift()
            continue
          }
        } else {
          ref = await arena.alloc(buf.byteLength, this.id, options.wait, options.stop)
        }
        this.#copyInto(d, i, ref)
        d.toCopy.shift()
      }
    } catch (err) {
      this.release(d.copies)
      throw err
    }
  }

  #copyInto(d: Draft, i: number, ref: BlockRef): void {
    const buf = bytesOfPart(d.parts.buffers[i]!, SHM_CARRIER)
    const held = this.#adopt(d.out, ref, false)
    d.copies.push(held)
    new Uint8Array(held.sab!, this.arenas[d.out]!.payloadOffset(ref.unit), buf.byteLength).set(buf)
    this.stats.bytesCopied += buf.byteLength
    d.at[2 * i] = blockIndex(d, held)
    d.at[2 * i + 1] = 0
  }

  /** Pickles a value with protocol 5, collecting its out-of-band buffers (views, not copies). */
  encode(value: unknown): MessageParts {
    return this.#values.encode(value)
  }

  /** encode, with the pickle lent to use for as long as use runs (no output allocated). */
  #encodeWith<R>(value: unknown, use: (parts: MessageParts) => R): R {
    return this.#values.encodeWith(value, use)
  }

  /** The draft, every copy made, as a message ready to go. */
  finish(d: Draft): Outgoing {
    if (d.toCopy.length > 0) throw new Error('finish: the draft still has buffers to copy')
    const { parts } = d
    return {
      id: 0, blocks: d.blocks, copies: d.copies, transfers: d.transfers, pickle: parts.pickle,
      lengths: parts.buffers.map((b) => b.byteLength), readonly: parts.readonly, at: d.at, bufferBytes: d.bufferBytes, transferredBytes: d.transferredBytes,
    }
  }

  /** The length of a prepared message's record. */
  recordLength(out: Outgoing): number {
    if (out.blocks.length > 0xffff) throw new TransportError('LIMIT', `${out.blocks.length} arena blocks in one message is over 65,535`)
    return recordPrefixBytes(out.blocks.length) + headerBytes(out.lengths.length) + out.pickle.length
  }

  /** Writes a prepared message's record (recordLength bytes) at `at` of `dv` (over `bytes`' memory). */
  writeRecord(dv: DataView, bytes: Uint8Array, at: number, out: Outgoing, from: number, flags = 0): void {
    if (out.id === 0) out.id = ++this.#nextId
    let o = writePrefix(dv, at, KIND_MESSAGE, flags, from, this.id, out.blocks)
    o = writeHeader(dv, o, out.id, out.pickle.length, out.lengths, out.readonly, out.at)
    bytes.set(out.pickle, o)
  }

  /** The record as one Uint8Array over an ArrayBuffer of its own size (to post or transfer). */
  record(out: Outgoing, from: number, flags = 0): Uint8Array {
    const bytes = new Uint8Array(this.recordLength(out))
    this.writeRecord(dataView(bytes), bytes, 0, out, from, flags)
    return bytes
  }

  /** Under arena `a`'s lock: passes the message's blocks in `a` from this endpoint to `to`. */
  moveLocked(out: Outgoing, a: number, to: number): void {
    for (const h of out.blocks) {
      if (h.arena === a && !this.arenas[a]!.moveLocked(h, this.id, to)) {
        throw new TransportError('PROTOCOL', `arena block at unit ${h.unit} was not held by this endpoint when sent`)
      }
    }
  }

  /** Under arena `a`'s lock: undoes moveLocked (the record could not be published). */
  moveBackLocked(out: Outgoing, a: number, from: number): void {
    for (const h of out.blocks) if (h.arena === a) this.arenas[a]!.moveLocked(h, from, this.id)
  }

  /** A block sent on outside a message's own list (a record's block): no longer this endpoint's. */
  forgetMoved(h: Held): void {
    this.#forget(h, 'moved')
  }

  /** After the record is out: the blocks are no longer this endpoint's. */
  sent(out: Outgoing, recordBytes: number): void {
    for (const h of out.blocks) this.#forget(h, 'moved')
    this.stats.messagesSent++
    this.stats.bytesSent += out.bufferBytes
    this.stats.bytesTransferred += out.transferredBytes
    this.stats.recordBytesSent += recordBytes
  }

  /** A prepared message that will not go: its copies are freed (blocks allocated in place stay held) and its id is given back. */
  abandon(out: Outgoing): void {
    this.release(out.copies)
    // Sends are made one at a time, so a record written and not published holds the last id.
    if (out.id !== 0 && out.id === this.#nextId) this.#nextId--
    out.id = 0
  }

  // ---- receiving ----

  /**
   * Under arena `a`'s lock: takes the record's blocks that live in `a` (owned by `prefix.from`
   * or by the sender) for this endpoint. Returns the Held of each, null where another arena's.
   */
  takeLocked(prefix: RecordPrefix, a: number, taken: (Held | null)[]): void {
    const arena = this.arenas[a]!
    prefix.blocks.forEach((b, k) => {
      if (b.arena !== a || taken[k]) return
      if (!arena.moveLocked(b, prefix.from, this.id) && !arena.moveLocked(b, prefix.sender, this.id)) {
        throw new TransportError('PROTOCOL', `a message names arena block ${a}:${b.unit} that its sender does not hold (ticket ${b.ticket})`)
      }
      taken[k] = this.#adopt(a, b, true)
    })
  }

  /**
   * As take, without waiting: takes the record's blocks arena by arena while their locks are
   * free now. True when every block is taken; false when a lock was busy (take the rest with
   * take(prefix, taken)). On a bad record, releases what it took and throws.
   */
  tryTake(prefix: RecordPrefix, taken: (Held | null)[]): boolean {
    this.#checkArenas(prefix)
    for (let a = 0; a < this.arenas.length; a++) {
      if (!prefix.blocks.some((b, k) => b.arena === a && !taken[k])) continue
      const mutex = this.arenas[a]!.mutex
      if (!mutex.tryLock(this.id)) return false
      try {
        this.takeLocked(prefix, a, taken)
      } catch (err) {
        this.release(taken.filter((h): h is Held => h !== null))
        throw err
      } finally {
        mutex.unlock(this.id)
      }
    }
    return true
  }

  #checkArenas(prefix: RecordPrefix): void {
    for (const b of prefix.blocks) {
      if (!Number.isInteger(b.arena) || b.arena < 0 || b.arena >= this.arenas.length) {
        throw new TransportError('PROTOCOL', `a message names arena ${b.arena}; this endpoint shares ${this.arenas.length}`)
      }
    }
  }

  /** Takes every block of the record not taken yet, arena by arena. */
  async take(prefix: RecordPrefix, taken: (Held | null)[] = prefix.blocks.map(() => null)): Promise<Held[]> {
    this.#checkArenas(prefix)
    for (let a = 0; a < this.arenas.length; a++) {
      if (!prefix.blocks.some((b, k) => b.arena === a && !taken[k])) continue
      try {
        await this.arenas[a]!.locked(this.id, () => this.takeLocked(prefix, a, taken))
      } catch (err) {
        this.release(taken.filter((h): h is Held => h !== null))
        throw err
      }
    }
    return taken as Held[]
  }

  /**
   * Loads a record's value over views of its (taken) blocks and transferred ArrayBuffers. On a
   * bad record the blocks are released and the error thrown: the message is refused whole.
   */
  decode<T = unknown>(record: Uint8Array, prefix: RecordPrefix, held: readonly Held[], transfers: readonly ArrayBuffer[] = []): Received<T> {
    let views: Uint8Array[]
    let blockOfView: number[]
    let value: unknown
    let id: number
    try {
      const header = readHeader(prefix, record.length)
      checkLengths(header.pickleLength, header.lengths, this.limits)
      const pickle = record.subarray(header.pickleOffset)
      const m = header.lengths.length
      blockOfView = header.at
      views = new Array(m)
      for (let i = 0; i < m; i++) views[i] = this.#bufferView(header.at[i]!, header.offsets[i]!, header.lengths[i]!, held, transfers)
      value = this.#values.decode(pickle, views, header.readonly)
      id = header.id
    } catch (err) {
      this.release(held)
      throw err
    }
    for (const h of held) h.sab = null
    let bytes = 0
    for (const v of views) bytes += v.byteLength
    // A block no buffer points into (possible only from a strange sender) is not held for nothing.
    if (held.length > 0 && blockOfView.length < held.length) this.release(held.filter((_, k) => !blockOfView.includes(k)))
    this.stats.messagesReceived++
    this.stats.bytesReceived += bytes
    this.stats.recordBytesReceived += record.length
    return new Received<T>(id, value as T, views, held, this.#releaseHeld)
  }

  #bufferView(k: number, offset: number, length: number, held: readonly Held[], transfers: readonly ArrayBuffer[]): Uint8Array {
    if (k === EMPTY) {
      if (length !== 0) throw new TransportError('PROTOCOL', `an empty buffer slot announces ${length} bytes`)
      return new Uint8Array(0)
    }
    if (k >= 0) {
      const h = held[k]
      if (h === undefined) throw new TransportError('PROTOCOL', `buffer names block ${k}; the message has ${held.length}`)
      if (offset < 0 || offset + length > h.bytes) throw new TransportError('PROTOCOL', `a buffer of ${length} bytes at ${offset} overruns its block of ${h.bytes}`)
      return new Uint8Array(h.sab ?? this.arenas[h.arena]!.sab, this.arenas[h.arena]!.payloadOffset(h.unit) + offset, length)
    }
    const ab = transfers[TRANSFERRED - k]
    if (ab === undefined) throw new TransportError('PROTOCOL', `buffer names transferred ArrayBuffer ${TRANSFERRED - k}; ${transfers.length} arrived`)
    if (offset < 0 || offset + length > ab.byteLength) throw new TransportError('PROTOCOL', `a buffer of ${length} bytes at ${offset} overruns its transferred ArrayBuffer of ${ab.byteLength}`)
    return new Uint8Array(ab, offset, length)
  }

  // ---- releasing ----

  /** Gives blocks back: freed now if the lock is free, else as soon as it is. Idempotent. */
  release(held: readonly Held[]): void {
    for (const h of held) {
      if (h.state !== 'held') continue
      this.#forget(h, 'released')
      this.#pending.push(h)
    }
    this.#flush()
  }

  #forget(h: Held, state: 'moved' | 'released'): void {
    if (h.state !== 'held') return
    h.state = state
    if (this.#owned[h.arena]!.get(h.unit) === h) this.#owned[h.arena]!.delete(h.unit)
    this.stats.bytesHeld -= h.bytes
    this.#registry?.unregister(h)
  }

  #collected(held: Held): void {
    if (held.state !== 'held') return
    this.stats.gcReleases++
    this.release([held])
  }

  #flush(): void {
    if (this.#pending.length === 0 || this.#flushing) return
    for (let a = 0; a < this.arenas.length; a++) {
      if (!this.#pending.some((h) => h.arena === a)) continue
      const arena = this.arenas[a]!
      if (!arena.mutex.tryLock(this.id)) {
        this.#flushLater()
        continue
      }
      try {
        this.#freeLocked(a)
      } finally {
        arena.mutex.unlock(this.id)
      }
    }
  }

  #freeLocked(a: number): void {
    const arena = this.arenas[a]!
    let w = 0
    for (const h of this.#pending) {
      if (h.arena === a) arena.freeLocked(h, this.id)
      else this.#pending[w++] = h
    }
    this.#pending.length = w
  }

  #flushLater(): void {
    if (this.#flushing) return
    this.#flushing = true
    void (async () => {
      try {
        while (this.#pending.length > 0) {
          const a = this.#pending[0]!.arena
          await this.arenas[a]!.locked(this.id, () => this.#freeLocked(a))
        }
      } finally {
        this.#flushing = false
      }
    })()
  }

  /** Forgets every block this endpoint holds in arena `a` without freeing it (the arena was reclaimed). */
  forgetAll(a: number): void {
    for (const h of [...this.#owned[a]!.values()]) this.#forget(h, 'released')
  }

  /** Frees blocks whose release is still pending now, waiting for the locks (for close and tests). */
  async settle(): Promise<void> {
    while (this.#pending.length > 0) {
      const a = this.#pending[0]!.arena
      await this.arenas[a]!.locked(this.id, () => this.#freeLocked(a))
    }
  }
}

/** The buffers a draft has to copy into the arena, for a CAPACITY message: one buffer, or the sum with its terms. */
function copiesShown(d: Draft): string {
  const sizes = d.toCopy.map((i) => d.parts.buffers[i]!.byteLength)
  if (sizes.length === 1) return `a buffer of ${sizes[0]} bytes`
  const total = sizes.reduce((n, b) => n + b, 0)
  const terms = sizes.length <= 6 ? sizes.join(' + ') : `${sizes.slice(0, 5).join(' + ')} + ... (${sizes.length - 5} more)`
  return `the message's ${sizes.length} buffers to copy together (${terms} = ${total} bytes)`
}

function checkByteLength(n: number): void {
  if (!Number.isSafeInteger(n) || n <= 0) throw new TypeError(`byteLength must be a positive integer, got ${String(n)}`)
}

const SHM_CARRIER = 'the shared-memory carrier'

function toBytes(view: ArrayBufferView | PickleBuffer): Uint8Array {
  if ('raw' in view) return view.raw()
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}

export function concat(parts: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
