/**
 * The registry of Python globals the unpickler may resolve, keyed by "module.name". The
 * default registry knows pure-data constructors only; anything else is refused unless the
 * application registers it (or opts into the opaque mode).
 */
import { PickleError } from './errors.js'
import { KeySpace } from './keys.js'
import { defineNumpyGlobals } from './numpy.js'
import type { ReduceValue } from './types.js'
import {
  ByteArray, Complex, Counter, Decimal, DefaultDict, Deque, Ellipsis, FrozenSet, NotImplemented, OrderedDict,
  PickleBuffer, PyDate, PyObject, PyObjectCall, PyOpaque, PyDateTime, PyFloat, PyGlobal, PyRange, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, UUID,
  asTuple, describe, type GlobalBehaviour,
} from './types.js'

/** Hooks for a registered JavaScript class, in place of Python's dunder methods. */
export interface ClassHooks<T extends object = object> {
  /** __getstate__: the BUILD state. Default: the own enumerable properties, as a dict (none when empty). */
  getState?(obj: T): unknown
  /** __setstate__: applies a BUILD state. Default: assigns a dict's entries as own properties. */
  setState?(obj: T, state: unknown): void
  /** __getnewargs__: the arguments for NEWOBJ. Default: none. */
  getNewArgs?(obj: T): readonly unknown[]
  /** __reduce_ex__: the whole recipe, overriding the three above. */
  reduce?(obj: T, protocol: number): ReduceValue
}

/** A JavaScript class or function registered under a Python global name. */
export interface Registration {
  readonly target: Function
  readonly global: PyGlobal
  readonly hooks: ClassHooks<any>
}

/** A name to value mapping for globals; a registry can fall back to a parent. */
export class GlobalRegistry {
  readonly #entries = new Map<string, unknown>()
  /** The same entries by module, then name: a lookup hashes the two strings it has, without joining them. */
  readonly #byModule = new Map<string, Map<string, unknown>>()
  readonly #registrations = new Map<Function, Registration>()
  #frozen = false

  constructor(readonly parent: GlobalRegistry | null = null) {}

  /** The value for module.name, or undefined when neither this registry nor its parents have it. */
  get(module: string, name: string): unknown {
    const names = this.#byModule.get(module)
    if (names !== undefined && names.has(name)) return names.get(name)
    return this.parent?.get(module, name)
  }

  has(module: string, name: string): boolean {
    return this.#byModule.get(module)?.has(name) === true || (this.parent?.has(module, name) ?? false)
  }

  /** Registers any value (a PyGlobal, a function, a constant) under module.name. */
  set(module: string, name: string, value: unknown): this {
    if (this.#frozen) throw new PickleError('this registry is frozen; make a new GlobalRegistry(parent) to extend it')
    this.#entries.set(`${module}.${name}`, value)
    let names = this.#byModule.get(module)
    if (names === undefined) this.#byModule.set(module, (names = new Map()))
    names.set(name, value)
    return this
  }

  /** Registers a PyGlobal with the given behaviour and returns it. */
  define(module: string, name: string, behaviour: GlobalBehaviour): PyGlobal {
    const g = new PyGlobal(module, name, behaviour)
    this.set(module, name, g)
    return g
  }

  /**
   * Registers a JavaScript class under a Python "module.name": its instances pickle as
   * instances of that class (NEWOBJ and BUILD, or the hooks' reduce), and loading that class
   * makes instances of this one without running its constructor, as Python's __new__ does.
   */
  registerClass<T extends object>(cls: abstract new (...args: any[]) => T, qualifiedName: string, hooks: ClassHooks<T> = {}): PyGlobal {
    const [module, name] = splitQualifiedName(qualifiedName)
    const g = new PyGlobal(module, name, {
      call: (args) => Reflect.construct(cls, spreadable(args, cls)),
      newObject: () => Object.create(cls.prototype),
    })
    return this.#register(cls, g, hooks)
  }

  /** Registers a JavaScript function under a Python "module.name": REDUCE calls it, and it pickles as that global. */
  registerFunction(fn: (...args: any[]) => unknown, qualifiedName: string): PyGlobal {
    const [module, name] = splitQualifiedName(qualifiedName)
    return this.#register(fn, new PyGlobal(module, name, { call: (args) => fn(...spreadable(args, fn)) }), {})
  }

  #register(target: Function, g: PyGlobal, hooks: ClassHooks<any>): PyGlobal {
    this.set(g.module, g.name, g)
    this.#registrations.set(target, { target, global: g, hooks })
    return g
  }

  /** The registration of a class or function, here or in a parent. */
  registration(target: Function): Registration | undefined {
    return this.#registrations.get(target) ?? this.parent?.registration(target)
  }

  /** Every key registered here and in the parents. */
  keys(): string[] {
    return [...new Set([...(this.parent?.keys() ?? []), ...this.#entries.keys()])]
  }

  freeze(): this {
    this.#frozen = true
    return this
  }
}

function splitQualifiedName(q: string): [string, string] {
  const dot = q.lastIndexOf('.')
  if (dot <= 0 || dot === q.length - 1) throw new PickleError(`expected a qualified name "module.name", got ${JSON.stringify(q)}`)
  return [q.slice(0, dot), q.slice(dot + 1)]
}

/** Thrown by reconstructors; the unpickler adds the global's name. */
function bad(what: string): never {
  throw new PickleError(what)
}

function argc(args: readonly unknown[], min: number, max: number, who: string): void {
  if (args.length < min || args.length > max) {
    bad(`${who}() takes ${min === max ? min : `${min} to ${max}`} arguments, got ${args.length}`)
  }
}

function isInt(v: unknown): v is number | bigint {
  return typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v))
}

function int(v: unknown, who: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v)
  return bad(`${who} needs an integer, got ${describe(v)}`)
}

function num(v: unknown, who: string): number {
  if (typeof v === 'number') return v
  if (v instanceof PyFloat) return v.value
  if (typeof v === 'bigint') return Number(v)
  if (typeof v === 'boolean') return v ? 1 : 0
  return bad(`${who} needs a number, got ${describe(v)}`)
}

/** Items of a Python iterable as a pickle delivers it (list, tuple, set, dict keys, str). */
export function iterableItems(v: unknown, who: string): unknown[] {
  if (Array.isArray(v)) return v
  if (v instanceof Set) return [...v]
  if (v instanceof Map) return [...v.keys()]
  if (typeof v === 'string') return [...v]
  if (v instanceof Uint8Array) return [...v]
  return bad(`${who} needs an iterable, got ${describe(v)}`)
}

/** Key, value pairs of a Python dict as the unpickler represents it (a Map or a plain object). */
export function dictEntries(v: unknown, who: string): [unknown, unknown][] {
  if (v instanceof Map) return [...v.entries()]
  if (v !== null && typeof v === 'object' && isPlainObject(v)) return Object.entries(v)
  return bad(`${who} needs a dict, got ${describe(v)}`)
}

export function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/**
 * Most arguments a pickle may pass to a JavaScript function (a registered function or class,
 * or one findClass returns): they are spread onto the engine's stack, which overflows
 * somewhere past 100,000 (300,000 did here). The default reconstructors take the array as it
 * is, and opaque placeholders keep it: neither has a limit.
 */
export const MAX_SPREAD_ARGS = 65_535

/** args, when a JavaScript function can be handed them as arguments; else a PickleError naming it. */
export function spreadable(args: readonly unknown[], fn: Function): readonly unknown[] {
  if (args.length > MAX_SPREAD_ARGS) {
    throw new PickleError(`a call of ${fn.name || 'a function'} with ${args.length} arguments: more than ${MAX_SPREAD_ARGS} are not passed to a JavaScript function`)
  }
  return args
}

/** Largest bytearray(n) or bytes(n) the default reconstructors will allocate from a bare count. */
export const MAX_ZERO_FILL = 64 * 1024 * 1024

/**
 * The work of bytes(n) and bytearray(n) beyond their arguments: the n bytes they allocate from
 * a bare count, charged to the load's work budget so that a few bytes of pickle cannot ask for
 * gigabytes by repeating the call (each call alone stays under MAX_ZERO_FILL).
 */
function zeroFillWork(args: readonly unknown[]): number {
  // A count over MAX_ZERO_FILL is charged nothing: the call refuses it, saying so.
  const n = isInt(args[0]) ? Number(args[0]) : 0
  return n > 0 && n <= MAX_ZERO_FILL ? n : 0
}

function bytesFrom(args: readonly unknown[], who: string): Uint8Array {
  argc(args, 0, 3, who)
  if (args.length === 0) return new Uint8Array(0)
  const [src, encoding] = args
  if (src instanceof PickleBuffer) return src.raw().slice()
  if (src instanceof Uint8Array) return src.slice()
  if (typeof src === 'string') {
    if (typeof encoding !== 'string') bad(`${who}() of a string needs an encoding (a str), got ${describe(encoding)}`)
    return encodeText(src, encoding, who)
  }
  if (isInt(src)) {
    const n = int(src, who)
    if (n < 0) bad(`${who}() count must not be negative, got ${n}`)
    if (n > MAX_ZERO_FILL) bad(`${who}(${n}) would allocate more than ${MAX_ZERO_FILL} bytes from a bare count`)
    return new Uint8Array(n)
  }
  const items = iterableItems(src, who)
  const out = new Uint8Array(items.length)
  items.forEach((x, i) => {
    const b = int(x, who)
    if (b < 0 || b > 255) bad(`${who}() items must be in range(0, 256), got ${b}`)
    out[i] = b
  })
  return out
}

/** str.encode for the encodings pickles use (_codecs.encode and bytearray(str, encoding)). */
export function encodeText(s: string, encoding: string, who: string): Uint8Array {
  const e = encoding.toLowerCase().replace(/[-_ ]/g, '')
  if (e === 'latin1' || e === 'iso88591' || e === 'l1' || e === 'ascii') {
    const limit = e === 'ascii' ? 0x7f : 0xff
    const out = new Uint8Array(s.length)
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      if (c > limit) bad(`${who}: '${encoding}' codec can't encode character U+${c.toString(16).padStart(4, '0')} in position ${i}`)
      out[i] = c
    }
    return out
  }
  if (e === 'utf8') return new TextEncoder().encode(s)
  return bad(`${who}: unsupported encoding '${encoding}'`)
}

function bytesState(v: unknown, len: number, who: string): Uint8Array {
  // Python 2 pickles, loaded with encoding='latin1', give the state as a str of code points < 256.
  const b = typeof v === 'string' ? encodeText(v, 'latin1', who) : v instanceof Uint8Array ? v : null
  if (b === null || b.length !== len) bad(`${who} state must be ${len} bytes, got ${describe(v)}`)
  return b
}

function microseconds(b: Uint8Array, at: number): number {
  return (b[at]! << 16) | (b[at + 1]! << 8) | b[at + 2]!
}

function tzArg(v: unknown, who: string): unknown {
  if (v === undefined || v === null) return null
  if (v instanceof PyTimeZone || (typeof v === 'object' && v !== null)) return v
  return bad(`${who} tzinfo must be a tzinfo, got ${describe(v)}`)
}

function makeDateTime(args: readonly unknown[]): PyDateTime {
  const who = 'datetime.datetime'
  if (args.length >= 1 && args.length <= 2 && (args[0] instanceof Uint8Array || typeof args[0] === 'string')) {
    const b = bytesState(args[0], 10, who)
    const month = b[2]!
    return new PyDateTime(b[0]! * 256 + b[1]!, month & 0x7f, b[3]!, b[4]!, b[5]!, b[6]!, microseconds(b, 7), tzArg(args[1], who), month > 127 ? 1 : 0)
  }
  argc(args, 3, 8, who)
  const n = (i: number): number => (args[i] === undefined ? 0 : int(args[i], who))
  return new PyDateTime(n(0), n(1), n(2), n(3), n(4), n(5), n(6), tzArg(args[7], who))
}

function makeTime(args: readonly unknown[]): PyTime {
  const who = 'datetime.time'
  if (args.length >= 1 && args.length <= 2 && (args[0] instanceof Uint8Array || typeof args[0] === 'string')) {
    const b = bytesState(args[0], 6, who)
    const hour = b[0]!
    return new PyTime(hour & 0x7f, b[1]!, b[2]!, microseconds(b, 3), tzArg(args[1], who), hour > 127 ? 1 : 0)
  }
  argc(args, 0, 5, who)
  const n = (i: number): number => (args[i] === undefined ? 0 : int(args[i], who))
  return new PyTime(n(0), n(1), n(2), n(3), tzArg(args[4], who))
}

function makeDate(args: readonly unknown[]): PyDate {
  const who = 'datetime.date'
  if (args.length === 1) {
    const b = bytesState(args[0], 4, who)
    return new PyDate(b[0]! * 256 + b[1]!, b[2]!, b[3]!)
  }
  argc(args, 3, 3, who)
  return new PyDate(int(args[0], who), int(args[1], who), int(args[2], who))
}

/** datetime.timedelta(days, seconds, microseconds), normalized as Python's constructor does. */
function makeTimeDelta(args: readonly unknown[]): PyTimeDelta {
  const who = 'datetime.timedelta'
  argc(args, 0, 3, who)
  const n = (i: number): bigint => {
    const v = args[i]
    return typeof v === 'bigint' ? v : BigInt(v === undefined ? 0 : int(v, who))
  }
  // Floor division carries into the larger unit and leaves 0 <= microseconds < 10^6, 0 <= seconds < 86,400.
  const floorDiv = (a: bigint, b: bigint): bigint => (a % b !== 0n && a < 0n ? a / b - 1n : a / b)
  let us = n(2)
  const secCarry = floorDiv(us, 1_000_000n)
  us -= secCarry * 1_000_000n
  let sec = n(1) + secCarry
  const dayCarry = floorDiv(sec, 86_400n)
  sec -= dayCarry * 86_400n
  const days = n(0) + dayCarry
  if (days > 999_999_999n || days < -999_999_999n) bad(`${who}: days=${days}; must have magnitude <= 999999999`)
  return new PyTimeDelta(Number(days), Number(sec), Number(us))
}

function makeTimeZone(args: readonly unknown[]): PyTimeZone {
  const who = 'datetime.timezone'
  argc(args, 1, 2, who)
  if (!(args[0] instanceof PyTimeDelta)) bad(`${who} needs a timedelta offset, got ${describe(args[0])}`)
  const name = args[1]
  if (name !== undefined && name !== null && typeof name !== 'string') bad(`${who} name must be a str, got ${describe(name)}`)
  return new PyTimeZone(args[0], name ?? null)
}

function makeUUIDObject(): UUID {
  return new UUID()
}

function makeDecimal(args: readonly unknown[]): Decimal {
  argc(args, 0, 2, 'decimal.Decimal')
  const v = args[0] ?? '0'
  if (typeof v === 'string') return new Decimal(v)
  if (isInt(v)) return new Decimal(String(v))
  return bad(`decimal.Decimal needs a str, got ${describe(v)}`)
}

function makeRange(args: readonly unknown[]): PyRange {
  argc(args, 1, 3, 'range')
  for (const a of args) if (!isInt(a)) bad(`range() needs integers, got ${describe(a)}`)
  const [a, b, c] = args as (number | bigint)[]
  if (args.length === 1) return new PyRange(0, a!, 1)
  if (c !== undefined && (c === 0 || c === 0n)) bad('range() arg 3 must not be zero')
  return new PyRange(a!, b!, c ?? 1)
}

/** copyreg._reconstructor(cls, base, state): object.__new__(cls) for classes pickled below protocol 2. */
function reconstructor(this: void, args: readonly unknown[]): unknown {
  argc(args, 3, 3, 'copyreg._reconstructor')
  const [cls, base, state] = args
  // A class that is a placeholder itself (reached through getattr, say): inert as well.
  if (cls instanceof PyOpaque) return new PyObjectCall(cls, asTuple(args), 'reconstructor')
  if (!(cls instanceof PyGlobal)) return bad(`copyreg._reconstructor needs a class, got ${describe(cls)}`)
  // An unknown class: keep an inert record of this very call, so that it pickles back as one.
  if (cls.opaque) {
    cls.assertMayBeType()
    return new PyObject(cls, 'reconstructor', asTuple(args))
  }
  if (!(base instanceof PyGlobal) || base.module !== 'builtins' || base.name !== 'object' || state !== null) {
    return bad(`copyreg._reconstructor supports base 'builtins.object' only, got ${describe(base)}`)
  }
  return cls.newObject([], null)
}

function newobjCall(args: readonly unknown[], withKwargs: boolean): unknown {
  const who = withKwargs ? 'copyreg.__newobj_ex__' : 'copyreg.__newobj__'
  const cls = args[0]
  if (cls instanceof PyOpaque) {
    if (withKwargs) argc(args, 3, 3, who)
    return withKwargs
      ? new PyObjectCall(cls, asTuple(iterableItems(args[1], who)), 'newobj_ex', args[2])
      : new PyObjectCall(cls, asTuple(args.slice(1)), 'newobj')
  }
  if (!(cls instanceof PyGlobal)) return bad(`${who} needs a class, got ${describe(cls)}`)
  if (withKwargs) {
    argc(args, 3, 3, who)
    return cls.newObject(iterableItems(args[1], who), args[2], 'newobj_ex')
  }
  return cls.newObject(args.slice(1), null)
}

function complexFrom(args: readonly unknown[]): Complex {
  argc(args, 0, 2, 'complex')
  const [re, im] = args
  if (re instanceof Complex && im === undefined) return re
  if (typeof re === 'string') {
    if (im !== undefined) bad('complex() can\'t take second arg if first is a string')
    return parseComplex(re)
  }
  return new Complex(re === undefined ? 0 : num(re, 'complex'), im === undefined ? 0 : num(im, 'complex'))
}

/** Python's float syntax without a sign; every part matches one way only, so matching is linear. */
const FLOAT_BODY = String.raw`(?:(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:e[+-]?\d(?:_?\d)*)?|inf(?:inity)?|nan)`
const COMPLEX_REAL = new RegExp(`^[+-]?${FLOAT_BODY}$`, 'i')
/** real, sign, imag (real+imagj), or sign, imag (imagj); a missing imag number means 1. */
const COMPLEX_IMAG = new RegExp(`^(?:([+-]?${FLOAT_BODY})([+-])(${FLOAT_BODY})?|([+-]?)(${FLOAT_BODY})?)j$`, 'i')

function floatFromText(sign: string, body: string): number {
  const b = body.toLowerCase().replace(/_/g, '')
  const v = b.startsWith('inf') ? Infinity : b === 'nan' ? NaN : Number(b)
  return sign === '-' ? -v : v
}

/** complex(str): '1', '2j', '1-2.5e3j', '(-j)', 'inf+nanj', as Python reads them. */
function parseComplex(text: string): Complex {
  let t = text.trim()
  if (t.startsWith('(') && t.endsWith(')')) t = t.slice(1, -1).trim()
  if (COMPLEX_REAL.test(t)) return new Complex(floatFromText(t[0] === '-' ? '-' : '', t.replace(/^[+-]/, '')), 0)
  const m = COMPLEX_IMAG.exec(t)
  if (!m) return bad(`complex() arg is a malformed string: ${describe(text)}`)
  if (m[1] !== undefined) {
    const real = floatFromText(m[1][0] === '-' ? '-' : '', m[1].replace(/^[+-]/, ''))
    return new Complex(real, m[3] === undefined ? (m[2] === '-' ? -1 : 1) : floatFromText(m[2]!, m[3]))
  }
  return new Complex(0, m[5] === undefined ? (m[4] === '-' ? -1 : 1) : floatFromText(m[4]!, m[5]))
}

/** dict(...) and its subclasses' constructors: keys Python would merge are merged (see keys.ts). */
function dictLike<M extends Map<unknown, unknown>>(target: M, args: readonly unknown[], who: string, keys = new KeySpace()): M {
  for (const a of args) {
    if (a instanceof Map || (typeof a === 'object' && a !== null && isPlainObject(a))) {
      for (const [k, v] of dictEntries(a, who)) keys.setEntry(target, k, v)
    } else if (Array.isArray(a)) {
      for (const pair of a) {
        const kv = iterableItems(pair, who)
        if (kv.length !== 2) bad(`${who} sequence items must be pairs`)
        keys.setEntry(target, kv[0], kv[1])
      }
    } else {
      bad(`${who} needs a mapping or pairs, got ${describe(a)}`)
    }
  }
  return target
}

/**
 * collections.Counter(x): a mapping's entries as they are, any other iterable's items counted,
 * as Counter.update does; keys Python would merge are counted together.
 */
function counterOf(args: readonly unknown[], keys = new KeySpace()): Counter {
  const who = 'collections.Counter'
  argc(args, 0, 1, who)
  const c = new Counter()
  const a = args[0]
  if (a === undefined || a instanceof Map || (typeof a === 'object' && a !== null && isPlainObject(a))) return dictLike(c, args, who, keys)
  for (const x of iterableItems(a, who)) {
    const n = keys.getEntry(c, x) ?? 0
    keys.setEntry(c, x, typeof n === 'bigint' ? n + 1n : num(n, who) + 1)
  }
  return c
}

/** set(...) and frozenset(...): members Python would merge are merged (see keys.ts). */
function setOf<S extends Set<unknown>>(target: S, args: readonly unknown[], who: string, keys = new KeySpace()): S {
  if (args.length) for (const x of iterableItems(args[0], who)) keys.addMember(target, x)
  return target
}

/** Builtin types whose __new__ makes the value from its arguments. */
const NEW_TAKES_VALUE: ReadonlySet<string> = new Set(['int', 'float', 'str', 'bytes', 'tuple', 'frozenset', 'complex', 'bool', 'range', 'slice'])
/** Builtin types whose __new__ makes an empty value whatever its arguments (__init__ fills it). */
const NEW_STARTS_EMPTY: ReadonlySet<string> = new Set(['list', 'dict', 'set', 'bytearray'])

function noKwargs(kwargs: unknown, who: string): void {
  const n = kwargs instanceof Map ? kwargs.size : kwargs === null || kwargs === undefined ? 0 : typeof kwargs === 'object' ? Object.keys(kwargs).length : 1
  if (n > 0) bad(`${who}.__new__ with keyword arguments is not supported, got ${describe(kwargs)}`)
}

function defineAll(r: GlobalRegistry): void {
  const call = (module: string, name: string, fn: (args: readonly unknown[], keys?: KeySpace) => unknown, work?: (args: readonly unknown[]) => number): PyGlobal => {
    const behaviour: GlobalBehaviour = work ? { call: fn, work } : { call: fn }
    if (module === 'builtins') {
      // NEWOBJ is cls.__new__(cls, *args), without __init__: the immutable builtin types take
      // their value from args there, the mutable ones start empty and ignore args, as in CPython.
      if (NEW_TAKES_VALUE.has(name)) behaviour.newObject = (args, kwargs) => (noKwargs(kwargs, name), fn(args))
      else if (NEW_STARTS_EMPTY.has(name)) behaviour.newObject = (_args, kwargs) => (noKwargs(kwargs, name), fn([]))
    }
    return r.define(module, name, behaviour)
  }
  const b = 'builtins'

  call(b, 'set', (args, keys) => (argc(args, 0, 1, 'set'), setOf(new Set(), args, 'set', keys)))
  call(b, 'frozenset', (args, keys) => (argc(args, 0, 1, 'frozenset'), setOf(new FrozenSet(), args, 'frozenset', keys)))
  call(b, 'bytearray', (args) => {
    // bytesFrom's result is always fresh memory of its own: the bytearray takes it as it is.
    const src = bytesFrom(args, 'bytearray')
    return new ByteArray(src.buffer as ArrayBuffer, src.byteOffset, src.byteLength)
  }, zeroFillWork)
  call(b, 'bytes', (args) => bytesFrom(args, 'bytes'), zeroFillWork)
  call(b, 'complex', complexFrom)
  call(b, 'range', makeRange)
  call(b, 'slice', (args) => {
    argc(args, 1, 3, 'slice')
    return args.length === 1 ? new Slice(null, args[0], null) : new Slice(args[0], args[1], args[2] ?? null)
  })
  call(b, 'list', (args) => (argc(args, 0, 1, 'list'), args.length ? [...iterableItems(args[0], 'list')] : []))
  call(b, 'tuple', (args) => (argc(args, 0, 1, 'tuple'), Tuple.fromItems(args.length ? iterableItems(args[0], 'tuple') : [])))
  call(b, 'dict', (args, keys) => dictLike(new Map(), args, 'dict', keys))
  call(b, 'str', (args) => (argc(args, 0, 1, 'str'), args.length ? (typeof args[0] === 'string' ? args[0] : bad(`str() of ${describe(args[0])} is not supported`)) : ''))
  call(b, 'int', (args) => (argc(args, 0, 1, 'int'), args.length ? (isInt(args[0]) ? args[0] : bad(`int() of ${describe(args[0])} is not supported`)) : 0))
  call(b, 'float', (args) => (argc(args, 0, 1, 'float'), args.length ? num(args[0], 'float') : 0))
  call(b, 'bool', (args) => (argc(args, 0, 1, 'bool'), args.length ? (typeof args[0] === 'boolean' ? args[0] : bad(`bool() of ${describe(args[0])} is not supported`)) : false))
  r.define(b, 'object', {})
  r.set(b, 'Ellipsis', Ellipsis)
  r.set(b, 'NotImplemented', NotImplemented)

  call('copyreg', '_reconstructor', reconstructor)
  call('copyreg', '__newobj__', (args) => newobjCall(args, false))
  call('copyreg', '__newobj_ex__', (args) => newobjCall(args, true))
  call('_codecs', 'encode', (args) => {
    argc(args, 1, 3, '_codecs.encode')
    const [text, encoding] = args
    if (typeof text !== 'string') return bad(`_codecs.encode needs a str, got ${describe(text)}`)
    if (encoding !== undefined && typeof encoding !== 'string') return bad(`_codecs.encode needs an encoding (a str), got ${describe(encoding)}`)
    return encodeText(text, encoding ?? 'utf-8', '_codecs.encode')
  })

  call('collections', 'OrderedDict', (args, keys) => dictLike(new OrderedDict(), args, 'collections.OrderedDict', keys))
  call('collections', 'Counter', counterOf)
  call('collections', 'defaultdict', (args, keys) => dictLike(new DefaultDict(args[0] ?? null), args.slice(1), 'collections.defaultdict', keys))
  call('collections', 'deque', (args) => {
    argc(args, 0, 2, 'collections.deque')
    const d = new Deque()
    // One push per item: spreading a long list as arguments overflows the call stack.
    if (args.length > 0) for (const x of iterableItems(args[0], 'collections.deque')) d.push(x)
    const maxlen = args[1]
    if (maxlen !== undefined && maxlen !== null) {
      d.maxlen = int(maxlen, 'collections.deque maxlen')
      if (d.maxlen < 0) bad(`collections.deque maxlen must be non-negative, got ${d.maxlen}`)
      if (d.length > d.maxlen) d.splice(0, d.length - d.maxlen)
    }
    return d
  })

  call('datetime', 'datetime', makeDateTime)
  call('datetime', 'date', makeDate)
  call('datetime', 'time', makeTime)
  call('datetime', 'timedelta', makeTimeDelta)
  call('datetime', 'timezone', makeTimeZone)
  call('decimal', 'Decimal', makeDecimal)
  r.define('uuid', 'UUID', { newObject: makeUUIDObject, call: (args) => {
    argc(args, 1, 1, 'uuid.UUID')
    if (typeof args[0] !== 'string') bad(`uuid.UUID needs a str of 32 hex digits, got ${describe(args[0])}`)
    const hex = args[0].replace(/^urn:uuid:|[{}-]/g, '')
    if (!/^[0-9a-fA-F]{32}$/.test(hex)) bad(`uuid.UUID needs 32 hex digits, got ${describe(args[0])}`)
    return new UUID(BigInt('0x' + hex))
  } })

  defineNumpyGlobals(r)
}

/** The default registry: pure-data constructors only. Frozen; extend it with new GlobalRegistry(defaultGlobals). */
export const defaultGlobals: GlobalRegistry = (() => {
  const r = new GlobalRegistry()
  defineAll(r)
  return r.freeze()
})()

// The tables of CPython 3.11's Lib/_compat_pickle.py, entry for entry, each kept once: the
// Python 2 to 3 renames the unpickler applies, and the reverse ones the pickler applies (both
// when fixImports is on and the protocol is below 3), derived from them as _compat_pickle
// derives its REVERSE_ mappings, plus the entries each direction has alone.

/** Python 2 module names and their Python 3 homes, read and written back (IMPORT_MAPPING's first part). */
const MODULES_BOTH_WAYS: Readonly<Record<string, string>> = {
  __builtin__: 'builtins',
  copy_reg: 'copyreg',
  Queue: 'queue',
  SocketServer: 'socketserver',
  ConfigParser: 'configparser',
  repr: 'reprlib',
  tkFileDialog: 'tkinter.filedialog',
  tkSimpleDialog: 'tkinter.simpledialog',
  tkColorChooser: 'tkinter.colorchooser',
  tkCommonDialog: 'tkinter.commondialog',
  Dialog: 'tkinter.dialog',
  Tkdnd: 'tkinter.dnd',
  tkFont: 'tkinter.font',
  tkMessageBox: 'tkinter.messagebox',
  ScrolledText: 'tkinter.scrolledtext',
  Tkconstants: 'tkinter.constants',
  Tix: 'tkinter.tix',
  ttk: 'tkinter.ttk',
  Tkinter: 'tkinter',
  markupbase: '_markupbase',
  _winreg: 'winreg',
  thread: '_thread',
  dummy_thread: '_dummy_thread',
  dbhash: 'dbm.bsd',
  dumbdbm: 'dbm.dumb',
  dbm: 'dbm.ndbm',
  gdbm: 'dbm.gnu',
  xmlrpclib: 'xmlrpc.client',
  SimpleXMLRPCServer: 'xmlrpc.server',
  httplib: 'http.client',
  htmlentitydefs: 'html.entities',
  HTMLParser: 'html.parser',
  Cookie: 'http.cookies',
  cookielib: 'http.cookiejar',
  BaseHTTPServer: 'http.server',
  'test.test_support': 'test.support',
  commands: 'subprocess',
  urlparse: 'urllib.parse',
  robotparser: 'urllib.robotparser',
  urllib2: 'urllib.request',
  anydbm: 'dbm',
  _abcoll: 'collections.abc',
}

/** Read only: a second Python 2 name for a module, or a name in broken old Python 3 pickles (IMPORT_MAPPING.update). */
const MODULES_READ_ONLY: Readonly<Record<string, string>> = {
  cPickle: 'pickle',
  _elementtree: 'xml.etree.ElementTree',
  FileDialog: 'tkinter.filedialog',
  SimpleDialog: 'tkinter.simpledialog',
  DocXMLRPCServer: 'xmlrpc.server',
  SimpleHTTPServer: 'http.server',
  CGIHTTPServer: 'http.server',
  UserDict: 'collections',
  UserList: 'collections',
  UserString: 'collections',
  whichdb: 'dbm',
  StringIO: 'io',
  cStringIO: 'io',
}

/** Written only: Python 3 modules with no Python 2 twin of their own, written as the public one (REVERSE_IMPORT_MAPPING.update). */
const MODULES_WRITTEN_ONLY: Readonly<Record<string, string>> = {
  _bz2: 'bz2',
  _dbm: 'dbm',
  _functools: 'functools',
  _gdbm: 'gdbm',
  _pickle: 'pickle',
}

const MODULE_RENAMES: ReadonlyMap<string, string> = new Map(Object.entries({ ...MODULES_BOTH_WAYS, ...MODULES_READ_ONLY }))

/**
 * Python 2 "module.name"s whose Python 3 home differs from the module rename alone, read and
 * written back (NAME_MAPPING's first part; the exceptions module is PY2_EXCEPTIONS below).
 */
const NAMES_BOTH_WAYS: Readonly<Record<string, readonly [string, string]>> = {
  '__builtin__.xrange': ['builtins', 'range'],
  '__builtin__.reduce': ['functools', 'reduce'],
  '__builtin__.intern': ['sys', 'intern'],
  '__builtin__.unichr': ['builtins', 'chr'],
  '__builtin__.unicode': ['builtins', 'str'],
  '__builtin__.long': ['builtins', 'int'],
  'itertools.izip': ['builtins', 'zip'],
  'itertools.imap': ['builtins', 'map'],
  'itertools.ifilter': ['builtins', 'filter'],
  'itertools.ifilterfalse': ['itertools', 'filterfalse'],
  'itertools.izip_longest': ['itertools', 'zip_longest'],
  'UserDict.IterableUserDict': ['collections', 'UserDict'],
  'UserList.UserList': ['collections', 'UserList'],
  'UserString.UserString': ['collections', 'UserString'],
  'whichdb.whichdb': ['dbm', 'whichdb'],
  '_socket.fromfd': ['socket', 'fromfd'],
  '_multiprocessing.Connection': ['multiprocessing.connection', 'Connection'],
  'multiprocessing.process.Process': ['multiprocessing.context', 'Process'],
  'multiprocessing.forking.Popen': ['multiprocessing.popen_fork', 'Popen'],
  'urllib.ContentTooShortError': ['urllib.error', 'ContentTooShortError'],
  'urllib.getproxies': ['urllib.request', 'getproxies'],
  'urllib.pathname2url': ['urllib.request', 'pathname2url'],
  'urllib.quote_plus': ['urllib.parse', 'quote_plus'],
  'urllib.quote': ['urllib.parse', 'quote'],
  'urllib.unquote_plus': ['urllib.parse', 'unquote_plus'],
  'urllib.unquote': ['urllib.parse', 'unquote'],
  'urllib.url2pathname': ['urllib.request', 'url2pathname'],
  'urllib.urlcleanup': ['urllib.request', 'urlcleanup'],
  'urllib.urlencode': ['urllib.parse', 'urlencode'],
  'urllib.urlopen': ['urllib.request', 'urlopen'],
  'urllib.urlretrieve': ['urllib.request', 'urlretrieve'],
  'urllib2.HTTPError': ['urllib.error', 'HTTPError'],
  'urllib2.URLError': ['urllib.error', 'URLError'],
  'multiprocessing.AuthenticationError': ['multiprocessing.context', 'AuthenticationError'],
  'multiprocessing.BufferTooShort': ['multiprocessing.context', 'BufferTooShort'],
  'multiprocessing.ProcessError': ['multiprocessing.context', 'ProcessError'],
  'multiprocessing.TimeoutError': ['multiprocessing.context', 'TimeoutError'],
}

/** Read only: Python 3 writes these targets back under their other Python 2 name (NAME_MAPPING.update). */
const NAMES_READ_ONLY: Readonly<Record<string, readonly [string, string]>> = {
  '__builtin__.basestring': ['builtins', 'str'],
  'UserDict.UserDict': ['collections', 'UserDict'],
  'socket._socketobject': ['socket', 'SocketType'],
  'exceptions.StandardError': ['builtins', 'Exception'],
}

/** Written only: Python 3 "module.name"s written as a Python 2 name nothing reads back (REVERSE_NAME_MAPPING.update). */
const NAMES_WRITTEN_ONLY: Readonly<Record<string, readonly [string, string]>> = {
  '_functools.reduce': ['__builtin__', 'reduce'],
  'tkinter.filedialog.FileDialog': ['FileDialog', 'FileDialog'],
  'tkinter.filedialog.LoadFileDialog': ['FileDialog', 'LoadFileDialog'],
  'tkinter.filedialog.SaveFileDialog': ['FileDialog', 'SaveFileDialog'],
  'tkinter.simpledialog.SimpleDialog': ['SimpleDialog', 'SimpleDialog'],
  'xmlrpc.server.ServerHTMLDoc': ['DocXMLRPCServer', 'ServerHTMLDoc'],
  'xmlrpc.server.XMLRPCDocGenerator': ['DocXMLRPCServer', 'XMLRPCDocGenerator'],
  'xmlrpc.server.DocXMLRPCRequestHandler': ['DocXMLRPCServer', 'DocXMLRPCRequestHandler'],
  'xmlrpc.server.DocXMLRPCServer': ['DocXMLRPCServer', 'DocXMLRPCServer'],
  'xmlrpc.server.DocCGIXMLRPCRequestHandler': ['DocXMLRPCServer', 'DocCGIXMLRPCRequestHandler'],
  'http.server.SimpleHTTPRequestHandler': ['SimpleHTTPServer', 'SimpleHTTPRequestHandler'],
  'http.server.CGIHTTPRequestHandler': ['CGIHTTPServer', 'CGIHTTPRequestHandler'],
  '_socket.socket': ['socket', '_socketobject'],
}

/** Python 3's finer exceptions, written as the Python 2 exception they refine. */
const PY3_OSERROR_EXCEPTIONS = [
  'BrokenPipeError', 'ChildProcessError', 'ConnectionAbortedError', 'ConnectionError', 'ConnectionRefusedError',
  'ConnectionResetError', 'FileExistsError', 'FileNotFoundError', 'InterruptedError', 'IsADirectoryError',
  'NotADirectoryError', 'PermissionError', 'ProcessLookupError', 'TimeoutError',
] as const
const PY3_IMPORTERROR_EXCEPTIONS = ['ModuleNotFoundError'] as const

const NAME_RENAMES: ReadonlyMap<string, readonly [string, string]> = new Map(Object.entries({ ...NAMES_BOTH_WAYS, ...NAMES_READ_ONLY }))

/** The Python 2 exceptions module's classes, which moved to builtins under the same names. */
const PY2_EXCEPTIONS: ReadonlySet<string> = new Set([
  'ArithmeticError', 'AssertionError', 'AttributeError', 'BaseException', 'BufferError', 'BytesWarning',
  'DeprecationWarning', 'EOFError', 'EnvironmentError', 'Exception', 'FloatingPointError', 'FutureWarning',
  'GeneratorExit', 'IOError', 'ImportError', 'ImportWarning', 'IndentationError', 'IndexError', 'KeyError',
  'KeyboardInterrupt', 'LookupError', 'MemoryError', 'NameError', 'NotImplementedError', 'OSError',
  'OverflowError', 'PendingDeprecationWarning', 'ReferenceError', 'RuntimeError', 'RuntimeWarning',
  'StopIteration', 'SyntaxError', 'SyntaxWarning', 'SystemError', 'SystemExit', 'TabError', 'TypeError',
  'UnboundLocalError', 'UnicodeDecodeError', 'UnicodeEncodeError', 'UnicodeError', 'UnicodeTranslateError',
  'UnicodeWarning', 'UserWarning', 'ValueError', 'Warning', 'ZeroDivisionError',
])

/**
 * Python 2 module names that name no Python 3 module: the modules _compat_pickle renames,
 * except the three that Python 3 also has (dbm, _elementtree, test.test_support), and the
 * two that only its NAME_MAPPING names. CPython imports these only through fix_imports,
 * below protocol 3; anywhere else its Unpickler fails with ModuleNotFoundError.
 */
const PYTHON2_ONLY_MODULES: ReadonlySet<string> = new Set([
  ...[...MODULE_RENAMES.keys()].filter((m) => m !== 'dbm' && m !== '_elementtree' && m !== 'test.test_support'),
  'exceptions', 'multiprocessing.forking',
])

/** Whether module is a Python 2 module name that Python 3 reads only through fix_imports. */
export function isPython2Module(module: string): boolean {
  return PYTHON2_ONLY_MODULES.has(module)
}

/** Maps a Python 2 global name to its Python 3 name (Python's fix_imports). */
export function fixImport(module: string, name: string): [string, string] {
  const renamed = NAME_RENAMES.get(`${module}.${name}`)
  if (renamed) return [renamed[0], renamed[1]]
  if (module === 'exceptions' && PY2_EXCEPTIONS.has(name)) return ['builtins', name]
  return [MODULE_RENAMES.get(module) ?? module, name]
}

/** Python 3 "module.name"s written the Python 2 way (_compat_pickle.REVERSE_NAME_MAPPING, 112 entries). */
const REVERSE_NAMES: ReadonlyMap<string, readonly [string, string]> = (() => {
  const m = new Map<string, readonly [string, string]>()
  const py2 = (key: string): readonly [string, string] => {
    const dot = key.lastIndexOf('.')
    return [key.slice(0, dot), key.slice(dot + 1)]
  }
  for (const [from, [module, name]] of Object.entries(NAMES_BOTH_WAYS)) m.set(`${module}.${name}`, py2(from))
  for (const e of PY2_EXCEPTIONS) m.set(`builtins.${e}`, ['exceptions', e])
  for (const [from, to] of Object.entries(NAMES_WRITTEN_ONLY)) m.set(from, to)
  for (const e of PY3_OSERROR_EXCEPTIONS) m.set(`builtins.${e}`, ['exceptions', 'OSError'])
  for (const e of PY3_IMPORTERROR_EXCEPTIONS) m.set(`builtins.${e}`, ['exceptions', 'ImportError'])
  return m
})()

/** Python 3 modules written under their Python 2 names (_compat_pickle.REVERSE_IMPORT_MAPPING, 47 entries). */
const REVERSE_MODULES: ReadonlyMap<string, string> = new Map([
  ...Object.entries(MODULES_BOTH_WAYS).map(([py2, py3]) => [py3, py2] as const),
  ...Object.entries(MODULES_WRITTEN_ONLY),
])

/** Maps a Python 3 global name to the name Python 2 knows (the pickler's fix_imports). */
export function reverseFixImport(module: string, name: string): [string, string] {
  const renamed = REVERSE_NAMES.get(`${module}.${name}`)
  if (renamed) return [renamed[0], renamed[1]]
  return [REVERSE_MODULES.get(module) ?? module, name]
}
