/**
 * Receive memory made ready while the client is idle.
 *
 * A big message is read into a buffer allocated when its frame lengths arrive. Fresh memory
 * costs the kernel a page fault per 4 KiB page the first time it is written: for 64 MiB that is
 * 16,384 faults, about 35 ms on the development VM, which is as long as the whole transfer.
 * numpy avoids most of it by asking for 2 MiB pages (madvise), which JavaScript cannot do.
 *
 * WarmMemory moves that cost off the receive path. Once a big message has been read (done()),
 * it allocates another buffer of that size and writes one byte per page in 2 MiB slices on
 * later event-loop turns, so that the next message of about that size lands in memory whose
 * pages are already there. The turns are unref'd zero-delay timers: an unref'd setImmediate
 * does not wake an idle loop, so it made no progress between messages. Warming stops while a
 * message is being read: done in the middle of a receive, it slowed the receive by as much as
 * it saved.
 *
 * Each buffer is handed out once and never taken back: the views a gather returns own their
 * memory as before. What it costs: the spare's memory while it waits (at most `maxBytes`,
 * dropped `idleMs` after it was made or finished warming if nothing used it), and the page
 * faults themselves, paid in slices while the event loop is idle instead of inside the receive.
 * The first message of a size gets fresh memory.
 */
import { checkOptions, optionNames } from '../options-check.js'

const WARM_MEMORY_OPTIONS = optionNames('maxBytes', 'minBytes', 'idleMs')

export interface WarmMemoryOptions {
  /** The largest spare kept ready, in bytes; 0 turns warming off. Default 256 MiB. */
  maxBytes?: number
  /** Messages smaller than this get fresh memory and leave no spare. Default 4 MiB. */
  minBytes?: number
  /** A spare unused for this many milliseconds is dropped. Default 30,000. */
  idleMs?: number
}

const PAGE = 4096
/** Bytes warmed per event-loop turn (512 pages): about a millisecond on the development VM. */
const SLICE = 2 << 20

/** Where a frame reader gets the buffer of each message, and hears that the message is complete. */
export interface FrameMemory {
  take(size: number): Uint8Array
  done?(): void
}

/** Uninitialised memory (as numpy.empty): the caller overwrites every byte it hands over. */
export function freshMemory(size: number): Uint8Array {
  return size === 0 ? new Uint8Array(0) : new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size)
}

/** Fresh memory for every message. */
export const FRESH_MEMORY: FrameMemory = { take: freshMemory }

export class WarmMemory implements FrameMemory {
  readonly maxBytes: number
  readonly minBytes: number
  readonly idleMs: number
  /** The spare: allocated, with its first #warmed bytes' pages written. */
  #spare: Uint8Array | null = null
  #warmed = 0
  #step: ReturnType<typeof setTimeout> | null = null
  #idle: ReturnType<typeof setTimeout> | null = null
  /** The size to prepare a spare of once the message being read is done (0: none). */
  #next = 0
  /** Buffers handed out from a spare, and bytes of them that were warm (for tests and stats). */
  readonly stats = { fromSpare: 0, warmBytes: 0, fresh: 0 }

  constructor(options: WarmMemoryOptions = {}) {
    checkOptions('WarmMemory', options, WARM_MEMORY_OPTIONS)
    this.maxBytes = nonNegative(options.maxBytes ?? 256 * 2 ** 20, 'maxBytes')
    this.minBytes = nonNegative(options.minBytes ?? 4 * 2 ** 20, 'minBytes')
    this.idleMs = nonNegative(options.idleMs ?? 30_000, 'idleMs')
  }

  /**
   * Memory for a message of `size` bytes: the spare when it fits (within a quarter), else
   * fresh. Warming stops until done().
   */
  take(size: number): Uint8Array {
    const spare = this.#spare
    let out: Uint8Array
    if (spare !== null && spare.byteLength >= size && spare.byteLength - size <= size / 4) {
      out = spare.subarray(0, size)
      this.stats.fromSpare++
      this.stats.warmBytes += Math.min(this.#warmed, size)
      this.#drop()
    } else {
      out = freshMemory(size)
      this.stats.fresh++
      this.#pause()
    }
    if (size >= this.minBytes && size <= this.maxBytes && size > 0) this.#next = size
    return out
  }

  /** The message last taken for is read: a spare of its size is prepared from the next turn on. */
  done(): void {
    const size = this.#next
    this.#next = 0
    if (size > 0) this.#prepare(size)
    else if (this.#spare !== null && this.#step === null && this.#warmed < this.#spare.byteLength) this.#schedule()
  }

  /** Bytes of the spare whose pages are written (0 without a spare). */
  get warmBytes(): number {
    return this.#spare === null ? 0 : this.#warmed
  }

  /** Drops the spare now (its memory goes with the garbage collector). */
  drop(): void {
    this.#drop()
  }

  #drop(): void {
    this.#spare = null
    this.#warmed = 0
    if (this.#step !== null) clearTimeout(this.#step)
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#step = null
    this.#idle = null
  }

  /** Stops warming for now (a message is being read); the spare is kept. */
  #pause(): void {
    if (this.#step !== null) clearTimeout(this.#step)
    this.#step = null
  }

  #prepare(size: number): void {
    this.#drop()
    this.#spare = freshMemory(size)
    // Dropped if unused, even when its warming never finishes (a comm closed mid-message).
    this.#armIdle()
    this.#schedule()
  }

  #armIdle(): void {
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = setTimeout(() => this.#drop(), this.idleMs)
    this.#idle.unref()
  }

  #schedule(): void {
    this.#step = setTimeout(this.#warm, 0)
    this.#step.unref()
  }

  readonly #warm = (): void => {
    this.#step = null
    const spare = this.#spare
    if (spare === null) return
    const end = Math.min(spare.byteLength, this.#warmed + SLICE)
    for (let at = this.#warmed; at < end; at += PAGE) spare[at] = 0
    this.#warmed = end
    if (end < spare.byteLength) {
      this.#schedule()
    } else {
      this.#armIdle()
    }
  }
}

function nonNegative(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`${what} must be a non-negative integer, got ${String(n)}`)
  return n
}

/** The process's warm receive memory, shared by every Dask comm that does not opt out. */
export const sharedWarmMemory = new WarmMemory()
