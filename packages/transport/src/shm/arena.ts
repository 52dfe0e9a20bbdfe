/**
 * The arena: one SharedArrayBuffer shared once between threads, cut into 64-byte-aligned
 * blocks. Each block has a 64-byte header in front of it (size in 64-byte units, owner,
 * ticket, requested length) and its payload starts on a 64-byte boundary, so that any
 * TypedArray (and a numpy array of any dtype) can be a view over it.
 *
 * Ownership: every block is FREE, QUEUED (committed to a message no receiver has taken yet)
 * or owned by one endpoint id (a positive integer). Ownership passes from sender to receiver
 * with a compare of owner and ticket under the arena's mutex; a ticket is stamped on each
 * allocation, so that a stale or repeated release of a block finds the ticket changed and
 * frees nothing: nothing is released twice.
 *
 * Allocation is next-fit from a rover, coalescing free neighbours as it walks; freeing only
 * marks the block free. Every change is one store that leaves the chain of blocks walkable,
 * so that a thread killed inside a critical section leaves a sound heap (see SharedMutex).
 */
import { TransportError } from '../errors.js'
import { SharedMutex } from './mutex.js'
import { checkWait, deadlineOf, sleep, wake, type WaitOptions } from './wait.js'

/** Block alignment and the allocation unit, in bytes. */
export const BLOCK_ALIGN = 64
/** Bytes of the arena's control words at the start of its SharedArrayBuffer. */
export const CONTROL_BYTES = 64
/** Default capacity of an arena: the largest single buffer it holds, in bytes. */
export const DEFAULT_ARENA_BYTES = 64 * 2 ** 20

export const FREE = 0
export const QUEUED = -1

const MAGIC = 0x70776172 // 'pwar'

// Control words (Int32 indexes from the control offset).
const C_MAGIC = 0
const C_LOCK = 1
const C_LOCK_WAITERS = 2
const C_ROVER = 3
const C_USED_UNITS = 4
const C_FREE_GEN = 5
const C_SPACE_WAITERS = 6
const C_TICKET = 7
const C_HEAP_UNITS = 8

// Block header words (Int32 indexes from the block's header).
const H_SIZE = 0
const H_OWNER = 1
const H_TICKET = 2
const H_LENGTH = 3

const WORDS_PER_UNIT = BLOCK_ALIGN / 4

/** A block as a message names it: its unit in the arena's heap and the ticket of its allocation. */
export interface BlockRef {
  unit: number
  ticket: number
}

/** Where an arena lives inside a SharedArrayBuffer. */
export interface ArenaLayout {
  controlOffset: number
  heapOffset: number
  heapUnits: number
}

/** Units of heap (headers included) for a capacity: one header, then the capacity rounded up. */
export function heapUnitsFor(capacity: number): number {
  if (!Number.isSafeInteger(capacity) || capacity < BLOCK_ALIGN) {
    throw new TypeError(`arena capacity must be an integer of at least ${BLOCK_ALIGN} bytes, got ${String(capacity)}`)
  }
  const units = 1 + Math.ceil(capacity / BLOCK_ALIGN)
  if (units > 2 ** 31 - 1) throw new TypeError(`arena capacity of ${capacity} bytes is over the 128 GiB an arena can hold`)
  return units
}

/** Units a block of `byteLength` payload bytes takes, header included. */
export function unitsFor(byteLength: number): number {
  return 1 + Math.max(1, Math.ceil(byteLength / BLOCK_ALIGN))
}

export class Arena {
  readonly sab: SharedArrayBuffer
  readonly mutex: SharedMutex
  readonly heapOffset: number
  readonly heapUnits: number
  readonly #i32: Int32Array
  readonly #c: number // control word base
  readonly #h: number // heap word base

  /** Opens the arena laid out in `sab`; `init` writes a fresh, empty arena there first. */
  constructor(sab: SharedArrayBuffer, layout: ArenaLayout, init = false) {
    if (layout.controlOffset % BLOCK_ALIGN || layout.heapOffset % BLOCK_ALIGN) throw new TypeError('arena offsets must be 64-byte aligned')
    if (layout.heapOffset + layout.heapUnits * BLOCK_ALIGN > sab.byteLength) {
      throw new TypeError(`an arena of ${layout.heapUnits} units at ${layout.heapOffset} does not fit a SharedArrayBuffer of ${sab.byteLength} bytes`)
    }
    this.sab = sab
    this.#i32 = new Int32Array(sab)
    this.#c = layout.controlOffset >> 2
    this.#h = layout.heapOffset >> 2
    this.heapOffset = layout.heapOffset
    this.heapUnits = layout.heapUnits
    this.mutex = new SharedMutex(this.#i32, this.#c + C_LOCK, this.#c + C_LOCK_WAITERS)
    const c = this.#c
    if (init) {
      this.#i32[this.#h + H_SIZE] = layout.heapUnits
      this.#i32[this.#h + H_OWNER] = FREE
      this.#i32[c + C_HEAP_UNITS] = layout.heapUnits
      Atomics.store(this.#i32, c + C_MAGIC, MAGIC)
    } else if (Atomics.load(this.#i32, c + C_MAGIC) !== MAGIC || this.#i32[c + C_HEAP_UNITS] !== layout.heapUnits) {
      throw new TransportError('PROTOCOL', 'not a picklewire arena, or one laid out differently')
    }
  }

  /** The largest single buffer the arena can ever hold, in bytes. */
  get capacity(): number {
    return (this.heapUnits - 1) * BLOCK_ALIGN
  }

  /** Bytes taken by blocks in use, their headers included. */
  get bytesInUse(): number {
    return Atomics.load(this.#i32, this.#c + C_USED_UNITS) * BLOCK_ALIGN
  }

  /** Bytes not in use: capacity when every block has been released. */
  get freeBytes(): number {
    return this.capacity - this.bytesInUse
  }

  /** A word that changes whenever a block is freed: what waiting for space waits on. */
  get #freeGen(): number {
    return this.#c + C_FREE_GEN
  }

  #header(unit: number): number {
    return this.#h + unit * WORDS_PER_UNIT
  }

  /** Byte offset in the SharedArrayBuffer of the block's payload. */
  payloadOffset(unit: number): number {
    return this.heapOffset + (unit + 1) * BLOCK_ALIGN
  }

  /** Payload bytes of the block (its units, header excluded). */
  payloadBytes(unit: number): number {
    return (this.#i32[this.#header(unit) + H_SIZE]! - 1) * BLOCK_ALIGN
  }

  /** The unit whose payload starts at this byte offset of the SharedArrayBuffer, or -1. */
  unitAt(byteOffset: number): number {
    const rel = byteOffset - this.heapOffset
    if (rel < BLOCK_ALIGN || rel % BLOCK_ALIGN !== 0) return -1
    const unit = rel / BLOCK_ALIGN - 1
    return unit < this.heapUnits ? unit : -1
  }

  /** A view of `length` bytes of the block's payload from `offset`. */
  view(unit: number, offset: number, length: number): Uint8Array {
    return new Uint8Array(this.sab, this.payloadOffset(unit) + offset, length)
  }

  /** Throws CAPACITY when `units` can never fit this arena at once. */
  checkFits(units: number, what: string): void {
    if (units > this.heapUnits) {
      throw new TransportError('CAPACITY', `${what} needs ${units * BLOCK_ALIGN} bytes of arena (64-byte headers included) ` +
        `but the arena holds ${this.capacity} bytes; give a larger capacity`)
    }
  }

  // ---- operations under the mutex (the caller holds it) ----

  /** Allocates a block of `byteLength` bytes owned by `owner`, or returns null when no free run is large enough. */
  allocLocked(byteLength: number, owner: number): BlockRef | null {
    const need = unitsFor(byteLength)
    if (need > this.heapUnits) return null
    const i = this.#i32
    const total = this.heapUnits
    const start = i[this.#c + C_ROVER]!
    for (let pass = 0; pass < 2; pass++) {
      // First from the rover to the end, then from the start up to the rover.
      const end = pass === 0 ? total : start
      let u = pass === 0 ? start : 0
      while (u < end) {
        const hu = this.#header(u)
        let size = i[hu + H_SIZE]!
        if (size <= 0 || u + size > total) throw new TransportError('PROTOCOL', `arena heap is corrupt at unit ${u} (size ${size})`)
        if (i[hu + H_OWNER] === FREE) {
          let next = u + size
          while (next < total && i[this.#header(next) + H_OWNER] === FREE) {
            size += i[this.#header(next) + H_SIZE]!
            next = u + size
          }
          i[hu + H_SIZE] = size
          // Merging across the rover: it must name a block start, so it moves back to this one.
          if (u < start && next > start) i[this.#c + C_ROVER] = u
          if (size >= need) {
            if (size > need) {
              const hr = this.#header(u + need)
              i[hr + H_OWNER] = FREE
              i[hr + H_TICKET] = 0
              i[hr + H_SIZE] = size - need
              i[hu + H_SIZE] = need
            }
            let ticket = (i[this.#c + C_TICKET]! + 1) | 0
            if (ticket === 0) ticket = 1
            i[this.#c + C_TICKET] = ticket
            i[hu + H_TICKET] = ticket
            i[hu + H_LENGTH] = byteLength
            i[hu + H_OWNER] = owner
            i[this.#c + C_ROVER] = u + need < total ? u + need : 0
            Atomics.add(i, this.#c + C_USED_UNITS, need)
            return { unit: u, ticket }
          }
        }
        u += size
      }
    }
    return null
  }

  /** The block's owner if `ref` names a live allocation (its ticket matches), else null. */
  ownerLocked(ref: BlockRef): number | null {
    if (!Number.isInteger(ref.unit) || ref.unit < 0 || ref.unit >= this.heapUnits) return null
    const h = this.#header(ref.unit)
    if (this.#i32[h + H_TICKET] !== ref.ticket || ref.ticket === 0) return null
    const owner = this.#i32[h + H_OWNER]!
    return owner === FREE ? null : owner
  }

  /** Passes the block from `from` to `to` (an owner id or QUEUED); false if `from` does not hold it. */
  moveLocked(ref: BlockRef, from: number, to: number): boolean {
    if (this.ownerLocked(ref) !== from) return false
    this.#i32[this.#header(ref.unit) + H_OWNER] = to
    return true
  }

  /** Frees the block if `owner` holds it; false (and nothing freed) otherwise. */
  freeLocked(ref: BlockRef, owner: number): boolean {
    if (this.ownerLocked(ref) !== owner) return false
    const h = this.#header(ref.unit)
    this.#i32[h + H_OWNER] = FREE
    Atomics.sub(this.#i32, this.#c + C_USED_UNITS, this.#i32[h + H_SIZE]!)
    this.#spaceFreed()
    return true
  }

  /**
   * Frees every block whose owner `reclaim(owner)` selects (a dead endpoint's, QUEUED blocks
   * nobody will take) and recounts the bytes in use. Returns the payload bytes freed.
   */
  reclaimLocked(reclaim: (owner: number) => boolean): number {
    const i = this.#i32
    let used = 0
    let freed = 0
    for (let u = 0; u < this.heapUnits;) {
      const h = this.#header(u)
      const size = i[h + H_SIZE]!
      if (size <= 0 || u + size > this.heapUnits) throw new TransportError('PROTOCOL', `arena heap is corrupt at unit ${u} (size ${size})`)
      const owner = i[h + H_OWNER]!
      if (owner !== FREE) {
        if (reclaim(owner)) {
          i[h + H_OWNER] = FREE
          freed += (size - 1) * BLOCK_ALIGN
        } else {
          used += size
        }
      }
      u += size
    }
    Atomics.store(i, this.#c + C_USED_UNITS, used)
    this.#spaceFreed()
    return freed
  }

  #spaceFreed(): void {
    Atomics.add(this.#i32, this.#freeGen, 1)
    wake(this.#i32, this.#freeGen, this.#c + C_SPACE_WAITERS)
  }

  /** Wakes every thread waiting for space, so that it re-checks (after a close). */
  wakeSpaceWaiters(): void {
    Atomics.add(this.#i32, this.#freeGen, 1)
    wake(this.#i32, this.#freeGen, this.#c + C_SPACE_WAITERS)
  }

  // ---- operations that take the mutex ----

  /** Allocation without waiting: a block, or null when the arena is full or its lock is busy. */
  tryAlloc(byteLength: number, owner: number): BlockRef | null {
    if (!this.mutex.tryLock(owner)) return null
    try {
      return this.allocLocked(byteLength, owner)
    } finally {
      this.mutex.unlock(owner)
    }
  }

  /**
   * Allocates a block, waiting while the arena is full (backpressure). `stop()` is asked after
   * each wake-up and may throw (a closed channel); CAPACITY when it can never fit.
   */
  async alloc(byteLength: number, owner: number, options: WaitOptions = {}, stop?: () => void): Promise<BlockRef> {
    this.checkFits(unitsFor(byteLength), `a buffer of ${byteLength} bytes`)
    const deadline = deadlineOf(options)
    const i = this.#i32
    for (;;) {
      stop?.()
      const gen = Atomics.load(i, this.#freeGen)
      const ref = await this.mutex.withLock(owner, () => this.allocLocked(byteLength, owner))
      if (ref !== null) return ref
      checkWait(options, deadline, `waiting for ${byteLength} bytes of arena space`)
      await sleep(i, this.#freeGen, this.#c + C_SPACE_WAITERS, gen, deadline, { signal: options.signal })
    }
  }

  /** Runs fn holding the lock, waiting for it. */
  locked<T>(owner: number, fn: () => T): Promise<T> {
    return this.mutex.withLock(owner, fn)
  }
}

/** Creates a SharedArrayBuffer holding one fresh arena with room for a buffer of `capacity` bytes. */
export function createArenaBuffer(capacity = DEFAULT_ARENA_BYTES): SharedArrayBuffer {
  const heapUnits = heapUnitsFor(capacity)
  const sab = new SharedArrayBuffer(CONTROL_BYTES + heapUnits * BLOCK_ALIGN)
  new Arena(sab, { controlOffset: 0, heapOffset: CONTROL_BYTES, heapUnits }, true)
  return sab
}

/** Opens an arena made by createArenaBuffer (in this thread or another). */
export function openArenaBuffer(sab: SharedArrayBuffer): Arena {
  if (!(sab instanceof SharedArrayBuffer)) throw new TypeError(`expected the SharedArrayBuffer of an arena, got ${Object.prototype.toString.call(sab)}`)
  const heapUnits = (sab.byteLength - CONTROL_BYTES) / BLOCK_ALIGN
  if (!Number.isInteger(heapUnits) || heapUnits < 2) throw new TransportError('PROTOCOL', `a SharedArrayBuffer of ${sab.byteLength} bytes is not an arena`)
  return new Arena(sab, { controlOffset: 0, heapOffset: CONTROL_BYTES, heapUnits })
}
