/**
 * Memory an application hands back for reuse (PickleSocket.recycle): ArrayBuffers whose values
 * it no longer uses. The receiver takes one of exactly the size it needs for a buffer read from
 * a same-host file or assembled from chunks, instead of allocating a new one: its pages exist
 * already, so filling it costs no page faults. The list holds at most maxBytes; adding more
 * drops the oldest.
 */
import type { WebSocketStats } from './stats.js'

/** Default of the recycleBytes option: what the recycle list holds at most. */
export const DEFAULT_RECYCLE_BYTES = 256 * 2 ** 20

/**
 * The ArrayBuffer behind what the application hands to recycle(): an ArrayBuffer, or a view
 * that covers the whole of one. TypeError / RangeError for anything else.
 */
export function recyclableMemory(value: unknown): ArrayBuffer {
  let memory: unknown = value
  if (ArrayBuffer.isView(value)) {
    memory = value.buffer
    if (memory instanceof ArrayBuffer && (value.byteOffset !== 0 || value.byteLength !== memory.byteLength)) {
      throw new RangeError(`recycle needs memory the application owns whole: this view covers bytes ${value.byteOffset} to ${value.byteOffset + value.byteLength} of an ArrayBuffer of ${memory.byteLength} (pass the ArrayBuffer of a received buffer, or a view over all of it)`)
    }
  }
  if (typeof SharedArrayBuffer !== 'undefined' && memory instanceof SharedArrayBuffer) {
    throw new TypeError('recycle takes an ArrayBuffer or a view over a whole ArrayBuffer, got a SharedArrayBuffer (memory other threads may still use)')
  }
  if (!(memory instanceof ArrayBuffer)) {
    const got = value === null ? 'null' : typeof value === 'object' ? (value as object).constructor?.name ?? 'an object' : typeof value
    throw new TypeError(`recycle takes an ArrayBuffer or a view (Uint8Array, Float32Array, DataView, ...) over a whole ArrayBuffer, got ${got}`)
  }
  return memory
}

export class RecycledBuffers {
  /** Oldest first. */
  readonly #list: ArrayBuffer[] = []
  #bytes = 0

  constructor(private readonly maxBytes: number, private readonly stats: WebSocketStats) {}

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes
  }

  /** Keeps `memory` for a later buffer of its size; drops the oldest beyond maxBytes. A buffer already kept is not kept twice. */
  add(memory: ArrayBuffer): void {
    const n = memory.byteLength
    if (n === 0 || n > this.maxBytes || this.#list.includes(memory)) return
    this.#list.push(memory)
    this.#bytes += n
    while (this.#bytes > this.maxBytes) this.#bytes -= this.#list.shift()!.byteLength
  }

  /** The most recently kept ArrayBuffer of exactly `size` bytes (no longer kept), or null. */
  take(size: number): ArrayBuffer | null {
    for (let i = this.#list.length - 1; i >= 0; i--) {
      const memory = this.#list[i]!
      if (memory.byteLength !== size) continue
      this.#list.splice(i, 1)
      this.#bytes -= size
      this.stats.buffersRecycled++
      return memory
    }
    return null
  }

  /** Drops everything kept (the connection ended). */
  clear(): void {
    this.#list.length = 0
    this.#bytes = 0
  }
}
