/**
 * Walks the opcodes of one pickle, as Python's pickletools.genops does: from a start
 * position through the first STOP, reading each argument by the opcode table's layout.
 */
import { UnpicklingError } from '../errors.js'
import { OPCODE_BY_CODE, OP, type OpcodeInfo } from '../opcodes.js'
import { asBytesView, type BufferSource } from '../types.js'
import { readArgument, type OpcodeArgument, type ReadArgument } from './arguments.js'
import { reprBytes } from './repr.js'

/**
 * One opcode: its table record, its argument (null when it takes none), the position of
 * its opcode byte and the position just after its argument.
 */
export type GenopsItem = readonly [op: OpcodeInfo, arg: OpcodeArgument, pos: number, end: number]

/** One opcode as dis needs it: the argument keeps what its repr needs. */
export interface ScannedOpcode {
  readonly op: OpcodeInfo
  readonly arg: ReadArgument | null
  readonly pos: number
  readonly end: number
}

/** The input as a Uint8Array over the same memory, and a checked start position. */
export function bytesAndStart(data: BufferSource, start: number | undefined): [Uint8Array, number] {
  const b = asBytesView(data)
  const at = start ?? 0
  if (!Number.isSafeInteger(at) || at < 0 || at > b.length) {
    throw new RangeError(`start must be an integer from 0 to the input's length ${b.length}, got ${String(start)}`)
  }
  return [b, at]
}

/** The opcodes from pos through the first STOP; throws as Python does on what is malformed. */
export function* scanOpcodes(b: Uint8Array, pos: number): Generator<ScannedOpcode, void, undefined> {
  for (;;) {
    if (pos >= b.length) throw new UnpicklingError('pickle exhausted before seeing STOP')
    const code = b[pos]!
    const op = OPCODE_BY_CODE[code]
    if (op === undefined) {
      throw new UnpicklingError(`at position ${pos}, opcode ${reprBytes(b.subarray(pos, pos + 1))} unknown`)
    }
    const arg = op.arg === null ? null : readArgument(op.arg, b, pos + 1)
    const end = arg === null ? pos + 1 : arg.end
    yield { op, arg, pos, end }
    if (code === OP.STOP) return
    pos = end
  }
}

/**
 * Generates the opcodes of the pickle that starts at start (default 0), through its STOP,
 * as [op, arg, pos, end] (Python's genops yields the first three). To walk a stream of
 * several pickles, start the next walk at the last item's end. Bytes and bytearray
 * arguments are views over data, not copies.
 */
export function* genops(data: BufferSource, start?: number): Generator<GenopsItem, void, undefined> {
  const [b, at] = bytesAndStart(data, start)
  for (const { op, arg, pos, end } of scanOpcodes(b, at)) yield [op, arg === null ? null : arg.value, pos, end]
}

/** A memo index as a Map key: Python's dict treats False, 0 and 0.0 as one key. */
export type MemoKey = number | bigint

export function memoKey(arg: OpcodeArgument): MemoKey {
  if (typeof arg === 'boolean') return arg ? 1 : 0
  if (typeof arg === 'number') return arg
  if (typeof arg === 'bigint') {
    return arg >= BigInt(Number.MIN_SAFE_INTEGER) && arg <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(arg) : arg
  }
  throw new UnpicklingError(`a memo index must be an integer, got ${typeof arg}`)
}
