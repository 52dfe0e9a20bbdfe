/**
 * Records through a RecordRing: committing a prepared message (its blocks in the ring's own
 * arena become QUEUED in the same critical section that publishes its record, so a sender
 * that dies afterwards loses nothing) and taking the next one (read and take under one lock,
 * so a receiver that dies between the two leaks nothing). Used by pipes and by channels.
 */
import { TransportError } from '../errors.js'
import { BLOCK_ALIGN, CONTROL_BYTES, Arena, heapUnitsFor } from './arena.js'
import type { Endpoint, Outgoing } from './endpoint.js'
import type { Held } from './received.js'
import { KIND_IN_BLOCK, dataView, readPrefix, readU32, recordPrefixBytes, writePrefix, type RecordPrefix } from './record.js'
import { RING_CONTROL_BYTES, RecordRing, checkRingBytes } from './ring.js'
import { checkWait, deadlineOf, type WaitOptions } from './wait.js'

/** An arena and a record ring in one SharedArrayBuffer, under one mutex. */
export interface PipeMemory {
  sab: SharedArrayBuffer
  arena: Arena
  ring: RecordRing
}

function layoutOf(sab: SharedArrayBuffer, ringBytes: number): { heapOffset: number; heapUnits: number } {
  const heapOffset = CONTROL_BYTES + RING_CONTROL_BYTES + ringBytes
  return { heapOffset, heapUnits: (sab.byteLength - heapOffset) / BLOCK_ALIGN }
}

export function createPipeMemory(capacity: number, ringBytes: number): SharedArrayBuffer {
  checkRingBytes(ringBytes)
  const heapUnits = heapUnitsFor(capacity)
  const sab = new SharedArrayBuffer(CONTROL_BYTES + RING_CONTROL_BYTES + ringBytes + heapUnits * BLOCK_ALIGN)
  openPipeMemory(sab, ringBytes, true)
  return sab
}

export function openPipeMemory(sab: SharedArrayBuffer, ringBytes: number, init = false): PipeMemory {
  if (!(sab instanceof SharedArrayBuffer)) throw new TypeError(`expected a SharedArrayBuffer, got ${Object.prototype.toString.call(sab)}`)
  const { heapOffset, heapUnits } = layoutOf(sab, ringBytes)
  if (!Number.isInteger(heapUnits) || heapUnits < 2) throw new TransportError('PROTOCOL', `a SharedArrayBuffer of ${sab.byteLength} bytes is not a pipe with a ring of ${ringBytes}`)
  const ring = new RecordRing(sab, CONTROL_BYTES, CONTROL_BYTES + RING_CONTROL_BYTES, ringBytes, init)
  const arena = new Arena(sab, { controlOffset: 0, heapOffset, heapUnits }, init)
  return { sab, arena, ring }
}

/** A record taken from the ring, with its blocks in the ring's arena taken already. */
export interface TakenRecord {
  record: Uint8Array
  prefix: RecordPrefix
  taken: (Held | null)[]
}

export class RingLink {
  /**
   * @param endpoint the endpoint sending or receiving
   * @param memory the arena and ring the records go through
   * @param a that arena's index among the endpoint's arenas
   * @param queued the owner value of blocks committed to this ring and not taken yet
   */
  constructor(readonly endpoint: Endpoint, readonly memory: PipeMemory, readonly a: number, readonly queued: number) {}

  /**
   * Publishes a prepared message, waiting while the ring is full. A record too large for the
   * ring goes into an arena block of its own and the ring carries a pointer to it.
   * `closed()` is asked under the lock; a true answer makes the send fail with CLOSED.
   */
  async commit(out: Outgoing, flags: number, wait: WaitOptions, closed: () => string | null, singleSender = false): Promise<number> {
    const { endpoint, a, queued } = this
    const { arena, ring } = this.memory
    const recordLength = endpoint.recordLength(out)
    let inRing: Uint8Array | null = null
    let pointer: Held | null = null
    const stop = (): void => {
      const why = closed()
      if (why !== null) throw new TransportError('CLOSED', why)
    }
    if (recordLength > ring.maxInlineRecord) {
      // Too large for the ring: the record goes in a block of its own; the ring carries a pointer to it.
      pointer = await endpoint.allocBlock(a, recordLength, wait, stop)
      const view = arena.view(pointer.unit, 0, recordLength)
      endpoint.writeRecord(dataView(view), view, 0, out, queued, flags)
      inRing = new Uint8Array(recordPrefixBytes(1) + 4)
      const dv = dataView(inRing)
      dv.setUint32(writePrefix(dv, 0, KIND_IN_BLOCK, flags, queued, endpoint.id, [pointer]), recordLength, true)
    }
    const deadline = deadlineOf(wait)
    try {
      for (;;) {
        const observed = ring.consumed
        const attempt = (): boolean => {
          stop()
          endpoint.moveLocked(out, a, queued)
          if (pointer !== null) arena.moveLocked(pointer, endpoint.id, queued)
          if (inRing !== null ? ring.writeLocked([inRing], inRing.length, false) : this.#write(out, recordLength, flags, false)) return true
          endpoint.moveBackLocked(out, a, queued)
          if (pointer !== null) arena.moveLocked(pointer, queued, endpoint.id)
          return false
        }
        // One sender and one receiver (a channel) need no lock for the ring itself, only for block moves.
        const done = singleSender && pointer === null && !out.blocks.some((h) => h.arena === a) ? attempt() : await arena.locked(endpoint.id, attempt)
        if (done) {
          ring.wakeReceivers()
          break
        }
        checkWait(wait, deadline, 'waiting for room in the record ring')
        await ring.waitConsumed(observed, deadline, wait.signal)
      }
    } catch (err) {
      if (pointer !== null) endpoint.release([pointer])
      throw err
    }
    if (pointer !== null) endpoint.forgetMoved(pointer)
    return recordLength
  }

  /** Under the lock (or as the ring's only sender): writes the message's record into the ring in place; false when it has no room. */
  #write(out: Outgoing, length: number, flags: number, wakeNow = true): boolean {
    const ring = this.memory.ring
    const at = ring.reserveLocked(length)
    if (at < 0) return false
    this.endpoint.writeRecord(ring.dv, ring.bytes, at, out, this.queued, flags)
    ring.publishLocked(wakeNow)
    return true
  }

  /**
   * commit without waiting: the record's length if it is published now; -1 (and nothing done)
   * when the ring is full, the lock is busy or the record needs a block of its own.
   */
  tryCommit(out: Outgoing, flags: number, closed: () => string | null, singleSender = false): number {
    const { endpoint, a, queued } = this
    const { arena, ring } = this.memory
    const length = endpoint.recordLength(out)
    if (length > ring.maxInlineRecord) return -1
    const why = closed()
    if (why !== null) throw new TransportError('CLOSED', why)
    let inArena = false
    for (let k = 0; k < out.blocks.length; k++) if (out.blocks[k]!.arena === a) inArena = true
    // One sender and one receiver (a channel) need no lock for the ring itself, only for block moves.
    if (singleSender && !inArena) return this.#write(out, length, flags) ? length : -1
    if (!arena.mutex.tryLock(endpoint.id)) return -1
    let done = false
    try {
      if (closed() !== null) return -1
      endpoint.moveLocked(out, a, queued)
      done = this.#write(out, length, flags, false)
      if (!done) endpoint.moveBackLocked(out, a, queued)
    } finally {
      arena.mutex.unlock(endpoint.id)
    }
    if (!done) return -1
    ring.wakeReceivers()
    return length
  }

  /** Under the arena's lock: the next record with its blocks in this arena taken, or null. */
  takeNextLocked(): TakenRecord | null {
    const { endpoint, a } = this
    const { arena, ring } = this.memory
    let record = ring.readLocked()
    if (record === null) return null
    let prefix = readPrefix(record)
    if (prefix.kind === KIND_IN_BLOCK) {
      const b = prefix.blocks[0]!
      if (b.arena !== a) throw new TransportError('PROTOCOL', `a record in a block names arena ${b.arena}, not this ring's`)
      const length = readU32(record, prefix.bodyOffset)
      if (arena.ownerLocked(b) === null || length > arena.payloadBytes(b.unit)) throw new TransportError('PROTOCOL', `a record of ${length} bytes in arena block ${b.unit} is not there`)
      record = arena.view(b.unit, 0, length).slice()
      if (!arena.freeLocked(b, prefix.from) && !arena.freeLocked(b, prefix.sender)) throw new TransportError('PROTOCOL', `the block of a record (unit ${b.unit}) was not queued`)
      prefix = readPrefix(record)
    }
    const taken: (Held | null)[] = prefix.blocks.map(() => null)
    try {
      endpoint.takeLocked(prefix, a, taken)
    } catch (err) {
      endpoint.release(taken.filter((h): h is Held => h !== null))
      throw err
    }
    return { record, prefix, taken }
  }

  /** Takes the next record, waiting while the ring is empty; `closed()` ends the wait with CLOSED. */
  async takeNext(wait: WaitOptions, closed: () => string | null): Promise<TakenRecord> {
    const { endpoint } = this
    const { arena, ring } = this.memory
    const deadline = deadlineOf(wait)
    for (;;) {
      const observed = ring.published
      const got = await arena.locked(endpoint.id, () => this.takeNextLocked())
      if (got !== null) return got
      const why = closed()
      if (why !== null) throw new TransportError('CLOSED', why)
      checkWait(wait, deadline, 'waiting for a message')
      await ring.waitPublished(observed, deadline, wait.signal)
    }
  }
}
