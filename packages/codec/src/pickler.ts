/**
 * The pickler: writes protocols 0 to 5 with the same opcode choices, memo numbering, frame
 * boundaries and batch sizes as CPython's C pickler, so that for the same value the bytes
 * are the same. One save method per kind of value, named after Python's save_<type>.
 */
import { PickleError, PicklingError } from './errors.js'
import { GlobalRegistry, defaultGlobals, isPlainObject, reverseFixImport, type Registration } from './globals.js'
import { DType, checkNumpyNames, numpyRecipe, type NumpyNames } from './numpy.js'
import { DEFAULT_PROTOCOL, HIGHEST_PROTOCOL, OP } from './opcodes.js'
import { badOptionRange, badOptionType, checkOptions, optionNames } from './options.js'
import { MAX_INT_DIGITS } from './text.js'
import {
  ByteArray, Complex, Counter, Decimal, DefaultDict, Deque, FrozenSet, NotImplemented, OrderedDict, PickleBuffer,
  PyDate, PyDateTime, PyFloat, PyGlobal, PyObject, PyObjectCall, PyOpaque, PyPersistentRef, PyRange, PySingleton, PyTime, PyTimeDelta,
  PyStr, PyTimeZone, Slice, Tuple, UUID, describe, getNewArgs, getState, reduceEx, type ReduceValue,
} from './types.js'

/** Where dump() writes: anything with a write method (a Node Writable, an array collector, ...). */
export interface Sink {
  write(chunk: Uint8Array): unknown
}

export interface PicklerOptions {
  /** 0 to 5; negative means HIGHEST_PROTOCOL. Default DEFAULT_PROTOCOL (4), as Python. */
  protocol?: number
  /** Write Python 2 module and global names below protocol 3, as Python does. Default true. */
  fixImports?: boolean
  /**
   * Protocol 5: called with each PickleBuffer in order; a falsy return sends it out of band
   * (the caller ships it), a truthy one writes it in band. Default: none (all in band).
   */
  bufferCallback?: ((buffer: PickleBuffer) => unknown) | null
  /** Python's persistent_id: a non-null, non-undefined result is written as a persistent id instead of the value. */
  persistentId?: (value: unknown) => unknown
  /** Python's dispatch_table: reduce functions by constructor, tried before the built-in ones. */
  dispatchTable?: ReadonlyMap<Function, (value: any) => ReduceValue>
  /** Python's reducer_override: tried first for every value that is not a plain data type; return NotImplemented to decline. */
  reducerOverride?: (value: unknown) => ReduceValue | typeof NotImplemented
  /**
   * Ask reducerOverride also about the values this pickler otherwise writes natively:
   * undefined, bigints, Arrays, Maps, Sets, plain objects and bytes (Uint8Array). null,
   * booleans, numbers and strings are always written natively. For an encoding that keeps
   * JavaScript distinctions Python has no type for. Default false: as CPython's
   * reducer_override, which is not asked about the built-in types.
   */
  overrideNative?: boolean
  /** Registered classes and functions, and globals. Default: defaultGlobals. */
  globals?: GlobalRegistry
  /** Extension codes (copyreg.add_extension), written as EXT1/2/4 from protocol 2. Default: none. */
  extensions?: ReadonlyMap<number, readonly [module: string, name: string]>
  /**
   * Python's Pickler.fast (deprecated in Python, kept for what it is good for): no memo, so no
   * MEMOIZE/PUT opcodes, and a value reached twice is written twice; the bytes are CPython's in
   * fast mode. A cycle cannot be written this way: it fails with a PicklingError (at maxDepth,
   * or earlier if the JavaScript stack runs out first, as a cycle through a reduce can).
   * Much faster for records and strings, where the memo is most of the time. Default false.
   */
  fast?: boolean
  /** Deepest nesting written before a PicklingError; a little above CPython's recursion limit (1,000) and below what the JavaScript stack holds. Default 1,500. */
  maxDepth?: number
  /**
   * Which names NDArrays, TypedArrays, dtypes and numpy scalars are written with. 'portable'
   * (the default): names that numpy 1.x and 2.x both load without a warning; at protocol 5 an
   * array is numpy.ndarray(shape, dtype, buffer, 0, strides, order) over its buffer. '1':
   * numpy 1.x's own pickle (numpy.core.*; numpy 2.x loads it, warning that numpy.core is
   * deprecated for numpy.core.numeric._frombuffer). '2': numpy 2.x's own (numpy._core.*,
   * which numpy 1.x cannot import). See docs/numpy.md.
   */
  numpy?: NumpyNames
}

const PICKLER_OPTIONS = optionNames(
  'protocol', 'fixImports', 'bufferCallback', 'persistentId', 'dispatchTable', 'reducerOverride', 'overrideNative', 'globals', 'extensions',
  'fast', 'maxDepth', 'numpy',
)

/** Misuse by the caller is a TypeError or RangeError before anything is written; protocol and numpy are checked where they are read. */
function checkPicklerOptions(options: PicklerOptions): void {
  checkOptions('Pickler', options, PICKLER_OPTIONS)
  const o = options as Record<keyof PicklerOptions, unknown>
  if (o.fixImports !== undefined && typeof o.fixImports !== 'boolean') throw badOptionType('Pickler', 'fixImports', 'a boolean', o.fixImports)
  if (o.fast !== undefined && typeof o.fast !== 'boolean') throw badOptionType('Pickler', 'fast', 'a boolean', o.fast)
  if (o.overrideNative !== undefined && typeof o.overrideNative !== 'boolean') throw badOptionType('Pickler', 'overrideNative', 'a boolean', o.overrideNative)
  if (o.bufferCallback != null && typeof o.bufferCallback !== 'function') {
    throw badOptionType('Pickler', 'bufferCallback', 'a function or null', o.bufferCallback)
  }
  if (o.persistentId !== undefined && typeof o.persistentId !== 'function') throw badOptionType('Pickler', 'persistentId', 'a function', o.persistentId)
  if (o.reducerOverride !== undefined && typeof o.reducerOverride !== 'function') {
    throw badOptionType('Pickler', 'reducerOverride', 'a function', o.reducerOverride)
  }
  if (o.dispatchTable !== undefined && !(o.dispatchTable instanceof Map)) throw badOptionType('Pickler', 'dispatchTable', 'a Map', o.dispatchTable)
  if (o.extensions !== undefined && !(o.extensions instanceof Map)) throw badOptionType('Pickler', 'extensions', 'a Map', o.extensions)
  if (o.globals !== undefined && !(o.globals instanceof GlobalRegistry)) throw badOptionType('Pickler', 'globals', 'a GlobalRegistry', o.globals)
  if (o.maxDepth !== undefined) {
    if (typeof o.maxDepth !== 'number') throw badOptionType('Pickler', 'maxDepth', 'a positive integer', o.maxDepth)
    if (!Number.isInteger(o.maxDepth) || o.maxDepth < 1) throw badOptionRange('Pickler', 'maxDepth', 'a positive integer', o.maxDepth)
  }
}

const FRAME_SIZE_TARGET = 64 * 1024
const FRAME_SIZE_MIN = 4
const FRAME_HEADER_SIZE = 9
const BATCH_SIZE = 1000
const DEFAULT_MAX_DEPTH = 1500
const TWO_32 = 2 ** 32

const encoder = new TextEncoder()

const NO_BYTES = new Uint8Array(0)
const NO_VIEW: DataView = new DataView(NO_BYTES.buffer)
const NO_EXTENSIONS: ReadonlyMap<string, number> = new Map()

/**
 * One output buffer lent to whichever dump runs, so that small pickles do not start from a few
 * bytes and grow each time. A dump inside a dump (from a hook) finds it lent and takes its own.
 */
let scratch: Uint8Array<ArrayBuffer> | null = new Uint8Array(64 * 1024)
let scratchView: DataView | null = new DataView(scratch.buffer)

function returnScratch(b: Uint8Array<ArrayBuffer>, view: DataView): void {
  if (b.length >= 4096 && b.length <= 1 << 20 && (scratch === null || scratch.length < b.length)) {
    scratch = b
    scratchView = view
  }
}

type NodeBuffer = { allocUnsafeSlow(size: number): Uint8Array<ArrayBuffer> }
const NodeBuffer = (globalThis as { Buffer?: NodeBuffer }).Buffer

/**
 * Output memory. Big blocks come uninitialized where Node offers it (zeroing hundreds of MiB
 * that are about to be overwritten costs as much as the copy); every byte handed out is written
 * first, or zeroed. Always a plain Uint8Array, whose slice() copies.
 */
function allocate(size: number): Uint8Array<ArrayBuffer> {
  if (size < 1 << 20 || NodeBuffer === undefined) return new Uint8Array(size)
  const b = NodeBuffer.allocUnsafeSlow(size)
  return new Uint8Array(b.buffer, b.byteOffset, size)
}

/** Python's float repr: the shortest text that round-trips, in Python's layout. */
export function floatRepr(x: number): string {
  if (x !== x) return 'nan'
  if (x === Infinity) return 'inf'
  if (x === -Infinity) return '-inf'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  const [mant, expText] = x.toExponential().split('e') as [string, string]
  const exp = Number(expText)
  const neg = mant.startsWith('-')
  const digits = mant.replace(/^-/, '').replace('.', '')
  const sign = neg ? '-' : ''
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`
  if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`
}

/**
 * Python's raw-unicode-escape as the pickler uses it for protocol 0's UNICODE opcode. With
 * unitsApart (a PyStr) a surrogate pair is two code points, each escaped on its own.
 */
function rawUnicodeEscape(s: string, unitsApart = false): Uint8Array {
  // Two passes: the size (every escape has a known length), then the bytes, into memory of
  // exactly that size (an array of numbers grown byte by byte was 25x slower than CPython).
  let size = 0
  for (let i = 0; i < s.length; i++) {
    if (!unitsApart && pairAt(s, i)) {
      size += 10 // a surrogate pair is one code point: \UXXXXXXXX
      i++
    } else size += escapedInRawUnicode(s.charCodeAt(i)) ? 6 : 1
  }
  const out = new Uint8Array(size)
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!unitsApart && pairAt(s, i)) {
      const cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00)
      out[n++] = 0x5c
      out[n++] = 0x55
      for (let k = 28; k >= 0; k -= 4) out[n++] = HEX_DIGITS[(cp >>> k) & 0xf]!
    } else if (escapedInRawUnicode(c)) {
      // A lone surrogate stays itself, as Python writes it.
      out[n++] = 0x5c
      out[n++] = 0x75
      for (let k = 12; k >= 0; k -= 4) out[n++] = HEX_DIGITS[(c >>> k) & 0xf]!
    } else {
      out[n++] = c
    }
  }
  return out
}

const HEX_DIGITS = Uint8Array.from('0123456789abcdef', (ch) => ch.charCodeAt(0))

/** Whether s holds a surrogate pair (one code point beyond U+FFFF) at i. */
function pairAt(s: string, i: number): boolean {
  const c = s.charCodeAt(i)
  if (c < 0xd800 || c > 0xdbff || i + 1 >= s.length) return false
  const d = s.charCodeAt(i + 1)
  return d >= 0xdc00 && d <= 0xdfff
}

/** What protocol 0's UNICODE escapes: beyond Latin-1, and the bytes its line format cannot hold. */
function escapedInRawUnicode(c: number): boolean {
  return c >= 0x100 || c === 0x5c || c === 0x0a || c === 0x0d || c === 0x00 || c === 0x1a
}

/** UTF-8 with lone surrogates encoded as three bytes each (Python's 'surrogatepass'). */
function encodeUtf8(s: string): Uint8Array {
  if (s.isWellFormed()) return encoder.encode(s)
  const out = new Uint8Array(s.length * 3)
  return out.subarray(0, encodeUtf8Into(s, out, 0))
}

/**
 * 'surrogatepass' UTF-8 of each UTF-16 unit as a code point of its own, so that a PyStr's pairs
 * stay two: encodeUtf8Into sees each pair's halves in separate pieces, so it writes them as lone
 * surrogates.
 */
function encodeUnitsUtf8(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 3)
  let n = 0
  let from = 0
  for (let i = 0; i + 1 < s.length; i++) {
    const c = s.charCodeAt(i)
    const d = s.charCodeAt(i + 1)
    if (c >= 0xd800 && c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
      n = encodeUtf8Into(s.slice(from, i + 1), out, n)
      from = i + 1
    }
  }
  return out.subarray(0, encodeUtf8Into(s.slice(from), out, n))
}

/** Encodes s at out[at..] (room for 3 bytes per code unit is the caller's); returns the end. */
function encodeUtf8Into(s: string, out: Uint8Array, at: number): number {
  let n = at
  for (let i = 0; i < s.length; i++) {
    // A surrogate pair is one code point; a lone surrogate stays itself ('surrogatepass').
    const c = s.codePointAt(i)!
    if (c > 0xffff) {
      i++
      out[n++] = 0xf0 | (c >> 18)
      out[n++] = 0x80 | ((c >> 12) & 0x3f)
      out[n++] = 0x80 | ((c >> 6) & 0x3f)
      out[n++] = 0x80 | (c & 0x3f)
      continue
    }
    if (c < 0x80) out[n++] = c
    else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6)
      out[n++] = 0x80 | (c & 0x3f)
    } else {
      out[n++] = 0xe0 | (c >> 12)
      out[n++] = 0x80 | ((c >> 6) & 0x3f)
      out[n++] = 0x80 | (c & 0x3f)
    }
  }
  return n
}

/** The two's complement little-endian bytes of an integer, as short as Python writes them. */
function encodeLong(v: bigint): Uint8Array {
  if (v === 0n) return new Uint8Array(0)
  const magnitude = v < 0n ? -v : v
  const nbits = magnitude.toString(2).length
  let nbytes = (nbits >> 3) + 1
  let t = v < 0n ? (1n << BigInt(nbytes * 8)) + v : v
  const out = new Uint8Array(nbytes)
  for (let i = 0; i < nbytes; i++) {
    out[i] = Number(t & 0xffn)
    t >>= 8n
  }
  if (v < 0n && nbytes > 1 && out[nbytes - 1] === 0xff && (out[nbytes - 2]! & 0x80) !== 0) nbytes--
  return out.subarray(0, nbytes)
}

function latin1String(b: Uint8Array): string {
  let s = ''
  for (let i = 0; i < b.length; i += 0x2000) {
    s += String.fromCharCode.apply(null, b.subarray(i, Math.min(b.length, i + 0x2000)) as unknown as number[])
  }
  return s
}

function isAsciiText(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false
  return true
}

/** What BUILD, APPENDS and SETITEMS gave an opaque placeholder, as the rest of its recipe. */
function opaqueExtras(o: PyOpaque): Pick<Recipe, 'state' | 'listItems' | 'dictItems' | 'stateSetter'> {
  return {
    state: o.state === undefined ? null : o.state,
    stateSetter: o.stateSetter === undefined ? null : o.stateSetter,
    listItems: o.listItems.length > 0 ? o.listItems : null,
    dictItems: o.dictItems.length > 0 ? o.dictItems : null,
  }
}

/** Globals the pickler writes for values it reduces itself. */
const G = {
  bytes: new PyGlobal('builtins', 'bytes'),
  bytearray: new PyGlobal('builtins', 'bytearray'),
  set: new PyGlobal('builtins', 'set'),
  frozenset: new PyGlobal('builtins', 'frozenset'),
  complex: new PyGlobal('builtins', 'complex'),
  range: new PyGlobal('builtins', 'range'),
  slice: new PyGlobal('builtins', 'slice'),
  object: new PyGlobal('builtins', 'object'),
  encode: new PyGlobal('_codecs', 'encode'),
  reconstructor: new PyGlobal('copyreg', '_reconstructor'),
  newobj: new PyGlobal('copyreg', '__newobj__'),
  newobjEx: new PyGlobal('copyreg', '__newobj_ex__'),
  OrderedDict: new PyGlobal('collections', 'OrderedDict'),
  Counter: new PyGlobal('collections', 'Counter'),
  defaultdict: new PyGlobal('collections', 'defaultdict'),
  deque: new PyGlobal('collections', 'deque'),
  datetime: new PyGlobal('datetime', 'datetime'),
  date: new PyGlobal('datetime', 'date'),
  time: new PyGlobal('datetime', 'time'),
  timedelta: new PyGlobal('datetime', 'timedelta'),
  timezone: new PyGlobal('datetime', 'timezone'),
  Decimal: new PyGlobal('decimal', 'Decimal'),
  UUID: new PyGlobal('uuid', 'UUID'),
} as const

function tuple(...items: unknown[]): Tuple {
  return Tuple.fromItems(items)
}

/** A normalized reduce recipe. */
interface Recipe {
  callable: unknown
  args: readonly unknown[]
  state?: unknown
  listItems?: Iterable<unknown> | null
  dictItems?: Iterable<readonly [unknown, unknown]> | null
  stateSetter?: unknown
}

/**
 * Python's pickle.Pickler. dump() writes one pickle to the sink, all at once and only when
 * the whole value pickled: a PicklingError leaves nothing in the sink.
 */
export class Pickler {
  readonly protocol: number
  readonly #sink: Sink | null
  readonly #fixImports: boolean
  readonly #bufferCallback: ((buffer: PickleBuffer) => unknown) | null
  readonly #persistentId: ((value: unknown) => unknown) | null
  readonly #dispatchTable: ReadonlyMap<Function, (value: any) => ReduceValue> | null
  readonly #reducerOverride: ((value: unknown) => ReduceValue | typeof NotImplemented) | null
  /** reducerOverride when overrideNative is set (asked for every value but atoms), else null. */
  readonly #overrideNative: ((value: unknown) => ReduceValue | typeof NotImplemented) | null
  readonly #globals: GlobalRegistry
  readonly #extensions: ReadonlyMap<string, number>
  readonly #maxDepth: number
  readonly #numpy: NumpyNames

  // output
  #buf: Uint8Array<ArrayBuffer> = NO_BYTES
  #view: DataView = NO_VIEW
  #n = 0
  #framing = false
  #frameStart = -1

  // memo: objects by identity, strings by value (see docs/mapping.md), globals by name
  #memoSize = 0
  /** Python's Pickler.fast: see PicklerOptions.fast. */
  fast: boolean
  #objMemo = new Map<object, number>()
  #strMemo = new Map<string, number>()
  #globalMemo = new Map<string, number>()
  /**
   * The memo index of b'' (-1: none yet). CPython has one empty bytes object, so every empty
   * Uint8Array is that one object; one-byte bytes are shared only when made in some ways (a
   * literal, a slice, bytes([7])), not others (int.to_bytes), so those stay memoized by identity.
   */
  #emptyBytes = -1
  #depth = 0

  constructor(sink: Sink | null = null, options: PicklerOptions = {}) {
    checkPicklerOptions(options)
    let protocol = options.protocol ?? DEFAULT_PROTOCOL
    if (!Number.isInteger(protocol)) throw new PickleError(`protocol must be an integer, got ${describe(protocol)}`)
    if (protocol < 0) protocol = HIGHEST_PROTOCOL
    if (protocol > HIGHEST_PROTOCOL) throw new PickleError(`pickle protocol must be <= ${HIGHEST_PROTOCOL}, got ${protocol}`)
    this.protocol = protocol
    this.#sink = sink
    this.#fixImports = options.fixImports ?? true
    this.#bufferCallback = options.bufferCallback ?? null
    if (this.#bufferCallback !== null && protocol < 5) {
      throw new PicklingError(`bufferCallback needs protocol >= 5, got protocol ${protocol}`)
    }
    this.#persistentId = options.persistentId ?? null
    this.#dispatchTable = options.dispatchTable ?? null
    this.#reducerOverride = options.reducerOverride ?? null
    this.#overrideNative = options.overrideNative === true ? this.#reducerOverride : null
    this.#globals = options.globals ?? defaultGlobals
    if (options.extensions === undefined) this.#extensions = NO_EXTENSIONS
    else {
      const ext = new Map<string, number>()
      for (const [code, [m, n]] of options.extensions) ext.set(`${m}\0${n}`, code)
      this.#extensions = ext
    }
    this.#maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH
    this.fast = options.fast ?? false
    this.#numpy = checkNumpyNames(options.numpy ?? 'portable')
  }

  /** Forgets what was pickled before, as Python's clear_memo(). */
  clearMemo(): void {
    this.#memoSize = 0
    this.#objMemo = new Map()
    this.#strMemo = new Map()
    this.#globalMemo = new Map()
    this.#emptyBytes = -1
  }

  /** Forgets the memo entries from index `from` on: a failed dump wrote none of their PUTs. */
  #forgetSince(from: number): void {
    for (const memo of [this.#objMemo, this.#strMemo, this.#globalMemo] as Map<unknown, number>[]) {
      for (const [key, idx] of memo) if (idx >= from) memo.delete(key)
    }
    this.#memoSize = from
    if (this.#emptyBytes >= from) this.#emptyBytes = -1
  }

  /** Pickles value into the sink; several dumps share the memo, as in Python. */
  dump(value: unknown): void {
    if (this.#sink === null) throw new PickleError('this Pickler has no sink: use dumps() or pass a sink')
    this.#sink.write(this.dumpToBytes(value))
  }

  /** Pickles value and returns the bytes (the memo is shared with earlier dumps of this Pickler). */
  dumpToBytes(value: unknown): Uint8Array {
    const n = this.#write(value)
    let out: Uint8Array
    if (n > 1 << 20) {
      // Big pickles are handed over without a copy. The buffer may come from uninitialized
      // memory: zero what lies past the pickle, so that out.buffer shows nothing stale.
      this.#buf.fill(0, n)
      out = this.#buf.subarray(0, n)
      this.#setBuffer(NO_BYTES)
    } else {
      out = this.#buf.slice(0, n)
    }
    this.#returnBuffer()
    return out
  }

  /**
   * Pickles value and passes the pickle to consume as a view of this pickler's output memory,
   * valid only until consume returns; returns what consume returns. For a carrier that copies
   * the pickle anyway (into a frame, a ring, a socket): no output is allocated or copied. A
   * view kept past consume shows whatever a later dump writes there.
   */
  dumpTransient<R>(value: unknown, consume: (pickle: Uint8Array) => R): R {
    const n = this.#write(value)
    // The pickler lets go of the memory while consume runs: a dump from inside consume, even
    // with this pickler, writes elsewhere.
    const buf = this.#buf
    const view = this.#view
    this.#buf = NO_BYTES
    this.#view = NO_VIEW
    try {
      return consume(buf.subarray(0, n))
    } finally {
      returnScratch(buf, view)
    }
  }

  /** Writes the whole pickle into #buf and returns its length; on failure nothing is kept. */
  #write(value: unknown): number {
    if (this.#buf.length === 0) this.#borrowScratch()
    this.#n = 0
    this.#frameStart = -1
    this.#framing = false
    const memoStart = this.#memoSize
    try {
      if (this.protocol >= 2) {
        const at = this.#reserve(2)
        this.#buf[at] = OP.PROTO
        this.#buf[at + 1] = this.protocol
        if (this.protocol >= 4) this.#framing = true
      }
      this.#save(value)
      this.#op(OP.STOP)
      this.#commitFrame()
    } catch (err) {
      this.#depth = 0
      this.#forgetSince(memoStart)
      this.#returnBuffer()
      throw asPickleError(err)
    } finally {
      this.#framing = false
    }
    const n = this.#n
    this.#n = 0
    return n
  }

  #setBuffer(b: Uint8Array<ArrayBuffer>): void {
    this.#buf = b
    this.#view = b.length === 0 ? NO_VIEW : new DataView(b.buffer, b.byteOffset, b.byteLength)
  }

  /** Takes the shared scratch buffer (with its DataView) if no other dump holds it. */
  #borrowScratch(): void {
    if (scratch !== null && scratchView !== null) {
      this.#buf = scratch
      this.#view = scratchView
      scratch = null
      scratchView = null
    } else {
      this.#setBuffer(new Uint8Array(4096))
    }
  }

  /** Gives the output buffer back to the shared scratch, so that the next dump starts with room. */
  #returnBuffer(): void {
    returnScratch(this.#buf, this.#view)
    this.#buf = NO_BYTES
    this.#view = NO_VIEW
  }

  // ---- output ----

  #grow(k: number): void {
    // Double for many small writes; one big write gets what it needs and a little room, not twice that.
    const need = this.#n + k
    const size = Math.max(this.#buf.length * 2, need + Math.min(need >>> 3, 1 << 20))
    const next = allocate(size)
    next.set(this.#buf.subarray(0, this.#n))
    this.#setBuffer(next)
  }

  /** Room for k bytes at the returned position; opens a frame first when one is due. */
  #reserve(k: number): number {
    if (this.#framing && this.#frameStart < 0) {
      if (this.#n + FRAME_HEADER_SIZE + k > this.#buf.length) this.#grow(FRAME_HEADER_SIZE + k)
      this.#frameStart = this.#n
      this.#n += FRAME_HEADER_SIZE
    } else if (this.#n + k > this.#buf.length) {
      this.#grow(k)
    }
    const at = this.#n
    this.#n = at + k
    return at
  }

  #op(code: number): void {
    const at = this.#reserve(1)
    this.#buf[at] = code
  }

  #op1(code: number, a: number): void {
    const at = this.#reserve(2)
    this.#buf[at] = code
    this.#buf[at + 1] = a
  }

  #opU4(code: number, v: number): void {
    const at = this.#reserve(5)
    this.#buf[at] = code
    this.#view.setUint32(at + 1, v, true)
  }

  #writeU8At(at: number, v: number): void {
    this.#view.setUint32(at, v % TWO_32, true)
    this.#view.setUint32(at + 4, Math.floor(v / TWO_32), true)
  }

  #ascii(text: string): void {
    const at = this.#reserve(text.length)
    for (let i = 0; i < text.length; i++) this.#buf[at + i] = text.charCodeAt(i)
  }

  /**
   * Writes an opcode, its length argument (little-endian, lengthSize bytes: 1, 4 or 8) and a
   * payload; a payload of a frame's size or more goes outside any frame.
   */
  #writeHeaderAndPayload(code: number, lengthSize: number, n: number, payload: Uint8Array): void {
    const big = payload.length >= FRAME_SIZE_TARGET
    const framing = this.#framing
    if (big) {
      this.#commitFrame()
      this.#framing = false
    }
    const at = this.#reserve(1 + lengthSize + n)
    this.#buf[at] = code
    if (lengthSize === 1) this.#buf[at + 1] = n
    else if (lengthSize === 4) this.#view.setUint32(at + 1, n, true)
    else this.#writeU8At(at + 1, n)
    this.#buf.set(payload, at + 1 + lengthSize)
    this.#framing = framing
  }

  #commitFrame(): void {
    if (!this.#framing || this.#frameStart < 0) return
    const start = this.#frameStart
    const len = this.#n - start - FRAME_HEADER_SIZE
    if (len >= FRAME_SIZE_MIN) {
      this.#buf[start] = OP.FRAME
      this.#writeU8At(start + 1, len)
    } else {
      this.#buf.copyWithin(start, start + FRAME_HEADER_SIZE, this.#n)
      this.#n -= FRAME_HEADER_SIZE
    }
    this.#frameStart = -1
  }

  /** Before each value: close the frame once it has reached its target size. */
  #opcodeBoundary(): void {
    if (this.#frameStart >= 0 && this.#n - this.#frameStart - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET) this.#commitFrame()
  }

  // ---- memo ----

  /** Writes the memo opcode for the next index and returns it; -1 (and nothing written) in fast mode. */
  #memoPutIndex(): number {
    if (this.fast) return -1
    const idx = this.#memoSize++
    if (this.protocol >= 4) this.#op(OP.MEMOIZE)
    else if (this.protocol === 0) this.#ascii(`p${idx}\n`)
    else if (idx < 256) this.#op1(OP.BINPUT, idx)
    else this.#opU4(OP.LONG_BINPUT, idx)
    return idx
  }

  #memoPut(obj: object): void {
    const idx = this.#memoPutIndex()
    if (idx >= 0) this.#objMemo.set(obj, idx)
  }

  #memoGet(idx: number): void {
    if (this.protocol === 0) this.#ascii(`g${idx}\n`)
    else if (idx < 256) this.#op1(OP.BINGET, idx)
    else this.#opU4(OP.LONG_BINGET, idx)
  }

  // ---- dispatch ----

  /** persistent is false for a persistent id itself, which Python never hands to persistent_id. */
  #save(obj: unknown, persistent = true): void {
    this.#opcodeBoundary()
    if (persistent && this.#persistentId !== null) {
      const pid = this.#persistentId(obj instanceof FreshStr ? obj.value : obj)
      if (pid !== undefined && pid !== null) return this.#savePers(pid)
    }
    switch (typeof obj) {
      case 'number':
        if (Number.isInteger(obj) && Number.isSafeInteger(obj) && !Object.is(obj, -0)) this.#saveInt(obj)
        else this.#saveFloat(obj)
        break
      case 'string':
        this.#saveStr(obj)
        break
      case 'boolean':
        this.#saveBool(obj)
        break
      case 'object':
        if (obj === null) this.#op(OP.NONE)
        else this.#saveObject(obj)
        break
      case 'bigint':
        if (this.#overrideNative === null || !this.#savedOverridden(obj, null)) this.#saveBigInt(obj)
        break
      case 'undefined':
        if (this.#overrideNative === null || !this.#savedOverridden(obj, null)) this.#op(OP.NONE)
        break
      case 'function':
        this.#saveFunction(obj)
        break
      default:
        throw new PicklingError(`cannot pickle ${describe(obj)}`)
    }
  }

  #saveObject(obj: object): void {
    // From the prototype: an own "constructor" key (JSON may hold one) is data, not the type.
    const proto = Object.getPrototypeOf(obj) as { constructor?: unknown } | null
    const ctor = proto === null ? undefined : proto.constructor
    // Floats are atoms in Python: never memoized, so no memo lookup for them.
    if (ctor === PyFloat) return this.#saveFloat((obj as PyFloat).value)
    if (ctor === FreshStr) return this.#saveFreshStr((obj as FreshStr).value)
    if (ctor === PyStr) return this.#savePyStr(obj as PyStr)
    // An empty memo (always, in fast mode) cannot hold it: no lookup.
    const idx = this.#memoSize === 0 ? undefined : this.#objMemo.get(obj)
    if (idx !== undefined) return this.#memoGet(idx)
    if (++this.#depth > this.#maxDepth) {
      throw new PicklingError(this.fast
        ? `the value nests deeper than maxDepth (${this.#maxDepth}); in fast mode (no memo) a cycle cannot be pickled`
        : `the value nests deeper than maxDepth (${this.#maxDepth}); a cycle through values that cannot be memoized?`)
    }
    if (this.#overrideNative !== null && this.#savedOverridden(obj, obj)) {
      this.#depth--
      return
    }
    if (ctor === Array) this.#saveList(obj as unknown[])
    else if (ctor === Map) this.#saveDict(obj as Map<unknown, unknown>)
    else if (ctor === Object || ctor === undefined) this.#saveDictObject(obj as Record<string, unknown>)
    else if (ctor === Tuple) this.#saveTuple(obj as Tuple)
    else if (ctor === ByteArray) this.#saveByteArray(obj as ByteArray)
    else if (ctor === Set) this.#saveSet(obj as Set<unknown>)
    else if (ctor === FrozenSet) this.#saveFrozenSet(obj as FrozenSet)
    else if (ctor === PickleBuffer) this.#savePickleBuffer(obj as PickleBuffer)
    else if (obj instanceof Uint8Array && !(obj instanceof ByteArray)) this.#saveBytes(obj)
    else if (obj instanceof PyFloat) this.#saveFloat(obj.value)
    else this.#saveOther(obj, ctor as Function | undefined)
    this.#depth--
  }

  // ---- atoms ----

  #saveBool(v: boolean): void {
    if (this.protocol >= 2) this.#op(v ? OP.NEWTRUE : OP.NEWFALSE)
    else this.#ascii(v ? 'I01\n' : 'I00\n')
  }

  #saveInt(v: number): void {
    if (v >= -0x80000000 && v <= 0x7fffffff) {
      if (this.protocol === 0) {
        this.#ascii(`I${v}\n`)
      } else if (v >= 0 && v <= 0xff) {
        this.#op1(OP.BININT1, v)
      } else if (v >= 0 && v <= 0xffff) {
        const at = this.#reserve(3)
        this.#buf[at] = OP.BININT2
        this.#buf[at + 1] = v & 0xff
        this.#buf[at + 2] = v >> 8
      } else {
        const at = this.#reserve(5)
        this.#buf[at] = OP.BININT
        this.#view.setInt32(at + 1, v, true)
      }
      return
    }
    this.#saveLong(BigInt(v))
  }

  #saveBigInt(v: bigint): void {
    if (v >= -0x80000000n && v <= 0x7fffffffn) this.#saveInt(Number(v))
    else this.#saveLong(v)
  }

  #saveLong(v: bigint): void {
    if (this.protocol < 2) {
      const text = v.toString()
      const digits = text.length - (v < 0n ? 1 : 0)
      if (digits > MAX_INT_DIGITS) {
        // CPython's dumps refuses it too: int() would refuse to read it back.
        throw new PicklingError(`an int of ${digits} digits is over the ${MAX_INT_DIGITS} Python reads as text; protocols 0 and 1 write ints as text (use protocol 2 or higher)`)
      }
      this.#ascii(`L${text}L\n`)
      return
    }
    const bytes = encodeLong(v)
    if (bytes.length < 256) {
      const at = this.#reserve(2 + bytes.length)
      this.#buf[at] = OP.LONG1
      this.#buf[at + 1] = bytes.length
      this.#buf.set(bytes, at + 2)
    } else {
      const at = this.#reserve(5 + bytes.length)
      this.#buf[at] = OP.LONG4
      this.#view.setInt32(at + 1, bytes.length, true)
      this.#buf.set(bytes, at + 5)
    }
  }

  #saveFloat(v: number): void {
    if (this.protocol === 0) {
      this.#ascii(`F${floatRepr(v)}\n`)
      return
    }
    const at = this.#reserve(9)
    this.#buf[at] = OP.BINFLOAT
    this.#view.setFloat64(at + 1, v, false)
  }

  /** A str: memoized by value, since JavaScript strings have no identity (see docs/mapping.md). */
  #saveStr(s: string): void {
    const idx = this.#memoSize === 0 ? undefined : this.#strMemo.get(s)
    if (idx !== undefined) return this.#memoGet(idx)
    this.#writeStr(s)
    const put = this.#memoPutIndex()
    if (put >= 0) this.#strMemo.set(s, put)
  }

  /** A str whose surrogate pairs are two code points each: memoized by identity, as CPython memoizes a str. */
  #savePyStr(p: PyStr): void {
    const idx = this.#memoSize === 0 ? undefined : this.#objMemo.get(p)
    if (idx !== undefined) return this.#memoGet(idx)
    if (this.protocol === 0) {
      const body = rawUnicodeEscape(p.value, true)
      const at = this.#reserve(body.length + 2)
      this.#buf[at] = OP.UNICODE
      this.#buf.set(body, at + 1)
      this.#buf[at + 1 + body.length] = 0x0a
    } else {
      this.#writeSized(encodeUnitsUtf8(p.value), OP.SHORT_BINUNICODE, OP.BINUNICODE, OP.BINUNICODE8, this.protocol >= 4)
    }
    this.#memoPut(p)
  }

  /** A str that Python makes afresh (a temporary): written and memoized, but never matched later. */
  #saveFreshStr(s: string): void {
    this.#writeStr(s)
    this.#memoPutIndex()
  }

  #writeStr(s: string): void {
    if (this.protocol === 0) {
      const body = rawUnicodeEscape(s)
      const at = this.#reserve(body.length + 2)
      this.#buf[at] = OP.UNICODE
      this.#buf.set(body, at + 1)
      this.#buf[at + 1 + body.length] = 0x0a
      return
    }
    const len = s.length
    if (this.protocol >= 4 && len <= 85) {
      // At most 255 bytes of UTF-8: encode in place behind a SHORT_BINUNICODE header.
      const at = this.#reserve(2 + len * 3)
      const n = encodeUtf8Into(s, this.#buf, at + 2)
      this.#buf[at] = OP.SHORT_BINUNICODE
      this.#buf[at + 1] = n - at - 2
      this.#n = n
      return
    }
    const data = encodeUtf8(s)
    this.#writeSized(data, OP.SHORT_BINUNICODE, OP.BINUNICODE, OP.BINUNICODE8, this.protocol >= 4)
  }

  /** A header choosing the 1-, 4- or 8-byte length form, then the payload. */
  #writeSized(data: Uint8Array, op1: number, op4: number, op8: number, shortAllowed: boolean): void {
    const n = data.length
    if (n <= 0xff && shortAllowed) this.#writeHeaderAndPayload(op1, 1, n, data)
    else if (n <= 0xffffffff) this.#writeHeaderAndPayload(op4, 4, n, data)
    else if (this.protocol >= 4) this.#writeHeaderAndPayload(op8, 8, n, data)
    else throw new PicklingError(`cannot serialize an object of ${n} bytes (4 GiB or more) below protocol 4`)
  }

  // ---- bytes and buffers ----

  #saveBytes(b: Uint8Array): void {
    if (b.length === 0 && !this.fast) {
      if (this.#emptyBytes >= 0) return this.#memoGet(this.#emptyBytes)
      this.#saveBytesOnce(b)
      this.#emptyBytes = this.#objMemo.get(b) ?? -1
      return
    }
    this.#saveBytesOnce(b)
  }

  #saveBytesOnce(b: Uint8Array): void {
    if (this.protocol < 3) {
      if (b.length === 0) this.#saveReduce({ callable: G.bytes, args: tuple() }, b)
      else {
        // CPython's latin-1 decoding returns its cached one-character strings, the very objects
        // every str of that character is: those are memoized by value, like any str here.
        const text = latin1String(b)
        this.#saveReduce({ callable: G.encode, args: tuple(b.length === 1 ? text : new FreshStr(text), 'latin1') }, b)
      }
      return
    }
    this.#writeSized(b, OP.SHORT_BINBYTES, OP.BINBYTES, OP.BINBYTES8, true)
    this.#memoPut(b)
  }

  #saveByteArray(b: ByteArray): void {
    if (this.protocol < 5) {
      const copy = new Uint8Array(b)
      this.#saveReduce({ callable: G.bytearray, args: b.length === 0 ? tuple() : tuple(copy) }, b)
      return
    }
    this.#writeHeaderAndPayload(OP.BYTEARRAY8, 8, b.length, b)
    this.#memoPut(b)
  }

  #savePickleBuffer(pb: PickleBuffer): void {
    if (this.protocol < 5) throw new PicklingError(`PickleBuffer can only be pickled with protocol >= 5, not ${this.protocol}`)
    if (pb.released) throw new PicklingError('cannot pickle a released PickleBuffer')
    const inBand = this.#bufferCallback === null ? true : Boolean(this.#bufferCallback(pb))
    if (inBand) {
      // Out of band, the memory is never read here, so it may be longer than a Uint8Array can be.
      const view = pb.raw()
      if (pb.readonly) this.#writeSized(view, OP.SHORT_BINBYTES, OP.BINBYTES, OP.BINBYTES8, true)
      else this.#writeHeaderAndPayload(OP.BYTEARRAY8, 8, view.length, view)
      this.#memoPut(pb)
    } else {
      this.#op(OP.NEXT_BUFFER)
      if (pb.readonly) this.#op(OP.READONLY_BUFFER)
    }
  }

  // ---- containers ----

  #saveTuple(t: readonly unknown[]): void {
    const n = t.length
    if (n === 0) {
      if (this.protocol >= 1) this.#op(OP.EMPTY_TUPLE)
      else {
        this.#op(OP.MARK)
        this.#op(OP.TUPLE)
      }
      return
    }
    if (n <= 3 && this.protocol >= 2) {
      this.#saveItems(t)
      const idx = this.#objMemo.get(t)
      if (idx !== undefined) {
        // The tuple was reached through its own items: drop them and fetch it from the memo.
        for (let i = 0; i < n; i++) this.#op(OP.POP)
        return this.#memoGet(idx)
      }
      this.#op(n === 1 ? OP.TUPLE1 : n === 2 ? OP.TUPLE2 : OP.TUPLE3)
    } else {
      this.#op(OP.MARK)
      this.#saveItems(t)
      const idx = this.#objMemo.get(t)
      if (idx !== undefined) {
        if (this.protocol >= 1) this.#op(OP.POP_MARK)
        else for (let i = 0; i <= n; i++) this.#op(OP.POP)
        return this.#memoGet(idx)
      }
      this.#op(OP.TUPLE)
    }
    this.#memoPut(t)
  }

  #saveItems(items: readonly unknown[]): void {
    let i = 0
    try {
      for (; i < items.length; i++) this.#save(items[i])
    } catch (err) {
      throw withPath(err, i)
    }
  }

  #saveList(list: unknown[]): void {
    if (this.protocol >= 1) this.#op(OP.EMPTY_LIST)
    else {
      this.#op(OP.MARK)
      this.#op(OP.LIST)
    }
    this.#memoPut(list)
    if (list.length === 0) return
    if (this.protocol === 0) return this.#batchAppends(list)
    if (list.length === 1) {
      this.#saveItems(list)
      this.#op(OP.APPEND)
      return
    }
    let total = 0
    try {
      do {
        this.#op(OP.MARK)
        const end = Math.min(list.length, total + BATCH_SIZE)
        while (total < end) {
          const item = list[total]
          if (typeof item === 'number') {
            const next = this.#saveNumberRun(list, total, end)
            if (next > total) {
              total = next
              continue
            }
          }
          this.#save(item)
          total++
        }
        this.#op(OP.APPENDS)
      } while (total < list.length)
    } catch (err) {
      throw withPath(err, total)
    }
  }

  /**
   * The list items from `from` up to `end` that are numbers #save would write as BININT1,
   * BININT2, BININT or BINFLOAT, written in one loop with the output position in a local;
   * returns the index of the first item left for #save (anything else, a frame to commit,
   * a buffer to grow, a persistent_id hook to consult). The bytes are #save's, item by item.
   */
  #saveNumberRun(list: unknown[], from: number, end: number): number {
    if (this.#persistentId !== null || this.protocol === 0) return from
    const frameStart = this.#frameStart
    if (frameStart < 0 && this.#framing) return from
    const buf = this.#buf
    const view = this.#view
    const limit = buf.length - 9
    let n = this.#n
    let i = from
    for (; i < end; i++) {
      const x = list[i]
      if (typeof x !== 'number' || n > limit) break
      if (frameStart >= 0 && n - frameStart - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET) break
      if ((x | 0) === x && (x !== 0 || 1 / x > 0)) {
        if (x >= 0 && x <= 0xff) {
          buf[n] = OP.BININT1
          buf[n + 1] = x
          n += 2
        } else if (x >= 0 && x <= 0xffff) {
          buf[n] = OP.BININT2
          buf[n + 1] = x & 0xff
          buf[n + 2] = x >> 8
          n += 3
        } else {
          buf[n] = OP.BININT
          view.setInt32(n + 1, x, true)
          n += 5
        }
      } else if (!Number.isSafeInteger(x) || x === 0) {
        // A float: not an integer, or -0, NaN, an infinity, or an integer beyond 2**53.
        buf[n] = OP.BINFLOAT
        view.setFloat64(n + 1, x, false)
        n += 9
      } else {
        break
      }
    }
    this.#n = n
    return i
  }

  /** Items from an iterator (reduce's listitems, protocol 0 lists), as Python's batch_list. */
  #batchAppends(items: Iterable<unknown>): void {
    let index = 0
    try {
      this.#batch(items, (item) => {
        this.#save(item)
        index++
      }, OP.APPEND, OP.APPENDS)
    } catch (err) {
      throw withPath(err, index)
    }
  }

  /** Pairs from an iterator (reduce's dictitems, protocol 0 dicts), as Python's batch_dict. */
  #batchSetItems(items: Iterable<readonly [unknown, unknown]>): void {
    this.#batch(items, (p: unknown) => {
      if (!Array.isArray(p) || p.length !== 2) throw new PicklingError(`dict items must be [key, value] pairs, got ${describe(p)}`)
      this.#savePair(p[0], p[1])
    }, OP.SETITEM, OP.SETITEMS)
  }

  /**
   * Python's batching of items from an iterator: at protocol 0 each item and its `one` opcode;
   * above, MARK, up to 1,000 items and the `many` opcode, with a last lone item written with
   * `one`. Unlike a list's own items, a batch never ends in an empty MARK.
   */
  #batch<T>(items: Iterable<T>, saveItem: (item: T) => void, one: number, many: number): void {
    const it = items[Symbol.iterator]()
    if (this.protocol === 0) {
      for (let r = it.next(); !r.done; r = it.next()) {
        saveItem(r.value)
        this.#op(one)
      }
      return
    }
    for (;;) {
      const first = it.next()
      if (first.done) return
      let next = it.next()
      if (next.done) {
        saveItem(first.value)
        this.#op(one)
        return
      }
      this.#op(OP.MARK)
      saveItem(first.value)
      let n = 1
      for (;;) {
        saveItem(next.value)
        if (++n === BATCH_SIZE) break
        next = it.next()
        if (next.done) break
      }
      this.#op(many)
      if (n !== BATCH_SIZE) return
    }
  }

  #saveDict(d: Map<unknown, unknown>): void {
    this.#dictHeader(d)
    if (d.size === 0) return
    if (this.protocol === 0) return this.#batchSetItems(d.entries())
    if (d.size === 1) {
      for (const [k, v] of d) this.#savePair(k, v)
      this.#op(OP.SETITEM)
      return
    }
    const it = d.entries()
    let i: number
    do {
      i = 0
      this.#op(OP.MARK)
      for (let r = it.next(); !r.done; r = it.next()) {
        this.#savePair(r.value[0], r.value[1])
        if (++i === BATCH_SIZE) break
      }
      this.#op(OP.SETITEMS)
    } while (i === BATCH_SIZE)
  }

  #saveDictObject(obj: Record<string, unknown>): void {
    this.#dictHeader(obj)
    const keys = Object.keys(obj)
    if (keys.length === 0) return
    if (this.protocol === 0) return this.#batchSetItems(keys.map((k) => [k, obj[k]] as const))
    if (keys.length === 1) {
      this.#saveEntry(obj, keys[0]!)
      this.#op(OP.SETITEM)
      return
    }
    let at = 0
    let i: number
    do {
      i = 0
      this.#op(OP.MARK)
      for (; at < keys.length; ) {
        const k = keys[at++]!
        this.#saveEntry(obj, k)
        if (++i === BATCH_SIZE) break
      }
      this.#op(OP.SETITEMS)
    } while (i === BATCH_SIZE)
  }

  #dictHeader(d: object): void {
    if (this.protocol >= 1) this.#op(OP.EMPTY_DICT)
    else {
      this.#op(OP.MARK)
      this.#op(OP.DICT)
    }
    this.#memoPut(d)
  }

  /** A plain object's key and value: the value is read inside, so that a getter's error names its key. */
  #saveEntry(obj: Record<string, unknown>, k: string): void {
    try {
      this.#save(k)
      this.#save(obj[k])
    } catch (err) {
      throw withPath(err, k)
    }
  }

  #savePair(k: unknown, v: unknown): void {
    try {
      if (typeof k === 'object' && k !== null) checkHashable(k, 'a dict key')
      this.#save(k)
      this.#save(v)
    } catch (err) {
      throw withPath(err, typeof k === 'string' || typeof k === 'number' ? k : describe(k))
    }
  }

  #saveSet(set: Set<unknown>): void {
    checkMembers(set)
    if (this.protocol < 4) {
      this.#saveReduce({ callable: G.set, args: tuple([...set]) }, set)
      return
    }
    this.#op(OP.EMPTY_SET)
    this.#memoPut(set)
    if (set.size === 0) return
    const it = set.values()
    let index = 0
    let i: number
    try {
      do {
        i = 0
        this.#op(OP.MARK)
        for (let r = it.next(); !r.done; r = it.next()) {
          this.#save(r.value)
          index++
          if (++i === BATCH_SIZE) break
        }
        this.#op(OP.ADDITEMS)
      } while (i === BATCH_SIZE)
    } catch (err) {
      throw withPath(err, index)
    }
  }

  #saveFrozenSet(set: FrozenSet): void {
    checkMembers(set)
    if (this.protocol < 4) {
      this.#saveReduce({ callable: G.frozenset, args: tuple([...set]) }, set)
      return
    }
    this.#op(OP.MARK)
    this.#saveItems([...set])
    const idx = this.#objMemo.get(set)
    if (idx !== undefined) {
      this.#op(OP.POP_MARK)
      return this.#memoGet(idx)
    }
    this.#op(OP.FROZENSET)
    this.#memoPut(set)
  }

  // ---- globals ----

  #saveFunction(fn: Function): void {
    const reg = this.#globals.registration(fn)
    if (reg === undefined) {
      throw new PicklingError(`cannot pickle ${describe(fn)}: register it with GlobalRegistry.registerClass or registerFunction`)
    }
    this.#saveGlobal(reg.global)
  }

  #saveGlobal(g: PyGlobal): void {
    const key = g.memoKey
    const idx = this.#globalMemo.get(key)
    if (idx !== undefined) return this.#memoGet(idx)
    const code = g.extensionCode !== null && g.opaque ? g.extensionCode : this.protocol >= 2 ? this.#extensions.get(key) : undefined
    if (code !== undefined) {
      if (this.protocol < 2) throw new PicklingError(`extension code ${code} needs protocol >= 2`)
      if (code <= 0xff) this.#op1(OP.EXT1, code)
      else if (code <= 0xffff) {
        const at = this.#reserve(3)
        this.#buf[at] = OP.EXT2
        this.#buf[at + 1] = code & 0xff
        this.#buf[at + 2] = code >> 8
      } else this.#opU4(OP.EXT4, code)
      return // Python does not memoize globals written as extension codes
    }
    if (this.protocol >= 4) {
      // Saved as values, as CPython does: a frame may end before each, and persistentId sees them.
      this.#save(g.module)
      this.#save(new FreshStr(g.name))
      this.#op(OP.STACK_GLOBAL)
    } else {
      let [module, name] = [g.module, g.name]
      if (this.protocol < 3 && this.#fixImports) [module, name] = reverseFixImport(module, name)
      if (this.protocol < 3 && !(isAsciiText(module) && isAsciiText(name))) {
        throw new PicklingError(`can't pickle global identifier '${module}.${name}' using pickle protocol ${this.protocol}`)
      }
      const m = encoder.encode(module)
      const n = encoder.encode(name)
      const at = this.#reserve(m.length + n.length + 3)
      this.#buf[at] = OP.GLOBAL
      this.#buf.set(m, at + 1)
      this.#buf[at + 1 + m.length] = 0x0a
      this.#buf.set(n, at + 2 + m.length)
      this.#buf[at + 2 + m.length + n.length] = 0x0a
    }
    const put = this.#memoPutIndex()
    if (put >= 0) this.#globalMemo.set(key, put)
  }

  #savePers(pid: unknown): void {
    if (this.protocol === 0) {
      if (typeof pid !== 'string' || !isAsciiText(pid) || pid.includes('\n')) {
        throw new PicklingError(`persistent IDs in protocol 0 must be ASCII strings without newlines, got ${describe(pid)}`)
      }
      this.#ascii(`P${pid}\n`)
      return
    }
    this.#save(pid, false)
    this.#op(OP.BINPERSID)
  }

  // ---- everything else: reduce ----

  /** Anything else, by reduce; ctor is obj's constructor, from its prototype (see #saveObject). */
  #saveOther(obj: object, ctor: Function | undefined): void {
    // With overrideNative, #saveObject has asked it already.
    if (this.#reducerOverride !== null && this.#overrideNative === null) {
      const r = this.#reducerOverride(obj)
      if (r !== NotImplemented) return this.#saveReduceValue(r as ReduceValue, obj)
    }
    if (obj instanceof PyGlobal) return this.#saveGlobal(obj)
    if (obj instanceof PySingleton) return this.#saveGlobal(new PyGlobal('builtins', obj.name))
    const fromTable = ctor !== undefined ? this.#dispatchTable?.get(ctor) : undefined
    if (fromTable !== undefined) return this.#saveReduceValue(fromTable(obj), obj)
    const own = (obj as { [reduceEx]?: unknown })[reduceEx]
    if (typeof own === 'function') return this.#saveReduceValue(own.call(obj, this.protocol) as ReduceValue, obj)
    const reg = ctor !== undefined ? this.#globals.registration(ctor) : undefined
    if (reg !== undefined) return this.#saveRegistered(obj, reg)
    const builtin = this.#builtinRecipe(obj)
    if (builtin !== null) return this.#saveReduce(builtin, obj)
    if (obj instanceof PyPersistentRef) return this.#savePers(obj.id)
    throw new PicklingError(`cannot pickle ${describe(obj)}: register its class with GlobalRegistry.registerClass`)
  }

  /** Recipes for the value classes this codec exports, as their Python types reduce. */
  #builtinRecipe(obj: object): Recipe | null {
    // TypedArrays first: they are the commonest value here (a tensor in every message).
    if (ArrayBuffer.isView(obj)) return numpyRecipe(obj, this.protocol, this.#numpy)
    if (obj instanceof PyObject) return this.#opaqueRecipe(obj, obj.callable)
    if (obj instanceof PyObjectCall) return this.#opaqueRecipe(obj, obj.target)
    if (obj instanceof Complex) return { callable: G.complex, args: tuple(new PyFloat(obj.real), new PyFloat(obj.imag)) }
    if (obj instanceof PyRange) return { callable: G.range, args: tuple(obj.start, obj.stop, obj.step) }
    if (obj instanceof Slice) return { callable: G.slice, args: tuple(obj.start, obj.stop, obj.step) }
    if (obj instanceof OrderedDict) return { callable: G.OrderedDict, args: tuple(), dictItems: obj.entries() }
    if (obj instanceof Counter) return { callable: G.Counter, args: tuple(new Map(obj)) }
    if (obj instanceof DefaultDict) {
      const f = obj.defaultFactory
      return { callable: G.defaultdict, args: f === null || f === undefined ? tuple() : tuple(f), dictItems: obj.entries() }
    }
    if (obj instanceof Deque) {
      return { callable: G.deque, args: obj.maxlen === null ? tuple() : tuple(tuple(), obj.maxlen), listItems: obj.values() }
    }
    if (obj instanceof PyDateTime) return { callable: G.datetime, args: this.#dateTimeArgs(obj) }
    if (obj instanceof PyDate) {
      return { callable: G.date, args: tuple(Uint8Array.of(obj.year >> 8, obj.year & 0xff, obj.month, obj.day)) }
    }
    if (obj instanceof PyTime) {
      const hour = obj.hour + (obj.fold && this.protocol > 3 ? 128 : 0)
      const state = Uint8Array.of(hour, obj.minute, obj.second, obj.microsecond >> 16, (obj.microsecond >> 8) & 0xff, obj.microsecond & 0xff)
      return { callable: G.time, args: obj.tzinfo === null ? tuple(state) : tuple(state, obj.tzinfo) }
    }
    if (obj instanceof PyTimeDelta) return { callable: G.timedelta, args: tuple(obj.days, obj.seconds, obj.microseconds) }
    if (obj instanceof PyTimeZone) return { callable: G.timezone, args: obj.name === null ? tuple(obj.offset) : tuple(obj.offset, obj.name) }
    if (obj instanceof Decimal) return { callable: G.Decimal, args: tuple(obj.value) }
    if (obj instanceof UUID) {
      const state = new Map<unknown, unknown>([['int', obj.int]])
      if (obj.isSafe !== null) state.set('is_safe', obj.isSafe)
      return this.#objectRecipe(G.UUID, [], state)
    }
    // A dtype that was an opaque placeholder when loaded is that placeholder again.
    if (obj instanceof DType && obj.placeholder !== null) {
      const p = obj.placeholder
      if (p instanceof PyObject) return this.#opaqueRecipe(p, p.callable)
      if (p instanceof PyObjectCall) return this.#opaqueRecipe(p, p.target)
    }
    // NDArray, NumpyScalar, DType and TypedArrays other than Uint8Array (bytes): as numpy writes them.
    return numpyRecipe(obj, this.protocol, this.#numpy)
  }

  #dateTimeArgs(d: PyDateTime): Tuple {
    const month = d.month + (d.fold && this.protocol > 3 ? 128 : 0)
    const us = d.microsecond
    const state = Uint8Array.of(d.year >> 8, d.year & 0xff, month, d.day, d.hour, d.minute, d.second, us >> 16, (us >> 8) & 0xff, us & 0xff)
    return d.tzinfo === null ? tuple(state) : tuple(state, d.tzinfo)
  }

  /** object.__reduce_ex__: NEWOBJ from protocol 2, copyreg._reconstructor below. */
  #objectRecipe(cls: PyGlobal, newArgs: readonly unknown[], state: unknown): Recipe {
    if (this.protocol >= 2) return { callable: G.newobj, args: tuple(cls, ...newArgs), state }
    if (newArgs.length > 0) throw new PicklingError(`${cls} needs protocol >= 2 to pickle its __getnewargs__ arguments`)
    return { callable: G.reconstructor, args: tuple(cls, G.object, null), state }
  }

  #saveRegistered(obj: object, reg: Registration): void {
    const hooks = reg.hooks
    if (hooks.reduce) return this.#saveReduceValue(hooks.reduce(obj, this.protocol), obj)
    const newArgsFn = (obj as { [getNewArgs]?: () => readonly unknown[] })[getNewArgs]
    const newArgs = hooks.getNewArgs ? hooks.getNewArgs(obj) : typeof newArgsFn === 'function' ? newArgsFn.call(obj) : []
    const getStateFn = (obj as { [getState]?: () => unknown })[getState]
    let state: unknown
    if (hooks.getState) state = hooks.getState(obj)
    else if (typeof getStateFn === 'function') state = getStateFn.call(obj)
    else {
      const keys = Object.keys(obj)
      state = keys.length === 0 ? null : Object.fromEntries(keys.map((k) => [k, (obj as Record<string, unknown>)[k]]))
    }
    this.#saveReduce(this.#objectRecipe(reg.global, newArgs, state), obj)
  }

  /** How an opaque placeholder was made, replayed; cls is what it called or instantiated. */
  #opaqueRecipe(o: PyObject | PyObjectCall, cls: PyGlobal | PyOpaque): Recipe {
    const extra = opaqueExtras(o)
    if (o.origin === 'reconstructor') return { callable: G.reconstructor, args: o.args, ...extra }
    if (o.origin === 'newobj' && this.protocol >= 2) return { callable: G.newobj, args: tuple(cls, ...o.args), ...extra }
    if (o.origin === 'newobj_ex') return { callable: G.newobjEx, args: tuple(cls, o.args, o.kwargs ?? new Map()), ...extra }
    if (o.origin === 'newobj') {
      if (o.args.length > 0) throw new PicklingError(`${cls instanceof PyGlobal ? String(cls) : describe(cls)} instance needs protocol >= 2 (it was made with NEWOBJ and arguments)`)
      return { callable: G.reconstructor, args: tuple(cls, G.object, null), ...extra }
    }
    return { callable: cls, args: o.args, ...extra }
  }

  /** overrideNative: saves what reducerOverride made of value, if it did not decline. obj: what to memoize (null for a primitive). */
  #savedOverridden(value: unknown, obj: object | null): boolean {
    const r = this.#overrideNative!(value)
    if (r === NotImplemented) return false
    this.#saveReduceValue(r as ReduceValue, obj)
    return true
  }

  #saveReduceValue(r: ReduceValue, obj: object | null): void {
    if (typeof r === 'string') {
      const dot = r.lastIndexOf('.')
      if (dot <= 0) throw new PicklingError(`a reduce string must be a qualified "module.name", got ${JSON.stringify(r)}`)
      return this.#saveGlobal(new PyGlobal(r.slice(0, dot), r.slice(dot + 1)))
    }
    if (!Array.isArray(r) || r.length < 2 || r.length > 6) {
      throw new PicklingError(`a reduce value must be a string or [callable, args, ...] of 2 to 6 items, got ${describe(r)}`)
    }
    const [callable, args, state, listItems, dictItems, stateSetter] = r
    if (!Array.isArray(args)) throw new PicklingError(`the second item of a reduce value must be an array of arguments, got ${describe(args)}`)
    this.#saveReduce({ callable, args, state, listItems, dictItems, stateSetter }, obj)
  }

  #isNewObj(c: unknown, which: PyGlobal): boolean {
    return c instanceof PyGlobal && c.module === which.module && c.name === which.name
  }

  /** Python's save_reduce. obj is memoized after the call, unless it turned up while saving the call. */
  #saveReduce(r: Recipe, obj: object | null): void {
    const { callable, args } = r
    if (this.protocol >= 2 && this.#isNewObj(callable, G.newobjEx)) {
      if (args.length !== 3) throw new PicklingError(`__newobj_ex__ needs (cls, args, kwargs), got ${args.length} items`)
      if (this.protocol < 4) throw new PicklingError('objects made with __newobj_ex__ need protocol >= 4 here')
      this.#save(args[0])
      this.#save(args[1])
      this.#save(args[2])
      this.#op(OP.NEWOBJ_EX)
    } else if (this.protocol >= 2 && this.#isNewObj(callable, G.newobj)) {
      if (args.length === 0) throw new PicklingError('__newobj__ needs at least the class')
      this.#save(args[0])
      this.#save(Tuple.fromItems(args.slice(1)))
      this.#op(OP.NEWOBJ)
    } else {
      this.#saveCallable(callable)
      this.#save(args instanceof Tuple ? args : Tuple.fromItems(args))
      this.#op(OP.REDUCE)
    }
    if (obj !== null) {
      const idx = this.#objMemo.get(obj)
      if (idx !== undefined) {
        this.#op(OP.POP)
        return this.#memoGet(idx)
      }
      this.#memoPut(obj)
    }
    if (r.listItems) this.#batchAppends(r.listItems)
    if (r.dictItems) this.#batchSetItems(r.dictItems)
    if (r.state !== undefined && r.state !== null) {
      if (r.stateSetter === undefined || r.stateSetter === null) {
        this.#save(r.state)
        this.#op(OP.BUILD)
      } else {
        this.#saveCallable(r.stateSetter)
        this.#save(obj)
        this.#save(r.state)
        this.#op(OP.TUPLE2)
        this.#op(OP.REDUCE)
        this.#op(OP.POP)
      }
    }
  }

  /** The callable is saved as a value, as CPython does: persistentId and reducerOverride see it too. */
  #saveCallable(c: unknown): void {
    // An opaque placeholder stands for a Python callable too (a functools.partial, say).
    if (!(c instanceof PyGlobal) && !(c instanceof PyOpaque) && typeof c !== 'function') {
      throw new PicklingError(`the callable of a reduce value must be a PyGlobal, an opaque placeholder or a registered function, got ${describe(c)}`)
    }
    this.#save(c)
  }
}

/**
 * V8 keeps an object's hidden class alive only through the objects that have it: the chain of
 * field additions that builds a Pickler holds it weakly. With no Pickler alive, a full GC drops
 * it; the next Pickler gets a new one, and every optimized pickler function that was specialized
 * to the old one is thrown away ("weak objects" deopts: dumps of 100,000 dicts ran 2-4x slower
 * after each GC). One Pickler held for the module's lifetime keeps the class, and the code.
 */
export const SHAPE_KEEPER: unknown = new Pickler()

/**
 * Refuses what Python cannot hash, as a dict key or set member: CPython could not load the
 * pickle (TypeError: unhashable type). A tuple is hashable when its items are.
 */
function checkHashable(v: object, role: string, depth = 0): void {
  let kind: string | null = null
  if (v instanceof Tuple) {
    // Tuples nested past any real key (or in a cycle, which Python cannot make) are left to the save.
    if (depth < 100) for (const x of v) if (typeof x === 'object' && x !== null) checkHashable(x, role, depth + 1)
    return
  }
  if (Array.isArray(v)) kind = 'list'
  else if (v instanceof FrozenSet) return
  else if (v instanceof Set) kind = 'set'
  else if (v instanceof Map) kind = 'dict'
  else if (v instanceof ByteArray) kind = 'bytearray'
  else if (isPlainObject(v)) kind = 'dict'
  if (kind !== null) throw new PicklingError(`unhashable type: '${kind}' as ${role} (Python could not load it)`)
}

function checkMembers(set: Set<unknown>): void {
  let i = 0
  for (const x of set) {
    if (typeof x === 'object' && x !== null) {
      try {
        checkHashable(x, 'a set member')
      } catch (err) {
        throw withPath(err, i)
      }
    }
    i++
  }
}

/** A Python str made afresh by the pickler itself (never matched in the memo). */
class FreshStr {
  constructor(readonly value: string) {}
}

/** Anything thrown while pickling (a hook's own error, the stack running out) as the codec's error. */
function asPickleError(err: unknown): PickleError {
  if (err instanceof PickleError) return err
  // No regular expression here: near the end of the stack, compiling one fails too.
  if (err instanceof RangeError && err.message.includes('call stack')) {
    return new PicklingError('the value nests too deeply to pickle (the JavaScript stack ran out); a cycle through values that cannot be memoized?', { cause: err })
  }
  return new PicklingError(err instanceof Error ? err.message : String(err), { cause: err })
}

function withPath(err: unknown, step: string | number): unknown {
  const e = asPickleError(err)
  if (e instanceof PicklingError) e.addPathStep(step)
  return e
}

/** Python's pickle.dumps. */
export function dumps(value: unknown, options?: PicklerOptions): Uint8Array {
  return new Pickler(null, options).dumpToBytes(value)
}

/**
 * dumps for a consumer that copies the pickle at once: consume gets a view of the pickler's
 * output memory, valid only until it returns (see Pickler.dumpTransient).
 */
export function dumpsTransient<R>(value: unknown, options: PicklerOptions | undefined, consume: (pickle: Uint8Array) => R): R {
  return new Pickler(null, options).dumpTransient(value, consume)
}

/** Python's pickle.dump: the pickle is written to the sink in one piece, or not at all. */
export function dump(value: unknown, sink: Sink, options?: PicklerOptions): void {
  new Pickler(sink, options).dump(value)
}
