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

/**
 * Thrown when a pickle is malformed, truncated or refused (Python's pickle.UnpicklingError).
 * When the unpickler was at an opcode, position and opcode say which: the byte offset of the
 * opcode in the input (counted from the start of the stream for a chunked source) and its
 * name ('STACK_GLOBAL', 'BINUNICODE', ...; null for a byte that is not an opcode). Both are
 * null when the error is not tied to one opcode.
 */
export class UnpicklingError extends PickleError {
  position: number | null = null
  opcode: string | null = null
}

/**
 * The input ended cleanly at a pickle boundary: there is no further pickle to load. Python
 * raises EOFError here; a cut inside a pickle is an UnpicklingError instead.
 */
export class EOFError extends PickleError {}
