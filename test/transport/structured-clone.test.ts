/**
 * Between two JavaScript ends (a channel, an ArenaPool task there and back) a value comes back
 * as structuredClone gives it: the same constructors and prototypes, the same property order,
 * the same identity structure (shared and cyclic references), holes, -0, NaN, undefined,
 * bigint, boxed primitives, errors, buffers and every TypedArray class.
 */
import t, { type Test } from 'tap'
import { ArenaPool, createChannel, openChannel, type Channel, type EndpointOptions } from '@picklewire/transport/shm'

const TASK = new URL('./structured-clone-task.mjs', import.meta.url).href

class Point {
  constructor(readonly x: number, readonly y: number) {}
  get sum(): number {
    return this.x + this.y
  }
}

function filled<T extends { length: number; [i: number]: number | bigint }>(a: T, big = false): T {
  for (let i = 0; i < a.length; i++) a[i] = big ? BigInt(i * 3 - 7) : (i * 7) % 251
  return a
}

/** The values sent, each with a name. */
function cases(): [string, unknown][] {
  const shared = { s: 1 }
  const selfObject: Record<string, unknown> = { name: 'self' }
  selfObject.me = selfObject
  const selfArray: unknown[] = [1]
  selfArray.push(selfArray)
  const selfMap = new Map<unknown, unknown>()
  selfMap.set(selfMap, selfMap)
  selfMap.set('k', [selfMap])
  const selfSet = new Set<unknown>()
  selfSet.add(selfSet)
  const lastIndex = /x/g
  lastIndex.lastIndex = 3
  const custom = new Error('named')
  custom.name = 'CustomError'
  const renamed = new Error('renamed')
  renamed.name = 'TypeError'
  const ab = new ArrayBuffer(16)
  new Uint8Array(ab).set([1, 2, 3, 250])
  const bigAb = new ArrayBuffer(4096)
  new Uint8Array(bigAb).fill(9)
  const dv = new DataView(new ArrayBuffer(12))
  dv.setFloat32(4, 1.5)
  const bigDv = new DataView(new ArrayBuffer(2048))
  bigDv.setFloat64(8, -2.25)
  const withProto = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as unknown
  const nullProto = Object.create(null) as Record<string, unknown>
  nullProto.z = 1
  nullProto.a = 2
  const out: [string, unknown][] = [
    ['undefined', undefined], ['null', null], ['true', true], ['false', false],
    ['zero', 0], ['minus zero', -0], ['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity],
    ['a float', 1.5], ['2**53', 2 ** 53], ['2**60 (an integral double beyond safe)', 2 ** 60], ['a negative int', -123456789],
    ['0n', 0n], ['5n (a small bigint stays a bigint)', 5n], ['a huge negative bigint', -(2n ** 100n)],
    ['empty string', ''], ['accents', 'héllo wörld'], ['a lone surrogate', '\ud800x'], ['astral', '𝄞 music'],
    ['empty array', []], ['mixed array', [1, 'a', null, undefined, true]], ['array with a hole', [1, , 3]], // eslint-disable-line no-sparse-arrays
    ['array of holes', new Array(5)], ['nested arrays', [[1, [2, [3]]], []]],
    ['empty object', {}], ['nested object', { a: 1, b: { c: [2, { d: 'e' }] } }],
    ['integer-like keys order', { b: 1, 2: 'two', a: 2, 1: 'one', '-1': 'minus' }],
    ['null prototype', nullProto], ['an own __proto__ key', withProto],
    ['class instance (own enumerable fields only)', new Point(1, 2)],
    ['object with undefined and -0', { u: undefined, z: -0 }],
    ['empty Map', new Map()], ['Map with keys of every kind', new Map<unknown, unknown>([[1, 'n'], ['1', 's'], [true, 'b'], [NaN, 'nan'], [shared, 'o'], [undefined, 'u'], [2n, 'big']])],
    ['empty Set', new Set()], ['Set of values Python would merge', new Set<unknown>([1, '1', true, 1.5, {}, [], null, undefined])],
    ['Date', new Date(1_700_000_000_123)], ['invalid Date', new Date(NaN)],
    ['RegExp', /ab+c/gimsuy], ['RegExp with lastIndex', lastIndex],
    ['boxed number', new Number(-0)], ['boxed string', new String('boxed')], ['boxed boolean', new Boolean(false)], ['boxed bigint', Object(10n)],
    ['Error', new Error('plain')], ['TypeError', new TypeError('typed')], ['RangeError with a cause', new RangeError('ranged', { cause: { why: [1] } })],
    ['EvalError', new EvalError('ev')], ['ReferenceError', new ReferenceError('ref')], ['SyntaxError', new SyntaxError('syn')], ['URIError', new URIError('uri')],
    ['Error with another name', custom], ['Error named TypeError', renamed], ['Error without a message', new Error()],
    ['empty ArrayBuffer', new ArrayBuffer(0)], ['small ArrayBuffer', ab], ['4 KiB ArrayBuffer (out of band)', bigAb],
    ['DataView', dv], ['2 KiB DataView (out of band)', bigDv],
    ['Uint8Array subarray with an offset', new Uint8Array([0, 1, 2, 3, 4, 5]).subarray(2, 5)],
    ['Node Buffer (a Uint8Array)', Buffer.from('abc')],
    ['shared references', { a: shared, b: shared, c: [shared] }],
    ['cyclic object', selfObject], ['cyclic array', selfArray], ['Map holding itself', selfMap], ['Set holding itself', selfSet],
    ['everything together', { list: [new Map([['x', new Set([1])]]), new Date(5)], f: new Float32Array([1, 2]), o: shared, again: shared }],
  ]
  const classes = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array] as const
  for (const C of classes) {
    out.push([`${C.name} (in band)`, filled(new C(7))])
    out.push([`${C.name} (out of band)`, filled(new C(4096 / C.BYTES_PER_ELEMENT + 3))])
  }
  for (const C of [BigInt64Array, BigUint64Array] as const) {
    out.push([`${C.name} (in band)`, filled(new C(5), true)])
    out.push([`${C.name} (out of band)`, filled(new C(600), true)])
  }
  return out
}

/**
 * A value's shape as text: constructor and prototype names, Object.prototype.toString, own
 * property names in order (and their enumerability), every item, the bytes of buffers, and
 * shared or cyclic references as #n (the n-th object met). Prototypes are named, not compared
 * by identity: a worker's Map.prototype is another object than this thread's.
 */
function shape(v: unknown, seen = new Map<object, number>()): string {
  switch (typeof v) {
    case 'undefined': return 'undefined'
    case 'number': return Object.is(v, -0) ? 'number -0' : `number ${v}`
    case 'bigint': return `bigint ${v}`
    case 'string': return `string ${JSON.stringify(v)}`
    case 'boolean': return `boolean ${v}`
    case 'object': break
    default: return `unexpected ${typeof v}`
  }
  if (v === null) return 'null'
  const known = seen.get(v)
  if (known !== undefined) return `#${known}`
  seen.set(v, seen.size)
  const proto = Object.getPrototypeOf(v) as { constructor?: { name?: string } } | null
  const head = `${Object.prototype.toString.call(v)} proto=${proto === null ? 'null' : proto.constructor?.name}`
  const s = (x: unknown): string => shape(x, seen)
  const own = (): string =>
    Object.getOwnPropertyNames(v).map((k) => {
      const d = Object.getOwnPropertyDescriptor(v, k)!
      return `${JSON.stringify(k)}${d.enumerable ? '' : '(hidden)'}: ${'value' in d ? s(d.value) : 'accessor'}`
    }).join(', ')
  if (ArrayBuffer.isView(v)) {
    const bytes = [...new Uint8Array(v.buffer, v.byteOffset, v.byteLength)].join(',')
    const length = 'length' in v ? (v as unknown as { length: number }).length : v.byteLength
    return `${head} length=${length} bytes=[${bytes}]`
  }
  if (v instanceof ArrayBuffer) return `${head} bytes=[${[...new Uint8Array(v)].join(',')}]`
  if (v instanceof Map) return `${head} {${[...v].map(([k, x]) => `${s(k)} => ${s(x)}`).join(', ')}} own {${own()}}`
  if (v instanceof Set) return `${head} {${[...v].map(s).join(', ')}} own {${own()}}`
  if (v instanceof Date) return `${head} ${v.getTime()}`
  if (v instanceof RegExp) return `${head} ${v.source} ${v.flags} lastIndex=${v.lastIndex}`
  if (v instanceof Error) return `${head} name=${v.name} {${own()}}`
  if (v instanceof Number || v instanceof String || v instanceof Boolean || v instanceof BigInt) return `${head} ${s(v.valueOf())} {${own()}}`
  return `${head} {${own()}}`
}

/** Both ends of a channel in this thread, closed when the test ends. */
function channelPair(t: Test, options: EndpointOptions = {}): { a: Channel; b: Channel } {
  const { port1, port2 } = createChannel()
  const a = openChannel(port1, options)
  const b = openChannel(port2, options)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  return { a, b }
}

t.test('a channel gives what structuredClone gives, value by value', async (t) => {
  const { a, b } = channelPair(t)
  const all = cases()
  t.ok(all.length >= 50, `${all.length} values`)
  for (const [name, value] of all) {
    const expected = shape(structuredClone(value))
    await a.send(value)
    const got = await b.receive()
    t.equal(shape(got.value), expected, name)
    got.release()
  }
})

t.test('an ArenaPool task (there and back) gives what structuredClone gives, value by value', async (t) => {
  const pool = new ArenaPool({ filename: TASK, minThreads: 1, maxThreads: 1 })
  t.teardown(() => pool.destroy())
  for (const [name, value] of cases()) {
    const expected = shape(structuredClone(value))
    const got = await pool.run(value)
    t.equal(shape(got), expected, name)
    pool.release(got)
  }
})

t.test('a TypedArray allocated in the arena arrives as the same class over the arena memory: nothing copied', async (t) => {
  const { a, b } = channelPair(t)
  const f = await a.allocArray(Float64Array, 1000)
  f.fill(0.5)
  await a.send({ f, again: f })
  const got = await b.receive<{ f: Float64Array; again: Float64Array }>()
  t.ok(got.value.f instanceof Float64Array, 'a Float64Array')
  t.equal(got.value.f, got.value.again, 'one object, as it was sent')
  t.ok(got.value.f.buffer instanceof SharedArrayBuffer, 'over the arena')
  t.equal(got.value.f.byteOffset, f.byteOffset, 'at the place it was filled')
  t.equal(a.stats().bytesCopied, 0, 'nothing copied')
  got.release()
})

t.test("values: 'python' keeps the codec's Python mapping", async (t) => {
  const { a, b } = channelPair(t, { values: 'python' })
  await a.send({ f: new Float32Array(4), n: 5n })
  const got = await b.receive()
  t.ok(got.value instanceof Map, 'a dict as Map')
  const m = got.value as Map<string, unknown>
  t.equal((m.get('f') as { constructor: { name: string } }).constructor.name, 'NDArray', 'a TypedArray as NDArray')
  t.equal(m.get('n'), 5, 'a small int as a number')
  got.release()
})

t.test('what structuredClone refuses is refused', async (t) => {
  const { a, b } = channelPair(t)
  const refused = await a.send({ w: new WeakMap() }).then(() => null, (err: unknown) => err as Error)
  t.equal(refused?.name, 'PicklingError', 'the codec names where the value was')
  t.match(refused?.message, /WeakMap\] could not be cloned\. \(at value\.w\)/)
  t.equal((refused?.cause as Error | undefined)?.name, 'DataCloneError', "structuredClone's error as the cause")
  await t.rejects(a.send({ f: () => 1 }), /cannot pickle|could not be cloned/)
  await t.rejects(a.send(Symbol('s')), /cannot pickle|could not be cloned/)
  t.throws(() => openChannel(createChannel().port1, { values: 'js' as 'javascript' }), RangeError)
})
