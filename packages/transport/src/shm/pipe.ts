/**
 * A pipe: one direction, any number of threads sending and receiving (as a Go channel), over
 * one SharedArrayBuffer that holds its arena and its record ring. Each message goes to exactly
 * one receiver, in the order the senders committed them. The job pipeline of the examples
 * reads jobs from one pipe with several workers and writes results to another.
 *
 * A thread that dies holding blocks (allocated, or received and not released) leaks them until
 * someone who saw it die calls reclaim(threadId), which reclaimOnExit(worker, ...) does.
 * Messages it had already sent are not lost: their blocks belong to the queue, not to it.
 */
import { threadId, type Worker } from 'node:worker_threads'
import type { PickleBuffer } from '@picklewire/codec'
import { TransportError, receiveUntilClosed } from '../errors.js'
import { DEFAULT_ARENA_BYTES, QUEUED } from './arena.js'
import { checkOptions, optionNames } from '../options-check.js'
import { Endpoint, checkEndpointOptions, type EndpointOptions, type ShmStats } from './endpoint.js'
import { RingLink, createPipeMemory, openPipeMemory, type PipeMemory } from './link.js'
import type { Received } from './received.js'
import { DEFAULT_RING_BYTES } from './ring.js'
import { Turns } from './turns.js'
import { WAIT_OPTIONS, waitingFrom, type WaitOptions, type Waiting } from './wait.js'

/** The owner id of every endpoint of this thread: its threadId plus one (0 means a free block). */
export const THREAD_OWNER = threadId + 1

export interface PipeMemoryOptions {
  /** The largest buffer the arena holds at once, in bytes; the arena never grows. Default 64 MiB. */
  capacity?: number
  /** Bytes of the record ring (a power of two): how many small messages can wait. Default 1 MiB. */
  ringBytes?: number
}

/** What createPipe returns: post it to other threads (it is structured-clonable) and open it there. */
export interface PipeInit {
  type: 'picklewire/pipe'
  sab: SharedArrayBuffer
  ringBytes: number
}

export type TypedArrayConstructor<T> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; readonly BYTES_PER_ELEMENT: number }

/** Counters of one endpoint, and the state of the arena it sends into. */
export interface ArenaStats {
  capacity: number
  bytesInUse: number
  freeBytes: number
}

const PIPE_MEMORY_OPTIONS = optionNames('capacity', 'ringBytes')

export function createPipe(options: PipeMemoryOptions = {}): PipeInit {
  checkOptions('createPipe', options, PIPE_MEMORY_OPTIONS)
  const ringBytes = options.ringBytes ?? DEFAULT_RING_BYTES
  return { type: 'picklewire/pipe', sab: createPipeMemory(options.capacity ?? DEFAULT_ARENA_BYTES, ringBytes), ringBytes }
}

export function openPipe(init: PipeInit, options: EndpointOptions = {}): Pipe {
  if (init?.type !== 'picklewire/pipe') throw new TypeError('openPipe needs what createPipe returned')
  checkEndpointOptions('openPipe', options)
  return new Pipe(openPipeMemory(init.sab, init.ringBytes), options)
}

export class Pipe {
  readonly #memory: PipeMemory
  readonly #endpoint: Endpoint
  readonly #link: RingLink
  /** This endpoint's sends and receives, each in call order. */
  readonly #sends = new Turns('send')
  readonly #receives = new Turns('receive')

  constructor(memory: PipeMemory, options: EndpointOptions = {}) {
    checkEndpointOptions('Pipe', options)
    this.#memory = memory
    this.#endpoint = new Endpoint([memory.arena], THREAD_OWNER, options)
    this.#link = new RingLink(this.#endpoint, memory, 0, QUEUED)
  }

  #closed: Promise<void> | null = null

  /** False once any endpoint, in any thread, closed the pipe. */
  get open(): boolean {
    return this.#memory.ring.closedBy === 0
  }

  /**
   * Resolves (never rejects) once any endpoint, in any thread, closed the pipe. Waiting on it
   * keeps the thread alive until then, as a waiting receive does: reading it while the pipe is
   * open counts as waiting.
   */
  get closed(): Promise<void> {
    if (this.#closed === null) {
      // The wait on the ring's closed word costs nothing per message, and does not keep the thread alive by itself.
      const alive = this.open ? setInterval(noop, 2 ** 30) : undefined
      this.#closed = this.#memory.ring.whenClosed().finally(() => clearInterval(alive))
    }
    return this.#closed
  }

  /** Always null: a pipe ends only by a close(), and a thread that dies leaves it open for the others (see reclaim). */
  get error(): Error | null {
    return null
  }

  #closedForSend = (): string | null => (this.open ? null : 'the pipe is closed')
  #closedForReceive = (): string | null => (!this.open && this.#memory.ring.empty ? 'the pipe is closed and every message in it was received' : null)

  /**
   * Sends a value: its out-of-band buffers go to the arena (in place if they were allocated
   * there, else copied once) and the rest through the ring. Waits while either is full.
   */
  send(value: unknown, options: WaitOptions = {}): Promise<void> {
    let wait: Waiting
    try {
      wait = waitingFrom('Pipe.send', options, WAIT_OPTIONS)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#sends.take(wait, async () => {
      const why = this.#closedForSend()
      if (why !== null) throw new TransportError('CLOSED', why)
      const out = await this.#endpoint.prepare(value, 0, { wait, stop: () => this.#stopIfClosed() })
      try {
        const bytes = await this.#link.commit(out, 0, wait, this.#closedForSend)
        this.#endpoint.sent(out, bytes)
      } catch (err) {
        this.#endpoint.abandon(out)
        throw err
      }
    })
  }

  #stopIfClosed(): void {
    const why = this.#closedForSend()
    if (why !== null) throw new TransportError('CLOSED', why)
  }

  /** The next message, in order; waits while the pipe is empty; CLOSED once closed and empty. */
  receive<T = unknown>(options: WaitOptions = {}): Promise<Received<T>> {
    let wait: Waiting
    try {
      wait = waitingFrom('Pipe.receive', options, WAIT_OPTIONS)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#receives.take(wait, async () => {
      const got = await this.#link.takeNext(wait, this.#closedForReceive)
      const held = await this.#endpoint.take(got.prefix, got.taken)
      return this.#endpoint.decode<T>(got.record, got.prefix, held)
    })
  }

  /** Every message until the pipe is closed and empty. */
  [Symbol.asyncIterator](): AsyncGenerator<Received> {
    return receiveUntilClosed(() => this.receive())
  }

  /** Bytes in the arena to fill in place and send without a copy; waits for space. */
  alloc(byteLength: number, options: WaitOptions = {}): Promise<Uint8Array> {
    return this.#endpoint.alloc(0, byteLength, options, () => this.#stopIfClosed())
  }

  /** A TypedArray in the arena (64-byte aligned), to fill in place and send without a copy. */
  allocArray<T>(ctor: TypedArrayConstructor<T>, length: number, options: WaitOptions = {}): Promise<T> {
    return this.#endpoint.allocArray(0, ctor, length, options, () => this.#stopIfClosed())
  }

  /** As alloc, or null at once when the arena has no room. */
  tryAlloc(byteLength: number): Uint8Array | null {
    return this.#endpoint.tryAlloc(0, byteLength)
  }

  /** Frees an allocated block that will not be sent; false if the view is not over one this endpoint holds. */
  free(view: ArrayBufferView | PickleBuffer): boolean {
    return this.#endpoint.free(view)
  }

  /** Closes the pipe for every endpoint: sends fail with CLOSED; receivers get what is queued, then CLOSED. */
  async close(): Promise<void> {
    const { arena, ring } = this.#memory
    await arena.locked(THREAD_OWNER, () => ring.close(THREAD_OWNER))
    arena.wakeSpaceWaiters()
  }

  /**
   * Frees every block a dead thread held (allocated, or received and not released) and breaks
   * the arena's lock if it died holding it. Call it only for a thread that has exited.
   * Returns the payload bytes freed.
   */
  async reclaim(deadThreadId: number): Promise<number> {
    const dead = deadThreadId + 1
    if (dead === THREAD_OWNER) throw new TypeError('a thread cannot reclaim its own blocks: release them')
    const { arena } = this.#memory
    arena.mutex.breakIfHeldBy((holder) => holder === dead)
    return arena.locked(THREAD_OWNER, () => arena.reclaimLocked((owner) => owner === dead))
  }

  /** Frees blocks whose release waited for the lock (releases are otherwise immediate when the lock is free). */
  settle(): Promise<void> {
    return this.#endpoint.settle()
  }

  stats(): ShmStats & { arena: ArenaStats } {
    const { arena } = this.#memory
    return { ...this.#endpoint.stats, arena: { capacity: arena.capacity, bytesInUse: arena.bytesInUse, freeBytes: arena.freeBytes } }
  }
}

/**
 * Reclaims, when `worker` exits (cleanly or not), whatever it still held in these pipes. The
 * thread id is read now: Node sets worker.threadId to -1 once the worker has exited.
 */
export function reclaimOnExit(worker: Worker, ...pipes: Pipe[]): void {
  const tid = worker.threadId
  worker.once('exit', () => {
    for (const p of pipes) void p.reclaim(tid)
  })
}

function noop(): void {}
