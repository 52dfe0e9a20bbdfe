/**
 * PicklerOptions.overrideNative: reducerOverride is asked about the values the pickler writes
 * natively too (undefined, bigints, Arrays, Maps, Sets, plain objects, bytes), never about
 * null, booleans, numbers and strings; without it, as CPython's reducer_override, it is not.
 */
import t from 'tap'
import { NotImplemented, PyGlobal, dumps, loads, type ReduceValue } from '@picklewire/codec'

const values: [string, unknown][] = [
  ['undefined', undefined], ['a bigint', 5n], ['an Array', [1]], ['a Map', new Map([[1, 2]])], ['a Set', new Set([1])],
  ['a plain object', { a: 1 }], ['bytes', new Uint8Array(2)],
]

t.test('without overrideNative, reducerOverride is not asked about native values', async (t) => {
  for (const [name, v] of values) {
    const asked: unknown[] = []
    dumps(v, { reducerOverride: (x) => (asked.push(x), NotImplemented) })
    t.same(asked, [], name)
  }
})

t.test('with overrideNative, it is asked about each of them, and what it returns is written', async (t) => {
  const MARK = new PyGlobal('builtins', 'str')
  for (const [name, v] of values) {
    const asked: unknown[] = []
    const override = (x: unknown): ReduceValue | typeof NotImplemented => {
      asked.push(x)
      return x === v ? [MARK, [name]] : NotImplemented
    }
    const pickle = dumps(v, { protocol: 5, reducerOverride: override, overrideNative: true })
    t.equal(asked[0], v, `${name}: asked first`)
    t.equal(loads(pickle), name, `${name}: written as the override's call`)
  }
})

t.test('a declined value is written natively; null, booleans, numbers and strings are never asked about', async (t) => {
  const asked: unknown[] = []
  const v = { list: [null, true, 1.5, 7, 's', undefined] }
  const pickle = dumps(v, { protocol: 5, reducerOverride: (x) => (asked.push(x), NotImplemented), overrideNative: true })
  t.same(asked.map((x) => (Array.isArray(x) ? 'array' : x === undefined ? 'undefined' : typeof x)), ['object', 'array', 'undefined'])
  t.same(loads(pickle, { dict: 'object' }), { list: [null, true, 1.5, 7, 's', null] })
})

t.test('cycles through an overridden container are memoized', async (t) => {
  const m = new Map<string, unknown>()
  m.set('self', m)
  const G = new PyGlobal('builtins', 'dict')
  const pickle = dumps(m, {
    protocol: 5, overrideNative: true,
    reducerOverride: (x) => (x instanceof Map ? [G, [], null, null, [...x]] : NotImplemented),
  })
  const back = loads(pickle) as Map<string, unknown>
  t.equal(back.get('self'), back, 'the Map holds itself')
})

t.test('overrideNative must be a boolean', async (t) => {
  t.throws(() => dumps(1, { overrideNative: 'yes' as unknown as boolean }), { name: 'TypeError', message: /overrideNative must be a boolean/ })
})
