/**
 * What a receiver gets: the value, with its out-of-band buffers as views over the arena (or
 * over the ArrayBuffers the sender transferred), and the means to give the arena blocks back.
 */

/** A block an endpoint holds, as that endpoint's own bookkeeping sees it. */
export class Held {
  /** 'held' while this endpoint owns the block; 'moved' once sent on; 'released' once freed. */
  state: 'held' | 'moved' | 'released' = 'held'

  /**
   * @param sab what views of the block are made over: with release on collection, a
   *   SharedArrayBuffer object of the block's own over the arena's memory (see Endpoint). It is
   *   dropped (null) once the views are made, so that only they keep it alive.
   */
  constructor(readonly arena: number, readonly unit: number, readonly ticket: number, readonly bytes: number, public sab: SharedArrayBuffer | null) {}
}

export class Received<T = unknown> {
  readonly #release: (held: readonly Held[]) => void
  readonly #held: readonly Held[]

  /**
   * @param id the sender's message id
   * @param value the loaded value
   * @param buffers its out-of-band buffers, in pickle order, as views over shared memory
   */
  constructor(readonly id: number, readonly value: T, readonly buffers: readonly Uint8Array[], held: readonly Held[], release: (held: readonly Held[]) => void) {
    this.#held = held
    this.#release = release
  }

  /** Arena bytes this message holds until released (whole blocks). */
  get heldBytes(): number {
    let n = 0
    for (const h of this.#held) if (h.state === 'held') n += h.bytes
    return n
  }

  /**
   * Gives the message's arena blocks back to the sender's arena. The views in `buffers` and in
   * the value must not be used afterwards: the memory will be reused. Releasing twice, or
   * releasing a block already sent on to another thread, does nothing.
   */
  release(): void {
    this.#release(this.#held)
  }
}
