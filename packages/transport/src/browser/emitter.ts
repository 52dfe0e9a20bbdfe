/**
 * A small typed event emitter for the page (no node:events there): on, once, off, emit and
 * listenerCount, with the meaning Node's EventEmitter gives them. Listeners run in the order
 * they were added; one that throws is reported (reportError where the page has it) and the
 * others still run.
 */
type Listener<A extends unknown[]> = (...args: A) => void

export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  readonly #listeners = new Map<keyof Events, { fn: Listener<never[]>; once: boolean }[]>()

  /** Called when a listener is added or removed (the socket starts or stops work some events need). */
  protected listenersChanged(_event: keyof Events): void {}

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    return this.#add(event, listener, false)
  }

  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    return this.#add(event, listener, true)
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.#listeners.get(event)
    const i = list?.findIndex((l) => (l.fn as unknown) === listener) ?? -1
    if (i >= 0) {
      list!.splice(i, 1)
      this.listenersChanged(event)
    }
    return this
  }

  listenerCount(event: keyof Events): number {
    return this.#listeners.get(event)?.length ?? 0
  }

  /** Calls the event's listeners with args; true when there were any. */
  emit<K extends keyof Events>(event: K, ...args: Events[K]): boolean {
    const list = this.#listeners.get(event)
    if (list === undefined || list.length === 0) return false
    for (const l of [...list]) {
      if (l.once) this.off(event, l.fn as unknown as Listener<Events[K]>)
      try {
        ;(l.fn as unknown as Listener<Events[K]>)(...args)
      } catch (err) {
        const report = (globalThis as { reportError?: (e: unknown) => void }).reportError
        if (report !== undefined) report(err)
        else setTimeout(() => { throw err })
      }
    }
    return true
  }

  #add<K extends keyof Events>(event: K, listener: Listener<Events[K]>, once: boolean): this {
    if (typeof listener !== 'function') throw new TypeError(`a listener of '${String(event)}' must be a function, got ${typeof listener}`)
    let list = this.#listeners.get(event)
    if (list === undefined) this.#listeners.set(event, (list = []))
    list.push({ fn: listener as unknown as Listener<never[]>, once })
    this.listenersChanged(event)
    return this
  }
}
