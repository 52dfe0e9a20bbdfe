/**
 * The codec's error classes, mirroring Python's pickle module: PickleError is the base of
 * everything the codec throws on bad input or unpicklable values.
 */
export class PickleError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/**
 * Thrown when a value cannot be pickled (Python's pickle.PicklingError). path is where in
 * the value it happened: keys and indexes from the top, as in value[2].name.
 */
export class PicklingError extends PickleError {
  readonly path: (string | number)[] = []
  #reason: string

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.#reason = message
  }

  /** Records one more step of the path, from the inside out, and updates the message. */
  addPathStep(step: string | number): void {
    this.path.unshift(step)
    const where = this.path.map((p) => (typeof p === 'number' ? `[${p}]` : /^[A-Za-z_$][\w$]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`)).join('')
    this.message = `${this.#reason} (at value${where})`
  }
}

/** Thrown when a pickle is malformed, truncated or refused (Python's pickle.UnpicklingError). */
export class UnpicklingError extends PickleError {}

/**
 * The input ended cleanly at a pickle boundary: there is no further pickle to load. Python
 * raises EOFError here; a cut inside a pickle is an UnpicklingError instead.
 */
export class EOFError extends PickleError {}
