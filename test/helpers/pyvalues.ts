/**
 * Values in both languages, for the pickler's interop tests: a seeded generator of JavaScript
 * value trees, a renderer that writes the Python code building the same value (same types,
 * same sharing, same recursion), and a batch runner that hands many jobs to one python3
 * process and reads its answers back, length-prefixed.
 *
 * Python identity rules the generator and renderer respect, so that both sides mean the same
 * value and CPython's pickle memo sees the same objects as picklewire's:
 * - equal str, bytes and constant tuples in one compiled unit are one object (the compiler
 *   merges constants); picklewire memoizes str by value, and canonicalize() makes equal
 *   constant bytes and tuples one JavaScript object;
 * - lists, dicts, sets, frozensets, bytearrays and tuples holding any of those (or a NaN,
 *   written float('nan')) are made afresh by each expression that builds them;
 * - CPython 3.11 interns some one-character identifier literals ('a', '_', not 'Z') as objects
 *   other than its cached one-character strings, so two equal strs have two identities there:
 *   the generator makes no one-character identifier strings.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ByteArray, FrozenSet, PyFloat, Tuple } from '@picklewire/codec'
import { PYTHON } from './python.js'

// ---- a seeded random source ----

/** mulberry32: a small, fast, seedable PRNG; the same seed gives the same values on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// ---- what a JavaScript value means in Python ----

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/** Plain bytes (a Python bytes object), as opposed to a ByteArray. */
export function isBytes(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && !(v instanceof ByteArray)
}

const constCache = new WeakMap<object, boolean>()

/**
 * Whether the Python expression for v is a compile-time constant, which the compiler folds
 * and merges: None, bool, int, float (not NaN), str, bytes, and tuples of those.
 */
export function isConstant(v: unknown, visiting = new Set<object>()): boolean {
  if (v === null || v === undefined) return true
  switch (typeof v) {
    case 'boolean': case 'bigint': case 'string': return true
    case 'number': return !Number.isNaN(v)
    case 'object': break
    default: return false
  }
  if (v instanceof PyFloat) return !Number.isNaN(v.value)
  if (isBytes(v)) return true
  if (!(v instanceof Tuple) || v.constructor !== Tuple) return false
  const known = constCache.get(v)
  if (known !== undefined) return known
  if (visiting.has(v)) return false
  visiting.add(v)
  const result = v.every((x) => isConstant(x, visiting))
  visiting.delete(v)
  constCache.set(v, result)
  return result
}

/** A key equal for two constants exactly when Python's compiler merges them into one object. */
export function constKey(v: unknown): string {
  if (v === null || v === undefined) return 'N'
  if (typeof v === 'boolean') return v ? 'B1' : 'B0'
  if (typeof v === 'bigint') return `I${v}`
  if (typeof v === 'number') return Number.isSafeInteger(v) && !Object.is(v, -0) ? `I${v}` : `F${Object.is(v, -0) ? '-0' : String(v)}`
  if (typeof v === 'string') return `S${JSON.stringify(v)}`
  if (v instanceof PyFloat) return `F${Object.is(v.value, -0) ? '-0' : String(v.value)}`
  if (isBytes(v)) return `Y${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`
  if (v instanceof Tuple) return `T(${v.map(constKey).join(',')})`
  throw new Error(`not a constant: ${String(v)}`)
}

/**
 * A key equal for two hashable values exactly when they are one dict key in Python
 * (1 == 1.0 == True, 0 == -0.0 == False).
 */
export function pyKeyOf(v: unknown): string {
  if (v === null || v === undefined) return 'N'
  if (typeof v === 'boolean') return v ? 'n1' : 'n0'
  if (typeof v === 'bigint') return `n${v}`
  if (typeof v === 'number' || v instanceof PyFloat) {
    const x = typeof v === 'number' ? v : v.value
    if (Number.isInteger(x)) return `n${BigInt(x)}`
    return `n${String(x)}`
  }
  if (typeof v === 'string') return `S${JSON.stringify(v)}`
  if (isBytes(v)) return `Y${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`
  if (v instanceof Tuple) return `T(${v.map(pyKeyOf).join(',')})`
  throw new Error(`not hashable: ${String(v)}`)
}

/**
 * Makes equal constant bytes and constant tuples one object, as Python's compiler does with
 * equal literals, in place. Returns the (possibly replaced) root.
 */
export function canonicalize(root: unknown): unknown {
  const table = new Map<string, unknown>()
  const seen = new Set<object>()
  const canon = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null) return v
    if ((isBytes(v) || v instanceof Tuple) && isConstant(v)) {
      const key = constKey(v)
      const found = table.get(key)
      if (found !== undefined) return found
      if (v instanceof Tuple) for (let i = 0; i < v.length; i++) v[i] = canon(v[i])
      table.set(key, v)
      return v
    }
    if (seen.has(v)) return v
    seen.add(v)
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = canon(v[i])
    } else if (v instanceof Map) {
      const entries = [...v]
      v.clear()
      for (const [k, x] of entries) v.set(canon(k), canon(x))
    } else if (v instanceof Set) {
      const items = [...v]
      v.clear()
      for (const x of items) v.add(canon(x))
    } else if (isPlainObject(v)) {
      const o = v as Record<string, unknown>
      for (const k of Object.keys(o)) o[k] = canon(o[k])
    }
    return v
  }
  return canon(root)
}

// ---- Python literals ----

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0')
}

/** A Python str literal, code point by code point (a lone surrogate stays one code point). */
export function pyStr(s: string): string {
  let out = "'"
  for (const ch of s) {
    const c = ch.codePointAt(0)!
    if (c >= 0x20 && c < 0x7f) out += c === 0x27 ? "\\'" : c === 0x5c ? '\\\\' : ch
    else if (c < 0x100) out += `\\x${hex2(c)}`
    else if (c < 0x10000) out += `\\u${c.toString(16).padStart(4, '0')}`
    else out += `\\U${c.toString(16).padStart(8, '0')}`
  }
  return out + "'"
}

/** A Python bytes literal. */
export function pyBytes(b: Uint8Array): string {
  let out = "b'"
  for (const c of b) {
    if (c >= 0x20 && c < 0x7f) out += c === 0x27 ? "\\'" : c === 0x5c ? '\\\\' : String.fromCharCode(c)
    else out += `\\x${hex2(c)}`
  }
  return out + "'"
}

export function pyInt(v: number | bigint): string {
  const b = BigInt(v)
  const mag = b < 0n ? -b : b
  // Hexadecimal literals have no digit limit (decimal ones stop at 4300 digits).
  return mag < 1n << 64n ? b.toString() : `${b < 0n ? '-' : ''}0x${mag.toString(16)}`
}

export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return "float('nan')"
  if (x === Infinity) return '1e999'
  if (x === -Infinity) return '-1e999'
  if (Object.is(x, -0)) return '-0.0'
  const s = String(x)
  return /[.e]/.test(s) ? s : `${s}.0`
}

/** The literal of a scalar, or null when v is not one. */
function pyScalar(v: unknown): string | null {
  if (v === null || v === undefined) return 'None'
  switch (typeof v) {
    case 'boolean': return v ? 'True' : 'False'
    case 'bigint': return pyInt(v)
    case 'number': return Number.isSafeInteger(v) && !Object.is(v, -0) ? pyInt(v) : pyFloat(v)
    case 'string': return pyStr(v)
  }
  if (v instanceof PyFloat) return pyFloat(v.value)
  if (isBytes(v)) return pyBytes(v)
  return null
}

/** Objects that have an identity of their own in Python (made afresh by their expression). */
function hasIdentity(v: unknown): v is object {
  if (typeof v !== 'object' || v === null) return false
  if (v instanceof PyFloat || isBytes(v)) return false
  if (v instanceof Tuple) return !isConstant(v)
  return true
}

/** Objects rendered as a variable created empty first and filled afterwards (they may be on a cycle). */
function isFilled(v: object): boolean {
  return (Array.isArray(v) && !(v instanceof Tuple)) || v.constructor === Map || isPlainObject(v)
}

function children(v: object): unknown[] {
  if (Array.isArray(v)) return v
  if (v instanceof Map) return [...v].flat()
  if (v instanceof Set) return [...v]
  if (v instanceof ByteArray) return []
  if (isPlainObject(v)) return Object.values(v)
  throw new Error(`the renderer does not know ${v.constructor?.name ?? 'this object'}`)
}

/**
 * The Python code that builds the same value as root and binds it to `value`: every list and
 * dict is a variable made empty and filled last (so that cycles work), shared tuples, sets and
 * bytearrays are variables defined after what they hold, everything else is inline.
 */
export function toPython(root: unknown): string {
  const counts = new Map<object, number>()
  const count = (v: unknown): void => {
    if (!hasIdentity(v)) return
    const n = counts.get(v) ?? 0
    counts.set(v, n + 1)
    if (n > 0) return
    for (const c of children(v)) count(c)
  }
  count(root)

  const names = new Map<object, string>()
  for (const [obj, n] of counts) if (n > 1 || isFilled(obj)) names.set(obj, `_v${names.size}`)

  const render = (v: unknown): string => {
    const scalar = pyScalar(v)
    if (scalar !== null) return scalar
    const o = v as object
    const name = names.get(o)
    if (name !== undefined && defined.has(o)) return name
    return expr(o)
  }
  const expr = (o: object): string => {
    if (o instanceof Tuple) return o.length === 1 ? `(${render(o[0])},)` : `(${o.map(render).join(', ')})`
    if (o instanceof ByteArray) return `bytearray(${pyBytes(o)})`
    if (o instanceof FrozenSet) return o.size === 0 ? 'frozenset()' : `frozenset({${[...o].map(render).join(', ')}})`
    if (o instanceof Set && o.constructor === Set) return o.size === 0 ? 'set()' : `{${[...o].map(render).join(', ')}}`
    throw new Error(`the renderer does not know ${o.constructor?.name ?? 'this object'}`)
  }

  const lines: string[] = []
  const defined = new Set<object>()
  // 1. lists and dicts, empty
  for (const [obj, name] of names) {
    if (!isFilled(obj)) continue
    lines.push(`${name} = ${Array.isArray(obj) ? '[]' : '{}'}`)
    defined.add(obj)
  }
  // 2. shared tuples, sets and bytearrays, after whatever they contain (post-order)
  const done = new Set<object>()
  const define = (v: unknown): void => {
    if (!hasIdentity(v) || done.has(v)) return
    done.add(v)
    for (const c of children(v)) define(c)
    const name = names.get(v)
    if (name !== undefined && !isFilled(v)) {
      lines.push(`${name} = ${expr(v)}`)
      defined.add(v)
    }
  }
  define(root)
  // 3. fill the lists and dicts
  for (const [obj, name] of names) {
    if (!isFilled(obj)) continue
    if (Array.isArray(obj)) {
      if (obj.length > 0) lines.push(`${name}.extend([${obj.map(render).join(', ')}])`)
    } else {
      const entries = obj instanceof Map ? [...obj] : Object.entries(obj)
      if (entries.length > 0) lines.push(`${name}.update({${entries.map(([k, x]) => `${render(k)}: ${render(x)}`).join(', ')}})`)
    }
  }
  lines.push(`value = ${render(root)}`)
  return lines.join('\n')
}

/**
 * What a value graph holds: objects reached twice (sharing), objects reached from themselves
 * (recursion), and the classes of its objects with an identity.
 */
export function graphFacts(root: unknown): { shared: boolean; recursive: boolean; kinds: Set<string> } {
  const facts = { shared: false, recursive: false, kinds: new Set<string>() }
  const inProgress = new Set<object>()
  const done = new Set<object>()
  const walk = (v: unknown): void => {
    if (!hasIdentity(v)) return
    if (inProgress.has(v)) return void (facts.recursive = true)
    if (done.has(v)) return void (facts.shared = true)
    inProgress.add(v)
    facts.kinds.add(v.constructor?.name ?? 'Object')
    for (const c of children(v)) walk(c)
    inProgress.delete(v)
    done.add(v)
  }
  walk(root)
  return facts
}

// ---- the generator ----

export interface GenOptions {
  /** Allow set and frozenset (Python iterates them in hash order: not for byte identity). */
  sets?: boolean
}

const SPECIAL_FLOATS = [
  0.5, -0.5, 0.1, 1 / 3, -0, 1e16, 1e-5, 1e-4, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
  Infinity, -Infinity, NaN, 1e22, 1e21, 123456789.125, 2 ** 53 + 2, -(2 ** 60), 1e300, 9007199254740993, 0.30000000000000004,
]
const INT_EDGES: (number | bigint)[] = [
  0, 1, -1, 127, 128, 255, 256, -256, 65535, 65536, -65536, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1,
  2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, -(2 ** 53 - 1), 2n ** 53n, -(2n ** 53n), 2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n,
  -(2n ** 63n) - 1n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 64n), 5n, -7n, 300n,
]
const STR_PIECES = [
  'a', 'b', 'key', 'hello world', 'x', '', 'é', 'ÿ', '\x7f', '\x80', '\x85', '日本語', 'текст', '😀', '𝄞', '\ud800', '\udfff',
  '\udc00\ud800', '\ud83d', '\n', '\r\n', '\\', '\\u0041', '\x1a', '\x00', "'", '"', ' ', '\t', '\u2028', '\ufeff', 'latin1', 'builtins',
]

/** Generates random value trees, with sharing and recursion, from a seed. */
export class ValueGen {
  readonly random: () => number
  /** Objects with an identity made so far for the current value, for sharing. */
  #pool: object[] = []
  #options: GenOptions
  #big = false

  constructor(seed: number, options: GenOptions = {}) {
    this.random = seededRandom(seed)
    this.#options = options
  }

  below(n: number): number {
    return Math.floor(this.random() * n)
  }

  chance(p: number): boolean {
    return this.random() < p
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!
  }

  /** A new top-level value (sharing stays within one value); big allows the big items for this one. */
  value(big = false): unknown {
    this.#pool = []
    this.#big = big
    let v = this.chance(0.1) && !big ? this.leaf() : this.container(0)
    if (big) {
      // Past the 64 KiB frame target, and past the 1000-item batch, whatever the dice said.
      const long = [this.longStr(65536 + this.below(10000)), new Uint8Array(65536 + this.below(5000)).fill(0x79),
        Array.from({ length: 1000 + this.below(1100) }, () => this.int()), v]
      v = long.sort(() => this.random() - 0.5)
    }
    return canonicalize(v)
  }

  int(): number | bigint {
    switch (this.below(7)) {
      case 0: return this.below(256)
      case 1: return this.below(131072) - 65536
      case 2: return this.pick(INT_EDGES)
      case 3: return Math.floor((this.random() - 0.5) * 2 ** 53)
      case 4: {
        const bits = 1 + this.below(this.chance(0.1) ? 9000 : 200)
        let v = 0n
        for (let i = 0; i < bits; i += 30) v = (v << 30n) | BigInt(this.below(2 ** 30))
        v &= (1n << BigInt(bits)) - 1n
        return this.chance(0.5) ? -v : v
      }
      case 5: return BigInt(this.pick(INT_EDGES)) + BigInt(this.below(5) - 2)
      default: return this.below(1000)
    }
  }

  float(): number | PyFloat {
    switch (this.below(5)) {
      case 0: return this.pick(SPECIAL_FLOATS)
      case 1: return new PyFloat(this.pick([0, 1, -1, 2 ** 53, 1e16, 3, 1e300, -1e22, 255, 256, 65536, 2 ** 31]))
      case 2: {
        const b = new DataView(new ArrayBuffer(8))
        b.setUint32(0, Math.floor(this.random() * 2 ** 32))
        b.setUint32(4, Math.floor(this.random() * 2 ** 32))
        const x = b.getFloat64(0)
        // A NaN keeps its random payload bits in JavaScript; Python's float('nan') has none.
        return Number.isNaN(x) ? NaN : Number.isInteger(x) ? new PyFloat(x) : x
      }
      case 3: return (this.random() - 0.5) * 10 ** (this.below(40) - 20)
      default: return Math.round(this.random() * 1e6) / 64
    }
  }

  str(): string {
    const s = this.anyStr()
    // CPython 3.11 interns one-character identifier literals ('a', '_') as objects that are not
    // always its cached latin-1 one-character strings: only those have two identities there.
    return s.length === 1 && /\w/.test(s) ? s + s : s
  }

  anyStr(): string {
    const r = this.below(20)
    if (r === 0 && this.#big) return this.longStr(65536 + this.below(20000))
    if (r === 1 && this.#big) return this.longStr(20000 + this.below(30000))
    if (r < 5) return this.pick(STR_PIECES)
    if (r < 7) return String.fromCharCode(this.below(256)) // one-character strings, latin-1 range
    const n = this.below(r < 12 ? 8 : 40)
    let s = ''
    for (let i = 0; i < n; i++) s += this.chance(0.7) ? String.fromCharCode(97 + this.below(26)) : this.pick(STR_PIECES)
    return s
  }

  longStr(n: number): string {
    const unit = this.pick(['x', 'ab', 'é', 'ä😀\n\\', 'text \ud800 more '])
    return unit.repeat(Math.ceil(n / unit.length)).slice(0, n) + (this.chance(0.5) ? '\udc00' : '')
  }

  rawBytes(): Uint8Array {
    const r = this.below(12)
    let n: number
    if (r === 0) n = 0
    else if (r <= 3) n = 1
    else if (r === 4 && this.#big) n = 65536 + this.below(5000)
    else if (r === 5) n = 250 + this.below(20)
    else n = this.below(12)
    const b = new Uint8Array(n)
    const fill = this.below(4)
    for (let i = 0; i < n; i++) b[i] = fill === 0 ? this.below(256) : fill === 1 ? 97 + (i % 26) : fill === 2 ? i & 0xff : 0x79
    return b
  }

  leaf(): unknown {
    switch (this.below(12)) {
      case 0: return null
      case 1: return this.chance(0.5)
      case 2: case 3: return this.int()
      case 4: case 5: return this.float()
      case 6: case 7: case 8: return this.str()
      case 9: return this.rawBytes()
      case 10: return ByteArray.from(this.rawBytes())
      default: return this.chance(0.1) ? undefined : this.str()
    }
  }

  /** A dict key: any hashable leaf, or a tuple of them. */
  key(): unknown {
    const r = this.below(10)
    if (r < 4) return this.str()
    if (r < 6) return this.int()
    if (r === 6) {
      const f = this.float()
      return typeof f === 'number' && Number.isNaN(f) ? 1.25 : f
    }
    if (r === 7) return this.pick([null, true, false, this.rawBytes()])
    const t = new Tuple()
    const n = this.below(4)
    for (let i = 0; i < n; i++) t.push(this.chance(0.2) ? this.key() : this.pick([1, 'kk', null, 2.5, this.rawBytes(), this.int()]))
    return t
  }

  itemCount(depth: number): number {
    if (this.#big && depth === 1 && this.chance(0.05)) return 1000 + this.below(1100)
    return this.below(depth === 0 ? 9 : depth < 3 ? 6 : 3)
  }

  item(depth: number): unknown {
    if (depth >= 4 || this.chance(0.55)) return this.leaf()
    if (this.#pool.length > 0 && this.chance(0.12)) return this.pick(this.#pool)
    return this.container(depth + 1)
  }

  container(depth: number): unknown {
    const r = this.below(this.#options.sets ? 14 : 12)
    let v: object
    if (r < 3) {
      const t = new Tuple()
      const n = this.below(6)
      for (let i = 0; i < n; i++) t.push(this.item(depth))
      v = t
    } else if (r < 6) {
      const l: unknown[] = []
      const n = this.itemCount(depth)
      for (let i = 0; i < n; i++) l.push(n > 100 ? this.int() : this.item(depth))
      if (this.chance(0.06)) l.splice(this.below(l.length + 1), 0, l) // a list containing itself
      v = l
    } else if (r < 9) {
      const m = new Map<unknown, unknown>()
      const keys = new Set<string>()
      const n = this.itemCount(depth)
      for (let i = 0; i < n; i++) {
        const k = n > 100 ? `k${i}` : this.key()
        const pk = pyKeyOf(k)
        if (keys.has(pk)) continue
        keys.add(pk)
        m.set(k, n > 100 ? i : this.item(depth))
      }
      if (this.chance(0.06)) m.set('self', m) // a dict containing itself
      v = m
    } else if (r === 9) {
      // a tuple reached through a list inside it
      const l: unknown[] = [this.leaf()]
      const t = Tuple.fromItems([l, this.leaf()])
      l.push(t)
      v = t
    } else if (r === 10) {
      const o: Record<string, unknown> = {}
      const n = this.below(5)
      for (let i = 0; i < n; i++) o[this.pick(['ab', 'name', '10', '__proto__x', 'b b', 'é', String(10 + this.below(50))])] = this.item(depth)
      v = o
    } else if (r === 11) {
      v = ByteArray.from(this.rawBytes())
    } else {
      const items: unknown[] = []
      const seen = new Set<string>()
      const n = this.below(6)
      for (let i = 0; i < n; i++) {
        const k = this.key()
        if (!seen.has(pyKeyOf(k))) (seen.add(pyKeyOf(k)), items.push(k))
      }
      v = r === 12 ? new Set(items) : new FrozenSet(items)
    }
    if (hasIdentity(v)) this.#pool.push(v)
    return v
  }
}

// ---- one python3 process for a batch of jobs ----

export type Job =
  /** CPython's pickle.dumps of the value built by code, at each protocol. */
  | { op: 'dumps'; code: string; protocols: readonly number[]; fixImports?: boolean }
  /**
   * Loads each pickle and compares it, type by type and identity for identity, with the value
   * built by code, or with what CPython loads from original. With original, the first answer
   * says whether that value holds basic types only ('basic' or 'other').
   */
  | { op: 'check'; code?: string; original?: PickleToCheck; pickles: readonly PickleToCheck[] }
  /** pickletools' view of a pickle around a byte offset, and what pickletools.dis thinks of it. */
  | { op: 'dis'; data: Uint8Array; at: number }
  /** Runs code with the helpers in scope; code sets `out` to a list of bytes or str. */
  | { op: 'run'; code: string }

export interface PickleToCheck {
  data: Uint8Array
  buffers?: readonly { data: Uint8Array; readonly: boolean }[]
  fixImports?: boolean
}

/** One answer: ok and its bytes, or the Python exception as text. */
export interface Answer {
  ok: boolean
  data: Uint8Array
  text: string
}

const SERVER = String.raw`
import base64, collections, copyreg, datetime, decimal, io, json, math, pickle, pickletools, struct, sys, uuid
sys.setrecursionlimit(20000)
PB = pickle.PickleBuffer

def b64(s):
    return base64.b64decode(s)

class Describer:
    """A tagged tree of a value: types at every level, ids for objects with an identity."""
    def __init__(self, ids=True):
        self.ids = {} if ids else None
        self.keep = []

    def tracked(self, obj):
        if isinstance(obj, (list, dict, set, bytearray, collections.deque)):
            return True
        if isinstance(obj, (tuple, frozenset)):
            return len(obj) > 0
        if type(obj) is bytes:
            return len(obj) >= 2
        return not isinstance(obj, (int, float, str, complex, range, slice, type, decimal.Decimal, uuid.UUID,
                                    datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo,
                                    memoryview, pickle.PickleBuffer)) and not callable(obj)

    def d(self, obj):
        if obj is None: return ('None',)
        if obj is True or obj is False: return ('bool', obj)
        if type(obj) is int: return ('int', obj)
        if type(obj) is float: return ('float', repr(obj))
        if type(obj) is str: return ('str', obj)
        if obj is Ellipsis or obj is NotImplemented: return (repr(obj),)
        if self.ids is not None and self.tracked(obj):
            key = id(obj)
            if key in self.ids:
                return ('ref', self.ids[key])
            self.ids[key] = len(self.ids)
            self.keep.append(obj)
            return ('id', self.ids[key], self.node(obj))
        return self.node(obj)

    def items(self, xs):
        return tuple(self.d(x) for x in xs)

    def pairs(self, m):
        return tuple((self.d(k), self.d(v)) for k, v in m.items())

    def unordered(self, xs):
        plain = Describer(ids=False)
        return tuple(sorted((plain.d(x) for x in xs), key=repr))

    def node(self, obj):
        d, t = self.d, type(obj)
        if t is bytes: return ('bytes', obj)
        if t is bytearray: return ('bytearray', bytes(obj))
        if isinstance(obj, (pickle.PickleBuffer, memoryview)):
            with memoryview(obj) as m:
                return ('buffer', m.tobytes(), m.readonly)
        if t is tuple: return ('tuple', self.items(obj))
        if t is list: return ('list', self.items(obj))
        if t is dict: return ('dict', self.pairs(obj))
        if t is collections.OrderedDict: return ('OrderedDict', self.pairs(obj))
        if t is collections.defaultdict: return ('defaultdict', d(obj.default_factory), self.pairs(obj))
        if t is collections.Counter: return ('Counter', self.pairs(obj))
        if t is collections.deque: return ('deque', self.items(obj), obj.maxlen)
        if t is set: return ('set', self.unordered(obj))
        if t is frozenset: return ('frozenset', self.unordered(obj))
        if t is complex: return ('complex', repr(obj.real), repr(obj.imag))
        if t is range: return ('range', obj.start, obj.stop, obj.step)
        if t is slice: return ('slice', d(obj.start), d(obj.stop), d(obj.step))
        if t is datetime.datetime:
            return ('datetime', obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond, d(obj.tzinfo), obj.fold)
        if t is datetime.date: return ('date', obj.year, obj.month, obj.day)
        if t is datetime.time:
            return ('time', obj.hour, obj.minute, obj.second, obj.microsecond, d(obj.tzinfo), obj.fold)
        if t is datetime.timedelta: return ('timedelta', obj.days, obj.seconds, obj.microseconds)
        if t is datetime.timezone: return ('timezone', d(obj.__getinitargs__()))
        if t is decimal.Decimal: return ('Decimal', str(obj))
        if t is uuid.UUID: return ('UUID', obj.int, obj.is_safe.value)
        if isinstance(obj, type) or callable(obj):
            return ('global', getattr(obj, '__module__', None), getattr(obj, '__qualname__', None))
        # an instance of some class: its class, its attributes, and what it holds as a list or dict
        out = ['instance', t.__module__ + '.' + t.__qualname__]
        if hasattr(obj, '__dict__'): out.append(('attrs', self.pairs(vars(obj))))
        for name in getattr(t, '__slots__', ()):
            if hasattr(obj, name): out.append(('slot', name, d(getattr(obj, name))))
        if isinstance(obj, list): out.append(('list', self.items(obj)))
        if isinstance(obj, dict): out.append(('dict', self.pairs(obj)))
        return tuple(out)

BASIC = (type(None), bool, int, float, str, bytes, bytearray, tuple, list, dict)

def is_basic(obj, seen):
    if not isinstance(obj, BASIC) or type(obj) not in BASIC: return False
    if id(obj) in seen: return True
    seen.add(id(obj))
    if type(obj) in (tuple, list): return all(is_basic(x, seen) for x in obj)
    if type(obj) is dict: return all(is_basic(k, seen) and is_basic(v, seen) for k, v in obj.items())
    return True

def first_diff(a, b, path='value'):
    if type(a) is tuple and type(b) is tuple:
        if a and b and a[0] != b[0] and isinstance(a[0], str): return f'{path}: {a[0]} != {b[0]}'
        for i, (x, y) in enumerate(zip(a, b)):
            r = first_diff(x, y, f'{path}/{i}')
            if r: return r
        if len(a) != len(b): return f'{path}: {len(a)} parts != {len(b)} parts'
        return None
    return None if a == b else f'{path}: {short(a)} != {short(b)}'

def short(x):
    r = repr(x)
    return r if len(r) < 200 else r[:200] + '...'

def build(code):
    ns = dict(HELPERS)
    exec(compile(code, '<value>', 'exec'), ns)
    return ns

def load(p):
    bufs = [PB(b64(x) if ro else bytearray(b64(x))) for x, ro in p.get('buffers') or []]
    return pickle.loads(b64(p['data']), buffers=bufs if p.get('buffers') is not None else None,
                        fix_imports=p.get('fixImports', True))

def check(job):
    answers = []
    if 'original' in job:
        want = load(job['original'])
        answers.append(b'basic' if is_basic(want, set()) else b'other')
    else:
        want = build(job['code'])['value']
    expected = Describer().d(want)
    for p in job['pickles']:
        try:
            got = Describer().d(load(p))
            diff = first_diff(expected, got)
            answers.append(b'' if diff is None else ('loaded a different value: ' + diff).encode('utf-8', 'backslashreplace'))
        except Exception as e:
            answers.append(f'{type(e).__name__}: {e}'.encode('utf-8', 'backslashreplace'))
    return answers

def dis_window(data, at):
    rows = []
    try:
        for op, arg, pos in pickletools.genops(data):
            rows.append((pos, f'{pos:8}: {op.name:16} {short(arg) if arg is not None else ""}'))
    except Exception as e:
        rows.append((len(data), f'  genops stopped: {e}'))
    i = 0
    for k, (pos, _) in enumerate(rows):
        if pos <= at: i = k
    text = '\n'.join(r for _, r in rows[max(0, i - 8):i + 8])
    try:
        pickletools.dis(data, io.StringIO())
    except Exception as e:
        text += f'\n  pickletools.dis refuses it: {e}'
    return text.encode('utf-8', 'backslashreplace')

def run(job):
    op = job['op']
    if op == 'dumps':
        value = build(job['code'])['value']
        return [pickle.dumps(value, protocol=p, fix_imports=job.get('fixImports', True)) for p in job['protocols']]
    if op == 'check':
        return check(job)
    if op == 'dis':
        return [dis_window(b64(job['data']), job['at'])]
    if op == 'run':
        out = build(job['code'])['out']
        return [x.encode('utf-8', 'surrogatepass') if isinstance(x, str) else bytes(x) for x in out]
    raise ValueError(f'unknown job {op}')

HELPERS = {'collections': collections, 'copyreg': copyreg, 'datetime': datetime, 'decimal': decimal, 'io': io,
           'pickle': pickle, 'uuid': uuid, 'PB': PB, 'Describer': Describer, 'first_diff': first_diff,
           'b64': b64, 'load': load, 'math': math}

w = sys.stdout.buffer
for job in json.load(sys.stdin):
    try:
        answers, ok = run(job), 1
    except Exception as e:
        answers, ok = [f'{type(e).__name__}: {e}'.encode('utf-8', 'backslashreplace')], 0
    w.write(struct.pack('<BI', ok, len(answers)))
    for a in answers:
        w.write(struct.pack('<I', len(a)))
        w.write(a)
w.flush()
`

function b64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')
}

function pickleJson(p: PickleToCheck): unknown {
  return { data: b64(p.data), buffers: p.buffers?.map((x) => [b64(x.data), x.readonly]), fixImports: p.fixImports ?? true }
}

function jobJson(job: Job): unknown {
  switch (job.op) {
    case 'check':
      return {
        ...job,
        original: job.original && pickleJson(job.original),
        pickles: job.pickles.map(pickleJson),
      }
    case 'dis':
      return { ...job, data: b64(job.data) }
    default:
      return job
  }
}

/**
 * Runs every job in one python3 process. Each job gives a list of answers; a job that raised
 * gives one answer with ok false and the exception. pythonPath goes in front of sys.path.
 */
export function pyBatch(jobs: readonly Job[], pythonPath: readonly string[] = []): Answer[][] {
  const env = { ...process.env, PYTHONPATH: [...pythonPath, process.env.PYTHONPATH ?? ''].filter(Boolean).join(':'), PYTHONHASHSEED: '0' }
  const out = execFileSync(PYTHON, ['-c', SERVER], {
    input: JSON.stringify(jobs.map(jobJson)),
    maxBuffer: 1 << 30,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const results: Answer[][] = []
  let at = 0
  while (at < out.length) {
    const ok = out[at] === 1
    const n = out.readUInt32LE(at + 1)
    at += 5
    const answers: Answer[] = []
    for (let i = 0; i < n; i++) {
      const len = out.readUInt32LE(at)
      const data = new Uint8Array(out.subarray(at + 4, at + 4 + len))
      answers.push({ ok, data, text: data.length < 100_000 ? Buffer.from(data).toString('utf8') : '' })
      at += 4 + len
    }
    results.push(answers)
  }
  if (results.length !== jobs.length) throw new Error(`python3 answered ${results.length} of ${jobs.length} jobs`)
  return results
}

// ---- comparing pickles ----

/** The first offset where two byte strings differ, or -1 when they are equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}

function window(b: Uint8Array, at: number): string {
  const from = Math.max(0, at - 16)
  const hex = Buffer.from(b.subarray(from, at + 24)).toString('hex').replace(/(..)/g, '$1 ').trim()
  return `[${from}..] ${hex}`
}

/**
 * What to print when picklewire's pickle differs from CPython's: the first differing offset,
 * both byte windows, and pickletools' view of both around it (from one python3 process).
 */
export function explainDifference(label: string, ours: Uint8Array, cpython: Uint8Array, code?: string): string {
  const at = firstDifference(ours, cpython)
  const [[mine], [theirs]] = pyBatch([{ op: 'dis', data: ours, at }, { op: 'dis', data: cpython, at }])
  return [
    `${label}: the pickles differ at byte ${at} (picklewire ${ours.length} bytes, CPython ${cpython.length} bytes)`,
    `  picklewire: ${window(ours, at)}`,
    `  CPython:    ${window(cpython, at)}`,
    `picklewire, around byte ${at}:`,
    mine!.text,
    `CPython, around byte ${at}:`,
    theirs!.text,
    ...(code === undefined ? [] : ['the Python value:', code.length > 2000 ? code.slice(0, 2000) + '...' : code]),
  ].join('\n')
}

// ---- a Python module on PYTHONPATH ----

/** Writes a Python module into a fresh temporary directory; returns the directory and a cleanup. */
export function tempPythonModule(name: string, source: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-py-'))
  writeFileSync(join(dir, `${name}.py`), source)
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * The Python classes the interop tests pickle: a module named pwtest_classes, written to a
 * temporary directory on PYTHONPATH, so that CPython can load what picklewire writes for them.
 */
export const PWTEST_MODULE = 'pwtest_classes'
export const PWTEST_SOURCE = String.raw`
class Plain:
    """An instance with a __dict__: NEWOBJ (or copyreg._reconstructor) and BUILD with a dict."""
    def __init__(self, **attrs):
        self.__dict__.update(attrs)

class Reduced:
    """__reduce__ with list items and dict items, applied with APPENDS and SETITEMS."""
    def __init__(self, tag):
        self.tag = tag
        self.items = []
        self.map = {}
    def __reduce__(self):
        return (Reduced, (self.tag,), None, iter(self.items), iter(self.map.items()))
    def append(self, x):
        self.items.append(x)
    def extend(self, xs):
        self.items.extend(xs)
    def __setitem__(self, k, v):
        self.map[k] = v

class WithNewArgs:
    """__getnewargs__: NEWOBJ passes (x, y) to __new__."""
    def __new__(cls, x, y):
        self = object.__new__(cls)
        self.x, self.y = x, y
        return self
    def __getnewargs__(self):
        return (self.x, self.y)

class WithNewArgsEx:
    """__getnewargs_ex__: NEWOBJ_EX passes args and kwargs to __new__."""
    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs = args, kwargs
        return self
    def __getnewargs_ex__(self):
        return (self.args, self.kwargs)

class WithSetState:
    """__getstate__ and __setstate__ with a tuple state."""
    def __init__(self, a, b):
        self.a, self.b = a, b
    def __getstate__(self):
        return (self.a, self.b)
    def __setstate__(self, state):
        self.a, self.b = state

class Slotted:
    """__slots__: the state is (None, {slot: value})."""
    __slots__ = ('p', 'q')
    def __init__(self, p, q):
        self.p, self.q = p, q

class MyList(list):
    pass

class MyDict(dict):
    pass

class Point:
    """Registered in JavaScript as pwtest_classes.Point."""
    def __init__(self, x, y):
        self.x, self.y = x, y

class Thing:
    """Reduced by dispatch_table, reducer_override and extension codes in the hook tests."""
    def __init__(self, name):
        self.name = name

def make_thing(name):
    return Thing(name)

def set_name(obj, state):
    obj.name = state['name']
`

/** Writes pwtest_classes.py to a temporary directory; returns it for pyBatch's pythonPath, and a cleanup. */
export function pwtestModule(): { dir: string; cleanup: () => void } {
  return tempPythonModule(PWTEST_MODULE, PWTEST_SOURCE)
}
