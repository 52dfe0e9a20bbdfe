/**
 * A DaskFuture stands for one key on the cluster: pending until the scheduler reports it in
 * memory ('finished') or failed ('error'), as distributed.Future does.
 */
import { TransportError } from '../errors.js'
import { checkOptions, optionNames } from '../options-check.js'

const TIMEOUT_ONLY = optionNames('timeout')

export type DaskFutureStatus = 'pending' | 'finished' | 'error' | 'cancelled' | 'released'

/** What a future needs from its client (kept narrow so the two files do not import each other). */
export interface FutureOwner {
  gather(futures: readonly DaskFuture[], options?: { timeout?: number }): Promise<unknown[]>
  release(...futures: DaskFuture[]): void
}

interface Waiter {
  resolve: () => void
  reject: (err: TransportError) => void
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
   * connection to the scheduler was lost, or ('TIMEOUT') after timeout milliseconds (0: no limit,
   * the default). A timeout leaves the future as it was.
   */
  wait(options: { timeout?: number } = {}): Promise<this> {
    try {
      checkOptions('DaskFuture.wait', options, TIMEOUT_ONLY)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#status === 'finished') return Promise.resolve(this)
    if (this.#error !== null) return Promise.reject(this.#error)
    const timeout = options.timeout ?? 0
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null }
      if (timeout > 0) {
        w.timer = setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(w), 1)
          reject(new TransportError('TIMEOUT', `key ${this.key} was not ready within ${timeout} ms (status ${this.#status})`))
        }, timeout)
      }
      this.#waiters.push(w)
    }).then(() => this)
  }

  /** The value, gathered from the cluster once the key is in memory (see DaskClient.gather). */
  async result(options: { timeout?: number } = {}): Promise<unknown> {
    checkOptions('DaskFuture.result', options, TIMEOUT_ONLY)
    const [value] = await this.client.gather([this], options)
    return value
  }

  /** Tells the scheduler this client no longer needs the key (DaskClient.release). */
  release(): void {
    this.client.release(this)
  }

  #settle(err: TransportError | null): void {
    for (const w of this.#waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer)
      if (err) w.reject(err)
      else w.resolve()
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
