/**
 * Operations of one kind (a channel's sends, its receives) that take turns: each starts once
 * every one queued before it has settled, so messages keep their order. An operation waiting
 * for its turn still answers to its own deadline and AbortSignal: it leaves the line at once,
 * its promise rejects, and it never runs, so a send that gave up is never delivered later.
 */
import { TransportError } from '../errors.js'
import type { Waiting } from './wait.js'

export class Turns {
  #tail: Promise<unknown> = Promise.resolve()
  #queued = 0

  /** @param what the operation, for messages: 'send', 'receive' */
  constructor(readonly what: string) {}

  /** Operations queued or running that have not reached the end of their turn (those that gave up count until their turn passes). */
  get pending(): number {
    return this.#queued
  }

  /**
   * Runs `run` when its turn comes. If the deadline passes or the signal aborts first, `drop`
   * is called (to free what the operation holds) and the promise rejects with TIMEOUT or the
   * signal's reason; once `run` has started, `run` itself answers to them.
   */
  take<T>(wait: Waiting, run: () => Promise<T>, drop?: () => void): Promise<T> {
    if (this.#queued === 0) return this.#runNow(run)
    const ahead = this.#queued++
    const settled = new Promise<T>((resolve, reject) => {
      let state: 'queued' | 'running' | 'gone' = 'queued'
      let timer: ReturnType<typeof setTimeout> | undefined
      const { signal, deadline } = wait
      const leave = (): void => {
        if (timer !== undefined) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const giveUp = (err: unknown): void => {
        if (state !== 'queued') return
        state = 'gone'
        leave()
        try {
          drop?.()
        } finally {
          reject(err)
        }
      }
      const onAbort = (): void => giveUp(signal!.reason)
      const turn = this.#tail.then(() => {
        if (state === 'gone') return
        state = 'running'
        leave()
        try {
          return run().then(resolve, reject)
        } catch (err) {
          reject(err)
        }
      })
      this.#tail = turn.then(noop, noop).finally(() => this.#queued--)
      if (signal?.aborted) return giveUp(signal.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      if (deadline !== Infinity) {
        const why = `waiting for its turn behind ${ahead} earlier ${this.what}${ahead === 1 ? '' : 's'}: gave up after ${wait.timeout} ms`
        timer = setTimeout(() => giveUp(new TransportError('TIMEOUT', `${this.what}: ${why}`)), Math.max(0, deadline - performance.now()))
      }
    })
    // A waiting operation is often awaited only later (a receive started before the event that
    // ends it): its failure is the caller's to read then, not an unhandled rejection meanwhile.
    settled.catch(noop)
    return settled
  }

  /**
   * Nothing ahead: the turn is now, so there is no line to leave and run's own waits answer to
   * the deadline and signal. The common case of a receive waiting for the next message, kept
   * to the fewest promises.
   */
  #runNow<T>(run: () => Promise<T>): Promise<T> {
    this.#queued++
    let p: Promise<T>
    try {
      p = run()
    } catch (err) {
      p = Promise.reject(err)
    }
    this.#tail = p.then(this.#passed, this.#passed)
    return p
  }

  readonly #passed = (): void => {
    this.#queued--
  }
}

function noop(): void {}
