/**
 * Waiting on a word of shared memory without blocking the thread's event loop: every wait in
 * the shared-memory carrier is Atomics.waitAsync, so that a thread waiting for arena space or
 * for a message keeps receiving, releasing and noticing a dead peer meanwhile.
 */
import { TransportError } from '../errors.js'
import type { OptionNames } from '@picklewire/codec/internal'
import { WAIT_OPTION_NAMES, WAIT_OPTIONS, checkWaitOptions, type WaitOptions } from '../waiting.js'

// Atomics.waitAsync is in Node since 16; TypeScript's lib has it from ES2024 only.
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> }
export const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult }).waitAsync

/** What a caller may give any operation that can wait: one type for every carrier. */
export type { WaitOptions }

export { WAIT_OPTION_NAMES, WAIT_OPTIONS }

/** WaitOptions whose deadline was fixed when the operation was called, for every wait it makes later. */
export interface Waiting extends WaitOptions {
  deadline: number
}

/** The moment a wait with these options (checked by checkWaitOptions) gives up, as a performance.now() time (Infinity: never). */
export function deadlineOf(options: WaitOptions): number {
  const fixed = (options as Partial<Waiting>).deadline
  if (fixed !== undefined) return fixed
  const t = options.timeout
  return t === undefined ? Infinity : performance.now() + t
}

/**
 * The options of `what` (a send or receive) with their deadline fixed now: an operation that
 * waits its turn behind others counts its timeout from the call, not from when its turn comes.
 * Checks them as every carrier does (checkWaitOptions: TypeError or RangeError), and throws the
 * signal's reason when it is aborted already.
 */
export function waitingFrom(what: string, options: WaitOptions, known: OptionNames): Waiting {
  checkWaitOptions(what, options, known)
  const { signal, timeout } = options
  return { signal, timeout, deadline: deadlineOf(options) }
}

/** Throws when the options say to stop waiting. */
export function checkWait(options: WaitOptions, deadline: number, what: string): void {
  options.signal?.throwIfAborted()
  if (performance.now() >= deadline) throw new TransportError('TIMEOUT', `${what}: gave up after ${options.timeout} ms`)
}


/** What a sleep may also do besides waiting for the word. */
export interface SleepOptions {
  /** Gives up with nothing thrown (the caller re-checks) when aborted. */
  signal?: AbortSignal | undefined
  /** Wakes after at most this many ms even if nothing changed (for waits a dead thread could leave hanging). */
  slice?: number
  /** Keep the thread's event loop alive while sleeping (a pending waitAsync does not). Default true. */
  keepAlive?: boolean
}

// One timer, ref'd while any sleep that must keep the event loop alive is pending: cheaper than a timer per sleep.
let aliveCount = 0
let aliveTimer: ReturnType<typeof setInterval> | null = null
function holdAlive(): void {
  if (aliveCount++ === 0) {
    if (aliveTimer === null) aliveTimer = setInterval(noop, 2 ** 30)
    else aliveTimer.ref()
  }
}
function dropAlive(): void {
  if (--aliveCount === 0) aliveTimer!.unref()
}

const RESOLVED: Promise<unknown> = Promise.resolve()

/**
 * Sleeps until words[index] is no longer `observed`, a wake() arrives, the deadline passes or
 * the signal aborts (the caller re-checks its condition afterwards). words[sleepers] counts the
 * threads asleep on the word; wake() notifies only when it is not zero, and counts out those
 * it wakes, so that a burst of changes costs one notify, not one each, and a sender whose
 * receiver is busy (not asleep) notifies nobody.
 *
 * No lost wake-up: the sleeper counts itself in (sequentially consistent) before waitAsync
 * compares the word, and a waker changes the word before it reads the count; so either the
 * waker sees the sleeper and notifies it, or waitAsync sees the new value and returns at once.
 *
 * Atomics.waitAsync is called without a timeout: V8 turns a timeout into a delayed task of
 * the embedder, which in Node costs a wake-up of the thread's own loop, a libuv timer and,
 * when it fires, a linear scan of every delayed task still pending (thousands, with one wait
 * per message): that, not the signal, was most of a small message's cost. Deadlines, slices
 * and keeping the event loop alive are done with JS timers instead, and only when asked for.
 * A wait given up on (deadline, abort, slice) stays in V8's list, counted as a sleeper, until
 * the next wake() of that word takes it out.
 */
export function sleep(words: Int32Array, index: number, sleepers: number, observed: number, deadline: number, options: SleepOptions = {}): Promise<unknown> {
  Atomics.add(words, sleepers, 1)
  const r = waitAsync(words, index, observed)
  if (!r.async) {
    Atomics.sub(words, sleepers, 1)
    return RESOLVED
  }
  const { signal, slice = Infinity, keepAlive = true } = options
  const until = Math.min(deadline, slice === Infinity ? Infinity : performance.now() + slice)
  if (until === Infinity && signal === undefined && !keepAlive) return r.value
  return new Promise<void>((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    let settled = false
    const done = (): void => {
      if (settled) return
      settled = true
      if (timer !== undefined) clearTimeout(timer)
      if (keepAlive) dropAlive()
      signal?.removeEventListener('abort', done)
      resolve()
    }
    if (keepAlive) holdAlive()
    if (until !== Infinity) timer = setTimeout(done, Math.max(0, until - performance.now()))
    if (signal !== undefined) {
      if (signal.aborted) done()
      else signal.addEventListener('abort', done, { once: true })
    }
    r.value.then(done, done)
  })
}

/** Wakes the threads asleep on words[index] (after the caller changed it). */
export function wake(words: Int32Array, index: number, sleepers: number): void {
  if (Atomics.load(words, sleepers) <= 0) return
  const n = Atomics.notify(words, index)
  if (n > 0) Atomics.sub(words, sleepers, n)
}

function noop(): void {}
