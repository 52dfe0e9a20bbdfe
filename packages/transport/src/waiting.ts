/**
 * The { timeout, signal } that every carrier's waiting operations take (send, receive,
 * request, result), checked and applied one way: a timeout gives up with
 * TransportError('TIMEOUT'), an abort with the signal's reason (an AbortError DOMException
 * when it has none), as Node's own APIs do. A wait that gives up leaves the line it was in, so
 * that nothing meant for it is lost: the next wait gets it.
 */
import { TransportError } from './errors.js'
import { checkMilliseconds, checkOptions, checkSignal, optionNames } from './options-check.js'

/** What a caller may give any operation that can wait. */
export interface WaitOptions {
  /** Gives up with the signal's reason (an AbortError by default) when aborted. */
  signal?: AbortSignal | undefined
  /** Gives up with TransportError('TIMEOUT') after this many milliseconds; 0 gives up at once if it would wait. Default: no limit. */
  timeout?: number | undefined
}

/** The names WaitOptions takes; carriers whose waiting operations take more add theirs to these. */
export const WAIT_OPTION_NAMES: readonly string[] = ['signal', 'timeout']
export const WAIT_OPTIONS = optionNames(...WAIT_OPTION_NAMES)

/**
 * Checks a wait's options: names (against `known`, WAIT_OPTIONS by default), the timeout and
 * the signal; throws TypeError or RangeError. Then throws the signal's reason when it is aborted
 * already, so that an aborted call never starts.
 */
export function checkWaitOptions(what: string, options: unknown, known = WAIT_OPTIONS): void {
  checkOptions(what, options, known)
  const { timeout, signal } = options as WaitOptions
  checkMilliseconds(what, 'timeout', timeout)
  checkSignal(what, signal)
  signal?.throwIfAborted()
}

/** How a waiting operation is settled by the carrier. */
export interface Settle<T> {
  resolve: (value: T) => void
  reject: (err: unknown) => void
}

/**
 * Waits for the carrier to settle an operation, or gives up: after options.timeout ms with
 * TransportError('TIMEOUT') (`what` says what was waited for), or when options.signal aborts,
 * with its reason. `enqueue` puts the operation in the carrier's line and returns how to take it
 * out: that is called when it gives up, before the promise rejects, so the carrier never
 * settles an operation that has left. Options are checked by the caller (checkWaitOptions).
 */
export function waitFor<T>(what: string, options: WaitOptions, enqueue: (settle: Settle<T>) => () => void): Promise<T> {
  const { timeout, signal } = options
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    let done = false
    const finish = (): boolean => {
      if (done) return false
      done = true
      if (timer !== undefined) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      return true
    }
    const withdraw = enqueue({
      resolve: (v) => finish() && resolve(v),
      reject: (e) => finish() && reject(e),
    })
    const giveUp = (err: unknown): void => {
      if (!finish()) return
      withdraw()
      reject(err)
    }
    const onAbort = (): void => giveUp(signal!.reason)
    if (done) return
    if (signal !== undefined) {
      if (signal.aborted) return onAbort()
      signal.addEventListener('abort', onAbort, { once: true })
    }
    if (timeout !== undefined) timer = setTimeout(() => giveUp(new TransportError('TIMEOUT', `${what}: gave up after ${timeout} ms`)), timeout)
  })
}
