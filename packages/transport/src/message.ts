/**
 * The one message model of every carrier: a value becomes a protocol-5 pickle plus its
 * out-of-band buffers (never copied by the pickler), and comes back from them with the
 * buffers handed to the unpickler, in order, as views over the memory they arrived in.
 * Carriers move these parts; they never look inside the pickle.
 */
import { PickleBuffer, dumps, dumpsTransient, loads, type PicklerOptions, type UnpicklerOptions } from '@picklewire/codec'

/** A value as the carriers move it. */
export interface MessageParts {
  pickle: Uint8Array
  /** The out-of-band buffers, in the order the pickle's NEXT_BUFFER opcodes take them. */
  buffers: Uint8Array[]
  /** Each buffer's read-only flag, in the same order. */
  readonly: boolean[]
  /**
   * True when the pickle is lent by the pickler (encodeValueWith): valid only while the call
   * that received it runs. A carrier that keeps it longer copies it.
   */
  transient?: boolean
}

export interface EncodeOptions extends Omit<PicklerOptions, 'protocol' | 'bufferCallback'> {
  /**
   * Which buffers travel out of band. Default: every one of at least 1,024 bytes; smaller
   * ones are cheaper in band than as a frame of their own.
   */
  outOfBand?: (buffer: PickleBuffer) => boolean
}

export const MIN_OUT_OF_BAND_BYTES = 1024

/** Pickles a value with protocol 5 and collects its out-of-band buffers (views, not copies). */
export function encodeValue(value: unknown, options: EncodeOptions = {}): MessageParts {
  const buffers: Uint8Array[] = []
  const readonly: boolean[] = []
  const pickle = dumps(value, picklerOptions(options, buffers, readonly))
  return { pickle, buffers, readonly }
}

/**
 * encodeValue for a carrier that copies the pickle while `use` runs (into a frame): the parts
 * come with the pickle lent by the pickler (`transient: true`), so no output is allocated.
 */
export function encodeValueWith<R>(value: unknown, options: EncodeOptions, use: (parts: MessageParts) => R): R {
  const buffers: Uint8Array[] = []
  const readonly: boolean[] = []
  return dumpsTransient(value, picklerOptions(options, buffers, readonly), (pickle) => use({ pickle, buffers, readonly, transient: true }))
}

function picklerOptions(options: EncodeOptions, buffers: Uint8Array[], readonly: boolean[]): PicklerOptions {
  const { outOfBand = (b: PickleBuffer) => b.byteLength >= MIN_OUT_OF_BAND_BYTES, ...rest } = options
  return {
    ...rest,
    protocol: 5,
    bufferCallback: (b) => {
      if (!outOfBand(b)) return true
      buffers.push(b.raw())
      readonly.push(b.readonly)
      return false
    },
  }
}

/** Loads a value from its parts; each buffer comes back as a PickleBuffer over the same memory. */
export function decodeValue(parts: MessageParts, options: Omit<UnpicklerOptions, 'buffers'> = {}): unknown {
  const buffers = parts.buffers.map((b, i) => new PickleBuffer(b, { readonly: parts.readonly[i] ?? false }))
  return loads(parts.pickle, { ...options, buffers })
}
