/**
 * A DaskFuture stands for one key on the cluster: pending until the scheduler reports it in
 * memory ('finished') or failed ('error'), as distributed.Future does.
 */
import { TransportError } from '../errors.js'
import { checkMilliseconds, checkOptions, checkSignal, optionNames } from '../options-check.js'
import { waitFor, type Settle } from '../waiting.js'

const WAIT_OPTIONS = optionNames('timeout', 'signal')

/** Options of DaskFuture.wait and DaskFuture.result. */
export interface DaskFutureWaitOptions {
  /** Milliseconds; 0 waits without limit. wait's default is 0, result's the client's rpcTimeout. */
  timeout?: number
  /** Gives up with the signal's reason when it aborts; the future is left as it is. */
  signal?: AbortSignal
}

export type DaskFutureStatus = 'pending' | 'finished' | 'error' | 'cancelled' | 'released'

/** What a future needs from its client (kept narrow so the two files do not import each other). */
export interface FutureOwner {
  gather(futures: readonly DaskFuture[], options?: DaskFutureWaitOptions): Promise<unknown[]>
  release(...futures: DaskFuture[]): void
}

interface Waiter {
  settle: Settle<void>
  timer: NodeJS.Timeout | null
}

export class DaskFuture {
  #status: DaskFutureStatus = 'pending'
  #error: TransportError | null = null
  #type: string | null = null
  #waiters: Waiter[] = []

  /** @internal made by DaskClient.submit and DaskClient.scatter. */
  constructor(
    /** The key on the cluster. */
    readonly key: string,
    readonly client: FutureOwner,
  ) {}

  get status(): DaskFutureStatus {
    return this.#status
  }

  /** Why the future failed or was cancelled; null otherwise. A failed task's is a DaskRemoteError. */
  get error(): TransportError | null {
    return this.#error
  }

  /** The Python type of the result once it is in memory ('numpy.ndarray', 'builtins.int', ...), when the scheduler told. */
  get type(): string | null {
    return this.#type
  }

  /** True once the future will not change by itself: finished, failed, cancelled or released. */
  get done(): boolean {
    return this.#status !== 'pending'
  }

  /**
   * Resolves when the key is in memory; rejects with the task's error (a DaskRemoteError with
   * the Python traceback), or TransportError('CLOSED') when the future was released or the
   * connection to the scheduler was lost, ('TIMEOUT') after timeout milliseconds (0: no limit,
   * the default), or the signal's reason when it aborts. A timeout or an abort leaves the
   * future as it was.
   */
  wait(options: DaskFutureWaitOptions = {}): Promise<this> {
    try {
      checkOptions('DaskFuture.wait', options, WAIT_OPTIONS)
      checkMilliseconds('DaskFuture.wait', 'timeout', options.timeout)
      checkSignal('DaskFuture.wait', options.signal)
      options.signal?.throwIfAborted()
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#status === 'finished') return Promise.resolve(this)
    if (this.#error !== null) return Promise.reject(this.#error)
    const timeout = options.timeout ?? 0
    return waitFor<void>(`waiting for key ${this.key}`, { signal: options.signal }, (settle) => {
      const w: Waiter = { settle, timer: null }
      if (timeout > 0) {
        w.timer = setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(w), 1)
          settle.reject(new TransportError('TIMEOUT', `key ${this.key} was not ready within ${timeout} ms (status ${this.#status})`))
        }, timeout)
      }
      this.#waiters.push(w)
      return () => {
        if (w.timer) clearTimeout(w.timer)
        const i = this.#waiters.indexOf(w)
        if (i >= 0) this.#waiters.splice(i, 1)
      }
    }).then(() => this)
  }

  /**
   * The value, gathered from the cluster once the key is in memory (see DaskClient.gather):
   * options.timeout (default: the client's rpcTimeout) and options.signal bound the whole call.
   */
  async result<T = unknown>(options: DaskFutureWaitOptions = {}): Promise<T> {
    checkOptions('DaskFuture.result', options, WAIT_OPTIONS)
    const [value] = await this.client.gather([this], options)
    return value as T
  }

  /** Tells the scheduler this client no longer needs the key (DaskClient.release). */
  release(): void {
    this.client.release(this)
  }

  #settle(err: TransportError | null): void {
    for (const w of this.#waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer)
      if (err) w.settle.reject(err)
      else w.settle.resolve()
    }
  }

  /** @internal the scheduler reported the key in memory. */
  _finish(type: string | null): void {
    if (this.#status === 'released') return
    this.#status = 'finished'
    this.#error = null
    if (type !== null) this.#type = type
    this.#settle(null)
  }

  /** @internal the task failed, or the future can no longer complete. */
  _fail(err: TransportError, status: 'error' | 'cancelled' | 'released' = 'error'): void {
    if (this.#status === 'released') return
    this.#status = status
    this.#error = err
    this.#settle(err)
  }

  /** @internal the key's data was lost or the task is retried: pending again, waiters keep waiting. */
  _reset(): void {
    if (this.#status === 'released') return
    this.#status = 'pending'
    this.#error = null
  }
}
