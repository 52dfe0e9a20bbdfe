/**
 * The JavaScript values mode of the shared-memory carriers: between two JavaScript ends a
 * value comes back as the JavaScript types it was sent as, as structuredClone gives them. It
 * is still a protocol-5 pickle with out-of-band buffers. What pickle writes natively stays
 * native: null, booleans, numbers (int when a safe integer, else float, so -0 and NaN keep),
 * strings, dense Arrays (list) and plain objects (dict, loaded as plain objects). The rest are
 * calls of private globals of module `_picklewire_js`, known only to this mode's unpickler:
 *
 *   undefined()                undefined
 *   bigint(decimal)            a bigint (an int would load as a number when small)
 *   Map() + setEntries(m, [k0, v0, k1, v1, ...])        keys by JavaScript identity, not Python equality
 *   Set() + addMembers(s, [x0, x1, ...])
 *   Array(length) + setItems(a, [i0, v0, ...])          an Array with holes
 *   Object() + SETITEMS                                 an instance of a class: its own enumerable properties
 *   Date(time), RegExp(source, flags), Boxed(primitive)
 *   Error(name) + setErrorFields(e, {stack, message, cause})
 *   ArrayBuffer(buffer), SharedArrayBuffer(buffer)      a copy of the buffer's bytes
 *   View(class name, buffer)                            a TypedArray or DataView over the buffer's memory
 *
 * Containers are filled by a state setter after the container is memoized, so shared and
 * cyclic references come back as they were. Buffers go as PickleBuffers: out of band (into the
 * arena, or found there) when big, so a TypedArray arrives over the arena memory, not copied.
 */
import {
  ByteArray, Complex, Counter, DType, Decimal, DefaultDict, Deque, FrozenSet, NDArray, NotImplemented, NumpyScalar, OrderedDict,
  PickleBuffer, PyDate, PyDateTime, PyFloat, PyGlobal, PyObject, PyObjectCall, PyOpaque, PyPersistentRef, PyRange, PySingleton,
  PyStr, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, UUID, UnpicklingError,
  type FindClass, type ReduceValue,
} from '@picklewire/codec'

/** How values come back on the shared-memory carriers. */
export type ValuesMode = 'javascript' | 'python'

export const JS_MODULE = '_picklewire_js'

const g = (name: string): PyGlobal => new PyGlobal(JS_MODULE, name)
const G = {
  undefined: g('undefined'), bigint: g('bigint'), Map: g('Map'), setEntries: g('setEntries'), Set: g('Set'), addMembers: g('addMembers'),
  Array: g('Array'), setItems: g('setItems'), Object: g('Object'), Date: g('Date'), RegExp: g('RegExp'), Boxed: g('Boxed'),
  Error: g('Error'), setErrorFields: g('setErrorFields'), ArrayBuffer: g('ArrayBuffer'), SharedArrayBuffer: g('SharedArrayBuffer'), View: g('View'),
}

type ViewClass = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView; readonly BYTES_PER_ELEMENT?: number }

/** The classes a view comes back as, by name; a subclass (Buffer) goes as the class it extends. */
const VIEW_CLASSES: ReadonlyMap<string, ViewClass> = new Map<string, ViewClass>([
  ['Uint8Array', Uint8Array], ['Int8Array', Int8Array], ['Uint8ClampedArray', Uint8ClampedArray], ['Int16Array', Int16Array],
  ['Uint16Array', Uint16Array], ['Int32Array', Int32Array], ['Uint32Array', Uint32Array], ['Float32Array', Float32Array],
  ['Float64Array', Float64Array], ['BigInt64Array', BigInt64Array], ['BigUint64Array', BigUint64Array], ['DataView', DataView],
])

/** The error classes structuredClone keeps (by name); any other error comes back as an Error. */
const ERROR_CLASSES: ReadonlyMap<string, ErrorConstructor> = new Map<string, ErrorConstructor>([
  ['Error', Error], ['EvalError', EvalError], ['RangeError', RangeError], ['ReferenceError', ReferenceError],
  ['SyntaxError', SyntaxError], ['TypeError', TypeError], ['URIError', URIError],
])

const UNDEFINED: ReduceValue = [G.undefined, []]
const NO_ITEMS: readonly unknown[] = []

/** The codec's own value classes: written as the codec writes them in either mode (the globals and arguments of the calls here among them). */
const CODEC_CLASSES: readonly Function[] = [
  PyGlobal, Tuple, PickleBuffer, NDArray, DType, NumpyScalar, ByteArray, FrozenSet, PyObject, PyObjectCall, PyOpaque, PyPersistentRef,
  PySingleton, PyFloat, PyStr, Complex, Counter, Decimal, DefaultDict, Deque, OrderedDict, PyDate, PyDateTime, PyRange, PyTime,
  PyTimeDelta, PyTimeZone, Slice, UUID,
]

function isCodecValue(v: object): boolean {
  for (const c of CODEC_CLASSES) if (v instanceof c) return true
  return false
}

/** The name of each view class, by constructor. */
const VIEW_NAMES: ReadonlyMap<unknown, string> = new Map([...VIEW_CLASSES].map(([name, cls]) => [cls, name]))

function viewClassName(v: ArrayBufferView, ctor: unknown): string {
  const exact = VIEW_NAMES.get(ctor)
  if (exact !== undefined) return exact
  for (const [name, cls] of VIEW_CLASSES) if (v instanceof cls) return name
  throw cloneError(v)
}

function cloneError(v: unknown): DOMException {
  const shown = typeof v === 'function' ? `function ${(v as Function).name || '(anonymous)'}` : Object.prototype.toString.call(v)
  return new DOMException(`${shown} could not be cloned.`, 'DataCloneError')
}

function isDense(a: readonly unknown[]): boolean {
  for (let i = 0; i < a.length; i++) if (!(i in a)) return false
  return true
}

/** The view's memory, which may be longer than a Uint8Array can be (a Float32Array of 5 GiB, say). */
function bytesOf(v: ArrayBufferView): PickleBuffer {
  return new PickleBuffer(v)
}

/**
 * The pickler's reducerOverride (with overrideNative) in this mode: NotImplemented for what
 * pickle writes natively, a private call for the rest. Throws a DataCloneError for what
 * structuredClone refuses (functions are refused by the pickler itself).
 */
export function reduceJsValue(v: unknown): ReduceValue | typeof NotImplemented {
  if (v === undefined) return UNDEFINED
  if (typeof v === 'bigint') return [G.bigint, [v.toString()]]
  if (typeof v !== 'object' || v === null) return NotImplemented
  const proto = Object.getPrototypeOf(v) as { constructor?: unknown } | null
  if (proto === null || proto === Object.prototype) return NotImplemented
  const ctor = proto.constructor
  if (ctor === Array) return isDense(v as unknown[]) ? NotImplemented : sparseArray(v as unknown[])
  // The arguments and globals of the calls made here, and TypedArrays, first: they are the commonest.
  if (ctor === PyGlobal || ctor === Tuple || ctor === PickleBuffer) return NotImplemented
  if (ArrayBuffer.isView(v) && !(v instanceof ByteArray)) return [G.View, [viewClassName(v, ctor), bytesOf(v)]]
  if (isCodecValue(v)) return NotImplemented
  if (v instanceof Map) {
    if (v.size === 0) return [G.Map, NO_ITEMS]
    const flat: unknown[] = []
    for (const [k, x] of v) flat.push(k, x)
    return [G.Map, NO_ITEMS, flat, null, null, G.setEntries]
  }
  if (v instanceof Set) return v.size === 0 ? [G.Set, NO_ITEMS] : [G.Set, NO_ITEMS, [...v], null, null, G.addMembers]
  if (v instanceof ArrayBuffer) return [G.ArrayBuffer, [new PickleBuffer(v)]]
  if (v instanceof SharedArrayBuffer) return [G.SharedArrayBuffer, [new PickleBuffer(v)]]
  if (Array.isArray(v)) return sparseArray(v)
  if (v instanceof Date) return [G.Date, [v.getTime()]]
  if (v instanceof RegExp) return [G.RegExp, [v.source, v.flags]]
  if (v instanceof Error) return errorValue(v)
  if (v instanceof Number || v instanceof String || v instanceof Boolean || v instanceof BigInt) return [G.Boxed, [v.valueOf()]]
  if (v instanceof WeakMap || v instanceof WeakSet || v instanceof WeakRef || v instanceof Promise) throw cloneError(v)
  // Any other object: its own enumerable string-keyed properties, as a plain object.
  const own = Object.keys(v)
  return [G.Object, NO_ITEMS, null, null, own.map((k) => [k, (v as Record<string, unknown>)[k]] as const)]
}

/** An Array with holes (or a subclass of Array): its length, then the indexes it has with their items. */
function sparseArray(a: readonly unknown[]): ReduceValue {
  const flat: unknown[] = []
  for (const k of Object.keys(a)) {
    const i = Number(k)
    if (Number.isInteger(i) && i >= 0 && String(i) === k && i < a.length) flat.push(i, a[i])
  }
  return [G.Array, [a.length], flat, null, null, G.setItems]
}

function errorValue(e: Error): ReduceValue {
  const fields: Record<string, unknown> = {}
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(e, k)
  if (typeof e.stack === 'string') fields.stack = e.stack
  if (has('message')) fields.message = String(e.message)
  if (has('cause')) fields.cause = e.cause
  const name = String(e.name)
  return [G.Error, [ERROR_CLASSES.has(name) ? name : 'Error'], fields, null, null, G.setErrorFields]
}

// ---- loading ----

function bad(what: string): never {
  throw new UnpicklingError(`${JS_MODULE}: ${what}`)
}

function bytesFrom(buffer: unknown, who: string): Uint8Array {
  if (buffer instanceof PickleBuffer) return buffer.raw()
  if (buffer instanceof Uint8Array) return buffer
  return bad(`${who} needs a buffer, got ${typeof buffer}`)
}

function flatItems(items: unknown, who: string, pairs: boolean): unknown[] {
  if (!Array.isArray(items) || (pairs && items.length % 2 !== 0)) bad(`${who} needs a list${pairs ? ' of key, value pairs' : ''}`)
  return items
}

function makeView(kind: unknown, buffer: unknown): ArrayBufferView {
  const cls = typeof kind === 'string' ? VIEW_CLASSES.get(kind) : undefined
  if (cls === undefined) bad(`View of an unknown class ${String(kind)}`)
  const size = cls.BYTES_PER_ELEMENT ?? 1
  // An out-of-band buffer's range, viewed in place: it may be longer than a Uint8Array can be.
  if (buffer instanceof PickleBuffer && buffer.byteOffset % size === 0) {
    if (buffer.byteLength % size !== 0) bad(`a ${kind} cannot hold ${buffer.byteLength} bytes`)
    return new cls(buffer.buffer, buffer.byteOffset, buffer.byteLength / size)
  }
  let bytes = bytesFrom(buffer, 'View')
  if (bytes.byteLength % size !== 0) bad(`a ${kind} cannot hold ${bytes.byteLength} bytes`)
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice()
  return new cls(bytes.buffer, bytes.byteOffset, bytes.byteLength / size)
}

const LOADERS: ReadonlyMap<string, (...args: unknown[]) => unknown> = new Map<string, (...args: unknown[]) => unknown>([
  ['undefined', () => undefined],
  ['bigint', (s) => (typeof s === 'string' && /^-?\d+$/.test(s) ? BigInt(s) : bad('bigint needs a decimal string'))],
  ['Map', () => new Map()],
  ['setEntries', (m, items) => {
    if (!(m instanceof Map)) bad('setEntries needs a Map')
    const flat = flatItems(items, 'setEntries', true)
    for (let i = 0; i < flat.length; i += 2) m.set(flat[i], flat[i + 1])
  }],
  ['Set', () => new Set()],
  ['addMembers', (s, items) => {
    if (!(s instanceof Set)) bad('addMembers needs a Set')
    for (const x of flatItems(items, 'addMembers', false)) s.add(x)
  }],
  ['Array', (n) => (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n < 2 ** 32 ? new Array(n) : bad('Array needs a length'))],
  ['setItems', (a, items) => {
    if (!Array.isArray(a)) bad('setItems needs an Array')
    const flat = flatItems(items, 'setItems', true)
    for (let i = 0; i < flat.length; i += 2) {
      const k = flat[i]
      if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 0 || k >= a.length) bad(`setItems index ${String(k)} is outside the Array`)
      a[k] = flat[i + 1]
    }
  }],
  ['Object', () => ({})],
  ['Date', (t) => (typeof t === 'number' ? new Date(t) : bad('Date needs a number'))],
  ['RegExp', (source, flags) => {
    if (typeof source !== 'string' || typeof flags !== 'string') bad('RegExp needs a source and flags')
    try {
      return new RegExp(source, flags)
    } catch (err) {
      return bad(`RegExp: ${(err as Error).message}`)
    }
  }],
  ['Boxed', (p) => (typeof p === 'number' || typeof p === 'string' || typeof p === 'boolean' || typeof p === 'bigint' ? Object(p) : bad('Boxed needs a primitive'))],
  // A real error object (Object.prototype.toString says Error); its own stack is replaced by the sender's.
  ['Error', (name) => new (ERROR_CLASSES.get(String(name)) ?? Error)()],
  ['setErrorFields', (e, fields) => {
    if (!(e instanceof Error) || typeof fields !== 'object' || fields === null) bad('setErrorFields needs an Error and its fields')
    for (const k of ['stack', 'message', 'cause']) {
      if (!Object.prototype.hasOwnProperty.call(fields, k)) continue
      const v = (fields as Record<string, unknown>)[k]
      Object.defineProperty(e, k, { value: k === 'cause' ? v : String(v), writable: true, enumerable: false, configurable: true })
    }
  }],
  ['ArrayBuffer', (b) => {
    const bytes = bytesFrom(b, 'ArrayBuffer')
    const ab = new ArrayBuffer(bytes.byteLength)
    new Uint8Array(ab).set(bytes)
    return ab
  }],
  ['SharedArrayBuffer', (b) => {
    const bytes = bytesFrom(b, 'SharedArrayBuffer')
    const sab = new SharedArrayBuffer(bytes.byteLength)
    new Uint8Array(sab).set(bytes)
    return sab
  }],
  ['View', makeView],
])

/** The findClass of this mode: the private globals here, anything else as `next` (the caller's findClass, or the registry's). */
export function jsFindClass(next: FindClass | undefined): FindClass {
  return (module, name, fallback) => {
    if (module === JS_MODULE) {
      const f = LOADERS.get(name)
      if (f === undefined) bad(`unknown global ${name}`)
      return f
    }
    return next !== undefined ? next(module, name, fallback) : fallback(module, name)
  }
}
