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

/** Thrown when a value cannot be pickled (Python's pickle.PicklingError). */
export class PicklingError extends PickleError {}

/** Thrown when a pickle is malformed, truncated or refused (Python's pickle.UnpicklingError). */
export class UnpicklingError extends PickleError {}

/**
 * The input ended cleanly at a pickle boundary: there is no further pickle to load. Python
 * raises EOFError here; a cut inside a pickle is an UnpicklingError instead.
 */
export class EOFError extends PickleError {}
