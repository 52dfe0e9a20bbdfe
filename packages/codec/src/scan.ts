/**
 * Finds where a pickle ends without loading it, from the opcode table's argument layouts.
 * The streaming unpickler uses it to gather exactly one pickle's bytes from a chunk source
 * before loading: resumable, so that bytes arriving a chunk at a time are examined once.
 */
import { UnpicklingError } from './errors.js'
import {
  Args, OPCODE_BY_CODE, OP, TAKEN_FROM_ARGUMENT1, TAKEN_FROM_ARGUMENT4, TAKEN_FROM_ARGUMENT8U,
  UP_TO_NEWLINE,
} from './opcodes.js'

/** The opcode byte that is not an opcode, as the unpickler reports it. */
export function invalidLoadKey(code: number): UnpicklingError {
  const shown = code >= 0x20 && code < 0x7f ? String.fromCharCode(code) : '\\x' + code.toString(16).padStart(2, '0')
  return new UnpicklingError(`invalid load key, '${shown}'`)
}

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000
}

/** A little-endian u64; from 2^53 on, MAX_SAFE_INTEGER (longer than any input). */
function u64(b: Uint8Array, at: number): number {
  const hi = u32(b, at + 4)
  return hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + u32(b, at)
}

/** Scans opcodes of one pickle across calls, as more bytes arrive. */
export class PickleScanner {
  #pos = 0
  #searchFrom = -1
  #firstLineEnd = -1
  /** Where the furthest FRAME ends, and where STOP ended once seen (-1: not yet). */
  #frameEnd = -1
  #stopEnd = -1

  /** Where the next opcode starts (after a throw: the opcode refused). */
  get position(): number {
    return this.#pos
  }

  /** Starts a new pickle at pos. */
  reset(pos: number): void {
    this.#pos = pos
    this.#searchFrom = -1
    this.#firstLineEnd = -1
    this.#frameEnd = -1
    this.#stopEnd = -1
  }

  /** The bytes before pos were dropped from the buffer: move every position back by n. */
  shift(n: number): void {
    this.#pos -= n
    if (this.#searchFrom >= 0) this.#searchFrom -= n
    if (this.#firstLineEnd >= 0) this.#firstLineEnd -= n
    if (this.#frameEnd >= 0) this.#frameEnd -= n
    if (this.#stopEnd >= 0) this.#stopEnd -= n
  }

  /**
   * The index just after the pickle, or -1 when the bytes up to end do not finish it: after its
   * STOP, or after its furthest FRAME when that reaches further (a load consumes its whole frame,
   * as CPython's does from a file).
   */
  scan(b: Uint8Array, end: number): number {
    if (this.#stopEnd >= 0) return this.#frameEnd <= end ? Math.max(this.#stopEnd, this.#frameEnd) : -1
    while (this.#pos < end) {
      const at = this.#pos
      const code = b[at]!
      const op = OPCODE_BY_CODE[code]
      if (op === undefined) throw invalidLoadKey(code)
      const a = at + 1
      let next: number
      const arg = op.arg
      if (arg === null) {
        next = a
      } else if (arg.n >= 0) {
        next = a + arg.n
      } else if (arg.n === UP_TO_NEWLINE) {
        let from = this.#searchFrom >= 0 ? this.#searchFrom : a
        if (arg === Args.stringnl_noescape_pair) {
          if (this.#firstLineEnd < 0) {
            const nl = newline(b, from, end)
            if (nl < 0) return this.#wait(end)
            this.#firstLineEnd = nl
          }
          from = Math.max(from, this.#firstLineEnd + 1)
        }
        const nl = newline(b, from, end)
        if (nl < 0) return this.#wait(end)
        next = nl + 1
      } else {
        const width = arg.n === TAKEN_FROM_ARGUMENT1 ? 1 : arg.n === TAKEN_FROM_ARGUMENT8U ? 8 : 4
        if (a + width > end) return -1
        let len: number
        if (width === 1) len = b[a]!
        else if (width === 4) {
          len = u32(b, a)
          if (arg.n === TAKEN_FROM_ARGUMENT4 && len >= 0x80000000) throw new UnpicklingError(`${op.name} has a negative byte count`)
        } else {
          len = u64(b, a)
        }
        next = a + width + len
      }
      if (next > end) return -1
      this.#pos = next
      this.#searchFrom = -1
      this.#firstLineEnd = -1
      if (code === OP.FRAME) {
        this.#frameEnd = Math.max(this.#frameEnd, next + u64(b, a))
      } else if (code === OP.STOP) {
        this.#stopEnd = next
        return this.#frameEnd <= end ? Math.max(next, this.#frameEnd) : -1
      }
    }
    return -1
  }

  #wait(end: number): number {
    this.#searchFrom = end
    return -1
  }
}

function newline(b: Uint8Array, from: number, end: number): number {
  if (from >= end) return -1
  const i = b.subarray(from, end).indexOf(0x0a)
  return i < 0 ? -1 : from + i
}
