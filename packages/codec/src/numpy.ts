/**
 * NumPy arrays, dtypes and scalars, both ways, for numpy 1.x (numpy.core.*) and 2.x
 * (numpy._core.*). An array loads as an NDArray whose data is a TypedArray view over the bytes
 * it arrived in: no copy when they are aligned for the element type and in the machine's byte
 * order. The reconstructors here only build data; the recipes are what the pickler writes,
 * the same calls numpy's own __reduce_ex__ makes. See docs/numpy.md.
 */
import { PickleError } from './errors.js'
import type { GlobalRegistry } from './globals.js'
import { badOptionType, checkOptions, optionNames } from './options.js'
import { Complex, PickleBuffer, PyGlobal, PyObject, PyOpaque, Tuple, asTuple, describe, setState, type HasSetState } from './types.js'

// ---- float16 ----

/** The number a float16 bit pattern (as numpy stores it, in a Uint16Array) stands for. */
export function float16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >> 10) & 0x1f
  const frac = bits & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 0x1f) return frac ? NaN : sign * Infinity
  return sign * (1 + frac / 1024) * 2 ** (exp - 15)
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v)
  const d = v - f
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f
}

/** The float16 bit pattern nearest to x (ties to even, as numpy rounds); NaN is 0x7e00. */
export function numberToFloat16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0
  const a = Math.abs(x)
  if (a >= 65520) return sign | 0x7c00 // 65520 is half-way to 2^16: ties to even make it inf
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24) // subnormal (1024 becomes the smallest normal)
  let e = Math.floor(Math.log2(a))
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  let m = roundHalfEven((a / 2 ** e - 1) * 1024)
  if (m === 1024) {
    m = 0
    e++
  }
  return e > 15 ? sign | 0x7c00 : sign | ((e + 15) << 10) | m
}

// ---- dtypes ----

/** numpy's dtype.kind: bool, int, uint, float, complex, bytes, str, void, object, datetime64, timedelta64. */
export type DTypeKind = 'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'U' | 'V' | 'O' | 'M' | 'm'
/** numpy's dtype.byteorder as pickles write it: '|' when it does not apply. */
export type ByteOrder = '<' | '>' | '|'

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1
/** The machine's byte order: what a TypedArray view reads. */
export const NATIVE_BYTE_ORDER: '<' | '>' = LITTLE_ENDIAN ? '<' : '>'

const DATETIME_UNITS = new Set(['Y', 'M', 'W', 'D', 'h', 'm', 's', 'ms', 'us', 'μs', 'ns', 'ps', 'fs', 'as', 'generic'])

const NAMED: ReadonlyMap<string, readonly [DTypeKind, number]> = new Map([
  ['bool', ['b', 1]], ['?', ['b', 1]],
  ['int8', ['i', 1]], ['int16', ['i', 2]], ['int32', ['i', 4]], ['int64', ['i', 8]],
  ['uint8', ['u', 1]], ['uint16', ['u', 2]], ['uint32', ['u', 4]], ['uint64', ['u', 8]],
  ['float16', ['f', 2]], ['float32', ['f', 4]], ['float64', ['f', 8]],
  ['complex64', ['c', 8]], ['complex128', ['c', 16]],
  ['object', ['O', 8]], ['datetime64', ['M', 8]], ['timedelta64', ['m', 8]],
])

/** Largest itemsize accepted, as numpy's (it is an int32 in numpy's dtype struct). */
const MAX_ITEMSIZE = 0x7fffffff

function bad(what: string): never {
  throw new PickleError(what)
}

/** A str of a pickle, or bytes when loaded with encoding: 'bytes' (Python 2 pickles). */
function text(v: unknown, who: string): string {
  if (typeof v === 'string') return v
  if (v instanceof Uint8Array && v.length <= 64) return String.fromCharCode(...v)
  return bad(`${who} needs a str, got ${describe(v)}`)
}

function int(v: unknown, who: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v
  if (typeof v === 'boolean') return v ? 1 : 0
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v)
  return bad(`${who} needs an integer, got ${describe(v)}`)
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/**
 * numpy.dtype: the element type of an array. Built from a numpy type string ('<f4', 'float32',
 * 'S5', 'U3', 'M8[ns]', 'O', ...) or loaded from a pickle. The fields beyond kind, itemsize,
 * byte order and datetime unit are kept as they were loaded, so that a structured dtype
 * pickles back the same.
 */
export class DType implements HasSetState {
  readonly kind: DTypeKind
  /** Bytes per element (numpy's itemsize; 4 per character for 'U'). */
  readonly itemsize: number
  readonly byteorder: ByteOrder
  /** The datetime64/timedelta64 unit ('ns', 'D', 'generic', ...); null for other kinds. */
  readonly unit: string | null = null
  /** How many units one step is ('m8[2D]': 2). */
  readonly unitCount: number = 1
  /** A structured dtype's field names, subarray and fields as loaded (a Tuple, a Map); null otherwise. */
  readonly names: unknown = null
  readonly fields: unknown = null
  readonly subarray: unknown = null
  /** numpy's pickled alignment and flags (kept for pickling back). */
  readonly alignment: number = -1
  readonly flags: number = 0
  /** A metadata dict of a dtype that has one (non-datetime dtypes), as loaded. */
  readonly metadata: unknown = null
  /**
   * The class numpy.dtype() was called with instead of a type string: numpy.record for record
   * arrays, or (opaque mode) a dtype class of another library such as ml_dtypes.bfloat16. Such a
   * dtype has kind 'V' (each element its raw bytes, itemsize from its state) and pickles back
   * as numpy.dtype(thatClass). null for dtypes made from a type string.
   */
  readonly scalarType: PyGlobal | null = null
  /**
   * Opaque mode: the inert placeholder that stood where an array's state had its dtype, for a
   * dtype numpy builds by a call this codec does not know (numpy 2's StringDType). The array's
   * elements are the list numpy pickled (kind 'O'), and the dtype pickles back as the placeholder.
   */
  readonly placeholder: PyOpaque | null = null

  constructor(spec: string) {
    const m = /^([<>|=]?)(.*)$/s.exec(spec)!
    let body = m[2]!
    let unit: string | null = null
    let unitCount = 1
    const dt = /^(.*)\[(\d*)([A-Za-zμ]+)\]$/s.exec(body)
    if (dt) {
      body = dt[1]!
      unitCount = dt[2] ? Number(dt[2]) : 1
      unit = dt[3]!
    }
    let kind: DTypeKind
    let itemsize: number
    const named = NAMED.get(body)
    if (named) [kind, itemsize] = named
    else {
      const k = /^([biufcSUVOMma])(\d*)$/.exec(body) ?? bad(`not a numpy dtype this codec knows: ${JSON.stringify(spec)}`)
      kind = (k[1] === 'a' ? 'S' : k[1]) as DTypeKind
      const n = k[2] === '' ? null : Number(k[2])
      if (n !== null && n > MAX_ITEMSIZE) bad(`numpy dtype ${JSON.stringify(spec)} is too large`)
      itemsize = kind === 'U' ? (n ?? 0) * 4 : n ?? (kind === 'b' ? 1 : kind === 'O' || kind === 'M' || kind === 'm' ? 8 : kind === 'S' || kind === 'V' ? 0 : -1)
    }
    if (!validSize(kind, itemsize)) bad(`numpy dtype ${JSON.stringify(spec)}: no ${kind} type of ${itemsize} bytes`)
    if (unit !== null && kind !== 'M' && kind !== 'm') bad(`numpy dtype ${JSON.stringify(spec)}: only datetime64 and timedelta64 have units`)
    if (kind === 'M' || kind === 'm') {
      unit ??= 'generic'
      if (!DATETIME_UNITS.has(unit)) bad(`numpy dtype ${JSON.stringify(spec)}: unknown datetime unit ${JSON.stringify(unit)}`)
      if (!Number.isSafeInteger(unitCount) || unitCount < 1) bad(`numpy dtype ${JSON.stringify(spec)}: bad unit multiplier`)
    }
    this.kind = kind
    this.itemsize = itemsize
    this.byteorder = resolveByteOrder(m[1]!, kind, itemsize)
    this.unit = unit
    this.unitCount = unitCount
    if (kind === 'S' || kind === 'V') [this.alignment, this.flags] = [1, 0]
    else if (kind === 'U') [this.alignment, this.flags] = [4, 8]
    else if (kind === 'O') this.flags = 63
  }

  /** A dtype made from a class rather than a type string (see scalarType); BUILD gives it its size. */
  static ofScalarType(cls: PyGlobal): DType {
    const d = new DType('V') as Mutable<DType>
    d.scalarType = cls
    return d as DType
  }

  /** The dtype of an array whose state named an opaque placeholder as its dtype (see placeholder). */
  static ofPlaceholder(p: PyOpaque): DType {
    // One DType per placeholder: arrays that shared the dtype in the pickle share it here, and again when pickled back.
    let d = PLACEHOLDER_DTYPES.get(p)
    if (d === undefined) {
      const m = new DType('O') as Mutable<DType>
      m.placeholder = p
      PLACEHOLDER_DTYPES.set(p, (d = m as DType))
    }
    return d
  }

  /** A shared DType for a type string: the same object each time, as numpy's builtin dtypes are. */
  static of(spec: string): DType {
    let d = CANONICAL.get(spec)
    if (d === undefined) {
      d = new DType(spec)
      if (CANONICAL.size < 1024) CANONICAL.set(spec, d)
    }
    return d
  }

  /** numpy's dtype.str: '<f4', '|S5', '<U3', '<M8[ns]', '|O'. */
  get str(): string {
    const size = this.kind === 'O' ? '' : String(this.kind === 'U' ? this.itemsize / 4 : this.itemsize)
    return `${this.byteorder}${this.kind}${size}${this.unitSuffix()}`
  }

  /** numpy's dtype.name: 'float32', 'bytes40', 'str96', 'datetime64[ns]', 'object'. */
  get name(): string {
    const bits = this.itemsize * 8
    switch (this.kind) {
      case 'b': return 'bool'
      case 'i': return `int${bits}`
      case 'u': return `uint${bits}`
      case 'f': return `float${bits}`
      case 'c': return `complex${bits}`
      case 'S': return `bytes${bits}`
      case 'U': return `str${bits}`
      case 'V': return `void${bits}`
      case 'O': return 'object'
      case 'M': return `datetime64${this.unitSuffix()}`
      case 'm': return `timedelta64${this.unitSuffix()}`
    }
  }

  /** The type string numpy's dtype.__reduce__ passes to numpy.dtype(): 'f4', 'U3', 'M8', 'O8'. */
  get descr(): string {
    return `${this.kind}${this.kind === 'U' ? this.itemsize / 4 : this.itemsize}`
  }

  /** True when a typed view reads the elements as they are (no byte swap needed). */
  get isNative(): boolean {
    return this.byteorder !== (NATIVE_BYTE_ORDER === '<' ? '>' : '<')
  }

  /** The same dtype in another byte order. */
  withByteOrder(order: '<' | '>'): DType {
    if (this.byteorder === '|' || this.byteorder === order) return this
    if (this.names === null && this.metadata === null && this.subarray === null) return DType.of(`${order}${this.str.slice(1)}`)
    const d = Object.create(DType.prototype) as Mutable<DType>
    Object.assign(d, this, { byteorder: order })
    return d as DType
  }

  toString(): string {
    return this.str
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `DType(${JSON.stringify(this.str)})`
  }

  private unitSuffix(): string {
    if (this.unit === null || this.unit === 'generic') return ''
    return `[${this.unitCount === 1 ? '' : this.unitCount}${this.unit}]`
  }

  /** numpy's dtype.__setstate__: (version, endian, subarray, names, fields, elsize, alignment, flags[, metadata]). */
  [setState](state: unknown): void {
    const who = 'numpy.dtype state'
    if (!Array.isArray(state) || (state.length !== 8 && state.length !== 9)) {
      return bad(`${who} must be a tuple of 8 or 9 items (versions 3 and 4), got ${describe(state)}${Array.isArray(state) ? ` of ${state.length}` : ''}`)
    }
    const self = this as Mutable<DType>
    const endian = text(state[1], who)
    if (endian !== '<' && endian !== '>' && endian !== '|' && endian !== '=') bad(`${who}: bad byte order ${JSON.stringify(endian)}`)
    // A class's dtype keeps the byte order it was pickled with: its elements are bytes to us, not to numpy.
    self.byteorder = this.scalarType === null ? resolveByteOrder(endian, this.kind, this.itemsize) : endian === '=' ? NATIVE_BYTE_ORDER : endian
    self.subarray = state[2] ?? null
    self.names = state[3] ?? null
    self.fields = state[4] ?? null
    const elsize = int(state[5], who)
    const alignment = int(state[6], who)
    self.flags = int(state[7], who)
    if (this.kind === 'S' || this.kind === 'U' || this.kind === 'V') {
      if (elsize < 0 || elsize > MAX_ITEMSIZE || (this.kind === 'U' && elsize % 4 !== 0)) bad(`${who}: bad itemsize ${elsize} for kind '${this.kind}'`)
      self.itemsize = elsize
      self.alignment = alignment
    }
    if (state.length === 9) {
      const extra = state[8]
      if (this.kind === 'M' || this.kind === 'm') {
        // (metadata, (unit, num, den, events)): numpy 1.x writes {} as metadata, numpy 2.x None.
        const info = Array.isArray(extra) && extra.length === 2 ? extra[1] : null
        if (!Array.isArray(info) || info.length !== 4) bad(`${who}: datetime info must be (metadata, (unit, num, den, events)), got ${describe(extra)}`)
        const unit = text(info[0], who)
        const count = int(info[1], who)
        if (!DATETIME_UNITS.has(unit)) bad(`${who}: unknown datetime unit ${JSON.stringify(unit)}`)
        if (count < 1) bad(`${who}: bad unit multiplier ${count}`)
        self.unit = unit
        self.unitCount = count
      } else {
        self.metadata = extra ?? null
      }
    }
  }
}

const CANONICAL = new Map<string, DType>()
const PLACEHOLDER_DTYPES = new WeakMap<PyOpaque, DType>()

function validSize(kind: DTypeKind, n: number): boolean {
  switch (kind) {
    case 'b': return n === 1
    case 'i': case 'u': return n === 1 || n === 2 || n === 4 || n === 8
    case 'f': return n === 2 || n === 4 || n === 8 || n === 12 || n === 16
    case 'c': return n === 8 || n === 16 || n === 24 || n === 32
    case 'M': case 'm': return n === 8
    case 'O': return n === 8
    case 'S': case 'U': case 'V': return n >= 0
  }
}

function resolveByteOrder(c: string, kind: DTypeKind, itemsize: number): ByteOrder {
  if (kind === 'b' || kind === 'S' || kind === 'V' || kind === 'O' || (itemsize <= 1 && kind !== 'U')) return '|'
  if (c === '<' || c === '>') return c
  return NATIVE_BYTE_ORDER
}

// ---- how a dtype lies in memory ----

type TypedArrayConstructor =
  | Int8ArrayConstructor | Uint8ArrayConstructor | Int16ArrayConstructor | Uint16ArrayConstructor | Int32ArrayConstructor
  | Uint32ArrayConstructor | Float32ArrayConstructor | Float64ArrayConstructor | BigInt64ArrayConstructor | BigUint64ArrayConstructor

/** The TypedArrays an NDArray's data may be. */
export type TypedData =
  | Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array | Float32Array
  | Float64Array | BigInt64Array | BigUint64Array

/** An NDArray's data: a TypedArray for every dtype but object, whose items are a plain Array. */
export type NDArrayData = TypedData | unknown[]

interface Layout {
  /** The TypedArray the data is a view of (null for object arrays). */
  ctor: TypedArrayConstructor | null
  /** Items of data per element: 2 for complex, itemsize for S, V and raw kinds, characters for U. */
  units: number
  /** Bytes swapped as one when the byte order is foreign (0: none). */
  swap: number
  /** The elements are raw bytes, not decoded (float96/float128, complex192/256, void). */
  raw: boolean
}

function layoutOf(d: DType): Layout {
  const n = d.itemsize
  switch (d.kind) {
    case 'b': return { ctor: Uint8Array, units: 1, swap: 0, raw: false }
    case 'i': return { ctor: n === 1 ? Int8Array : n === 2 ? Int16Array : n === 4 ? Int32Array : BigInt64Array, units: 1, swap: n, raw: false }
    case 'u': return { ctor: n === 1 ? Uint8Array : n === 2 ? Uint16Array : n === 4 ? Uint32Array : BigUint64Array, units: 1, swap: n, raw: false }
    case 'f':
      if (n === 2) return { ctor: Uint16Array, units: 1, swap: 2, raw: false }
      if (n === 4) return { ctor: Float32Array, units: 1, swap: 4, raw: false }
      if (n === 8) return { ctor: Float64Array, units: 1, swap: 8, raw: false }
      return { ctor: Uint8Array, units: n, swap: n, raw: true }
    case 'c':
      if (n === 8) return { ctor: Float32Array, units: 2, swap: 4, raw: false }
      if (n === 16) return { ctor: Float64Array, units: 2, swap: 8, raw: false }
      return { ctor: Uint8Array, units: n, swap: n / 2, raw: true }
    case 'M': case 'm': return { ctor: BigInt64Array, units: 1, swap: 8, raw: false }
    case 'S': return { ctor: Uint8Array, units: n, swap: 0, raw: false }
    case 'V': return { ctor: Uint8Array, units: n, swap: 0, raw: true }
    case 'U': return { ctor: Uint32Array, units: n / 4, swap: 4, raw: false }
    case 'O': return { ctor: null, units: 1, swap: 0, raw: false }
  }
}

/**
 * A range of memory: a Uint8Array, a PickleBuffer's range, or one longer than a Uint8Array can
 * be (an out-of-band buffer of more than 4 GiB in Node 20).
 */
interface ByteRange {
  readonly buffer: ArrayBufferLike
  readonly byteOffset: number
  readonly byteLength: number
}

/**
 * Bytes copied or swapped per step: a Uint8Array window of this size always exists, and the
 * steps let a range longer than any Uint8Array be copied through such windows.
 */
const WINDOW_BYTES = 2 ** 30

/** Swaps each `size`-byte group of src into a new ArrayBuffer. */
function byteSwapped(src: ByteRange, size: number): ArrayBuffer {
  const n = src.byteLength
  const out = new ArrayBuffer(n)
  const step = WINDOW_BYTES - (WINDOW_BYTES % size)
  for (let base = 0; base < n; base += step) {
    const len = Math.min(step, n - base)
    const from = new Uint8Array(src.buffer, src.byteOffset + base, len)
    const to = new Uint8Array(out, base, len)
    for (let at = 0; at < len; at += size) {
      for (let i = 0; i < size; i++) to[at + i] = from[at + size - 1 - i]!
    }
  }
  return out
}

/** A copy of the range into a new ArrayBuffer (so aligned for any element). */
function copied(src: ByteRange): ArrayBuffer {
  const n = src.byteLength
  const out = new ArrayBuffer(n)
  for (let base = 0; base < n; base += WINDOW_BYTES) {
    const len = Math.min(WINDOW_BYTES, n - base)
    new Uint8Array(out, base, len).set(new Uint8Array(src.buffer, src.byteOffset + base, len))
  }
  return out
}

interface Viewed {
  data: TypedData
  dtype: DType
  copied: boolean
}

/**
 * The bytes as the dtype's TypedArray: a view over the same memory when they are aligned and in
 * the machine's byte order; otherwise one copy (byte-swapped to the machine's order, and the
 * dtype with it, as numpy's own unpickling does).
 */
function viewBytes(bytes: ByteRange, dtype: DType): Viewed {
  const { ctor, swap } = layoutOf(dtype)
  if (ctor === null) return bad('object arrays have no bytes to view')
  let src: ByteRange = bytes
  let isCopy = false
  let dt = dtype
  if (swap > 1 && !dtype.isNative) {
    src = new DataView(byteSwapped(bytes, swap))
    isCopy = true
    dt = dtype.withByteOrder(NATIVE_BYTE_ORDER)
  } else if (bytes.byteOffset % ctor.BYTES_PER_ELEMENT !== 0) {
    src = new DataView(copied(bytes))
    isCopy = true
  }
  const length = src.byteLength / ctor.BYTES_PER_ELEMENT
  let view: TypedData
  try {
    view = new (ctor as Uint8ArrayConstructor)(src.buffer as ArrayBuffer, src.byteOffset, length) as TypedData
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    return bad(
      `an array of ${dtype} over ${src.byteLength} bytes needs a ${ctor.name} of ${length} elements, more than this JavaScript engine allows; ` +
      `send it viewed as a wider dtype (numpy: arr.view(numpy.uint16), or uint32/uint64), or in parts`,
    )
  }
  return { data: view, dtype: dt, copied: isCopy }
}

/** The data's memory as a Uint8Array (a view); a RangeError when it is longer than a Uint8Array can be. */
function bytesOf(data: TypedData | ArrayBuffer): Uint8Array {
  if (data instanceof Uint8Array && data.constructor === Uint8Array) return data
  const { byteOffset, byteLength } = data instanceof ArrayBuffer ? { byteOffset: 0, byteLength: data.byteLength } : data
  try {
    return new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer, byteOffset, byteLength)
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    throw new RangeError(`an array's ${byteLength} bytes are longer than a Uint8Array can be in this JavaScript engine; use its data (a ${data.constructor.name}) instead of its bytes`)
  }
}

// ---- shapes ----

/** Most dimensions numpy 2.x allows (numpy 1.x: 32). */
export const MAX_NDIM = 64

/** A shape from a pickle or a caller: non-negative safe integers, at most MAX_NDIM of them. */
function checkShape(shape: unknown, who: string): number[] {
  const dims = typeof shape === 'number' || typeof shape === 'bigint' ? [shape] : shape
  if (!Array.isArray(dims)) return bad(`${who}: the shape must be a tuple of integers, got ${describe(shape)}`)
  if (dims.length > MAX_NDIM) bad(`${who}: ${dims.length} dimensions, more than ${MAX_NDIM}`)
  const out = new Array<number>(dims.length)
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i]
    const n = typeof d === 'number' && Number.isInteger(d) ? d : int(d, `${who} shape`)
    if (n < 0) bad(`${who}: negative dimension ${n} in the shape`)
    out[i] = n
  }
  return out
}

/** The element count of a shape times itemsize, checked: never above 2^53 - 1 (a shape with a 0 is empty). */
function byteCount(shape: readonly number[], itemsize: number, who: string): number {
  if (shape.includes(0)) return 0
  let n = 1
  for (const d of shape) {
    n *= d
    if (n > Number.MAX_SAFE_INTEGER) bad(`${who}: the shape (${shape.join(', ')}) is too large`)
  }
  const bytes = n * itemsize
  if (bytes > Number.MAX_SAFE_INTEGER) bad(`${who}: the shape (${shape.join(', ')}) is too large`)
  return bytes
}

function elementCount(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

function contiguousStrides(shape: readonly number[], itemsize: number, order: 'C' | 'F'): number[] {
  const strides = new Array<number>(shape.length)
  let step = itemsize
  for (let k = 0; k < shape.length; k++) {
    const i = order === 'C' ? shape.length - 1 - k : k
    strides[i] = step
    step *= Math.max(shape[i]!, 1)
  }
  return strides
}

/** numpy's contiguity test: dimensions of length 1 do not count, and an empty array is both. */
function isContiguous(shape: readonly number[], strides: readonly number[], itemsize: number, order: 'C' | 'F'): boolean {
  if (shape.includes(0)) return true
  let expected = itemsize
  for (let k = 0; k < shape.length; k++) {
    const i = order === 'C' ? shape.length - 1 - k : k
    if (shape[i] === 1) continue
    if (strides[i] !== expected) return false
    expected *= shape[i]!
  }
  return true
}

/** Whether strides lay the elements out one after another in some order of the axes (C, F or another permutation), from the first byte. */
function isDense(shape: readonly number[], strides: readonly number[], itemsize: number): boolean {
  if (shape.includes(0)) return true
  const axes = shape.map((_, i) => i).filter((i) => shape[i]! > 1).sort((a, b) => strides[b]! - strides[a]!)
  let expected = itemsize
  for (let k = axes.length - 1; k >= 0; k--) {
    const i = axes[k]!
    if (strides[i] !== expected) return false
    expected *= shape[i]!
  }
  return true
}

/** How an NDArray's data is laid out: C (row-major), F (column-major) or K (another permutation of the axes). */
export type NDArrayOrder = 'C' | 'F' | 'K'

function orderOf(shape: readonly number[], strides: readonly number[], itemsize: number): NDArrayOrder {
  if (isContiguous(shape, strides, itemsize, 'C')) return 'C'
  if (isContiguous(shape, strides, itemsize, 'F')) return 'F'
  return 'K'
}

/** numpy's PyArray_CreateSortedStridePerm: axes by stride, largest first, ties in axis order. */
function sortedStridePerm(strides: readonly number[]): number[] {
  return strides.map((s, i) => [Math.abs(s), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i)
}

// ---- element values ----

function decodeUtf32(units: Uint32Array | readonly number[], who: string): string {
  let end = units.length
  while (end > 0 && units[end - 1] === 0) end--
  let s = ''
  for (let i = 0; i < end; i++) {
    const c = units[i]!
    if (c > 0x10ffff) bad(`${who}: code point 0x${c.toString(16)} is out of range`)
    s += String.fromCodePoint(c)
  }
  return s
}

function stripNulls(b: Uint8Array): Uint8Array {
  let end = b.length
  while (end > 0 && b[end - 1] === 0) end--
  return b.slice(0, end)
}

/** The value of the element whose first item of data is at `at`, as NDArray.get returns it. */
function elementAt(dtype: DType, layout: Layout, data: NDArrayData, at: number): unknown {
  if (layout.raw) return (data as Uint8Array).slice(at, at + layout.units)
  switch (dtype.kind) {
    case 'b': return data[at] !== 0
    case 'f': return dtype.itemsize === 2 ? float16ToNumber(data[at] as number) : data[at]
    case 'c': return new Complex(data[at] as number, data[at + 1] as number)
    case 'S': return stripNulls((data as Uint8Array).subarray(at, at + layout.units))
    case 'U': return decodeUtf32((data as Uint32Array).subarray(at, at + layout.units), 'numpy str element')
    default: return data[at]
  }
}

// ---- arrays ----

export interface NDArrayOptions {
  /** The element type: a DType or a numpy type string. Default: the TypedArray's own ('<f4' for a Float32Array, 'O' for an Array). */
  dtype?: DType | string
  /** Default: one dimension, as long as the data. */
  shape?: readonly number[]
  /** How data is laid out: 'C' (row-major) or 'F' (column-major). Default 'C'. */
  order?: 'C' | 'F'
  /** Whether the memory must not be written (numpy's writeable flag, inverted). Default false. */
  readonly?: boolean
}

const NDARRAY_OPTIONS = optionNames('dtype', 'shape', 'order', 'readonly')

const TYPED_DTYPES: ReadonlyMap<Function, string> = new Map<Function, string>([
  [Int8Array, 'i1'], [Uint8Array, 'u1'], [Uint8ClampedArray, 'u1'], [Int16Array, 'i2'], [Uint16Array, 'u2'],
  [Int32Array, 'i4'], [Uint32Array, 'u4'], [Float32Array, 'f4'], [Float64Array, 'f8'], [BigInt64Array, 'i8'],
  [BigUint64Array, 'u8'],
])

/** The numpy dtype a plain TypedArray dumps as (a Float32Array is float32, ...), or null. */
export function dtypeOfTypedArray(view: ArrayBufferView): DType | null {
  let proto = Object.getPrototypeOf(view)
  while (proto !== null) {
    const spec = TYPED_DTYPES.get(proto.constructor)
    if (spec !== undefined) return DType.of(spec)
    proto = Object.getPrototypeOf(proto)
  }
  return null
}

function fitsLayout(data: NDArrayData, layout: Layout): boolean {
  if (layout.ctor === null) return Array.isArray(data)
  return data instanceof layout.ctor || (layout.ctor === Uint8Array && data instanceof Uint8ClampedArray)
}

/**
 * A numpy ndarray: dtype, shape and strides over `data`, a TypedArray (a plain Array for object
 * arrays). data holds the elements in memory order: C order for order 'C', column-major for
 * 'F', and for 'K' the order of the strides (the element at index (i, j, ...) is data item
 * (i*strides[0] + j*strides[1] + ...) / itemsize, times the items per element). Nothing is
 * transposed. Element types without a TypedArray of their own: float16 is a Uint16Array of
 * the raw bits (float16ToNumber decodes), complex an interleaved real, imag Float32Array or
 * Float64Array, 'S' a Uint8Array of itemsize bytes per element, 'U' a Uint32Array of code
 * points (itemsize / 4 per element), datetime64 and timedelta64 a BigInt64Array in the dtype's
 * unit; see docs/numpy.md.
 */
/** An array's parts, checked by the reconstructor that made them: the private way into the NDArray constructor. */
class ArrayParts {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly data: NDArrayData,
    readonly readonly: boolean,
    readonly copied: boolean,
  ) {}
}

function makeArray(dtype: DType, shape: readonly number[], strides: readonly number[], data: NDArrayData, readonly: boolean, copied: boolean): NDArray {
  return new NDArray(new ArrayParts(dtype, shape, strides, data, readonly, copied) as unknown as NDArrayData)
}

/**
 * Arrays that _frombuffer byte-swapped to the machine's order, with the dtype they were pickled
 * with. A WeakMap rather than a field: loading the common, native arrays stores nothing more.
 */
const PICKLED_DTYPES = new WeakMap<NDArray, DType>()

/**
 * Lossless mode: an array that protocol 5 (_frombuffer) gave in a foreign byte order keeps that
 * dtype ('>i4'), as numpy's own _frombuffer does, so that it pickles back as it came. Its data
 * stays in the machine's order. (Set in NDArray's static block, which can reach #dtype.)
 */
export let keepPickledByteOrder: (a: NDArray) => void

export class NDArray implements HasSetState {
  static {
    keepPickledByteOrder = (a) => {
      const d = PICKLED_DTYPES.get(a)
      if (d !== undefined) a.#dtype = d
    }
  }

  // Set by #init in every constructor path (no defaults: loading allocates nothing it drops).
  #dtype!: DType
  #shape!: readonly number[]
  #strides!: readonly number[]
  #data!: NDArrayData
  #readonly!: boolean
  #copied!: boolean

  constructor(data: NDArrayData, options: NDArrayOptions = {}) {
    if ((data as unknown) instanceof ArrayParts) {
      const p = data as unknown as ArrayParts
      this.#init(p.dtype, p.shape, p.strides, p.data, p.readonly, p.copied)
      return
    }
    const who = 'NDArray'
    checkOptions(who, options, NDARRAY_OPTIONS)
    const spec = options.dtype
    if (spec !== undefined && !(spec instanceof DType) && typeof spec !== 'string') throw badOptionType(who, 'dtype', 'a DType or a numpy type string', spec)
    if (options.readonly !== undefined && typeof options.readonly !== 'boolean') throw badOptionType(who, 'readonly', 'a boolean', options.readonly)
    const dtype = spec instanceof DType ? spec : typeof spec === 'string' ? DType.of(spec)
      : Array.isArray(data) ? DType.of('O') : ArrayBuffer.isView(data) ? dtypeOfTypedArray(data) : null
    if (dtype === null) bad(`${who} needs a TypedArray or an Array, got ${describe(data)}`)
    const layout = layoutOf(dtype)
    if (!fitsLayout(data, layout)) bad(`${who}: dtype ${dtype} needs its data as ${layout.ctor?.name ?? 'Array'}, got ${describe(data)}`)
    if (layout.swap > 1 && !dtype.isNative) bad(`${who}: dtype ${dtype} is not in the machine's byte order (${NATIVE_BYTE_ORDER}); data must be`)
    const units = layout.units
    const shape = options.shape === undefined ? [units === 0 ? 0 : Math.floor(data.length / units)] : checkShape(options.shape, who)
    const bytes = byteCount(shape, dtype.itemsize, who)
    const elements = dtype.itemsize === 0 ? elementCount(shape) : bytes / dtype.itemsize
    if (elements * units !== data.length) {
      bad(`${who}: shape (${shape.join(', ')}) of ${dtype} needs ${elements * units} items of data, got ${data.length}`)
    }
    const order = options.order ?? 'C'
    if (order !== 'C' && order !== 'F') bad(`${who}: order must be 'C' or 'F', got ${describe(order)}`)
    this.#init(dtype, shape, contiguousStrides(shape, dtype.itemsize, order), data, options.readonly ?? false, false)
  }

  /** shape and strides become the array's own (frozen): callers pass arrays nobody else holds. */
  #init(dtype: DType, shape: readonly number[], strides: readonly number[], data: NDArrayData, readonly: boolean, copied: boolean): this {
    this.#dtype = dtype
    this.#shape = Object.freeze(shape)
    this.#strides = Object.freeze(strides)
    this.#data = data
    this.#readonly = readonly
    this.#copied = copied
    return this
  }

  get dtype(): DType {
    return this.#dtype
  }

  get shape(): readonly number[] {
    return this.#shape
  }

  /** Bytes from one element to the next along each axis, as numpy's strides. */
  get strides(): readonly number[] {
    return this.#strides
  }

  get data(): NDArrayData {
    return this.#data
  }

  /** 'C', 'F' or 'K': how data is laid out (see the class comment). */
  get order(): NDArrayOrder {
    return orderOf(this.#shape, this.#strides, this.#dtype.itemsize)
  }

  /** Set when the array came from a read-only buffer (numpy: not writeable); dumps send it read-only. */
  get readonly(): boolean {
    return this.#readonly
  }

  /**
   * True when loading had to copy the bytes: they were misaligned for the element type, or in
   * the other byte order (converted to the machine's). False for a view over the bytes as they
   * arrived.
   */
  get copied(): boolean {
    return this.#copied
  }

  get ndim(): number {
    return this.#shape.length
  }

  get size(): number {
    return elementCount(this.#shape)
  }

  get itemsize(): number {
    return this.#dtype.itemsize
  }

  get nbytes(): number {
    return this.size * this.#dtype.itemsize
  }

  /** The data's memory as bytes, in memory order (a view, never a copy); object arrays have none. */
  bytes(): Uint8Array {
    if (Array.isArray(this.#data)) return bad('an object array has no bytes')
    return bytesOf(this.#data)
  }

  /**
   * The element at an index (one number per axis; none for a 0-d array): a number, bigint
   * (int64, uint64, datetime64, timedelta64), boolean, Complex, string ('U'), Uint8Array ('S',
   * trailing NULs removed as numpy does; void and other raw kinds as they are) or the object.
   */
  get(...index: number[]): unknown {
    const shape = this.#shape
    if (index.length !== shape.length) bad(`NDArray.get needs ${shape.length} indices, got ${index.length}`)
    let offset = 0
    for (let k = 0; k < index.length; k++) {
      let i = index[k]!
      if (!Number.isInteger(i)) bad(`NDArray.get: index ${i} is not an integer`)
      if (i < 0) i += shape[k]!
      if (i < 0 || i >= shape[k]!) bad(`NDArray.get: index ${index[k]} is out of bounds for axis ${k} with size ${shape[k]}`)
      offset += i * this.#strides[k]!
    }
    return this.#element(offset)
  }

  #element(offset: number): unknown {
    const layout = layoutOf(this.#dtype)
    const itemsize = this.#dtype.itemsize
    const at = itemsize === 0 ? 0 : (offset / itemsize) * layout.units
    return elementAt(this.#dtype, layout, this.#data, at)
  }

  /** The axes permuted (reversed when none are given), as numpy's transpose: a view of the same data, never a copy. */
  transpose(...axes: number[]): NDArray {
    const n = this.#shape.length
    const perm = axes.length === 0 ? [...Array(n).keys()].reverse() : axes
    if (perm.length !== n || new Set(perm).size !== n || perm.some((p) => !Number.isInteger(p) || p < 0 || p >= n)) {
      bad(`NDArray.transpose: (${axes.join(', ')}) is not a permutation of ${n} axes`)
    }
    return makeArray(this.#dtype, perm.map((p) => this.#shape[p]!), perm.map((p) => this.#strides[p]!), this.#data, this.#readonly, this.#copied)
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const list = this.size <= 20 ? ` ${inspectValue(this.toList())}` : ''
    return `NDArray(${this.#dtype.str}, (${this.#shape.join(', ')}${this.#shape.length === 1 ? ',' : ''}), order ${this.order}${list})`
  }

  /** Nested Arrays of the elements in index order (numpy's tolist); a 0-d array gives its element. */
  toList(): unknown {
    const walk = (axis: number, offset: number): unknown => {
      if (axis === this.#shape.length) return this.#element(offset)
      const out = new Array(this.#shape[axis]!)
      for (let i = 0; i < out.length; i++) out[i] = walk(axis + 1, offset + i * this.#strides[axis]!)
      return out
    }
    return walk(0, 0)
  }

  /** The elements in C (row-major) order, as a flat Array of what get() returns. */
  flat(): unknown[] {
    const out: unknown[] = []
    const walk = (axis: number, offset: number): void => {
      if (axis === this.#shape.length) {
        out.push(this.#element(offset))
        return
      }
      for (let i = 0; i < this.#shape[axis]!; i++) walk(axis + 1, offset + i * this.#strides[axis]!)
    }
    walk(0, 0)
    return out
  }

  /** numpy's ndarray.__setstate__: (version, shape, dtype, is_fortran, data), version 1 or 0 (no version). */
  [setState](state: unknown): void {
    const who = 'numpy.ndarray state'
    if (!Array.isArray(state) || (state.length !== 5 && state.length !== 4)) {
      return bad(`${who} must be (version, shape, dtype, is_fortran, data), got ${describe(state)}`)
    }
    const [version, shapeArg, dtypeArg, fortran, raw] = state.length === 5 ? state : [0, ...state]
    if (version !== 1 && version !== 0) bad(`${who}: can't handle version ${describe(version)} of numpy.ndarray pickle`)
    // A placeholder exists in opaque mode only: there an unknown dtype keeps the array, as a list of its elements.
    const dtype = dtypeArg instanceof PyOpaque ? DType.ofPlaceholder(dtypeArg) : dtypeArg
    if (!(dtype instanceof DType)) return bad(`${who} needs a numpy.dtype, got ${describe(dtype)}`)
    if (dtype.placeholder !== null && !Array.isArray(raw)) {
      return bad(`${who}: an array of a dtype this codec does not know (${describe(dtype.placeholder)}) loads only when numpy pickled its elements as a list, got ${describe(raw)}`)
    }
    if (!Array.isArray(shapeArg)) return bad(`${who}: the shape must be a tuple, got ${describe(shapeArg)}`)
    const shape = checkShape(shapeArg, who)
    const nbytes = byteCount(shape, dtype.itemsize, who)
    if (dtype.kind === 'O') {
      if (!Array.isArray(raw)) return bad(`${who}: an object array's data must be a list, got ${describe(raw)}`)
      const n = elementCount(shape)
      if (raw.length !== n) bad(`${who}: shape (${shape.join(', ')}) needs ${n} objects, got ${raw.length}`)
      // numpy writes the objects in C order whatever the array's layout was.
      this.#init(dtype, shape, contiguousStrides(shape, dtype.itemsize, 'C'), raw.slice(), false, false)
      return
    }
    // Python 2 pickles loaded with encoding='latin1' give the bytes as a str of code points < 256.
    const bytes = typeof raw === 'string' ? latin1Bytes(raw, who) : raw instanceof Uint8Array ? raw : null
    if (bytes === null) return bad(`${who}: the data must be bytes, got ${describe(raw)}`)
    if (bytes.length !== nbytes) bad(`${who}: buffer size does not match array size: shape (${shape.join(', ')}) of ${dtype} is ${nbytes} bytes, got ${bytes.length}`)
    const order = fortran === true || (typeof fortran === 'number' && fortran !== 0) ? 'F' : 'C'
    const v = viewBytes(bytes, dtype)
    this.#init(v.dtype, shape, contiguousStrides(shape, dtype.itemsize, order), v.data, false, v.copied)
  }
}

function latin1Bytes(s: string, who: string): Uint8Array {
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c > 0xff) bad(`${who}: a str of array data must be latin-1 (load Python 2 pickles with encoding: 'latin1'), got U+${c.toString(16)}`)
    out[i] = c
  }
  return out
}

// ---- scalars ----

/**
 * A numpy scalar (numpy.float32(2.5), numpy.datetime64('2020-01-01'), ...): its dtype and its
 * bytes. By default the unpickler gives the plain value instead (a number for the float and
 * int types, bigint beyond 2^53, boolean, Complex, Uint8Array for bytes_, string for str_);
 * datetime64, timedelta64, void and the raw float kinds stay NumpyScalar, and lossless: true
 * keeps every one, so that it pickles back as the same numpy type.
 */
export class NumpyScalar {
  readonly dtype: DType
  readonly #bytes: Uint8Array

  /** A scalar of the dtype holding value (a number, bigint, boolean, Complex, string ('U'), Uint8Array ('S', raw kinds)). */
  constructor(dtype: DType | string, value: unknown) {
    this.dtype = typeof dtype === 'string' ? DType.of(dtype) : dtype
    if (this.dtype.kind === 'O') bad('numpy has no object scalars: an object is itself')
    if (value instanceof ScalarBytes) {
      if (value.bytes.length !== this.dtype.itemsize) bad(`a numpy ${this.dtype} scalar needs ${this.dtype.itemsize} bytes, got ${value.bytes.length}`)
      this.#bytes = value.bytes.slice()
    } else {
      this.#bytes = encodeScalar(this.dtype, value)
    }
  }

  /** The bytes (a copy), as numpy pickles them: itemsize of them, in the dtype's byte order. */
  bytes(): Uint8Array {
    return this.#bytes.slice()
  }

  /** The value: what get() of a one-element array of this dtype returns; int64 and uint64 as number when safe. */
  get value(): unknown {
    const raw = this.#bytes
    const layout = layoutOf(this.dtype)
    if (layout.raw) return raw.slice()
    const v = viewBytes(raw.slice(), this.dtype)
    const x = elementAt(v.dtype, layout, v.data, 0)
    if (typeof x === 'bigint' && (this.dtype.kind === 'i' || this.dtype.kind === 'u') && x >= -MAX_SAFE && x <= MAX_SAFE) return Number(x)
    return x
  }

  /** What the unpickler returns outside lossless mode: the plain value, or this scalar when JavaScript has none. */
  natural(): unknown {
    const k = this.dtype.kind
    if (k === 'M' || k === 'm' || layoutOf(this.dtype).raw) return this
    return this.value
  }

  valueOf(): unknown {
    return this.value
  }

  toString(): string {
    return `numpy.${this.dtype.name}(${inspectValue(this.value)})`
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString()
  }
}

/** A short text of an element for inspection. */
function inspectValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(inspectValue).join(', ')}]`
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'string') return JSON.stringify(v)
  if (v instanceof Uint8Array) return `b${JSON.stringify(String.fromCharCode(...v.subarray(0, 64)))}`
  return String(v)
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/** A scalar's bytes as a pickle gives them: the private way into the NumpyScalar constructor. */
class ScalarBytes {
  constructor(readonly bytes: Uint8Array) {}
}

function encodeScalar(dtype: DType, value: unknown): Uint8Array {
  const n = dtype.itemsize
  const out = new Uint8Array(n)
  const dv = new DataView(out.buffer)
  const le = dtype.byteorder !== '>'
  const who = `numpy ${dtype} scalar`
  const num = (v: unknown): number => {
    if (typeof v === 'number') return v
    if (typeof v === 'bigint' || typeof v === 'boolean') return Number(v)
    return bad(`${who} needs a number, got ${describe(v)}`)
  }
  const big = (v: unknown): bigint => {
    if (typeof v === 'bigint') return v
    if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v)
    return bad(`${who} needs an integer, got ${describe(v)}`)
  }
  if (layoutOf(dtype).raw) {
    if (!(value instanceof Uint8Array) || value.length !== n) bad(`${who} needs ${n} raw bytes, got ${describe(value)}`)
    out.set(value)
    return out
  }
  switch (dtype.kind) {
    case 'b':
      if (typeof value !== 'boolean') bad(`${who} needs a boolean, got ${describe(value)}`)
      out[0] = value ? 1 : 0
      break
    case 'i': case 'u': {
      const v = big(value)
      const bits = BigInt(n * 8)
      const min = dtype.kind === 'i' ? -(1n << (bits - 1n)) : 0n
      const max = dtype.kind === 'i' ? (1n << (bits - 1n)) - 1n : (1n << bits) - 1n
      if (v < min || v > max) bad(`${who}: ${v} is out of range`)
      const u = BigInt.asUintN(n * 8, v)
      for (let i = 0; i < n; i++) out[le ? i : n - 1 - i] = Number((u >> BigInt(8 * i)) & 0xffn)
      break
    }
    case 'f': {
      const v = num(value)
      if (n === 2) dv.setUint16(0, numberToFloat16(v), le)
      else if (n === 4) dv.setFloat32(0, v, le)
      else dv.setFloat64(0, v, le)
      break
    }
    case 'c': {
      const c = value instanceof Complex ? value : new Complex(num(value), 0)
      if (n === 8) {
        dv.setFloat32(0, c.real, le)
        dv.setFloat32(4, c.imag, le)
      } else {
        dv.setFloat64(0, c.real, le)
        dv.setFloat64(8, c.imag, le)
      }
      break
    }
    case 'M': case 'm':
      dv.setBigInt64(0, big(value), le)
      break
    case 'S': {
      const b = value instanceof Uint8Array ? value : typeof value === 'string' ? latin1Bytes(value, who) : bad(`${who} needs bytes, got ${describe(value)}`)
      if (b.length > n) bad(`${who}: ${b.length} bytes do not fit in ${n}`)
      out.set(b)
      break
    }
    case 'U': {
      if (typeof value !== 'string') bad(`${who} needs a string, got ${describe(value)}`)
      const points = [...value].map((c) => c.codePointAt(0)!)
      if (points.length > n / 4) bad(`${who}: ${points.length} characters do not fit in ${n / 4}`)
      points.forEach((p, i) => dv.setUint32(i * 4, p, le))
      break
    }
  }
  return out
}

// ---- reconstructors: what the default registry's numpy globals do ----

function argc(args: readonly unknown[], min: number, max: number, who: string): void {
  if (args.length < min || args.length > max) bad(`${who}() takes ${min === max ? min : `${min} to ${max}`} arguments, got ${args.length}`)
}

/** numpy.dtype(descr, align, copy): the state comes with BUILD. */
function makeDType(args: readonly unknown[]): DType {
  argc(args, 1, 3, 'numpy.dtype')
  const spec = args[0]
  if (spec instanceof PyGlobal) {
    if (spec.opaque || (spec.module === 'numpy' && spec.name === 'record')) return DType.ofScalarType(spec)
    return bad(`numpy.dtype needs a str or a dtype's class (numpy.record; another library's, such as ml_dtypes.bfloat16, in opaque mode), got ${describe(spec)}`)
  }
  return new DType(text(spec, 'numpy.dtype'))
}

/** numpy.core.multiarray._reconstruct(ndarray, shape, typecode): an empty array that BUILD fills. */
function reconstruct(self: PyGlobal, args: readonly unknown[]): unknown {
  argc(args, 3, 3, '_reconstruct')
  const cls = args[0]
  if (cls instanceof PyGlobal && cls.opaque) return new PyObject(self, 'reduce', asTuple(args))
  if (!(cls instanceof PyGlobal) || cls.module !== 'numpy' || cls.name !== 'ndarray') {
    return bad(`_reconstruct supports numpy.ndarray only, got ${describe(cls)}`)
  }
  return makeArray(PLACEHOLDER_DTYPE, [0], [1], PLACEHOLDER_DATA, false, false)
}

/** What _reconstruct's array holds until BUILD gives it its state (numpy's dummy: int8, empty). */
const PLACEHOLDER_DTYPE = DType.of('i1')
const PLACEHOLDER_DATA = new Int8Array(0)

/** The bytes behind _frombuffer's first argument, and whether they are read-only. */
function bufferArg(buf: unknown, who: string): [ByteRange, boolean] {
  // A PickleBuffer's range, which may be longer than a Uint8Array can be.
  if (buf instanceof PickleBuffer) return [{ buffer: buf.buffer, byteOffset: buf.byteOffset, byteLength: buf.byteLength }, buf.readonly]
  if (buf instanceof Uint8Array) return [buf, buf.constructor === Uint8Array] // bytes are read-only, a bytearray is not
  if (typeof buf === 'string') return [latin1Bytes(buf, who), true]
  return bad(`${who} needs a buffer, got ${describe(buf)}`)
}

/** numpy.core.numeric._frombuffer(buf, dtype, shape, order[, axis_order]): frombuffer(buf, dtype).reshape(shape, order) (then transposed for 'K'). */
function frombuffer(args: readonly unknown[]): NDArray {
  const who = '_frombuffer'
  argc(args, 4, 5, who)
  const [buf, dtype, shapeArg, orderArg, axisOrder] = args
  if (!(dtype instanceof DType)) return bad(`${who} needs a numpy.dtype, got ${describe(dtype)}`)
  if (dtype.kind === 'O') bad(`${who}: object arrays cannot be made from a buffer`)
  const [bytes, readonly] = bufferArg(buf, who)
  const shape = checkShape(shapeArg, who)
  const order = text(orderArg, who)
  if (order !== 'C' && order !== 'F' && order !== 'K') bad(`${who}: order must be 'C', 'F' or 'K', got ${JSON.stringify(order)}`)
  const nbytes = byteCount(shape, dtype.itemsize, who)
  if (dtype.itemsize === 0) bad(`${who}: itemsize cannot be zero in type`)
  if (bytes.byteLength !== nbytes) bad(`${who}: a buffer of ${bytes.byteLength} bytes cannot hold shape (${shape.join(', ')}) of ${dtype} (${nbytes} bytes)`)
  let strides: number[]
  let finalShape = shape
  if (order === 'K' && axisOrder !== undefined && axisOrder !== null) {
    // reshape(shape, order='C').transpose(axis_order)
    const perm = checkShape(axisOrder, `${who} axis_order`)
    if (perm.length !== shape.length || new Set(perm).size !== perm.length || perm.some((p) => p >= perm.length)) {
      bad(`${who}: axis_order (${perm.join(', ')}) is not a permutation of ${shape.length} axes`)
    }
    const c = contiguousStrides(shape, dtype.itemsize, 'C')
    finalShape = perm.map((p) => shape[p]!)
    strides = perm.map((p) => c[p]!)
  } else {
    strides = contiguousStrides(shape, dtype.itemsize, order === 'F' ? 'F' : 'C')
  }
  return arrayOverBytes(bytes, dtype, finalShape, strides, readonly)
}

/**
 * numpy.ndarray(shape, dtype, buffer, offset, strides, order), as the pickler writes arrays with
 * the 'portable' names: an array over the buffer, which must hold its elements exactly, one
 * after another (offset 0; strides None, or those of a permutation of the axes). Without a
 * buffer numpy would allocate an array of whatever shape the pickle names: refused.
 */
function ndarrayOverBuffer(args: readonly unknown[]): NDArray {
  const who = 'numpy.ndarray'
  argc(args, 3, 6, who)
  const [shapeArg, dtype, buf, offset = 0, stridesArg = null, orderArg = 'C'] = args
  if (!(dtype instanceof DType)) return bad(`${who} needs a numpy.dtype, got ${describe(dtype)}`)
  if (dtype.kind === 'O' || dtype.itemsize === 0) bad(`${who}: an array of ${dtype} cannot be made over a buffer`)
  const [bytes, readonly] = bufferArg(buf, who)
  const shape = checkShape(shapeArg, who)
  const start = int(offset, `${who} offset`)
  if (start !== 0) bad(`${who}: offset must be 0, got ${start}`)
  const order = text(orderArg, who)
  if (order !== 'C' && order !== 'F') bad(`${who}: order must be 'C' or 'F', got ${JSON.stringify(order)}`)
  const nbytes = byteCount(shape, dtype.itemsize, who)
  if (bytes.byteLength !== nbytes) bad(`${who}: a buffer of ${bytes.byteLength} bytes does not hold shape (${shape.join(', ')}) of ${dtype} (${nbytes} bytes)`)
  let strides: number[]
  if (stridesArg === null) {
    strides = contiguousStrides(shape, dtype.itemsize, order)
  } else {
    strides = checkShape(stridesArg, `${who} strides`)
    if (strides.length !== shape.length || !isDense(shape, strides, dtype.itemsize)) {
      bad(`${who}: strides (${strides.join(', ')}) do not lay out shape (${shape.join(', ')}) of ${dtype} densely over the buffer`)
    }
  }
  return arrayOverBytes(bytes, dtype, shape, strides, readonly)
}

/**
 * An array over the bytes a pickle gave (a view where viewBytes can make one); when they were
 * byte-swapped to the machine's order, the dtype the pickle named is remembered for pickling back.
 */
function arrayOverBytes(bytes: ByteRange, dtype: DType, shape: readonly number[], strides: readonly number[], readonly: boolean): NDArray {
  const v = viewBytes(bytes, dtype)
  const a = makeArray(v.dtype, shape, strides, v.data, readonly, v.copied)
  if (v.dtype !== dtype) PICKLED_DTYPES.set(a, dtype)
  return a
}

/** numpy.core.multiarray.scalar(dtype, bytes): a NumpyScalar (the unpickler unwraps it outside lossless mode); an object dtype's item as it is. */
function makeScalar(args: readonly unknown[]): unknown {
  const who = 'numpy scalar'
  argc(args, 1, 2, who)
  const [dtype, obj] = args
  if (!(dtype instanceof DType)) return bad(`${who} needs a numpy.dtype, got ${describe(dtype)}`)
  if (dtype.kind === 'O') return obj ?? null
  const bytes = typeof obj === 'string' ? latin1Bytes(obj, who) : obj instanceof Uint8Array ? obj : null
  if (bytes === null) return bad(`${who} needs bytes, got ${describe(obj)}`)
  return new NumpyScalar(dtype, new ScalarBytes(bytes))
}

/**
 * Registers what numpy pickles refer to: numpy.dtype, numpy.ndarray, and for numpy 1.x
 * (numpy.core) and 2.x (numpy._core) multiarray._reconstruct, multiarray.scalar and
 * numeric._frombuffer (also under _multiarray_umath, where some versions name them).
 */
export function defineNumpyGlobals(r: GlobalRegistry): void {
  r.define('numpy', 'ndarray', { call: ndarrayOverBuffer })
  r.define('numpy', 'dtype', { call: makeDType })
  // Only ever an argument of numpy.dtype: the type of a record array's elements. Neither callable nor instantiable.
  r.define('numpy', 'record', {})
  for (const core of ['numpy.core', 'numpy._core']) {
    for (const module of [`${core}.multiarray`, `${core}._multiarray_umath`]) {
      const g: PyGlobal = r.define(module, '_reconstruct', { call: (args) => reconstruct(g, args) })
      r.define(module, 'scalar', { call: makeScalar })
    }
    r.define(`${core}.numeric`, '_frombuffer', { call: frombuffer })
  }
}

// ---- recipes: what the pickler writes ----

/**
 * Which global names the pickler writes numpy objects with: 'portable' (numpy 1.x and 2.x load
 * them without a warning), '1' numpy 1.x's own (numpy.core.*; numpy 2.x warns on
 * numpy.core.numeric._frombuffer), '2' numpy 2.x's own (numpy._core.*; numpy 1.x cannot load them).
 */
export type NumpyNames = 'portable' | '1' | '2'

interface NumpyGlobals {
  reconstruct: PyGlobal
  frombuffer: PyGlobal
  scalar: PyGlobal
  ndarray: PyGlobal
  dtype: PyGlobal
}

const GLOBALS: Record<NumpyNames, NumpyGlobals> = {
  // numpy 2.x keeps numpy.core.multiarray._reconstruct and scalar loading without a warning (for old pickles)
  portable: namesFor('numpy.core'),
  '1': namesFor('numpy.core'),
  '2': namesFor('numpy._core'),
}

function namesFor(core: string): NumpyGlobals {
  return {
    reconstruct: new PyGlobal(`${core}.multiarray`, '_reconstruct'),
    frombuffer: new PyGlobal(`${core}.numeric`, '_frombuffer'),
    scalar: new PyGlobal(`${core}.multiarray`, 'scalar'),
    ndarray: new PyGlobal('numpy', 'ndarray'),
    dtype: new PyGlobal('numpy', 'dtype'),
  }
}

/** A reduce recipe as the pickler takes it. */
export interface NumpyRecipe {
  callable: PyGlobal
  args: Tuple
  state?: unknown
}

/** Checks the pickler's numpy option. */
export function checkNumpyNames(v: unknown): NumpyNames {
  if (v !== 'portable' && v !== '1' && v !== '2') {
    bad(`numpy must be 'portable' (names every numpy loads), '1' (numpy.core names) or '2' (numpy._core names), got ${describe(v)}`)
  }
  return v
}

/**
 * How the pickler writes an NDArray, a NumpyScalar, a DType or a plain TypedArray (not a
 * Uint8Array: that is bytes; not a DataView): as numpy's __reduce_ex__(protocol) does. Null for
 * anything else. Protocol 5 wraps the array's own memory in a PickleBuffer (out of band when
 * bufferCallback says so; never copied); below 5 the bytes go in band.
 */
export function numpyRecipe(obj: object, protocol: number, names: NumpyNames): NumpyRecipe | null {
  const g = GLOBALS[names]
  if (obj instanceof NDArray) return arrayRecipe(obj.dtype, obj.shape, obj.strides, obj.data, obj.readonly, protocol, names)
  if (obj instanceof DType) return dtypeRecipe(obj, names)
  if (obj instanceof NumpyScalar) return { callable: g.scalar, args: Tuple.fromItems([obj.dtype, obj.bytes()]) }
  if (ArrayBuffer.isView(obj) && !(obj instanceof DataView)) {
    const dtype = dtypeOfTypedArray(obj)
    if (dtype === null) return null
    const data = obj as TypedData
    return arrayRecipe(dtype, [data.length], [dtype.itemsize], data, false, protocol, names)
  }
  return null
}

function dtypeRecipe(d: DType, names: NumpyNames): NumpyRecipe {
  const g = GLOBALS[names]
  const flexible = d.kind === 'S' || d.kind === 'U' || d.kind === 'V'
  const state: unknown[] = [3, d.byteorder, d.subarray, d.names, d.fields, flexible ? d.itemsize : -1, flexible ? d.alignment : -1, d.flags]
  if (d.kind === 'M' || d.kind === 'm') {
    state[0] = 4
    const unit = new Uint8Array([...d.unit!].map((c) => c.charCodeAt(0) & 0xff))
    // numpy 1.x writes an empty dict as the metadata and misreads None; numpy 2.x writes None.
    state.push(Tuple.fromItems([names === '2' ? null : new Map(), Tuple.fromItems([unit, d.unitCount, 1, 1])]))
  } else if (d.metadata !== null) {
    state[0] = 4
    state.push(d.metadata)
  }
  return { callable: g.dtype, args: Tuple.fromItems([d.scalarType ?? d.descr, false, true]), state: Tuple.fromItems(state) }
}

/**
 * _reconstruct's dummy type code b'b': one object, as CPython's one-byte bytes are, so that the
 * pickler's memo refers back to it for every array after the first, as it does for numpy.
 */
const TYPECODE = Uint8Array.of(0x62)

function arrayRecipe(dtype: DType, shape: readonly number[], strides: readonly number[], data: NDArrayData, readonly: boolean, protocol: number, names: NumpyNames): NumpyRecipe {
  const g = GLOBALS[names]
  const order = orderOf(shape, strides, dtype.itemsize)
  const shapeTuple = Tuple.fromItems(shape)
  // As numpy: object arrays, zero-size items, datetime64 and timedelta64 (they refuse the buffer
  // protocol) and protocols below 5 go through _reconstruct; numpy 1.x also sends arrays that
  // are neither C- nor F-contiguous that way.
  const buffered = !Array.isArray(data) && dtype.itemsize > 0 && dtype.kind !== 'M' && dtype.kind !== 'm'
    // numpy cannot export a buffer of another library's dtype (no PEP 3118 format): it falls back to BUILD.
    && (dtype.scalarType === null || (dtype.scalarType.module === 'numpy' && dtype.scalarType.name === 'record'))
  // A foreign byte order (an array loaded losslessly): the data is in the machine's order, numpy's in the dtype's.
  const swap = Array.isArray(data) || dtype.isNative ? 0 : layoutOf(dtype).swap
  const raw = swap > 1 ? byteSwapped(data as TypedData, swap) : data as TypedData | unknown[]
  if (protocol >= 5 && buffered && names === 'portable' && isDense(shape, strides, dtype.itemsize)) {
    // numpy.ndarray over the buffer: public names, which numpy 2.x loads without the warning that
    // numpy.core.numeric._frombuffer gives and numpy 1.x loads without numpy._core.
    const buffer = new PickleBuffer(raw as TypedData | ArrayBuffer, { readonly })
    const layout = order === 'K' ? Tuple.fromItems(strides) : null
    return { callable: g.ndarray, args: Tuple.fromItems([shapeTuple, dtype, buffer, 0, layout, order === 'F' ? 'F' : 'C']) }
  }
  if (protocol >= 5 && buffered && (order === 'C' || order === 'F' || names === '2')) {
    const buffer = new PickleBuffer(raw as TypedData | ArrayBuffer, { readonly })
    if (order !== 'K') return { callable: g.frombuffer, args: Tuple.fromItems([buffer, dtype, shapeTuple, order]) }
    const perm = sortedStridePerm(strides)
    const revPerm = new Array<number>(perm.length)
    perm.forEach((p, i) => (revPerm[p] = i))
    return {
      callable: g.frombuffer,
      args: Tuple.fromItems([buffer, dtype, Tuple.fromItems(perm.map((p) => shape[p]!)), 'K', Tuple.fromItems(revPerm)]),
    }
  }
  const fortran = order === 'F'
  let payload: unknown
  if (Array.isArray(data)) payload = makeArray(dtype, shape, strides, data, readonly, false).flat()
  else if (order !== 'K') payload = bytesOf(raw as TypedData | ArrayBuffer)
  else payload = cOrderBytes(dtype, shape, strides, bytesOf(raw as TypedData | ArrayBuffer))
  return {
    callable: g.reconstruct,
    args: Tuple.fromItems([g.ndarray, Tuple.fromItems([0]), TYPECODE]),
    state: Tuple.fromItems([1, shapeTuple, dtype, fortran, payload]),
  }
}

/** The elements' bytes in C order (one copy), for a layout that is neither C nor F. */
function cOrderBytes(dtype: DType, shape: readonly number[], strides: readonly number[], src: Uint8Array): Uint8Array {
  const size = dtype.itemsize
  const out = new Uint8Array(elementCount(shape) * size)
  let at = 0
  const walk = (axis: number, offset: number): void => {
    if (axis === shape.length) {
      out.set(src.subarray(offset, offset + size), at)
      at += size
      return
    }
    for (let i = 0; i < shape[axis]!; i++) walk(axis + 1, offset + i * strides[axis]!)
  }
  walk(0, 0)
  return out
}
