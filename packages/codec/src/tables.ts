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
   * are views of the buffer they arrived in unless `copied`; strings are an object array of
   * JavaScript strings (null where missing).
   */
  readonly values: NDArray
  /** 1 where a value is present, 0 where it is missing; null when the column has no mask (every value present, or missing values written as NaN, NaT or None). */
  readonly valid: Uint8Array | null
  /** A categorical column's categories (a column of their own); null otherwise. */
  readonly categories: Column | null
  /** Whether values had to be copied from the bytes they arrived in (see docs/data-libraries.md). */
  readonly copied: boolean
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

function column(name: unknown, dtype: string, values: NDArray, valid: Uint8Array | null = null, copied = false, categories: Column | null = null): Column {
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
function readPandasArray(name: unknown, v: unknown, k: number): Column {
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
    const arrow = readArrowArray(state.get('_pa_array'))
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
      const categories = readIndex(stateMap(dtype as PyObject, what).get('categories'))
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
function readIndex(v: unknown): Column | RangeIndexInfo {
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
  if (kind === 'Index' || kind === 'DatetimeIndex' || kind === 'TimedeltaIndex' || kind === 'CategoricalIndex') return readPandasArray(name, attrs.get('data'), 0)
  return fail(`cannot read ${describe(cls)} as an index`)
}

function indexLabels(index: Column | RangeIndexInfo): unknown[] {
  if ('kind' in index) {
    const out: number[] = []
    for (let i = index.start; index.step > 0 ? i < index.stop : i > index.stop; i += index.step) out.push(i)
    return out
  }
  if (index.categories) return Array.from(index.values.data as ArrayLike<number>, (c) => (c < 0 ? null : (index.categories!.values.data as unknown[])[c]))
  // Integer labels (columns 0, 1, 2 of a frame made from a 2-D array) as numbers where exact.
  return Array.from(index.values.data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' && v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER ? Number(v) : v))
}

function indexLength(index: Column | RangeIndexInfo): number {
  return 'kind' in index ? Math.max(0, Math.ceil((index.stop - index.start) / index.step)) : index.values.size
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
 * placeholder and an UnpicklingError for a column, index or layout it cannot read.
 */
export function readDataFrame(df: unknown): FrameColumns {
  const { blocks, axes } = managerParts(frameState(df, 'DataFrame', 'readDataFrame').get('_mgr'))
  if (axes.length !== 2) return fail(`a DataFrame needs two axes, got ${axes.length}`)
  const names = readIndex(axes[0])
  const index = readIndex(axes[1])
  const labels = indexLabels(names)
  const columns: (Column | undefined)[] = new Array(labels.length)
  for (const block of blocks) {
    blockPositions(block.locs, labels.length).forEach((at, k) => {
      if (at < 0 || at >= labels.length || columns[at]) fail(`a block places a column at ${at}, which is taken or outside ${labels.length} columns`)
      columns[at] = readPandasArray(labels[at], block.values, k)
    })
  }
  const length = indexLength(index)
  const out = columns.map((c, i) => c ?? fail(`no block holds column ${i}`))
  for (const c of out) if (c.values.size !== length) fail(`column ${JSON.stringify(String(c.name))} has ${c.values.size} values for ${length} rows`)
  return { columns: out, index, length }
}

/** A pandas Series (pandas 2 or 3) loaded with `allow: ALLOW.pandas` as one column and its index. */
export function readSeries(series: unknown): SeriesColumn {
  const state = frameState(series, 'Series', 'readSeries')
  const { blocks, axes } = managerParts(state.get('_mgr'))
  if (blocks.length !== 1 || axes.length !== 1) return fail(`a Series needs one block and one axis, got ${blocks.length} and ${axes.length}`)
  const index = readIndex(axes[0])
  const col = readPandasArray(state.get('_name') ?? null, blocks[0]!.values, 0)
  if (col.values.size !== indexLength(index)) fail(`a Series of ${col.values.size} values has an index of ${indexLength(index)}`)
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

/**
 * A pyarrow Array (pyarrow.lib._restore_array) or ChunkedArray loaded with `allow: ALLOW.pyarrow`
 * as a column: integer, float, bool, string, large_string and null types.
 */
export function readArrowArray(array: unknown): Column {
  if (isCall(array, 'pyarrow.lib.chunked_array')) return joinChunks(array)
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
  const valid = nullCount > 0 && bitmap ? bits(bitmap, offset, length) : null
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
    const offsets = data
    const text = bufferBytes(buffers[2], `${what}'s character buffer`) ?? new Uint8Array(0)
    const wide = alias === 'large_string'
    const width = wide ? 8 : 4
    if (offsets.byteLength < (offset + length + 1) * width) fail(`${what}'s offsets are too short for ${length} items`)
    // Offsets as an Int32Array (of the low and high halves for large_string): a view when aligned.
    const words = offsets.byteOffset % 4 === 0 ? offsets : offsets.slice()
    const ints = new Int32Array(words.buffer, words.byteOffset, (offset + length + 1) * (width / 4))
    const at = wide
      ? (i: number): number => (ints[2 * i + 1] === 0 && ints[2 * i]! >= 0 ? ints[2 * i]! : fail(`${what}: offset ${i} is beyond 2 GiB`))
      : (i: number): number => ints[i]!
    const first = at(offset)
    const last = at(offset + length)
    if (first < 0 || last < first || last > text.byteLength) fail(`${what}: items span bytes ${first} to ${last} of ${text.byteLength}`)
    // All ASCII (the common case): one decode of the whole span, each item a substring of it.
    const span = text.subarray(first, last)
    const whole = ascii(span) ? utf8.decode(span) : null
    const out = new Array<string | null>(length)
    let from = first
    for (let i = 0; i < length; i++) {
      const to = at(offset + i + 1)
      if (to < from || to > last) fail(`${what}: item ${i} spans bytes ${from} to ${to} of ${text.byteLength}`)
      if (valid && !valid[i]) out[i] = null
      else out[i] = whole !== null ? whole.slice(from - first, to - first) : utf8.decode(text.subarray(from, to))
      from = to
    }
    return column(null, alias, new NDArray(out, { dtype: 'O' }), valid, true)
  }
  return fail(`cannot read a pyarrow array of type ${alias}`)
}

/** A ChunkedArray as one column: its one chunk as it is, or its chunks joined (a copy). */
function joinChunks(chunked: PyObject): Column {
  const [chunks, type] = chunked.args as [unknown, unknown]
  if (!Array.isArray(chunks)) return fail('a pyarrow chunked_array needs a list of arrays')
  const cols = chunks.map((c) => readArrowArray(c))
  if (cols.length === 1) return cols[0]!
  const dtype = isCall(type, 'pyarrow.lib.type_for_alias') ? String(type.args[0]) : cols[0]?.dtype ?? fail('an empty chunked array without a type')
  if (cols.some((c) => c.dtype !== dtype)) fail(`a pyarrow chunked_array of ${dtype} holds chunks of ${cols.map((c) => c.dtype).join(', ')}`)
  const length = cols.reduce((n, c) => n + c.values.size, 0)
  const first = cols[0]?.values.data
  let data: TypedData | unknown[]
  if (first === undefined || Array.isArray(first)) data = cols.flatMap((c) => c.values.data as unknown[])
  else {
    data = new (first.constructor as new (n: number) => TypedData)(length)
    let at = 0
    for (const c of cols) {
      ;(data as Uint8Array).set(c.values.data as Uint8Array, at)
      at += c.values.size
    }
  }
  let valid: Uint8Array | null = null
  if (cols.some((c) => c.valid)) {
    valid = new Uint8Array(length)
    let at = 0
    for (const c of cols) {
      if (c.valid) valid.set(c.valid, at)
      else valid.fill(1, at, at + c.values.size)
      at += c.values.size
    }
  }
  return column(null, dtype, new NDArray(data as TypedData, { dtype: cols[0]?.values.dtype ?? 'O', shape: [length] }), valid, true)
}

function schemaNames(schema: unknown): unknown[] {
  if (!isCall(schema, 'pyarrow.lib.schema') || !Array.isArray(schema.args[0])) return fail(`a pyarrow schema must be a schema placeholder, got ${describe(schema)}`)
  return (schema.args[0] as unknown[]).map((f) => (isCall(f, 'pyarrow.lib.field') ? f.args[0] : fail(`a schema field must be a field placeholder, got ${describe(f)}`)))
}

/**
 * A pyarrow Table or RecordBatch loaded with `allow: ALLOW.pyarrow` as named columns. A Table
 * column of several chunks is joined into one (a copy); see readArrowArray for the types read.
 */
export function readArrowTable(table: unknown): ArrowColumns {
  const kind = fullName(table)
  if (!(table instanceof PyObject) || (kind !== 'pyarrow.lib._reconstruct_table' && kind !== 'pyarrow.lib._reconstruct_record_batch')) {
    throw new TypeError(`readArrowTable expects a pyarrow Table or RecordBatch loaded with allow: ALLOW.pyarrow, got ${describe(table)}`)
  }
  const [arrays, schema] = table.args as [unknown, unknown]
  if (!Array.isArray(arrays)) return fail('a pyarrow table needs a list of columns')
  const names = schemaNames(schema)
  if (names.length !== arrays.length) fail(`a pyarrow schema of ${names.length} fields for ${arrays.length} columns`)
  const columns = arrays.map((a, i) => ({ ...readArrowArray(a), name: names[i] }))
  const length = columns[0]?.values.size ?? 0
  for (const c of columns) if (c.values.size !== length) fail(`pyarrow column ${JSON.stringify(String(c.name))} has ${c.values.size} values for ${length} rows`)
  return { columns, length }
}
