/**
 * The one message model of every carrier, and the one place a value becomes its parts and
 * back: a pickle (protocol 5 unless a peer speaks less) plus its out-of-band buffers (never
 * copied by the pickler) with their read-only flags, and back from them with the buffers
 * handed to the unpickler, in order, as views over the memory they arrived in. Carriers move
 * these parts; they never look inside the pickle.
 *
 * Values are written in one of two modes: 'python' (the codec's mapping, what a Python peer
 * reads: dicts load as Map, TypedArrays as NDArray, ...) and 'javascript' (js-values.ts:
 * between two JavaScript ends a value comes back as the types it was sent as).
 */
import {
  NotImplemented, PickleBuffer, dumps, dumpsTransient, loads,
  type PicklerOptions, type ReduceValue, type UnpicklerOptions,
} from '@picklewire/codec'
import { jsFindClass, reduceJsValue, type ValuesMode } from './js-values.js'

export type { ValuesMode } from './js-values.js'

/**
 * An out-of-band buffer as the carriers move it: a Uint8Array, or a DataView over the memory
 * when it is longer than a Uint8Array can be (more than 4 GiB in Node 20).
 */
export type BufferPart = Uint8Array | DataView

/**
 * The buffer as a Uint8Array, or a RangeError naming the carrier when it is a DataView: for
 * carriers that move a buffer only as one Uint8Array.
 */
export function bytesOfPart(b: BufferPart, carrier: string): Uint8Array {
  if (b instanceof Uint8Array) return b
  throw new RangeError(`${carrier} cannot carry a buffer of ${b.byteLength} bytes, longer than a Uint8Array can be in this JavaScript engine; send it over the WebSocket carrier (version 3), or in parts`)
}

/** A value as the carriers move it. */
export interface MessageParts {
  pickle: Uint8Array
  /** The out-of-band buffers, in the order the pickle's NEXT_BUFFER opcodes take them. */
  buffers: BufferPart[]
  /** Each buffer's read-only flag, in the same order. */
  readonly: boolean[]
  /**
   * True when the pickle is lent by the pickler (encodeWith): valid only while the call
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

export type DecodeOptions = Omit<UnpicklerOptions, 'buffers'>

export const MIN_OUT_OF_BAND_BYTES = 1024

const bigEnough = (b: PickleBuffer): boolean => b.byteLength >= MIN_OUT_OF_BAND_BYTES

export interface ValueCodecOptions {
  pickler?: EncodeOptions
  unpickler?: DecodeOptions
  /** Default 'python'. */
  values?: ValuesMode
  /** The pickle protocol: 5 (the default), or less for a peer that speaks less (then every buffer is in band). */
  protocol?: number
}

/**
 * A value <-> parts step with its options resolved once: the pickler's options (their buffer
 * callback collecting into the current call's arrays) and the unpickler's. A carrier keeps one.
 */
export class ValueCodec {
  readonly values: ValuesMode
  readonly #dumpOptions: PicklerOptions
  readonly #loadOptions: DecodeOptions
  /**
   * #loadOptions and `buffers`, one object whose buffers are set for each load: a new object
   * spread from #loadOptions at every message costs the unpickler several times the load of a
   * small pickle (V8 reads its options through a slow path).
   */
  readonly #withBuffers: UnpicklerOptions & { buffers: PickleBuffer[] | null }
  readonly #outOfBand: (buffer: PickleBuffer) => boolean
  #outBuffers: BufferPart[] = []
  #outReadonly: boolean[] = []

  constructor(options: ValueCodecOptions = {}) {
    this.values = options.values ?? 'python'
    const { outOfBand = bigEnough, ...rest } = options.pickler ?? {}
    this.#outOfBand = outOfBand
    const protocol = options.protocol ?? 5
    this.#dumpOptions = {
      ...rest,
      protocol,
      bufferCallback: protocol < 5 ? null : (b: PickleBuffer) => {
        if (!this.#outOfBand(b)) return true
        this.#outBuffers.push(partOf(b))
        this.#outReadonly.push(b.readonly)
        return false
      },
    }
    this.#loadOptions = options.unpickler ?? {}
    if (this.values === 'javascript') {
      const user = rest.reducerOverride
      this.#dumpOptions.overrideNative = true
      this.#dumpOptions.reducerOverride = user === undefined ? reduceJsValue : (v: unknown): ReduceValue | typeof NotImplemented => {
        const r = reduceJsValue(v)
        return r === NotImplemented ? user(v) : r
      }
      this.#loadOptions = { ...this.#loadOptions, dict: 'object', findClass: jsFindClass(this.#loadOptions.findClass) }
    }
    this.#withBuffers = { ...this.#loadOptions, buffers: null }
  }

  /** Pickles a value, collecting its out-of-band buffers (views, not copies). */
  encode(value: unknown): MessageParts {
    return this.#collecting((found) => ({ pickle: dumps(value, this.#dumpOptions), ...found }))
  }

  /**
   * encode for a carrier that copies the pickle while `use` runs: the parts come with the
   * pickle lent by the pickler (`transient: true`), so no output is allocated.
   */
  encodeWith<R>(value: unknown, use: (parts: MessageParts) => R): R {
    return this.#collecting((found, done) =>
      dumpsTransient(value, this.#dumpOptions, (pickle) => {
        done() // the pickling is over: an encode from inside use collects its own buffers
        return use({ pickle, ...found, transient: true })
      }),
    )
  }

  /**
   * Runs pickle with the buffer callback collecting into fresh arrays, and puts back the
   * arrays of any pickling it interrupted (a value whose reduce sends a message) when pickle
   * calls done, or returns.
   */
  #collecting<R>(pickle: (found: { buffers: BufferPart[]; readonly: boolean[] }, done: () => void) => R): R {
    const buffers: BufferPart[] = []
    const readonly: boolean[] = []
    const savedBuffers = this.#outBuffers
    const savedReadonly = this.#outReadonly
    this.#outBuffers = buffers
    this.#outReadonly = readonly
    let restored = false
    const done = (): void => {
      if (restored) return
      restored = true
      this.#outBuffers = savedBuffers
      this.#outReadonly = savedReadonly
    }
    try {
      return pickle({ buffers, readonly }, done)
    } finally {
      done()
    }
  }

  /** Loads a value from its pickle and buffers; each buffer comes back as a PickleBuffer over the same memory. */
  decode(pickle: Uint8Array, buffers: readonly BufferPart[] = [], readonly: readonly boolean[] = []): unknown {
    const m = buffers.length
    if (m === 0) return loads(pickle, this.#loadOptions)
    const wrapped = new Array<PickleBuffer>(m)
    for (let i = 0; i < m; i++) wrapped[i] = new PickleBuffer(buffers[i]!, { readonly: readonly[i] ?? false })
    const options = this.#withBuffers
    const outer = options.buffers // a load in progress (an unpickler hook decoding a message)
    options.buffers = wrapped
    try {
      return loads(pickle, options)
    } finally {
      options.buffers = outer
    }
  }
}

/** A PickleBuffer's memory as a BufferPart: its Uint8Array, or a DataView when it is longer than one can be. */
function partOf(b: PickleBuffer): BufferPart {
  try {
    return b.raw()
  } catch (err) {
    if (err instanceof RangeError && !b.released) return new DataView(b.buffer, b.byteOffset, b.byteLength)
    throw err
  }
}

// The codecs of the functions below, made once per options object (carriers pass the same one
// with every message) and once for no options.
const encoders = new WeakMap<object, ValueCodec>()
const decoders = new WeakMap<object, ValueCodec>()
const plain = new ValueCodec()

function encoderFor(options: EncodeOptions | undefined): ValueCodec {
  if (options === undefined || isEmpty(options)) return plain
  let c = encoders.get(options)
  if (c === undefined) encoders.set(options, (c = new ValueCodec({ pickler: options })))
  return c
}

function decoderFor(options: DecodeOptions | undefined): ValueCodec {
  if (options === undefined || isEmpty(options)) return plain
  let c = decoders.get(options)
  if (c === undefined) decoders.set(options, (c = new ValueCodec({ unpickler: options })))
  return c
}

function isEmpty(o: object): boolean {
  for (const _ in o) return false
  return true
}

/** Pickles a value with protocol 5 and collects its out-of-band buffers (views, not copies). */
export function encodeValue(value: unknown, options: EncodeOptions = {}): MessageParts {
  return encoderFor(options).encode(value)
}

/**
 * encodeValue for a carrier that copies the pickle while `use` runs (into a frame): the parts
 * come with the pickle lent by the pickler (`transient: true`), so no output is allocated.
 */
export function encodeValueWith<R>(value: unknown, options: EncodeOptions, use: (parts: MessageParts) => R): R {
  return encoderFor(options).encodeWith(value, use)
}

/** Loads a value from its parts; each buffer comes back as a PickleBuffer over the same memory. */
export function decodeValue(parts: MessageParts, options: DecodeOptions = {}): unknown {
  return decoderFor(options).decode(parts.pickle, parts.buffers, parts.readonly)
}
