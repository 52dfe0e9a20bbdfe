/**
 * Readers that turn a loaded pandas DataFrame or Series, or a pyarrow Table, RecordBatch, Array or
 * ChunkedArray, into columns. They read the inert placeholder tree the allow option loads
 * (ALLOW.pandas, ALLOW.pyarrow) and run nothing: each step checks the name of the placeholder
 * it reads, and anything else is refused naming it.
 */
import { UnpicklingError } from './errors.js'
import { DType, NDArray, type TypedData } from './numpy.js'
import { PickleBuffer, PyGlobal, PyObject, PyOpaque, Slice } from './types.js'

/** One column: its label, its dtype as pandas (or pyarrow) names it, and its values. */
export interface Column {
  readonly name: unknown
  /** 'int64', 'float32', 'bool', 'datetime64[ns]', 'object', 'str', 'string', 'Int64', 'boolean', 'category'; pyarrow's type names for arrow data. */
  readonly dtype: string
  /**
   * One-dimensional values; for a categorical column its codes (-1 for missing). Numeric columns
   * are views of the buffer they arrived in unless `copied`. An arrow-backed string column is a
   * LazyStrings over its offsets and bytes with `strings: 'lazy'` (the default) and an object
   * array of JavaScript strings with `strings: 'decode'`; numpy-backed string columns are always
   * an object array (null where missing).
   */
  readonly values: NDArray | LazyStrings
  /** 1 where a value is present, 0 where it is missing; null when the column has no mask (every value present, or missing values written as NaN, NaT or None). */
  readonly valid: Uint8Array | null
  /** A categorical column's categories (a column of their own); null otherwise. */
  readonly categories: Column | null
  /** Whether values had to be copied from the bytes they arrived in (see docs/data-libraries.md). */
  readonly copied: boolean
}

/**
 * How the readers return an arrow-backed string column (pandas 3 'str', 'string[pyarrow]',
 * pyarrow string and large_string): 'lazy' (the default) as a LazyStrings that decodes a value
 * when it is read, 'decode' as an object array of every value decoded up front.
 */
export type StringsMode = 'decode' | 'lazy'

/** Options of readDataFrame, readSeries, readArrowTable and readArrowArray. */
export interface ReadTableOptions {
  /** How arrow-backed string columns come back (default 'lazy'; see StringsMode). */
  readonly strings?: StringsMode
}

function stringsMode(options: ReadTableOptions | undefined, reader: string): StringsMode {
  if (options === undefined) return 'lazy'
  if (options === null || typeof options !== 'object') throw new TypeError(`${reader} options must be an object, got ${options === null ? 'null' : typeof options}`)
  const mode = options.strings
  if (mode === undefined) return 'lazy'
  if (mode !== 'decode' && mode !== 'lazy') throw new RangeError(`${reader} option strings must be 'decode' or 'lazy', got ${typeof mode === 'string' ? JSON.stringify(mode) : String(mode)}`)
  return mode
}

/** The number of values of a column. */
function sizeOf(values: NDArray | LazyStrings): number {
  return values instanceof LazyStrings ? values.length : values.size
}

/** A pandas RangeIndex, kept as its three numbers. */
export interface RangeIndexInfo {
  readonly kind: 'range'
  readonly name: unknown
  readonly start: number
  readonly stop: number
  readonly step: number
}

/** A DataFrame as columns. */
export interface FrameColumns {
  readonly columns: readonly Column[]
  readonly index: Column | RangeIndexInfo
  readonly length: number
}

/** A Series: one column with the index. */
export interface SeriesColumn extends Column {
  readonly index: Column | RangeIndexInfo
}

/** A pyarrow Table or RecordBatch as columns (chunks of a Table's column joined into one). */
export interface ArrowColumns {
  readonly columns: readonly Column[]
  readonly length: number
}

const fail = (what: string): never => {
  throw new UnpicklingError(what)
}

function fullName(v: unknown): string | null {
  if (v instanceof PyObject) return `${v.callable.module}.${v.callable.name}`
  if (v instanceof PyGlobal) return `${v.module}.${v.name}`
  return null
}

function describe(v: unknown): string {
  const name = fullName(v)
  if (name !== null) return v instanceof PyGlobal ? `global ${name}` : `a ${name} placeholder`
  if (v === null) return 'None'
  if (v instanceof NDArray) return `an ndarray of ${v.dtype.name}`
  return typeof v === 'object' ? `a ${(v as object).constructor.name}` : `a ${typeof v}`
}

/** The last part of a pandas placeholder's name (its class or function), or null when it is not from pandas. */
function pandasName(v: unknown): string | null {
  const name = fullName(v)
  if (name === null || !name.startsWith('pandas.')) return null
  return name.slice(name.lastIndexOf('.') + 1)
}

function isCall(v: unknown, name: string): v is PyObject {
  return v instanceof PyObject && fullName(v) === name
}

function stateMap(v: PyOpaque, what: string): Map<unknown, unknown> {
  return v.state instanceof Map ? v.state : fail(`${what} has no state dict (got ${describe(v.state)})`)
}

function toNumber(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v
  if (typeof v === 'bigint' && v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER) return Number(v)
  return fail(`${what} must be an integer, got ${describe(v)}`)
}

function column(name: unknown, dtype: string, values: NDArray | LazyStrings, valid: Uint8Array | null = null, copied = false, categories: Column | null = null): Column {
  return { name, dtype, values, valid, categories, copied }
}

/** 0/1 bytes from a numpy bool mask, inverted (pandas keeps a mask of missing values). */
function validFromMask(mask: unknown, length: number, what: string): Uint8Array {
  if (!(mask instanceof NDArray) || mask.dtype.kind !== 'b' || mask.size !== length) fail(`${what}: the mask must be a bool ndarray of ${length} items, got ${describe(mask)}`)
  const m = rowOf(mask as NDArray, 0).values.data as Uint8Array
  const valid = new Uint8Array(length)
  for (let i = 0; i < length; i++) valid[i] = m[i] ? 0 : 1
  return valid
}

/**
 * Row k of a block (numpy keeps a block's columns as the rows of a 2-D array), or a 1-D array
 * itself: a view when the row is contiguous in memory, a copy otherwise.
 */
function rowOf(a: NDArray, k: number): { values: NDArray; copied: boolean } {
  if (a.ndim === 1) return k === 0 ? { values: a, copied: a.copied } : fail(`a block of one column has no column ${k}`)
  if (a.ndim !== 2) fail(`a block must have one or two dimensions, got ${a.ndim}`)
  const [rows, n] = a.shape as [number, number]
  if (k >= rows) fail(`a block of ${rows} columns has no column ${k}`)
  const [s0, s1] = a.strides as [number, number]
  const per = a.data.length / Math.max(a.size, 1)
  if (a.size === 0) return { values: new NDArray(a.data.slice(0, 0) as TypedData, { dtype: a.dtype, shape: [0] }), copied: false }
  const start = (k * s0 / a.itemsize) * per
  if (s1 === a.itemsize || n <= 1) {
    return { values: new NDArray(Array.isArray(a.data) ? a.data.slice(start, start + n * per) : a.data.subarray(start, start + n * per), { dtype: a.dtype, shape: [n], readonly: a.readonly }), copied: a.copied || Array.isArray(a.data) }
  }
  const step = (s1 / a.itemsize) * per
  const out = Array.isArray(a.data) ? new Array<unknown>(n * per) : new (a.data.constructor as new (n: number) => TypedData)(n * per)
  for (let j = 0; j < n; j++) for (let p = 0; p < per; p++) (out as unknown[])[j * per + p] = (a.data as unknown[])[start + j * step + p]
  return { values: new NDArray(out as TypedData, { dtype: a.dtype, shape: [n] }), copied: true }
}

/** The pandas dtype name of a masked array (IntegerArray, FloatingArray, BooleanArray) from its data's dtype. */
function maskedDtype(kind: string, data: DType): string {
  if (kind === 'BooleanArray') return 'boolean'
  const name = data.name
  return name[0]!.toUpperCase() + name.slice(1).replace(/^Uint/, 'UInt')
}

/** A pandas array (a numpy block row, or an extension array) as a column. */
function readPandasArray(name: unknown, v: unknown, k: number, mode: StringsMode): Column {
  if (v instanceof NDArray) {
    const { values, copied } = rowOf(v, k)
    return column(name, v.dtype.name, values, null, copied)
  }
  const what = `pandas column ${JSON.stringify(String(name))}`
  const kind = pandasName(v)
  if (kind === null || k !== 0) return fail(`${what}: cannot read ${describe(v)}`)
  const obj = v as PyObject
  if (kind === 'IntegerArray' || kind === 'FloatingArray' || kind === 'BooleanArray') {
    const state = stateMap(obj, what)
    const data = state.get('_data')
    if (!(data instanceof NDArray)) return fail(`${what}: ${kind} data must be an ndarray, got ${describe(data)}`)
    const { values, copied } = rowOf(data, 0)
    return column(name, maskedDtype(kind, data.dtype), values, validFromMask(state.get('_mask'), values.size, what), copied)
  }
  if (kind === 'ArrowStringArray') {
    const state = stateMap(obj, what)
    const arrow = readArrow(state.get('_pa_array'), mode)
    const dtype = state.get('_dtype')
    // StringDtype(storage, na_value): NaN as the missing value is pandas 3's default 'str'; pandas.NA is 'string'.
    const na = dtype instanceof PyObject ? dtype.args[1] : undefined
    return { ...arrow, name, dtype: typeof na === 'number' && Number.isNaN(na) ? 'str' : 'string' }
  }
  if (kind === '__pyx_unpickle_NDArrayBacked') {
    const cls = pandasName(obj.args[0])
    const state = obj.state
    if (!Array.isArray(state)) return fail(`${what}: ${cls} has no state tuple`)
    if (cls === 'Categorical') {
      const [dtype, codes] = state as [unknown, unknown]
      if (pandasName(dtype) !== 'CategoricalDtype' || !(codes instanceof NDArray)) return fail(`${what}: a Categorical needs a CategoricalDtype and codes, got ${describe(dtype)} and ${describe(codes)}`)
      // Categories are few and are looked up by code: always decoded.
      const categories = readIndex(stateMap(dtype as PyObject, what).get('categories'), 'decode')
      if ('kind' in categories) return fail(`${what}: categories as a RangeIndex are not supported`)
      const { values, copied } = rowOf(codes, 0)
      return column(name, 'category', values, null, copied, categories)
    }
    if (cls === 'DatetimeArray' || cls === 'TimedeltaArray' || cls === 'StringArray') {
      const [dtype, data] = state as [unknown, unknown]
      if (!(data instanceof NDArray)) return fail(`${what}: ${cls} data must be an ndarray, got ${describe(data)}`)
      const { values, copied } = rowOf(data, k)
      if (cls === 'StringArray') {
        // Missing values are pandas.NA (a placeholder) or None in an object array.
        const items = values.data as unknown[]
        const valid = new Uint8Array(items.length)
        const strings = items.map((s, i) => (typeof s === 'string' ? ((valid[i] = 1), s) : null))
        return column(name, 'string', new NDArray(strings, { dtype: 'O' }), valid, true)
      }
      if (dtype instanceof DType) return column(name, dtype.name, values, null, copied)
      return fail(`${what}: ${cls} with ${describe(dtype)} (a zone-aware dtype, say) is not supported`)
    }
    return fail(`${what}: cannot read pandas ${cls ?? describe(obj.args[0])}`)
  }
  return fail(`${what}: cannot read ${describe(v)}`)
}

/** A pandas Index: a RangeIndex as its numbers, any other one-level index as a column. */
function readIndex(v: unknown, mode: StringsMode): Column | RangeIndexInfo {
  if (!isCall(v, 'pandas.core.indexes.base._new_Index') && !isCall(v, 'pandas.core.indexes.datetimes._new_DatetimeIndex')) {
    return fail(`an index must be a pandas _new_Index or _new_DatetimeIndex placeholder, got ${describe(v)}`)
  }
  const [cls, attrs] = v.args as [unknown, unknown]
  if (!(attrs instanceof Map)) return fail(`an index needs a dict of attributes, got ${describe(attrs)}`)
  const kind = pandasName(cls)
  const name = attrs.get('name') ?? null
  if (kind === 'RangeIndex') {
    return {
      kind: 'range', name, start: toNumber(attrs.get('start'), 'RangeIndex start'), stop: toNumber(attrs.get('stop'), 'RangeIndex stop'),
      step: toNumber(attrs.get('step') ?? 1, 'RangeIndex step'),
    }
  }
  if (kind === 'Index' || kind === 'DatetimeIndex' || kind === 'TimedeltaIndex' || kind === 'CategoricalIndex') return readPandasArray(name, attrs.get('data'), 0, mode)
  return fail(`cannot read ${describe(cls)} as an index`)
}

function indexLabels(index: Column | RangeIndexInfo): unknown[] {
  if ('kind' in index) {
    const out: number[] = []
    for (let i = index.start; index.step > 0 ? i < index.stop : i > index.stop; i += index.step) out.push(i)
    return out
  }
  if (index.values instanceof LazyStrings) return index.values.toArray()
  if (index.categories) return Array.from(index.values.data as ArrayLike<number>, (c) => (c < 0 ? null : ((index.categories!.values as NDArray).data as unknown[])[c]))
  // Integer labels (columns 0, 1, 2 of a frame made from a 2-D array) as numbers where exact.
  return Array.from(index.values.data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' && v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER ? Number(v) : v))
}

function indexLength(index: Column | RangeIndexInfo): number {
  return 'kind' in index ? Math.max(0, Math.ceil((index.stop - index.start) / index.step)) : sizeOf(index.values)
}

interface Block { values: unknown; locs: unknown }

/** A block manager's blocks and axes, from either way pandas pickles one. */
function managerParts(mgr: unknown): { blocks: Block[]; axes: unknown[] } {
  const kind = pandasName(mgr)
  if (kind === 'BlockManager' && (mgr as PyObject).origin === 'reduce') {
    const [blocks, axes] = (mgr as PyObject).args as [unknown, unknown]
    if (!Array.isArray(blocks) || !Array.isArray(axes)) return fail('a BlockManager needs blocks and axes')
    return {
      blocks: blocks.map((b) => (isCall(b, 'pandas._libs.internals._unpickle_block') ? { values: b.args[0], locs: b.args[1] } : fail(`a block must be a pandas _unpickle_block placeholder, got ${describe(b)}`))),
      axes,
    }
  }
  if (kind === 'BlockManager' || kind === 'SingleBlockManager') {
    const state = (mgr as PyObject).state
    const current = Array.isArray(state) ? state[3] : undefined
    const parts = current instanceof Map ? current.get('0.14.1') : undefined
    if (!(parts instanceof Map)) return fail(`a ${kind} needs the '0.14.1' state pandas writes`)
    const blocks = parts.get('blocks')
    const axes = parts.get('axes')
    if (!Array.isArray(blocks) || !Array.isArray(axes)) return fail(`a ${kind} needs blocks and axes`)
    return { blocks: blocks.map((b) => (b instanceof Map ? { values: b.get('values'), locs: b.get('mgr_locs') } : fail(`a block must be a dict, got ${describe(b)}`))), axes }
  }
  return fail(`a pandas frame's _mgr must be a BlockManager, got ${describe(mgr)}`)
}

/** The column positions a block holds (its mgr_locs: a slice or an array of positions). */
function blockPositions(locs: unknown, count: number): number[] {
  if (locs instanceof Slice) {
    const start = locs.start === null ? 0 : toNumber(locs.start, 'a block slice start')
    const step = locs.step === null ? 1 : toNumber(locs.step, 'a block slice step')
    const stop = locs.stop === null ? count : toNumber(locs.stop, 'a block slice stop')
    const out: number[] = []
    for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i)
    return out
  }
  if (locs instanceof NDArray && (locs.dtype.kind === 'i' || locs.dtype.kind === 'u')) return Array.from(locs.data as ArrayLike<number | bigint>, Number)
  return fail(`a block's positions must be a slice or an integer ndarray, got ${describe(locs)}`)
}

function frameState(v: unknown, kind: 'DataFrame' | 'Series', reader: string): Map<unknown, unknown> {
  if (pandasName(v) !== kind || !(v instanceof PyObject)) throw new TypeError(`${reader} expects a pandas ${kind} loaded with allow: ALLOW.pandas, got ${describe(v)}`)
  return stateMap(v, `a pandas ${kind}`)
}

/**
 * The columns of a pandas DataFrame (pandas 2 or 3) loaded with `allow: ALLOW.pandas`: names,
 * dtypes, values and the index. Throws a TypeError for a value that is not a DataFrame
 * placeholder (or options that are not an object), a RangeError for an unknown `strings` mode,
 * and an UnpicklingError for a column, index or layout it cannot read.
 */
export function readDataFrame(df: unknown, options?: ReadTableOptions): FrameColumns {
  const mode = stringsMode(options, 'readDataFrame')
  const { blocks, axes } = managerParts(frameState(df, 'DataFrame', 'readDataFrame').get('_mgr'))
  if (axes.length !== 2) return fail(`a DataFrame needs two axes, got ${axes.length}`)
  const names = readIndex(axes[0], 'decode')
  const index = readIndex(axes[1], mode)
  const labels = indexLabels(names)
  const columns: (Column | undefined)[] = new Array(labels.length)
  for (const block of blocks) {
    blockPositions(block.locs, labels.length).forEach((at, k) => {
      if (at < 0 || at >= labels.length || columns[at]) fail(`a block places a column at ${at}, which is taken or outside ${labels.length} columns`)
      columns[at] = readPandasArray(labels[at], block.values, k, mode)
    })
  }
  const length = indexLength(index)
  const out = columns.map((c, i) => c ?? fail(`no block holds column ${i}`))
  for (const c of out) if (sizeOf(c.values) !== length) fail(`column ${JSON.stringify(String(c.name))} has ${sizeOf(c.values)} values for ${length} rows`)
  return { columns: out, index, length }
}

/** A pandas Series (pandas 2 or 3) loaded with `allow: ALLOW.pandas` as one column and its index; options and errors as readDataFrame's. */
export function readSeries(series: unknown, options?: ReadTableOptions): SeriesColumn {
  const mode = stringsMode(options, 'readSeries')
  const state = frameState(series, 'Series', 'readSeries')
  const { blocks, axes } = managerParts(state.get('_mgr'))
  if (blocks.length !== 1 || axes.length !== 1) return fail(`a Series needs one block and one axis, got ${blocks.length} and ${axes.length}`)
  const index = readIndex(axes[0], mode)
  const col = readPandasArray(state.get('_name') ?? null, blocks[0]!.values, 0, mode)
  if (sizeOf(col.values) !== indexLength(index)) fail(`a Series of ${sizeOf(col.values)} values has an index of ${indexLength(index)}`)
  return { ...col, index }
}

/** pyarrow type aliases the reader understands: the TypedArray and numpy dtype of each fixed-width one. */
const ARROW_FIXED: Record<string, [new (b: ArrayBuffer, at: number, n: number) => TypedData, string]> = {
  int8: [Int8Array, '|i1'], int16: [Int16Array, '<i2'], int32: [Int32Array, '<i4'], int64: [BigInt64Array, '<i8'],
  uint8: [Uint8Array, '|u1'], uint16: [Uint16Array, '<u2'], uint32: [Uint32Array, '<u4'], uint64: [BigUint64Array, '<u8'],
  float: [Float32Array, '<f4'], double: [Float64Array, '<f8'],
}

function bufferBytes(v: unknown, what: string): Uint8Array | null {
  if (v === null) return null
  if (!isCall(v, 'pyarrow.lib.py_buffer')) return fail(`${what} must be a pyarrow py_buffer placeholder or None, got ${describe(v)}`)
  const b = v.args[0]
  if (b instanceof PickleBuffer) return b.raw()
  if (b instanceof Uint8Array) return b
  return fail(`${what} holds ${describe(b)}, not bytes`)
}

function bits(bitmap: Uint8Array, offset: number, length: number): Uint8Array {
  if (bitmap.length * 8 < offset + length) fail(`a bitmap of ${bitmap.length} bytes is too short for ${length} items at offset ${offset}`)
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (bitmap[(offset + i) >> 3]! >> ((offset + i) & 7)) & 1
  return out
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

function ascii(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! > 0x7f) return false
  return true
}

/** Items this short and all ASCII are built by hand: cheaper than a call into TextDecoder. */
const SHORT_ASCII = 32

/**
 * An arrow string column over the buffers it arrived in: `offsets` (length + 1 of them, item i
 * is bytes offsets[i] to offsets[i + 1] of `data`) and `data` (the UTF-8 bytes), views of the
 * pickle's buffers when they are out of band and aligned. Values are decoded when read: get(i),
 * iteration, toArray(). `valid` is 1 where a value is present, null when every value is.
 */
export class LazyStrings implements Iterable<string | null> {
  readonly length: number
  /** The item offsets into `data`: an Int32Array (string) or a BigInt64Array (large_string). */
  readonly offsets: Int32Array | BigInt64Array
  /** The UTF-8 bytes the offsets point into (the whole character buffer as it arrived). */
  readonly data: Uint8Array
  readonly valid: Uint8Array | null
  /** The offsets as 32-bit words: the offsets themselves, or the low halves at even places for large_string. */
  readonly #words: Int32Array
  readonly #step: number

  readonly #what: string

  /** Reads check the offsets they use against `data` (an UnpicklingError names a bad one), so making one costs nothing per item. */
  constructor(offsets: Int32Array | BigInt64Array, data: Uint8Array, valid: Uint8Array | null, what = 'a string column') {
    if (offsets.length < 1) fail(`${what} needs at least one offset`)
    this.length = offsets.length - 1
    if (valid && valid.length !== this.length) fail(`${what}: a validity mask of ${valid.length} items for ${this.length} values`)
    this.offsets = offsets
    this.data = data
    this.valid = valid
    this.#step = offsets instanceof BigInt64Array ? 2 : 1
    this.#words = new Int32Array(offsets.buffer, offsets.byteOffset, offsets.length * this.#step)
    this.#what = what
  }

  /** Offset i, checked: within `data` and (for large_string) below 2 GiB. */
  #offset(i: number): number {
    const at = this.#words[i * this.#step]!
    if (at < 0 || at > this.data.length || (this.#step === 2 && this.#words[i * 2 + 1] !== 0)) fail(`${this.#what}: offset ${i} (${String(this.offsets[i])}) is outside its ${this.data.length} bytes`)
    return at
  }

  #badItem(i: number, from: number, to: number): never {
    return fail(`${this.#what}: item ${i} spans bytes ${from} to ${to}, which run backwards`)
  }

  /** Value i: a string, or null where it is missing. Throws a RangeError outside 0 to length - 1. */
  get(i: number): string | null {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`index must be an integer from 0 to ${this.length - 1}, got ${String(i)}`)
    return this.#item(i)
  }

  #item(i: number): string | null {
    if (this.valid && !this.valid[i]) return null
    const from = this.#offset(i)
    const to = this.#offset(i + 1)
    if (to < from) this.#badItem(i, from, to)
    const data = this.data
    if (to - from <= SHORT_ASCII) {
      let out = ''
      let j = from
      for (; j < to; j++) {
        const b = data[j]!
        if (b > 0x7f) break
        out += String.fromCharCode(b)
      }
      if (j === to) return out
    }
    return decodeItem(data.subarray(from, to), i)
  }

  *[Symbol.iterator](): IterableIterator<string | null> {
    for (let i = 0; i < this.length; i++) yield this.#item(i)
  }

  /** Every value decoded: one decode of all the bytes when they are all ASCII, each value a slice of it. */
  toArray(): (string | null)[] {
    const out = new Array<string | null>(this.length)
    if (this.length === 0) return out
    const first = this.#offset(0)
    const last = this.#offset(this.length)
    if (last < first) this.#badItem(0, first, last)
    const span = this.data.subarray(first, last)
    if (!ascii(span)) {
      for (let i = 0; i < this.length; i++) out[i] = this.#item(i)
      return out
    }
    // Offsets between first and last that never run backwards keep every slice within the span.
    const whole = utf8.decode(span)
    const words = this.#words
    const step = this.#step
    let from = first
    for (let i = 0; i < this.length; i++) {
      const to = words[(i + 1) * step]!
      if (to < from || to > last || (step === 2 && words[(i + 1) * 2 + 1] !== 0)) this.#badItem(i, from, to)
      out[i] = this.valid && !this.valid[i] ? null : whole.slice(from - first, to - first)
      from = to
    }
    return out
  }
}

function decodeItem(bytes: Uint8Array, i: number): string {
  try {
    return utf8.decode(bytes)
  } catch {
    return fail(`string item ${i} is not valid UTF-8`)
  }
}

/** The offsets of items offset to offset + length as a view (a copy when misaligned) and the character buffer, checked. */
function arrowStrings(offsets: Uint8Array, text: Uint8Array, wide: boolean, offset: number, length: number, valid: Uint8Array | null, what: string): LazyStrings {
  const width = wide ? 8 : 4
  if (offsets.byteLength < (offset + length + 1) * width) fail(`${what}'s offsets are too short for ${length} items`)
  const start = offsets.subarray(offset * width, (offset + length + 1) * width)
  const bytes = start.byteOffset % width === 0 ? start : start.slice()
  const view = wide ? new BigInt64Array(bytes.buffer, bytes.byteOffset, length + 1) : new Int32Array(bytes.buffer, bytes.byteOffset, length + 1)
  return new LazyStrings(view, text, valid, what)
}

/**
 * A pyarrow Array (pyarrow.lib._restore_array) or ChunkedArray loaded with `allow: ALLOW.pyarrow`
 * as a column: integer, float, bool, string, large_string and null types. Options and errors as
 * readDataFrame's.
 */
export function readArrowArray(array: unknown, options?: ReadTableOptions): Column {
  return readArrow(array, stringsMode(options, 'readArrowArray'))
}

function readArrow(array: unknown, mode: StringsMode): Column {
  if (isCall(array, 'pyarrow.lib.chunked_array')) return joinChunks(array, mode)
  if (!isCall(array, 'pyarrow.lib._restore_array')) throw new TypeError(`readArrowArray expects a pyarrow Array or ChunkedArray loaded with allow: ALLOW.pyarrow, got ${describe(array)}`)
  const parts = array.args[0]
  if (!Array.isArray(parts) || parts.length !== 7) return fail('a pyarrow array needs (type, length, null_count, offset, buffers, children, dictionary)')
  const [type, len, nulls, off, buffers, children] = parts as unknown[]
  if (!isCall(type, 'pyarrow.lib.type_for_alias') || typeof type.args[0] !== 'string') return fail(`cannot read a pyarrow array of ${describe(type)}`)
  const alias = type.args[0]
  const length = toNumber(len, 'a pyarrow array length')
  const nullCount = toNumber(nulls, 'a pyarrow null count')
  const offset = toNumber(off, 'a pyarrow array offset')
  if (!Array.isArray(buffers) || (Array.isArray(children) && children.length > 0)) return fail(`cannot read a pyarrow ${alias} array with children`)
  const what = `a pyarrow ${alias} array`
  if (alias === 'null') return column(null, 'null', new NDArray(new Array<unknown>(length).fill(null), { dtype: 'O' }), new Uint8Array(length), true)
  const bitmap = bufferBytes(buffers[0], `${what}'s validity buffer`)
  // A null count of -1 is pyarrow's "not counted" (a sliced array, say): the bitmap decides.
  const valid = nullCount !== 0 && bitmap ? bits(bitmap, offset, length) : null
  const data = bufferBytes(buffers[1], `${what}'s data buffer`) ?? new Uint8Array(0)
  const fixed = ARROW_FIXED[alias]
  if (fixed) {
    const [Ctor, dtype] = fixed
    const size = (Ctor as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT
    if (data.byteLength < (offset + length) * size) fail(`${what}'s data buffer of ${data.byteLength} bytes is too short for ${length} items at offset ${offset}`)
    const at = data.byteOffset + offset * size
    // A view when aligned; a copy of the bytes otherwise (a TypedArray cannot start at an unaligned byte).
    const aligned = at % size === 0
    const typed = aligned ? new Ctor(data.buffer as ArrayBuffer, at, length) : new Ctor(data.slice(offset * size, (offset + length) * size).buffer as ArrayBuffer, 0, length)
    return column(null, alias, new NDArray(typed, { dtype, shape: [length] }), valid, !aligned)
  }
  if (alias === 'bool') return column(null, 'bool', new NDArray(bits(data, offset, length), { dtype: '|b1' }), valid, true)
  if (alias === 'string' || alias === 'large_string') {
    const strings = arrowStrings(data, bufferBytes(buffers[2], `${what}'s character buffer`) ?? new Uint8Array(0), alias === 'large_string', offset, length, valid, what)
    if (mode === 'lazy') return column(null, alias, strings, valid, strings.offsets.buffer !== data.buffer)
    return column(null, alias, new NDArray(strings.toArray(), { dtype: 'O' }), valid, true)
  }
  return fail(`cannot read a pyarrow array of type ${alias}`)
}

/** A ChunkedArray as one column: its one chunk as it is, or its chunks joined (a copy). */
function joinChunks(chunked: PyObject, mode: StringsMode): Column {
  const [chunks, type] = chunked.args as [unknown, unknown]
  if (!Array.isArray(chunks)) return fail('a pyarrow chunked_array needs a list of arrays')
  const cols = chunks.map((c) => readArrow(c, mode))
  if (cols.length === 1) return cols[0]!
  const dtype = isCall(type, 'pyarrow.lib.type_for_alias') ? String(type.args[0]) : cols[0]?.dtype ?? fail('an empty chunked array without a type')
  if (cols.some((c) => c.dtype !== dtype)) fail(`a pyarrow chunked_array of ${dtype} holds chunks of ${cols.map((c) => c.dtype).join(', ')}`)
  const length = cols.reduce((n, c) => n + sizeOf(c.values), 0)
  const valid = joinValid(cols, length)
  if (cols.some((c) => c.values instanceof LazyStrings)) return column(null, dtype, joinStrings(cols.map((c) => c.values as LazyStrings), length, valid), valid, true)
  const first = (cols[0]?.values as NDArray | undefined)?.data
  let data: TypedData | unknown[]
  if (first === undefined || Array.isArray(first)) data = cols.flatMap((c) => c.values.data as unknown[])
  else {
    data = new (first.constructor as new (n: number) => TypedData)(length)
    let at = 0
    for (const c of cols) {
      ;(data as Uint8Array).set((c.values as NDArray).data as Uint8Array, at)
      at += sizeOf(c.values)
    }
  }
  return column(null, dtype, new NDArray(data as TypedData, { dtype: (cols[0]?.values as NDArray | undefined)?.dtype ?? 'O', shape: [length] }), valid, true)
}

function joinValid(cols: Column[], length: number): Uint8Array | null {
  if (!cols.some((c) => c.valid)) return null
  const valid = new Uint8Array(length)
  let at = 0
  for (const c of cols) {
    if (c.valid) valid.set(c.valid, at)
    else valid.fill(1, at, at + sizeOf(c.values))
    at += sizeOf(c.values)
  }
  return valid
}

/** String chunks as one LazyStrings: the bytes they use copied end to end, with 32-bit offsets into them. */
function joinStrings(chunks: LazyStrings[], length: number, valid: Uint8Array | null): LazyStrings {
  const spans = chunks.map((c) => (c.length === 0 ? [0, 0] : [Number(c.offsets[0]!), Number(c.offsets[c.length]!)]) as [number, number])
  const total = spans.reduce((n, [a, b]) => n + b - a, 0)
  if (total > 0x7fffffff) fail(`a pyarrow chunked_array of ${total} string bytes is too large to join`)
  const data = new Uint8Array(total)
  const offsets = new Int32Array(length + 1)
  let at = 0
  let item = 0
  chunks.forEach((c, k) => {
    const [first, last] = spans[k]!
    data.set(c.data.subarray(first, last), at)
    for (let i = 0; i < c.length; i++) offsets[item + i] = at + Number(c.offsets[i]!) - first
    item += c.length
    at += last - first
  })
  offsets[length] = at
  return new LazyStrings(offsets, data, valid, 'a joined string column')
}

function schemaNames(schema: unknown): unknown[] {
  if (!isCall(schema, 'pyarrow.lib.schema') || !Array.isArray(schema.args[0])) return fail(`a pyarrow schema must be a schema placeholder, got ${describe(schema)}`)
  return (schema.args[0] as unknown[]).map((f) => (isCall(f, 'pyarrow.lib.field') ? f.args[0] : fail(`a schema field must be a field placeholder, got ${describe(f)}`)))
}

/**
 * A pyarrow Table or RecordBatch loaded with `allow: ALLOW.pyarrow` as named columns. A Table
 * column of several chunks is joined into one (a copy); see readArrowArray for the types read.
 */
export function readArrowTable(table: unknown, options?: ReadTableOptions): ArrowColumns {
  const mode = stringsMode(options, 'readArrowTable')
  const kind = fullName(table)
  if (!(table instanceof PyObject) || (kind !== 'pyarrow.lib._reconstruct_table' && kind !== 'pyarrow.lib._reconstruct_record_batch')) {
    throw new TypeError(`readArrowTable expects a pyarrow Table or RecordBatch loaded with allow: ALLOW.pyarrow, got ${describe(table)}`)
  }
  const [arrays, schema] = table.args as [unknown, unknown]
  if (!Array.isArray(arrays)) return fail('a pyarrow table needs a list of columns')
  const names = schemaNames(schema)
  if (names.length !== arrays.length) fail(`a pyarrow schema of ${names.length} fields for ${arrays.length} columns`)
  const columns = arrays.map((a, i) => ({ ...readArrow(a, mode), name: names[i] }))
  const length = columns[0] ? sizeOf(columns[0].values) : 0
  for (const c of columns) if (sizeOf(c.values) !== length) fail(`pyarrow column ${JSON.stringify(String(c.name))} has ${sizeOf(c.values)} values for ${length} rows`)
  return { columns, length }
}
