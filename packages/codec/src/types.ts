/**
 * Small classes for the Python values JavaScript has no equivalent for. Each keeps exactly
 * what is needed to tell it apart from its nearest JavaScript cousin and to pickle it again.
 */
import { PickleError } from './errors.js'
import type { KeySpace } from './keys.js'
import { badOptionType, checkOptions, optionNames } from './options.js'

/**
 * Objects that implement this method receive the state of a BUILD opcode (Python's
 * __setstate__). Registered classes implement it to rebuild themselves.
 */
export const setState: unique symbol = Symbol.for('picklewire.setState')

export interface HasSetState {
  [setState](state: unknown): void
}

/** Python's __getstate__: what BUILD will receive when the object is pickled. */
export const getState: unique symbol = Symbol.for('picklewire.getState')
/** Python's __getnewargs__: the arguments NEWOBJ passes to cls.__new__. */
export const getNewArgs: unique symbol = Symbol.for('picklewire.getNewArgs')
/** Python's __reduce_ex__(protocol): how to rebuild the object, as a ReduceValue. */
export const reduceEx: unique symbol = Symbol.for('picklewire.reduce')

/**
 * What a reduce hook returns, as Python's __reduce__ does: a global's qualified name
 * ("module.name"), or [callable, args, state?, listItems?, dictItems?, stateSetter?].
 * callable is a PyGlobal, or a class or function registered in the pickler's globals.
 */
export type ReduceValue =
  | string
  | readonly [
      callable: unknown,
      args: readonly unknown[],
      state?: unknown,
      listItems?: Iterable<unknown> | null,
      dictItems?: Iterable<readonly [unknown, unknown]> | null,
      stateSetter?: unknown,
    ]

/** A Python tuple: an Array that stays distinct from a list. */
export class Tuple<T = unknown> extends Array<T> {
  /** Makes a tuple of the given items. */
  static fromItems<T>(items: readonly T[]): Tuple<T> {
    // Sized at construction and filled by index: push on an Array subclass takes the engine's
    // slow path (about 8x slower for a 3-tuple).
    const n = items.length
    const t = new Tuple<T>(n)
    for (let i = 0; i < n; i++) t[i] = items[i]!
    return t
  }
}

/**
 * The items as a Tuple: the same object when they already are one, so that a tuple shared in
 * a pickle stays shared in what the opaque mode keeps (and pickles back as a memo fetch, as
 * CPython writes it).
 */
export function asTuple<T>(items: readonly T[]): Tuple<T> {
  return items instanceof Tuple ? (items as Tuple<T>) : Tuple.fromItems(items)
}

/** A Python bytearray: mutable bytes, distinct from bytes (a plain Uint8Array). */
export class ByteArray extends Uint8Array {}

/** A Python frozenset: a Set that stays distinct from a set. */
export class FrozenSet<T = unknown> extends Set<T> {}

/** A Python complex number. */
export class Complex {
  constructor(readonly real: number, readonly imag: number) {}
  toString(): string {
    return `(${this.real}${this.imag < 0 || Object.is(this.imag, -0) ? '-' : '+'}${Math.abs(this.imag)}j)`
  }
}

/** Python singletons with no JavaScript equivalent. */
export class PySingleton {
  constructor(readonly name: 'Ellipsis' | 'NotImplemented') {
    Object.freeze(this)
  }
  toString(): string {
    return this.name
  }
}
export const Ellipsis = new PySingleton('Ellipsis')
export const NotImplemented = new PySingleton('NotImplemented')

/**
 * A float whose value is integral, boxed by the lossless mode so that 1.0 stays a float
 * (a plain JavaScript number that is integral is written back as an int).
 */
export class PyFloat {
  constructor(readonly value: number) {}
  valueOf(): number {
    return this.value
  }
  toString(): string {
    return Number.isInteger(this.value) ? this.value.toFixed(1) : String(this.value)
  }
}

/** Bytes-like sources a PickleBuffer or an out-of-band buffer may wrap. */
export type BufferSource = ArrayBuffer | SharedArrayBuffer | ArrayBufferView

/** A TypedArray constructor, as PickleBuffer.view takes it. */
export interface TypedArrayViewConstructor<T extends ArrayBufferView> {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T
  readonly BYTES_PER_ELEMENT: number
}

/**
 * A Uint8Array over a range of memory, or null when the range is longer than the engine lets
 * one Uint8Array be (Node 20: 2^32 elements; an ArrayBuffer, a DataView or a wider TypedArray
 * may be longer).
 */
function bytesWindow(buffer: ArrayBufferLike, byteOffset: number, byteLength: number): Uint8Array | null {
  try {
    return new Uint8Array(buffer, byteOffset, byteLength)
  } catch (err) {
    if (err instanceof RangeError && byteLength > 2 ** 31) return null
    throw err
  }
}

/** The RangeError for bytes that no Uint8Array can span, naming the size and the way around it. */
export function tooLongForBytes(byteLength: number, what: string): RangeError {
  return new RangeError(
    `${what} of ${byteLength} bytes is longer than a Uint8Array can be in this JavaScript engine; ` +
    'reach its memory through buffer, byteOffset and byteLength, or view(ctor) with a wider TypedArray',
  )
}

/** Views a range of memory as a Uint8Array (never a copy); a RangeError when it is longer than a Uint8Array can be. */
export function bytesOfRange(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, what = 'a buffer'): Uint8Array {
  const view = bytesWindow(buffer, byteOffset, byteLength)
  if (view === null) throw tooLongForBytes(byteLength, what)
  return view
}

/** Views any bytes-like source as a Uint8Array over the same memory: never a copy. */
export function asBytesView(source: BufferSource | PickleBuffer): Uint8Array {
  // A plain Uint8Array, even over a Node Buffer, so that slice() copies as it does everywhere else.
  if (source instanceof Uint8Array && source.constructor === Uint8Array) return source
  if (source instanceof PickleBuffer) return source.raw()
  if (ArrayBuffer.isView(source)) return bytesOfRange(source.buffer, source.byteOffset, source.byteLength, describe(source))
  if (isArrayBuffer(source)) return bytesOfRange(source, 0, source.byteLength, describe(source))
  throw new PickleError(`expected an ArrayBuffer, SharedArrayBuffer, ArrayBufferView or PickleBuffer, got ${describe(source)}`)
}

function isArrayBuffer(v: unknown): v is ArrayBuffer | SharedArrayBuffer {
  return v instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer)
}

const PICKLE_BUFFER_OPTIONS = optionNames('readonly')

/** The memory a PickleBuffer wraps: a range of one ArrayBuffer or SharedArrayBuffer. */
interface Span {
  buffer: ArrayBuffer | SharedArrayBuffer
  byteOffset: number
  byteLength: number
  /** A Uint8Array over the range; null when the range is longer than a Uint8Array can be. */
  bytes: Uint8Array | null
}

function spanOf(source: BufferSource): Span {
  if (ArrayBuffer.isView(source)) {
    const { buffer, byteOffset, byteLength } = source
    const bytes = source instanceof Uint8Array && source.constructor === Uint8Array ? source : bytesWindow(buffer, byteOffset, byteLength)
    return { buffer, byteOffset, byteLength, bytes }
  }
  if (isArrayBuffer(source)) return { buffer: source, byteOffset: 0, byteLength: source.byteLength, bytes: bytesWindow(source, 0, source.byteLength) }
  throw new PickleError(`expected an ArrayBuffer, SharedArrayBuffer, ArrayBufferView or PickleBuffer, got ${describe(source)}`)
}

/**
 * Python's pickle.PickleBuffer: a wrapper around memory that protocol 5 may send out of band.
 * An out-of-band buffer comes back from the unpickler as a PickleBuffer over the memory the
 * caller passed in buffers: raw() is a view of it, never a copy.
 *
 * The memory may be longer than a Uint8Array can be (an ArrayBuffer of 5 GiB in Node 20, or a
 * Uint16Array or DataView over one): buffer, byteOffset, byteLength and view(ctor) reach it
 * then, and raw() throws a RangeError.
 */
export class PickleBuffer {
  #span: Span | null
  /** True when the receiver must not write to the memory (READONLY_BUFFER). */
  readonly readonly: boolean

  constructor(source: BufferSource | PickleBuffer, options: { readonly?: boolean } = {}) {
    checkOptions('PickleBuffer', options, PICKLE_BUFFER_OPTIONS)
    if (options.readonly !== undefined && typeof options.readonly !== 'boolean') throw badOptionType('PickleBuffer', 'readonly', 'a boolean', options.readonly)
    this.#span = source instanceof PickleBuffer ? source.#live() : spanOf(source)
    this.readonly = options.readonly ?? (source instanceof PickleBuffer ? source.readonly : false)
  }

  #live(): Span {
    if (this.#span === null) throw new PickleError('operation forbidden on released PickleBuffer object')
    return this.#span
  }

  /**
   * The bytes, as a Uint8Array over the wrapped memory (Python's raw() memoryview). A
   * RangeError when they are more than a Uint8Array can hold: use view(ctor) or the range.
   */
  raw(): Uint8Array {
    const s = this.#live()
    if (s.bytes === null) throw tooLongForBytes(s.byteLength, 'PickleBuffer.raw(): the buffer')
    return s.bytes
  }

  /** The ArrayBuffer or SharedArrayBuffer the bytes are in. */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#live().buffer
  }

  /** Where the bytes start in buffer. */
  get byteOffset(): number {
    return this.#live().byteOffset
  }

  get byteLength(): number {
    return this.#live().byteLength
  }

  /**
   * The bytes as a TypedArray of the given kind over the same memory, never a copy (a
   * Uint16Array of a float16 tensor, say). A RangeError when the range does not start on, or
   * is not a whole number of, the type's elements, or has more elements than the engine allows.
   */
  view<T extends ArrayBufferView>(ctor: TypedArrayViewConstructor<T>): T {
    const s = this.#live()
    const size = ctor.BYTES_PER_ELEMENT
    if (typeof size !== 'number' || !(size > 0)) throw new TypeError(`PickleBuffer.view needs a TypedArray constructor, got ${describe(ctor)}`)
    if (s.byteOffset % size !== 0) throw new RangeError(`PickleBuffer.view(${ctor.name}): the buffer starts at byte ${s.byteOffset}, not a multiple of ${size}`)
    if (s.byteLength % size !== 0) throw new RangeError(`PickleBuffer.view(${ctor.name}): ${s.byteLength} bytes are not a whole number of ${size}-byte elements`)
    return new ctor(s.buffer, s.byteOffset, s.byteLength / size)
  }

  get released(): boolean {
    return this.#span === null
  }

  /** Drops the reference to the memory; raw() fails afterwards. */
  release(): void {
    this.#span = null
  }
}

/** A Python range (never materialized). */
export class PyRange {
  constructor(readonly start: number | bigint, readonly stop: number | bigint, readonly step: number | bigint = 1) {}
}

/** A Python slice. */
export class Slice {
  constructor(readonly start: unknown, readonly stop: unknown, readonly step: unknown) {}
}

/** collections.OrderedDict */
export class OrderedDict<K = unknown, V = unknown> extends Map<K, V> {}

/** collections.defaultdict: the factory is kept (as a global), never called. */
export class DefaultDict<K = unknown, V = unknown> extends Map<K, V> {
  constructor(public defaultFactory: unknown = null, entries?: Iterable<readonly [K, V]>) {
    super(entries)
  }
}

/** collections.Counter */
export class Counter<K = unknown> extends Map<K, unknown> {}

/** collections.deque */
export class Deque<T = unknown> extends Array<T> {
  maxlen: number | null = null
}

// slice(), map(), filter(), concat() ... of a Tuple or a Deque give plain Arrays (a new list,
// not another tuple or deque to pickle). Symbol.species is set as a data property: a `static get
// [Symbol.species]()` accessor on an Array subclass makes V8 abort every optimization of
// `new Tuple(n)` ("dependency change") and retry forever; with it, 2M 3-tuples took 541 ms
// against 24 ms (node 20; docs/benchmarks.md, numpy section, has the story).
for (const cls of [Tuple, Deque]) Object.defineProperty(cls, Symbol.species, { value: Array, configurable: true })

/** datetime.timedelta, normalized as Python keeps it. */
export class PyTimeDelta {
  constructor(readonly days: number, readonly seconds: number, readonly microseconds: number) {}
  /** The duration in milliseconds (may lose sub-millisecond precision). */
  totalMilliseconds(): number {
    return this.days * 86_400_000 + this.seconds * 1000 + this.microseconds / 1000
  }
}

/** datetime.timezone: a fixed offset from UTC, with an optional name. */
export class PyTimeZone {
  constructor(readonly offset: PyTimeDelta, readonly name: string | null = null) {}
}

/** datetime.date */
export class PyDate {
  constructor(readonly year: number, readonly month: number, readonly day: number) {}
  toString(): string {
    return `${String(this.year).padStart(4, '0')}-${pad2(this.month)}-${pad2(this.day)}`
  }
}

/** datetime.time */
export class PyTime {
  constructor(
    readonly hour: number,
    readonly minute: number,
    readonly second: number,
    readonly microsecond: number,
    readonly tzinfo: unknown = null,
    readonly fold: 0 | 1 = 0,
  ) {}
  toString(): string {
    return `${pad2(this.hour)}:${pad2(this.minute)}:${pad2(this.second)}${this.microsecond ? '.' + String(this.microsecond).padStart(6, '0') : ''}`
  }
}

/** datetime.datetime, to the microsecond, with its tzinfo (null when naive). */
export class PyDateTime {
  constructor(
    readonly year: number,
    readonly month: number,
    readonly day: number,
    readonly hour: number = 0,
    readonly minute: number = 0,
    readonly second: number = 0,
    readonly microsecond: number = 0,
    readonly tzinfo: unknown = null,
    readonly fold: 0 | 1 = 0,
  ) {}
  /**
   * A JavaScript Date (milliseconds). A naive datetime is read as UTC; a datetime with a
   * fixed-offset timezone is converted; any other tzinfo is an error.
   */
  toDate(): Date {
    let offsetMs = 0
    if (this.tzinfo instanceof PyTimeZone) offsetMs = this.tzinfo.offset.totalMilliseconds()
    else if (this.tzinfo !== null) throw new PickleError('toDate() needs a naive datetime or a datetime.timezone offset')
    const utc = Date.UTC(this.year, this.month - 1, this.day, this.hour, this.minute, this.second, Math.floor(this.microsecond / 1000))
    const d = new Date(utc - offsetMs)
    if (this.year < 100) d.setUTCFullYear(this.year)
    return d
  }
  toString(): string {
    return `${new PyDate(this.year, this.month, this.day)} ${new PyTime(this.hour, this.minute, this.second, this.microsecond)}`
  }
}

function pad2(n: number): string {
  return String(n).padStart(2, '0')
}

/** decimal.Decimal, kept as its exact text. */
export class Decimal {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value
  }
}

/** uuid.UUID, as its 128-bit integer. */
export class UUID implements HasSetState {
  constructor(public int: bigint = 0n, public isSafe: number | null = null) {}
  get hex(): string {
    return this.int.toString(16).padStart(32, '0')
  }
  toString(): string {
    const h = this.hex
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
  }
  [setState](state: unknown): void {
    const get = (k: string): unknown => (state instanceof Map ? state.get(k) : (state as Record<string, unknown> | null)?.[k])
    const int = get('int')
    if (typeof int !== 'bigint' && !(typeof int === 'number' && Number.isInteger(int))) {
      throw new PickleError(`uuid.UUID state needs an int, got ${describe(int)}`)
    }
    this.int = BigInt(int)
    const safe = get('is_safe')
    this.isSafe = typeof safe === 'number' ? safe : null
  }
}

/**
 * How an opaque object was made, so that it can be pickled back the same way. 'reconstructor'
 * is copyreg._reconstructor(cls, base, state), whose arguments are kept in args.
 */
export type PyObjectOrigin = 'reduce' | 'newobj' | 'newobj_ex' | 'inst' | 'obj' | 'reconstructor'

/**
 * A Python global (a class or function) named by module and qualified name. The registry
 * maps names to PyGlobals whose behaviour rebuilds a value; in opaque mode an unknown global
 * becomes an inert PyGlobal whose calls make PyObject placeholders.
 */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    private readonly behaviour: GlobalBehaviour = {},
    /** True for a placeholder of a global nobody registered (opaque mode, or the allow option). */
    readonly opaque = false,
    /** The extension code it was loaded through (EXT1/2/4), if any and unresolved. */
    readonly extensionCode: number | null = null,
  ) {}

  #memoKey: string | null = null
  /** A key naming this global in a pickler's memo (made once: globals are written again and again). */
  get memoKey(): string {
    return (this.#memoKey ??= this.extensionCode !== null && this.opaque ? `\0ext${this.extensionCode}` : `${this.module}\0${this.name}`)
  }

  /**
   * REDUCE, INST, OBJ: the global called with arguments. keys is the unpickler's KeySpace, for
   * reconstructors that build dicts and sets (they merge keys as Python does).
   */
  call(args: readonly unknown[], origin: PyObjectOrigin = 'reduce', keys?: KeySpace): unknown {
    if (this.behaviour.call) return this.behaviour.call(args, keys)
    if (this.opaque) return new PyObject(this, origin, asTuple(args))
    throw new PickleError(`global '${this}' cannot be called`)
  }

  /** The work a call with these arguments does beyond the items it is handed (GlobalBehaviour.work). */
  callWork(args: readonly unknown[]): number {
    return this.behaviour.work?.(args) ?? 0
  }

  /** NEWOBJ, NEWOBJ_EX: an instance made with cls.__new__(cls, *args, **kwargs). */
  newObject(args: readonly unknown[], kwargs: unknown, origin: 'newobj' | 'newobj_ex' = 'newobj'): unknown {
    if (this.behaviour.newObject) return this.behaviour.newObject(args, kwargs)
    if (this.opaque) {
      this.assertMayBeType()
      return new PyObject(this, origin, asTuple(args), kwargs)
    }
    throw new PickleError(`global '${this}' cannot create instances with NEWOBJ`)
  }

  /**
   * An opaque global stands for a class unless it names one of Python's builtin functions,
   * which CPython refuses as the class of NEWOBJ and of copyreg._reconstructor.
   */
  assertMayBeType(): void {
    if (this.module === 'builtins' && BUILTIN_NON_TYPES.has(this.name)) {
      throw new PickleError(`an instance needs a class, got global '${this}', which is a builtin function, not a type`)
    }
  }

  toString(): string {
    return this.extensionCode !== null && this.opaque ? `<extension code ${this.extensionCode}>` : `${this.module}.${this.name}`
  }
}

/** The callables of Python 3.11's builtins module that are not types (site's help, exit, ... included). */
const BUILTIN_NON_TYPES: ReadonlySet<string> = new Set([
  '__build_class__', '__import__', 'abs', 'aiter', 'all', 'anext', 'any', 'ascii', 'bin', 'breakpoint', 'callable',
  'chr', 'compile', 'copyright', 'credits', 'delattr', 'dir', 'divmod', 'eval', 'exec', 'exit', 'format', 'getattr',
  'globals', 'hasattr', 'hash', 'help', 'hex', 'id', 'input', 'isinstance', 'issubclass', 'iter', 'len', 'license',
  'locals', 'max', 'min', 'next', 'oct', 'open', 'ord', 'pow', 'print', 'quit', 'repr', 'round', 'setattr', 'sorted',
  'sum', 'vars',
])

/** What a registered global does when a pickle calls or instantiates it. */
export interface GlobalBehaviour {
  /**
   * cls(*args): REDUCE, INST and OBJ. keys, when given, is the unpickler's KeySpace: a
   * reconstructor that builds a dict or set inserts through it, so that keys Python would
   * merge are merged.
   */
  call?(args: readonly unknown[], keys?: KeySpace): unknown
  /**
   * The work a call does beyond the items it is handed (UnpicklerOptions.maxWork), when that is
   * more: bytes(n) allocating n bytes from a bare count. Default 0.
   */
  work?(args: readonly unknown[]): number
  /** cls.__new__(cls, *args, **kwargs): NEWOBJ and NEWOBJ_EX; kwargs is null for NEWOBJ. */
  newObject?(args: readonly unknown[], kwargs: unknown): unknown
}

/** What the opaque mode keeps of an inert object besides how it was made: BUILD, APPENDS, SETITEMS. */
export abstract class PyOpaque implements HasSetState {
  [setState](state: unknown): void {
    this.state = state
  }

  /** The BUILD state; undefined when no BUILD was applied. */
  state: unknown = undefined
  /**
   * The state setter (a reduce value's sixth item) that applied state in place of BUILD, as
   * setter(obj, state); undefined when none did.
   */
  stateSetter: unknown = undefined
  /** Items appended with APPEND/APPENDS, in order. */
  readonly listItems: unknown[] = []
  /** Pairs set with SETITEM/SETITEMS, in order. */
  readonly dictItems: [unknown, unknown][] = []
}

/**
 * An instance of a class nobody registered, kept inert by the opaque mode: the callable and
 * arguments that made it, and whatever BUILD, APPENDS and SETITEMS gave it afterwards.
 */
export class PyObject extends PyOpaque {
  constructor(
    readonly callable: PyGlobal,
    readonly origin: PyObjectOrigin,
    readonly args: Tuple,
    readonly kwargs: unknown = null,
  ) {
    super()
  }
}

/**
 * The result of calling an inert object (opaque mode, REDUCE): at protocols 2 and 3 CPython
 * writes a keyword-argument __getnewargs_ex__ as functools.partial(cls.__new__, cls, *args,
 * **kwargs)() — a call of the partial placeholder. Pickles back as the same call.
 */
export class PyObjectCall extends PyOpaque {
  constructor(
    /** What was called, or the class instantiated when origin is not 'reduce'. */
    readonly target: PyOpaque,
    readonly args: Tuple,
    /**
     * 'reduce' for a call; 'newobj', 'newobj_ex' and 'reconstructor' for an instance of a class
     * that is itself a placeholder (a nested class reached through getattr, say), made as
     * PyObject records it for a named class.
     */
    readonly origin: PyObjectOrigin = 'reduce',
    /** NEWOBJ_EX's keyword arguments; null otherwise. */
    readonly kwargs: unknown = null,
  ) {
    super()
  }
}

/**
 * Lossless mode: a Python str holding a surrogate pair as two code points of its own (written by
 * Python as two encoded surrogates). A JavaScript string cannot tell that pair from the one
 * character beyond U+FFFF it spells, which Python holds as one code point; this wrapper keeps
 * them apart, and pickles back as the two code points.
 */
export class PyStr {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value
  }
}

/** A persistent id that no persistentLoad resolved (opaque mode). */
export class PyPersistentRef {
  constructor(readonly id: unknown, readonly binary: boolean) {}
}

/** A short description of a value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (v === undefined) return 'undefined'
  if (typeof v === 'string') return v.length > 40 ? `string ${JSON.stringify(v.slice(0, 40))}...` : `string ${JSON.stringify(v)}`
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return `${typeof v} ${String(v)}`
  if (typeof v === 'function') return `function ${v.name || '(anonymous)'}`
  if (typeof v === 'symbol') return v.toString()
  const ctor = (v as { constructor?: { name?: string } }).constructor
  if (v instanceof PyGlobal) return `global ${v}`
  return ctor?.name ? `${ctor.name}` : 'object'
}
