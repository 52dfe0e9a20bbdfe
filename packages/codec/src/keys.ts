/**
 * Python's key equality for the dicts and sets the unpickler builds. Python merges dict keys
 * and set members that are == (with equal hashes): 1, True, 1.0, Decimal(1) and 1+0j are one
 * key, and so are equal bytes, tuples and frozensets that are separate objects. A JavaScript
 * Map compares keys as SameValueZero, which keeps all of those apart, so that without this a
 * pickle would mean one thing to CPython and another to picklewire.
 *
 * A container gets an index (from a canonical form of each key to the first key Python would
 * keep) only once it receives a key whose JavaScript identity differs from Python's equality.
 * Strings and numbers that are their own canonical form go straight into the container, so
 * dicts of str or int keys pay nothing. Tuples and bytes, the composite keys real data uses,
 * are indexed by a hash and compared item by item; rarer composites (frozensets, Decimals,
 * dates, ...) by a text of what == compares.
 */
import { UnpicklingError } from './errors.js'
import { NDArray, NumpyScalar } from './numpy.js'
import {
  ByteArray, Complex, Decimal, FrozenSet, PyDate, PyDateTime, PyFloat, PyRange, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, UUID, describe,
} from './types.js'
import { decodeLatin1 } from './text.js'

/** The canonical form of a primitive NaN: equal to nothing, not even another NaN (see setEntry). */
const NAN_KEY: unique symbol = Symbol('NaN key')
/** The canonical form of a tuple or bytes key: looked up by its hash (#hashCode). */
const HASHED: unique symbol = Symbol('hashed key')
/** No key found. */
const NONE: unique symbol = Symbol('none')

/** A Decimal key with more integer digits than this is refused (its int would be built digit by digit). */
const MAX_DECIMAL_KEY_DIGITS = 4300

/**
 * Hashes of tuples and bytes of at least this many items, and encodings at least this long, are
 * cached per object (smaller ones cost less to make again than a WeakMap entry costs the GC).
 */
const CACHED_KEY_SIZE = 256

const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER)
const SAFE_MIN = BigInt(Number.MIN_SAFE_INTEGER)

/**
 * A number that is its own canonical key: a safe integer or a finite or infinite non-integral
 * value. NaN and integral values beyond 2^53 (equal to a bigint) are not.
 */
export function isPlainNumberKey(k: number): boolean {
  return Number.isSafeInteger(k) || (k === k && !Number.isInteger(k))
}

function isPlainObject(o: object): boolean {
  const proto = Object.getPrototypeOf(o)
  return proto === Object.prototype || proto === null
}

/** The Python type name of a value Python cannot hash, or null when it can be hashed. */
function unhashableKind(o: object): string | null {
  if (Array.isArray(o)) return o instanceof Tuple ? null : 'list'
  if (o instanceof Map) return 'dict'
  if (o instanceof Set) return o instanceof FrozenSet ? null : 'set'
  if (o instanceof ByteArray) return 'bytearray'
  if (o instanceof Slice) return 'slice'
  if (o instanceof NDArray) return 'numpy.ndarray'
  if (isPlainObject(o)) return 'dict'
  return null
}

function unhashable(kind: string, o: unknown, role: string): never {
  throw new UnpicklingError(`unhashable type: '${kind}' as ${role} (got ${describe(o)})`)
}

function isBytes(o: unknown): o is Uint8Array {
  return o instanceof Uint8Array && !(o instanceof ByteArray)
}

function hashInt(n: number): number {
  const lo = n | 0
  const hi = (n - lo) / 4294967296
  return Math.imul(lo ^ (hi | 0), 0x9e3779b1) | 0
}

/** A bigint beyond 2^53: hashed from its low 64 bits and its sign (never equal to a safe integer). */
function hashBigInt(b: bigint): number {
  return Math.imul(Number(BigInt.asIntN(32, b)) ^ Number(BigInt.asIntN(32, b >> 32n)), 0x85ebca6b) ^ 0x5bd1e995
}

const FLOAT_BITS = new Float64Array(1)
const FLOAT_WORDS = new Int32Array(FLOAT_BITS.buffer)
/** A non-integral float (never equal to an int): from its bits. */
function hashFloat(x: number): number {
  FLOAT_BITS[0] = x
  return Math.imul(FLOAT_WORDS[0]! ^ Math.imul(FLOAT_WORDS[1]!, 0x27d4eb2d), 0x165667b1) | 0
}

function hashString(s: string, seed: number): number {
  let h = seed ^ s.length
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h | 0
}

/** Days from 0001-01-01 (proleptic Gregorian) to the date, for comparing aware datetimes. */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y
  const era = Math.floor(yy / 400)
  const yoe = yy - era * 400
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy
  return era * 146097 + doe
}

function deltaMicros(t: PyTimeDelta): bigint {
  return (BigInt(t.days) * 86_400n + BigInt(t.seconds)) * 1_000_000n + BigInt(t.microseconds)
}

/** A Decimal's value: its sign, coefficient and exponent, or a special value. */
function parseDecimal(text: string): { special: 'nan' | 'snan' | 'inf' | '-inf' } | { coeff: bigint; exp: number } | null {
  const t = text.trim().replace(/_/g, '')
  const m = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/.exec(t)
  if (m === null) {
    const l = t.toLowerCase().replace(/^\+/, '')
    if (/^-?nan\d*$/.test(l)) return { special: 'nan' }
    if (/^-?snan\d*$/.test(l)) return { special: 'snan' }
    if (l === 'inf' || l === 'infinity') return { special: 'inf' }
    if (l === '-inf' || l === '-infinity') return { special: '-inf' }
    return null
  }
  const intPart = m[2] ?? ''
  const frac = m[3] ?? m[4] ?? ''
  let digits = (intPart + frac).replace(/^0+/, '')
  let exp = Number(m[5] ?? '0') - frac.length
  if (!Number.isSafeInteger(exp)) return null
  if (digits === '') return { coeff: 0n, exp: 0 }
  const stripped = digits.replace(/0+$/, '')
  exp += digits.length - stripped.length
  digits = stripped
  const coeff = BigInt(digits)
  return { coeff: m[1] === '-' ? -coeff : coeff, exp }
}

/** The exact decimal coefficient and exponent of a finite float, trailing zeros stripped. */
function floatAsDecimal(x: number): { coeff: bigint; exp: number } {
  if (x === 0) return { coeff: 0n, exp: 0 }
  const view = new DataView(new ArrayBuffer(8))
  view.setFloat64(0, x)
  const hi = view.getUint32(0)
  const lo = view.getUint32(4)
  const biased = (hi >>> 20) & 0x7ff
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo)
  let e2: number
  if (biased === 0) e2 = -1074
  else {
    mant |= 1n << 52n
    e2 = biased - 1075
  }
  if (x < 0) mant = -mant
  let coeff: bigint
  let exp: number
  if (e2 >= 0) {
    coeff = mant << BigInt(e2)
    exp = 0
  } else {
    // m * 2^e2 = m * 5^-e2 / 10^-e2
    coeff = mant * 5n ** BigInt(-e2)
    exp = e2
  }
  while (coeff % 10n === 0n) {
    coeff /= 10n
    exp++
  }
  return { coeff, exp }
}

/**
 * The keys of the dicts and sets of one Unpickler: which containers have an index, the hashes
 * and encodings of big keys already made, and the work they cost (charged to the load).
 */
export class KeySpace {
  /**
   * Indexes made during the current load, held strongly: a WeakMap entry per container costs
   * the GC (100,000 small dicts with a bool key each loaded 4x slower), and one-shot loads never
   * need more. settle() moves them to #indexes, for later loads through the memo.
   */
  #recent: Map<object, KeyIndex> | null = null
  #indexes: WeakMap<object, KeyIndex> | null = null
  /** False until some container gets an index: then indexOf() can be skipped altogether. */
  indexing = false
  /** Encodings of big composites, so that a memoized one used as a key again and again is encoded once. */
  #encodings: WeakMap<object, string> | null = null
  /** Hashes of big tuples and bytes, so that a memoized one used as a key again and again is hashed once. */
  #hashes: WeakMap<object, number> | null = null
  /** Set by #canon: how its result is looked up in a KeyIndex, and the hash of a Kind.Hashed key. */
  #kind: Kind = Kind.Plain
  #hashCode = 0
  #ids: WeakMap<object, number> | null = null
  #nextId = 0

  /**
   * charge is told the work of each composite key encoded (its length), against CPU
   * amplification by memoized keys; maxDepth bounds how deeply tuples nest in one key.
   */
  constructor(readonly charge: (work: number) => void = () => {}, readonly maxDepth = 10_000) {}

  /** The index of a container, or undefined while its keys are all their own canonical form. */
  indexOf(container: object): KeyIndex | undefined {
    if (!this.indexing) return undefined
    if (this.#recent !== null) {
      const ix = this.#recent.get(container)
      if (ix !== undefined) return ix
    }
    return this.#indexes === null ? undefined : this.#indexes.get(container)
  }

  /**
   * Called before each load after the first: the indexes of earlier loads are kept only as
   * long as their containers live (a later pickle reaches them through the memo, or not at all).
   */
  settle(): void {
    const recent = this.#recent
    if (recent === null) return
    this.#recent = null
    const indexes = (this.#indexes ??= new WeakMap())
    for (const [container, ix] of recent) indexes.set(container, ix)
  }

  /**
   * map[k] = v as a Python dict does it: a key equal to one already there keeps that first key
   * and takes the new value. Returns the map's index afterwards (undefined when it has none).
   */
  setEntry(map: Map<unknown, unknown>, k: unknown, v: unknown): KeyIndex | undefined {
    return this.setEntryIn(map, this.indexOf(map), k, v)
  }

  /** setEntry for a caller that holds the map's index already (indexOf(map), or undefined). */
  setEntryIn(map: Map<unknown, unknown>, index: KeyIndex | undefined, k: unknown, v: unknown): KeyIndex | undefined {
    let ix = index
    const c = this.#canon(k, 'a dict key')
    if (c === NAN_KEY) {
      if (map.has(k)) twoNaNs('dict keys')
      map.set(k, v)
      return ix
    }
    const kind = this.#kind
    const h = this.#hashCode
    if (ix === undefined) {
      if (c === k) {
        map.set(k, v)
        return undefined
      }
      ix = this.#indexFor(map, map.size, map.keys())
    }
    if (ix === KeyIndex.scan) {
      const first = this.#scan(map.keys(), k)
      if (first !== NONE) map.set(first, v)
      else {
        map.set(k, v)
        if (map.size > SMALL) ix = this.#buildIndex(map, map.keys())
      }
      return ix
    }
    const first = this.#lookup(ix, kind, c, h, k)
    if (first !== NONE) map.set(first, v)
    else {
      this.#record(ix, kind, c, h, k)
      map.set(k, v)
    }
    return ix
  }

  /** map.get(k) as a Python dict does it: the value under the key equal to k, or undefined. */
  getEntry(map: Map<unknown, unknown>, k: unknown): unknown {
    const ix = this.indexOf(map)
    if (ix === undefined) return map.get(k)
    const c = this.#canon(k, 'a dict key')
    if (c === NAN_KEY) return undefined
    const first = ix === KeyIndex.scan ? this.#scan(map.keys(), k) : this.#lookup(ix, this.#kind, c, this.#hashCode, k)
    return first === NONE ? undefined : map.get(first)
  }

  /** set.add(x) as a Python set does it: a member equal to one already there is not added. */
  addMember(set: Set<unknown>, x: unknown): void {
    const c = this.#canon(x, 'a set member')
    if (c === NAN_KEY) {
      if (set.has(x)) twoNaNs('set members')
      set.add(x)
      return
    }
    const kind = this.#kind
    const h = this.#hashCode
    let ix = this.indexOf(set)
    if (ix === undefined) {
      if (c === x) {
        set.add(x)
        return
      }
      ix = this.#indexFor(set, set.size, set.values())
    }
    if (ix === KeyIndex.scan) {
      if (this.#scan(set.values(), x) === NONE) {
        set.add(x)
        if (set.size > SMALL) this.#buildIndex(set, set.values())
      }
      return
    }
    if (this.#lookup(ix, kind, c, h, x) === NONE) {
      this.#record(ix, kind, c, h, x)
      set.add(x)
    }
  }

  /**
   * The index for a container about to get its first key that is not its own canonical form:
   * KeyIndex.scan while it is small (no Map of its own to allocate and collect), else a built index.
   */
  #indexFor(container: object, size: number, keys: Iterable<unknown>): KeyIndex {
    if (size >= SMALL) return this.#buildIndex(container, keys)
    ;(this.#recent ??= new Map()).set(container, KeyIndex.scan)
    this.indexing = true
    return KeyIndex.scan
  }

  /** The first of keys that Python's == finds equal to k, or NONE: a small container's lookup. */
  #scan(keys: Iterable<unknown>, k: unknown): unknown {
    for (const other of keys) if (this.#equal(other, k, 0)) return other
    return NONE
  }

  #buildIndex(container: object, keys: Iterable<unknown>): KeyIndex {
    const ix = new KeyIndex()
    for (const k of keys) {
      const c = this.#canon(k, 'a dict key')
      if (c === NAN_KEY) continue
      const kind = this.#kind
      const h = this.#hashCode
      if (this.#lookup(ix, kind, c, h, k) === NONE) this.#record(ix, kind, c, h, k)
    }
    ;(this.#recent ??= new Map()).set(container, ix)
    this.indexing = true
    return ix
  }

  /** The first key recorded in ix that equals k (whose canonical form c, kind and hash h #canon gave), or NONE. */
  #lookup(ix: KeyIndex, kind: Kind, c: unknown, h: number, k: unknown): unknown {
    if (kind === Kind.Plain) return ix.plain.has(c) ? ix.plain.get(c) : NONE
    if (kind === Kind.Encoded) return ix.encoded !== null && ix.encoded.has(c as string) ? ix.encoded.get(c as string) : NONE
    const entry = ix.hashed === null ? undefined : ix.hashed.get(h)
    if (entry === undefined) return NONE
    if (entry instanceof Bucket) {
      for (const other of entry.keys) if (this.#equal(other, k, 0)) return other
      return NONE
    }
    return this.#equal(entry, k, 0) ? entry : NONE
  }

  #record(ix: KeyIndex, kind: Kind, c: unknown, h: number, k: unknown): void {
    if (kind === Kind.Plain) ix.plain.set(c, k)
    else if (kind === Kind.Encoded) (ix.encoded ??= new Map()).set(c as string, k)
    else {
      const hashed = (ix.hashed ??= new Map())
      const entry = hashed.get(h)
      if (entry === undefined) hashed.set(h, k)
      else if (entry instanceof Bucket) entry.keys.push(k)
      else hashed.set(h, new Bucket([entry, k]))
    }
  }

  /** Python's == between two hashable keys as the unpickler represents them (a tuple's items in order). */
  #equal(a: unknown, b: unknown, depth: number): boolean {
    if (a === b) return true
    // A numpy scalar is == to its plain value (numpy.bytes_ to bytes, numpy.float64 to float).
    if (a instanceof NumpyScalar) a = a.natural()
    if (b instanceof NumpyScalar) b = b.natural()
    if (a instanceof Tuple) {
      if (!(b instanceof Tuple) || a.length !== b.length) return false
      if (depth >= this.maxDepth) return false
      // Charged by length: equal tuples that are separate objects are compared item by item each time.
      this.charge(a.length + 1)
      for (let i = 0; i < a.length; i++) if (!this.#equal(a[i], b[i], depth + 1)) return false
      return true
    }
    if (b instanceof Tuple) return false
    if (isBytes(a)) {
      if (!isBytes(b) || a.length !== b.length) return false
      this.charge(a.length + 1)
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
      return true
    }
    if (isBytes(b)) return false
    const ca = this.#canon(a, 'a dict key')
    const ka = this.#kind
    const cb = this.#canon(b, 'a dict key')
    return ka === this.#kind && ka !== Kind.Hashed && ca !== NAN_KEY && ca === cb
  }

  /**
   * What Python's == sees of a key, as a value that is SameValueZero-equal to another key's
   * exactly when the two are == in Python: numbers of every kind as a number or bigint,
   * composites (bytes, tuples, frozensets, ...) as their encoding (with #composite set, so
   * that it is never taken for a str key), objects compared by identity as themselves, a
   * primitive NaN as NAN_KEY. Unhashable values throw.
   */
  #canon(k: unknown, role: string): unknown {
    this.#kind = Kind.Plain
    switch (typeof k) {
      case 'string':
        return k
      case 'number':
        if (k !== k) return NAN_KEY
        return isPlainNumberKey(k) ? k : BigInt(k)
      case 'boolean':
        return k ? 1 : 0
      case 'bigint':
        return k <= SAFE_MAX && k >= SAFE_MIN ? Number(k) : k
      case 'object': {
        if (k === null) return null
        if (k instanceof Tuple || isBytes(k)) {
          const h = this.#hash(k, role, 0)
          if (h === null) return k
          this.#hashCode = h
          this.#kind = Kind.Hashed
          return HASHED
        }
        const kind = unhashableKind(k)
        if (kind !== null) unhashable(kind, k, role)
        // A numeric object's canonical form (and kind) is whatever the last #canon inside #numeric made it.
        const num = this.#numeric(k, role)
        if (num !== undefined) return num
        if (!this.#isComposite(k)) return k
        const e = this.#encode(k, role, 0)
        this.#kind = e === null ? Kind.Plain : Kind.Encoded
        return e === null ? k : e
      }
      default:
        return k
    }
  }

  /**
   * A hash of a key consistent with #equal (keys Python finds equal hash alike), or null when
   * the key holds a NaN (equal only to itself). Charged to the load as the encodings are.
   */
  #hash(x: unknown, role: string, depth: number): number | null {
    switch (typeof x) {
      case 'string':
        return hashString(x, 0x3c5f)
      case 'number':
        if (x !== x) return null
        if (Number.isSafeInteger(x)) return hashInt(x)
        return Number.isInteger(x) ? hashBigInt(BigInt(x)) : hashFloat(x)
      case 'boolean':
        return hashInt(x ? 1 : 0)
      case 'bigint':
        return x <= SAFE_MAX && x >= SAFE_MIN ? hashInt(Number(x)) : hashBigInt(x)
      case 'undefined':
        return 0x2d4f0
      case 'object':
        break
      default:
        return hashString(this.#identity(x as object), 0x1d)
    }
    if (x === null) return 0x2d4f0
    if (depth >= this.maxDepth) throw new UnpicklingError(`${role} nests tuples deeper than maxDepth (${this.maxDepth})`)
    if (x instanceof Tuple) {
      const cached = this.#hashes === null ? undefined : this.#hashes.get(x)
      if (cached !== undefined) return cached
      let h = 0x345678 ^ x.length
      for (let i = 0; i < x.length; i++) {
        const item = x[i]
        const hi = typeof item === 'number' && Number.isSafeInteger(item) ? hashInt(item) : this.#hash(item, role, depth + 1)
        if (hi === null) return null
        h = Math.imul(h ^ hi, 0x01000193) + i
      }
      this.charge(x.length + 1)
      if (x.length >= CACHED_KEY_SIZE) (this.#hashes ??= new WeakMap()).set(x, h | 0)
      return h | 0
    }
    if (isBytes(x)) {
      const cached = this.#hashes === null ? undefined : this.#hashes.get(x)
      if (cached !== undefined) return cached
      this.charge(x.length + 1)
      let h = 0x62797465 ^ x.length
      for (let i = 0; i < x.length; i++) h = Math.imul(h ^ x[i]!, 0x01000193)
      if (x.length >= CACHED_KEY_SIZE) (this.#hashes ??= new WeakMap()).set(x, h | 0)
      return h | 0
    }
    if (x instanceof NumpyScalar) {
      const v = x.natural()
      return v === x ? hashString(this.#identity(x), 0x1d) : this.#hash(v, role, depth)
    }
    const kind = unhashableKind(x)
    if (kind !== null) unhashable(kind, x, role)
    const num = this.#numeric(x, role)
    if (num !== undefined) return num === x ? null : this.#hash(num, role, depth)
    const e = this.#encode(x, role, depth)
    return e === null ? null : hashString(e, 0x7e)
  }

  /**
   * The canonical form of a numeric object (PyFloat, Decimal, Complex, a numpy scalar): the
   * number or bigint it equals, a token, or the object itself when it is a NaN (equal only to
   * itself, as Python hashes NaN objects by identity). undefined for other objects.
   */
  #numeric(o: object, role: string): unknown {
    if (o instanceof PyFloat) return this.#canon(o.value, role)
    if (o instanceof NumpyScalar) {
      const v = o.natural()
      if (v === o) return undefined
      if (typeof v === 'number' && v !== v) return o
      return this.#canon(v, role)
    }
    if (o instanceof Complex) {
      if (o.imag === 0) return o.real !== o.real ? o : this.#canon(o.real, role)
      return undefined
    }
    if (o instanceof Decimal) {
      const d = parseDecimal(o.value)
      if (d === null) return o
      if ('special' in d) {
        if (d.special === 'snan') throw new UnpicklingError(`cannot hash a signaling NaN value: Decimal(${JSON.stringify(o.value)}) as ${role}`)
        if (d.special === 'nan') return o
        return d.special === 'inf' ? Infinity : -Infinity
      }
      if (d.exp >= 0) {
        const digits = (d.coeff < 0n ? -d.coeff : d.coeff).toString().length + d.exp
        if (digits > MAX_DECIMAL_KEY_DIGITS) {
          throw new UnpicklingError(`Decimal(${JSON.stringify(o.value.slice(0, 40))}) as ${role}: more than ${MAX_DECIMAL_KEY_DIGITS} integer digits are not compared with ints`)
        }
        return this.#canon(d.coeff * 10n ** BigInt(d.exp), role)
      }
      // Not an integer: it equals a float when the float nearest to it is exactly it.
      const f = Number(o.value.trim().replace(/_/g, ''))
      if (Number.isFinite(f) && !Number.isInteger(f)) {
        const exact = floatAsDecimal(f)
        if (exact.coeff === d.coeff && exact.exp === d.exp) return f
      }
      return undefined
    }
    return undefined
  }

  #isComposite(o: object): boolean {
    return o instanceof Tuple || o instanceof FrozenSet || (o instanceof Uint8Array && !(o instanceof ByteArray)) || o instanceof Complex ||
      o instanceof Decimal || o instanceof PyRange || o instanceof PyDate || o instanceof PyDateTime || o instanceof PyTime ||
      o instanceof PyTimeDelta || o instanceof PyTimeZone || o instanceof UUID
  }

  /**
   * A self-delimiting text of what Python's == compares in a key, or null when the key
   * contains a NaN (equal only to itself: compared by identity). Cached per object.
   */
  #encode(x: unknown, role: string, depth: number): string | null {
    switch (typeof x) {
      case 'string':
        return `s${x.length}:${x}`
      case 'number':
        if (x !== x) return null
        return Number.isInteger(x) ? `i${Number.isSafeInteger(x) ? x : BigInt(x)};` : `f${x};`
      case 'boolean':
        return x ? 'i1;' : 'i0;'
      case 'bigint':
        return `i${x};`
      case 'undefined':
        return 'N'
      case 'object':
        break
      case 'function':
        return this.#identity(x)
      default:
        return null
    }
    if (x === null) return 'N'
    const o = x as object
    const cached = this.#encodings === null ? undefined : this.#encodings.get(o)
    if (cached !== undefined) return cached
    if (depth >= this.maxDepth) throw new UnpicklingError(`${role} nests tuples deeper than maxDepth (${this.maxDepth})`)
    const kind = unhashableKind(o)
    if (kind !== null) unhashable(kind, o, role)
    let e: string | null
    const num = this.#numeric(o, role)
    if (num !== undefined) {
      e = num === o ? null : this.#encode(num, role, depth)
    } else {
      e = this.#encodeUncached(o, role, depth)
    }
    if (e !== null && e.length >= CACHED_KEY_SIZE) (this.#encodings ??= new WeakMap()).set(o, e)
    return e
  }

  #encodeUncached(o: object, role: string, depth: number): string | null {
    let e: string | null
    if (o instanceof Tuple) {
      e = `t${o.length}(`
      for (let i = 0; i < o.length; i++) {
        const x = o[i]
        const p = typeof x === 'number' && Number.isSafeInteger(x) ? `i${x};` : this.#encode(x, role, depth + 1)
        if (p === null) return null
        e += p
      }
      e += ')'
    } else if (o instanceof FrozenSet) {
      const parts = new Set<string>()
      for (const x of o) {
        const p = this.#encode(x, role, depth + 1)
        if (p === null) return null
        parts.add(p)
      }
      e = `F${parts.size}{${[...parts].sort().join('')}}`
    } else if (o instanceof Uint8Array) {
      e = `y${o.length}:${decodeLatin1(o, 0, o.length)}`
    } else if (o instanceof Complex) {
      const re = this.#encode(o.real, role, depth + 1)
      const im = this.#encode(o.imag, role, depth + 1)
      if (re === null || im === null) return null
      e = `c${re}${im}`
    } else if (o instanceof Decimal) {
      const d = parseDecimal(o.value)
      e = d === null || 'special' in d ? null : `d${d.coeff}e${d.exp};`
    } else if (o instanceof PyRange) {
      e = rangeKey(o)
    } else if (o instanceof PyDateTime) {
      if (o.tzinfo === null) e = `N${o.year},${o.month},${o.day},${o.hour},${o.minute},${o.second},${o.microsecond};`
      else if (o.tzinfo instanceof PyTimeZone) {
        const local = ((BigInt(daysFromCivil(o.year, o.month, o.day)) * 24n + BigInt(o.hour)) * 60n + BigInt(o.minute)) * 60n + BigInt(o.second)
        e = `A${local * 1_000_000n + BigInt(o.microsecond) - deltaMicros(o.tzinfo.offset)};`
      } else e = null
    } else if (o instanceof PyDate) {
      e = `D${o.year},${o.month},${o.day};`
    } else if (o instanceof PyTime) {
      const us = ((BigInt(o.hour) * 60n + BigInt(o.minute)) * 60n + BigInt(o.second)) * 1_000_000n + BigInt(o.microsecond)
      if (o.tzinfo === null) e = `H${us};`
      else if (o.tzinfo instanceof PyTimeZone) e = `h${us - deltaMicros(o.tzinfo.offset)};`
      else e = null
    } else if (o instanceof PyTimeDelta) {
      e = `T${deltaMicros(o)};`
    } else if (o instanceof PyTimeZone) {
      e = `Z${deltaMicros(o.offset)};`
    } else if (o instanceof UUID) {
      e = `u${o.int};`
    } else {
      return this.#identity(o)
    }
    this.charge(e === null ? 1 : e.length)
    return e
  }

  /** An object compared by identity, inside a composite key: a number of its own. */
  #identity(o: object): string {
    const ids = (this.#ids ??= new WeakMap())
    let id = ids.get(o)
    if (id === undefined) ids.set(o, (id = this.#nextId++))
    return `o${id};`
  }
}

/** How a key's canonical form is looked up in a KeyIndex. */
const enum Kind {
  /** SameValueZero on the canonical form: numbers, str, objects compared by identity. */
  Plain,
  /** By the text of what == compares: frozensets, Decimals, complex numbers, dates, ranges, UUIDs. */
  Encoded,
  /** By a hash, then #equal: tuples and bytes, the composite keys real data uses (no text made). */
  Hashed,
}

/**
 * Containers of up to this many keys are searched key by key (with #equal) instead of
 * getting an index of their own.
 */
const SMALL = 8

/** Keys of equal hash that are not equal to each other. */
class Bucket {
  constructor(readonly keys: unknown[]) {}
}

/** The index of a container that holds keys whose JavaScript identity differs from Python's equality. */
export class KeyIndex {
  static readonly scan = new KeyIndex()

  /** Canonical forms of numbers, str, and objects compared by identity -> the first key. */
  readonly plain = new Map<unknown, unknown>()
  /** Encodings of frozensets, Decimals, ... -> the first key. */
  encoded: Map<string, unknown> | null = null
  /** Hashes of tuples and bytes -> the first key, or a Bucket of them. */
  hashed: Map<number, unknown> | null = null
}

/** range equality is by the numbers it holds: length, and first item and step when they matter. */
function rangeKey(r: PyRange): string {
  const start = BigInt(r.start)
  const stop = BigInt(r.stop)
  const step = BigInt(r.step)
  let len = 0n
  if (step > 0n && stop > start) len = (stop - start + step - 1n) / step
  else if (step < 0n && stop < start) len = (start - stop - step - 1n) / -step
  if (len === 0n) return 'r0;'
  if (len === 1n) return `r1,${start};`
  return `r${len},${start},${step};`
}

function twoNaNs(what: string): never {
  throw new UnpicklingError(
    `two NaN ${what}: Python keeps each float('nan') object apart, a JavaScript Map or Set holds one NaN`,
  )
}
