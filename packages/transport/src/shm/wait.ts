/**
 * Waiting on a word of shared memory without blocking the thread's event loop: every wait in
 * the shared-memory carrier is Atomics.waitAsync, so that a thread waiting for arena space or
 * for a message keeps receiving, releasing and noticing a dead peer meanwhile.
 */
import { TransportError } from '../errors.js'

// Atomics.waitAsync is in Node since 16; TypeScript's lib has it from ES2024 only.
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> }
const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult }).waitAsync

/** What a caller may give any operation that can wait. */
export interface WaitOptions {
  /** Gives up with the signal's reason (an AbortError by default) when aborted. */
  signal?: AbortSignal | undefined
  /** Gives up with TransportError('TIMEOUT') after this many milliseconds. Default: no limit. */
  timeout?: number | undefined
}

/** The moment a wait with these options gives up, as a performance.now() time (Infinity: never). */
export function deadlineOf(options: WaitOptions): number {
  const t = options.timeout
  if (t === undefined) return Infinity
  if (!(t >= 0)) throw new TypeError(`timeout must be a non-negative number of milliseconds, got ${String(t)}`)
  return performance.now() + t
}

/** Throws when the options say to stop waiting. */
export function checkWait(options: WaitOptions, deadline: number, what: string): void {
  options.signal?.throwIfAborted()
  if (performance.now() >= deadline) throw new TransportError('TIMEOUT', `${what}: gave up after ${options.timeout} ms`)
}


/**
 * Sleeps until words[index] is no longer `observed`, a wake() arrives, the deadline passes or
 * the signal aborts (the caller re-checks its condition afterwards). words[sleepers] counts the
 * threads asleep on the word; wake() counts out those it wakes, so that a burst of changes
 * costs one notify, not one each. A slice of at most `slice` ms bounds every sleep, so that a
 * lost wake-up costs a slice, never a hang.
 */
export async function sleep(words: Int32Array, index: number, sleepers: number, observed: number, deadline: number, signal?: AbortSignal, slice = 1000): Promise<void> {
  const ms = Math.max(0, Math.min(slice, deadline - performance.now()))
  Atomics.add(words, sleepers, 1)
  const r = waitAsync(words, index, observed, ms)
  if (!r.async) {
    Atomics.sub(words, sleepers, 1)
    return
  }
  // A pending waitAsync does not keep Node's event loop alive; a timer does, for as long as the sleep.
  const alive = setTimeout(() => {}, ms + 1000)
  const woken = r.value.then((how) => {
    if (how !== 'ok') Atomics.sub(words, sleepers, 1)
  })
  // An abort must end a sleep at once; waitAsync cannot be cancelled, so the sleep is raced with the signal.
  let onAbort: (() => void) | undefined
  try {
    if (signal === undefined) await woken
    else await Promise.race([woken, new Promise<void>((resolve) => signal.addEventListener('abort', (onAbort = () => resolve()), { once: true }))])
  } finally {
    clearTimeout(alive)
    if (onAbort !== undefined) signal!.removeEventListener('abort', onAbort)
  }
}

/** Wakes the threads asleep on words[index] (after the caller changed it). */
export function wake(words: Int32Array, index: number, sleepers: number): void {
  if (Atomics.load(words, sleepers) <= 0) return
  const n = Atomics.notify(words, index)
  if (n > 0) Atomics.sub(words, sleepers, n)
}
