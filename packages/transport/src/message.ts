/**
 * The one message model of every carrier: a value becomes a protocol-5 pickle plus its
 * out-of-band buffers (never copied by the pickler), and comes back from them with the
 * buffers handed to the unpickler, in order, as views over the memory they arrived in.
 * Carriers move these parts; they never look inside the pickle.
 */
import { PickleBuffer, dumps, loads, type PicklerOptions, type UnpicklerOptions } from '@picklewire/codec'

/** A value as the carriers move it. */
export interface MessageParts {
  pickle: Uint8Array
  /** The out-of-band buffers, in the order the pickle's NEXT_BUFFER opcodes take them. */
  buffers: Uint8Array[]
  /** Each buffer's read-only flag, in the same order. */
  readonly: boolean[]
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
  const { outOfBand = (b: PickleBuffer) => b.byteLength >= MIN_OUT_OF_BAND_BYTES, ...rest } = options
  const buffers: Uint8Array[] = []
  const readonly: boolean[] = []
  const pickle = dumps(value, {
    ...rest,
    protocol: 5,
    bufferCallback: (b) => {
      if (!outOfBand(b)) return true
      buffers.push(b.raw())
      readonly.push(b.readonly)
      return false
    },
  })
  return { pickle, buffers, readonly }
}

/** Loads a value from its parts; each buffer comes back as a PickleBuffer over the same memory. */
export function decodeValue(parts: MessageParts, options: Omit<UnpicklerOptions, 'buffers'> = {}): unknown {
  const buffers = parts.buffers.map((b, i) => new PickleBuffer(b, { readonly: parts.readonly[i] ?? false }))
  return loads(parts.pickle, { ...options, buffers })
}
