/**
 * A mutex in shared memory whose word holds the id of the endpoint that holds it, so that a
 * thread that died holding it (worker.terminate() can stop a thread anywhere) can be found and
 * its lock broken by whoever reclaims its memory. Critical sections are short and never await.
 *
 * Acquiring never blocks a thread: a few spins, then Atomics.waitAsync, so that the thread's
 * event loop keeps running and can learn that the holder died.
 */
import { sleep, wake } from './wait.js'

const SPINS = 256

export class SharedMutex {
  readonly #words: Int32Array
  readonly #lock: number
  readonly #waiters: number

  /** words[lock] is 0 (free) or the holder's id; words[waiters] counts threads waiting. */
  constructor(words: Int32Array, lock: number, waiters: number) {
    this.#words = words
    this.#lock = lock
    this.#waiters = waiters
  }

  /** Takes the lock for `id` (a positive integer) if it is free now or within a few spins. */
  tryLock(id: number): boolean {
    const w = this.#words
    for (let i = 0; i < SPINS; i++) {
      if (Atomics.compareExchange(w, this.#lock, 0, id) === 0) return true
      if (Atomics.load(w, this.#lock) === id) throw new Error(`shared mutex: endpoint ${id} already holds it`)
    }
    return false
  }

  /**
   * Runs `fn` holding the lock, waiting asynchronously while another endpoint holds it. `fn`
   * runs in the same turn as the acquisition (synchronously when the lock is free), so the
   * lock is never held across an await.
   */
  async withLock<T>(id: number, fn: () => T): Promise<T> {
    const w = this.#words
    for (;;) {
      if (this.tryLock(id)) {
        try {
          return fn()
        } finally {
          this.unlock(id)
        }
      }
      const holder = Atomics.load(w, this.#lock)
      if (holder !== 0) await sleep(w, this.#lock, this.#waiters, holder, Infinity, { slice: 50 })
    }
  }

  unlock(id: number): void {
    const w = this.#words
    const was = Atomics.compareExchange(w, this.#lock, id, 0)
    if (was !== id) throw new Error(`shared mutex: endpoint ${id} unlocked a lock held by ${was}`)
    wake(w, this.#lock, this.#waiters)
  }

  /** The holder's id, or 0. */
  get holder(): number {
    return Atomics.load(this.#words, this.#lock)
  }

  /**
   * Frees the lock if a dead endpoint holds it (`dead(holder)` says so). Every critical section
   * keeps the shared structures walkable at each store, so what the dead holder left is sound.
   */
  breakIfHeldBy(dead: (holder: number) => boolean): boolean {
    const w = this.#words
    const holder = Atomics.load(w, this.#lock)
    if (holder === 0 || !dead(holder)) return false
    if (Atomics.compareExchange(w, this.#lock, holder, 0) !== holder) return false
    wake(w, this.#lock, this.#waiters)
    return true
  }
}
