/**
 * Compares a value the unpickler loaded with the description CPython made of what it loaded
 * (see test/interop/make_pickles.py): type by type, field by field, and identity for identity.
 */
import {
  ByteArray, Complex, Counter, Decimal, DefaultDict, Deque, Ellipsis, FrozenSet, NotImplemented, OrderedDict,
  PickleBuffer, PyDate, PyDateTime, PyFloat, PyGlobal, PyRange, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, UUID,
} from '@picklewire/codec'
import { CorpusPoint } from './corpus.js'

/** A node of CPython's description: {t: 'list', id: 3, items: [...]}, {t: 'ref', id: 3}, ... */
export interface Desc {
  t: string
  id?: number
  [field: string]: unknown
}

export interface MatchOptions {
  /** The value was loaded with lossless: true (integral floats are PyFloat). */
  lossless?: boolean
  /** The value was loaded with dict: 'object'. */
  dict?: 'map' | 'object'
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/** A float from Python's repr(). */
export function pyFloat(text: string): number {
  if (text === 'nan') return NaN
  if (text === 'inf') return Infinity
  if (text === '-inf') return -Infinity
  return Number(text)
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
}

function show(v: unknown): string {
  if (v === null || v === undefined) return String(v)
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v !== 'object') return `${typeof v} ${String(v)}`
  return (v as object).constructor?.name ?? 'object'
}

/** The first difference between a loaded value and CPython's description, or null. */
export function mismatch(actual: unknown, expected: Desc, options: MatchOptions = {}): string | null {
  return new Matcher(options).match(actual, expected, '$')
}

/** Matches several values against several descriptions, with one identity map (one stream, one memo). */
export class Matcher {
  readonly #byId = new Map<number, unknown>()
  readonly #byObject = new Map<unknown, number>()
  readonly #log: number[] = []

  constructor(readonly options: MatchOptions = {}) {}

  match(a: unknown, e: Desc, path: string): string | null {
    if (e.t === 'ref') {
      if (!this.#byId.has(e.id!)) return `${path}: reference to Python object #${e.id} not seen before`
      return a === this.#byId.get(e.id!) ? null : `${path}: expected the very object #${e.id}, got another ${show(a)}`
    }
    if (e.id !== undefined) {
      if (typeof a !== 'object' || a === null) return `${path}: expected an object (${e.t}), got ${show(a)}`
      const prev = this.#byObject.get(a)
      if (prev !== undefined) return `${path}: one ${show(a)} stands for two Python objects, #${prev} and #${e.id}`
      this.#byId.set(e.id, a)
      this.#byObject.set(a, e.id)
      this.#log.push(e.id)
    }
    return this.#matchValue(a, e, path)
  }

  /** Runs a match that may fail without leaving identities behind. */
  #attempt(a: unknown, e: Desc, path: string): string | null {
    const mark = this.#log.length
    const r = this.match(a, e, path)
    if (r !== null) {
      for (const id of this.#log.splice(mark)) {
        this.#byObject.delete(this.#byId.get(id))
        this.#byId.delete(id)
      }
    }
    return r
  }

  #matchValue(a: unknown, e: Desc, path: string): string | null {
    const want = (ok: boolean, what: string): string | null => (ok ? null : `${path}: expected ${what}, got ${show(a)}`)
    switch (e.t) {
      case 'none': return want(a === null, 'null')
      case 'bool': return want(a === e.v, String(e.v))
      case 'int': return this.#int(a, e.v as string, path)
      case 'float': {
        const x = pyFloat(e.v as string)
        if (this.options.lossless && Number.isInteger(x)) {
          return want(a instanceof PyFloat && Object.is(a.value, x), `PyFloat(${e.v})`)
        }
        return want(typeof a === 'number' && Object.is(a, x), `float ${e.v}`)
      }
      case 'str':
        if (typeof a !== 'string') return want(false, 'a string')
        return a === e.v ? null : `${path}: string differs: got ${JSON.stringify(a.slice(0, 60))}, expected ${JSON.stringify((e.v as string).slice(0, 60))}`
      case 'bytes':
        return want(a instanceof Uint8Array && a.constructor === Uint8Array && hex(a) === e.hex, `bytes ${String(e.hex).slice(0, 40)}`)
      case 'bytearray':
        return want(a instanceof ByteArray && hex(a) === e.hex, `bytearray ${String(e.hex).slice(0, 40)}`)
      case 'buffer':
        if (!(a instanceof PickleBuffer)) return want(false, 'a PickleBuffer')
        if (a.readonly !== e.readonly) return `${path}: PickleBuffer readonly is ${a.readonly}, expected ${e.readonly}`
        return want(hex(a.raw()) === e.hex, `buffer bytes ${String(e.hex).slice(0, 40)}`)
      case 'tuple':
        return a instanceof Tuple ? this.#items(a, e.items as Desc[], path) : want(false, 'a Tuple')
      case 'list':
        return Array.isArray(a) && a.constructor === Array ? this.#items(a, e.items as Desc[], path) : want(false, 'an Array')
      case 'deque':
        if (!(a instanceof Deque)) return want(false, 'a Deque')
        if (a.maxlen !== e.maxlen) return `${path}: deque maxlen ${a.maxlen}, expected ${e.maxlen}`
        return this.#items(a, e.items as Desc[], path)
      case 'dict':
        if (this.options.dict === 'object') return this.#object(a, e.items as [Desc, Desc][], path)
        return a instanceof Map && a.constructor === Map ? this.#entries(a, e.items as [Desc, Desc][], path) : want(false, 'a Map')
      case 'OrderedDict':
        return a instanceof OrderedDict ? this.#entries(a, e.items as [Desc, Desc][], path) : want(false, 'an OrderedDict')
      case 'Counter':
        return a instanceof Counter ? this.#entries(a, e.items as [Desc, Desc][], path) : want(false, 'a Counter')
      case 'defaultdict': {
        if (!(a instanceof DefaultDict)) return want(false, 'a DefaultDict')
        return this.match(a.defaultFactory, e.factory as Desc, `${path}.defaultFactory`) ?? this.#entries(a, e.items as [Desc, Desc][], path)
      }
      case 'set':
        return a instanceof Set && a.constructor === Set ? this.#members(a, e.items as Desc[], path) : want(false, 'a Set')
      case 'frozenset':
        return a instanceof FrozenSet ? this.#members(a, e.items as Desc[], path) : want(false, 'a FrozenSet')
      case 'complex':
        return want(a instanceof Complex && Object.is(a.real, pyFloat(e.re as string)) && Object.is(a.imag, pyFloat(e.im as string)),
          `complex(${e.re}, ${e.im})`)
      case 'Ellipsis': return want(a === Ellipsis, 'Ellipsis')
      case 'NotImplemented': return want(a === NotImplemented, 'NotImplemented')
      case 'range':
        if (!(a instanceof PyRange)) return want(false, 'a PyRange')
        return this.#int(a.start, e.start as string, `${path}.start`) ?? this.#int(a.stop, e.stop as string, `${path}.stop`) ??
          this.#int(a.step, e.step as string, `${path}.step`)
      case 'slice':
        if (!(a instanceof Slice)) return want(false, 'a Slice')
        return this.match(a.start, e.start as Desc, `${path}.start`) ?? this.match(a.stop, e.stop as Desc, `${path}.stop`) ??
          this.match(a.step, e.step as Desc, `${path}.step`)
      case 'date':
        if (!(a instanceof PyDate)) return want(false, 'a PyDate')
        return this.#fields(a, e, ['year', 'month', 'day'], path)
      case 'time':
        if (!(a instanceof PyTime)) return want(false, 'a PyTime')
        return this.#fields(a, e, ['hour', 'minute', 'second', 'microsecond', 'fold'], path) ??
          this.match(a.tzinfo, e.tzinfo as Desc, `${path}.tzinfo`)
      case 'datetime':
        if (!(a instanceof PyDateTime)) return want(false, 'a PyDateTime')
        return this.#fields(a, e, ['year', 'month', 'day', 'hour', 'minute', 'second', 'microsecond', 'fold'], path) ??
          this.match(a.tzinfo, e.tzinfo as Desc, `${path}.tzinfo`)
      case 'timedelta':
        if (!(a instanceof PyTimeDelta)) return want(false, 'a PyTimeDelta')
        return this.#fields(a, e, ['days', 'seconds', 'microseconds'], path)
      case 'timezone':
        if (!(a instanceof PyTimeZone)) return want(false, 'a PyTimeZone')
        if (a.name !== e.name) return `${path}.name: got ${show(a.name)}, expected ${show(e.name)}`
        return this.match(a.offset, e.offset as Desc, `${path}.offset`)
      case 'Decimal':
        return want(a instanceof Decimal && a.value === e.v, `Decimal('${e.v}')`)
      case 'UUID':
        if (!(a instanceof UUID)) return want(false, 'a UUID')
        if (a.int !== BigInt(e.int as string)) return `${path}.int: got ${a.int}, expected ${e.int}`
        return a.isSafe === e.is_safe ? null : `${path}.isSafe: got ${a.isSafe}, expected ${e.is_safe}`
      case 'global':
        return want(a instanceof PyGlobal && `${a.module}.${a.name}` === e.v, `global ${e.v}`)
      case 'instance': {
        if (!(a instanceof CorpusPoint)) return want(false, e.cls as string)
        const attrs = e.attrs as [string, Desc][]
        const keys = Object.keys(a).sort().join(',')
        const wantKeys = attrs.map(([k]) => k).sort().join(',')
        if (keys !== wantKeys) return `${path}: attributes ${keys}, expected ${wantKeys}`
        for (const [k, v] of attrs) {
          const r = this.match((a as unknown as Record<string, unknown>)[k], v, `${path}.${k}`)
          if (r) return r
        }
        return null
      }
      default:
        return `${path}: the description has an unknown type '${e.t}'`
    }
  }

  #int(a: unknown, text: string, path: string): string | null {
    const v = BigInt(text)
    if (v <= MAX_SAFE && v >= -MAX_SAFE) {
      return typeof a === 'number' && a === Number(v) ? null : `${path}: expected the number ${text}, got ${show(a)}`
    }
    return typeof a === 'bigint' && a === v ? null : `${path}: expected the bigint ${text}n, got ${show(a)}`
  }

  #fields(a: object, e: Desc, names: string[], path: string): string | null {
    for (const n of names) {
      const got = (a as Record<string, unknown>)[n]
      if (got !== e[n]) return `${path}.${n}: got ${show(got)}, expected ${show(e[n])}`
    }
    return null
  }

  #items(a: readonly unknown[], items: Desc[], path: string): string | null {
    if (a.length !== items.length) return `${path}: length ${a.length}, expected ${items.length}`
    for (let i = 0; i < items.length; i++) {
      const r = this.match(a[i], items[i]!, `${path}[${i}]`)
      if (r) return r
    }
    return null
  }

  #entries(a: Map<unknown, unknown>, items: [Desc, Desc][], path: string): string | null {
    if (a.size !== items.length) return `${path}: ${a.size} entries, expected ${items.length}`
    let i = 0
    for (const [k, v] of a) {
      const [ek, ev] = items[i]!
      const r = this.match(k, ek, `${path}.keys[${i}]`) ?? this.match(v, ev, `${path}.get(${show(k)})`)
      if (r) return r
      i++
    }
    return null
  }

  /** dict: 'object': a plain object; key order is JavaScript's, so keys are compared as a set. */
  #object(a: unknown, items: [Desc, Desc][], path: string): string | null {
    if (typeof a !== 'object' || a === null || Object.getPrototypeOf(a) !== Object.prototype) {
      return `${path}: expected a plain object, got ${show(a)}`
    }
    const o = a as Record<string, unknown>
    const keys = Object.keys(o)
    if (keys.length !== items.length) return `${path}: ${keys.length} properties, expected ${items.length}`
    for (const [ek, ev] of items) {
      if (ek.t !== 'str') return `${path}: a ${ek.t} key cannot be a property`
      const k = ek.v as string
      if (!Object.prototype.hasOwnProperty.call(o, k)) return `${path}: no own property ${JSON.stringify(k)}`
      const r = this.match(o[k], ev, `${path}[${JSON.stringify(k)}]`)
      if (r) return r
    }
    return null
  }

  /**
   * Set members: JavaScript keeps the pickle's order and CPython's loaded set may iterate in
   * another, so each expected member is matched with the same position first, then any other.
   */
  #members(a: Set<unknown>, items: Desc[], path: string): string | null {
    if (a.size !== items.length) return `${path}: ${a.size} members, expected ${items.length}`
    const actual = [...a]
    const used = new Uint8Array(actual.length)
    for (let i = 0; i < items.length; i++) {
      let found = -1
      if (!used[i] && this.#attempt(actual[i], items[i]!, `${path}{${i}}`) === null) found = i
      for (let j = 0; found < 0 && j < actual.length; j++) {
        if (!used[j] && j !== i && this.#attempt(actual[j], items[i]!, `${path}{${j}}`) === null) found = j
      }
      if (found < 0) return `${path}: no member matches the expected member ${i} (${JSON.stringify(items[i]).slice(0, 80)})`
      used[found] = 1
    }
    return null
  }
}

/** True when a description holds a dict key that is not a str anywhere (dict: 'object' refuses those). */
export function hasNonStrKey(e: Desc): boolean {
  const seen = new Set<Desc>()
  const stack: unknown[] = [e]
  while (stack.length) {
    const n = stack.pop()
    if (Array.isArray(n)) {
      for (const x of n) stack.push(x)
      continue
    }
    if (typeof n !== 'object' || n === null || seen.has(n as Desc)) continue
    const d = n as Desc
    seen.add(d)
    if (d.t === 'dict' || d.t === 'Counter' || d.t === 'OrderedDict' || d.t === 'defaultdict') {
      for (const [k] of d.items as [Desc, Desc][]) if (k.t !== 'str') return true
    }
    for (const v of Object.values(d)) if (typeof v === 'object') stack.push(v)
  }
  return false
}
