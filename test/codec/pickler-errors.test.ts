/**
 * What the pickler refuses, and how it says so: a PicklingError that names the bad value and
 * where it sits (value[2].name), and nothing written to the sink.
 */
import t from 'tap'
import {
  NotImplemented, PickleError, Pickler, PicklingError, PyGlobal, Tuple, Unpickler, dump, dumps, loads,
} from '@picklewire/codec'

function caught(f: () => unknown): PicklingError {
  try {
    f()
  } catch (err) {
    if (err instanceof PicklingError) return err
    throw err
  }
  throw new Error('expected a PicklingError')
}

class Unregistered {
  constructor(readonly x = 1) {}
}

t.test('values JavaScript has and Python has not: the error names the value and its path', async (t) => {
  for (let protocol = 0; protocol <= 5; protocol++) {
    const fn = caught(() => dumps([1, 2, function helper() {}], { protocol }))
    t.match(fn.message, /cannot pickle function helper.*\(at value\[2\]\)$/, `protocol ${protocol}: a function`)
    t.same(fn.path, [2])

    const sym = caught(() => dumps({ a: [1, { name: Symbol('s') }] }, { protocol }))
    t.match(sym.message, /cannot pickle Symbol\(s\) \(at value\.a\[1\]\.name\)$/, `protocol ${protocol}: a symbol`)
    t.same(sym.path, ['a', 1, 'name'])

    const inst = caught(() => dumps(new Map<unknown, unknown>([['k', [0, new Unregistered()]]]), { protocol }))
    t.match(inst.message, /cannot pickle Unregistered: register its class with GlobalRegistry\.registerClass \(at value\.k\[1\]\)$/,
      `protocol ${protocol}: an instance of a class nobody registered`)

    const odd = caught(() => dumps({ 'odd key': new Set([1, () => 0]) }, { protocol }))
    if (protocol >= 4) {
      t.same(odd.path, ['odd key', 1], `protocol ${protocol}: set items and non-identifier keys are on the path`)
      t.match(odd.message, /\(at value\["odd key"\]\[1\]\)$/)
    } else {
      // Below protocol 4 a set is written as set([items]): the path goes through that call's arguments.
      t.same(odd.path, ['odd key', 0, 1], `protocol ${protocol}: set items and non-identifier keys are on the path`)
    }
  }
})

t.test('a tuple that contains itself (a cycle through a value that cannot be memoized first) is refused with its path', async (t) => {
  const tup = new Tuple<unknown>()
  tup.push('x', tup)
  const limited = caught(() => dumps([tup], { maxDepth: 10 }))
  t.match(limited.message, /nests deeper than maxDepth \(10\); a cycle through values that cannot be memoized\?/)
  t.match(limited.message, /\(at value\[0\]\[1\]\[1\]\[1\]/)
  t.same(limited.path.slice(0, 4), [0, 1, 1, 1])

  // With the default maxDepth, the JavaScript stack runs out first: still a PicklingError with the path.
  const unlimited = caught(() => dumps([tup]))
  t.match(unlimited.message, /cycle through values that cannot be memoized\?/)
  t.same(unlimited.path.slice(0, 4), [0, 1, 1, 1], 'the path from the top')
  t.ok(unlimited.path.length > 100, `${unlimited.path.length} steps named`)

  // Through a list, Python's way of making such a tuple, it pickles and loads back.
  const list: unknown[] = []
  const viaList = Tuple.fromItems<unknown>([list, 2])
  list.push(viaList)
  const back = loads(dumps(viaList)) as Tuple
  t.equal((back[0] as unknown[])[0], back, 'a tuple reached through a list inside it')
})

t.test('maxDepth: deeper values are refused, shallower ones pickle', async (t) => {
  let deep: unknown = []
  for (let i = 0; i < 30; i++) deep = [deep]
  t.ok(dumps(deep, { maxDepth: 31 }), 'within the limit')
  t.match(caught(() => dumps(deep, { maxDepth: 20 })).message, /nests deeper than maxDepth \(20\)/)
  let ok: unknown = []
  for (let i = 0; i < 1000; i++) ok = [ok]
  t.ok(dumps(ok), '1000 levels pickle with the default limit (CPython stops near its recursion limit of 1000)')
})

t.test('errors thrown by hooks become PicklingErrors with the path, the hook\'s error as cause', async (t) => {
  class Thing {}
  const boom = new TypeError('boom')
  const err = caught(() => dumps([1, { k: new Thing() }], { dispatchTable: new Map([[Thing, () => { throw boom }]]) }))
  t.match(err.message, /^boom \(at value\[1\]\.k\)$/)
  t.equal(err.cause, boom)
  const bad = caught(() => dumps([new Thing()], { dispatchTable: new Map([[Thing, () => 42 as never]]) }))
  t.match(bad.message, /a reduce value must be a string or \[callable, args, \.\.\.\] of 2 to 6 items, got number 42 \(at value\[0\]\)/)
  const notCallable = caught(() => dumps([new Thing()], { reducerOverride: () => ['not callable', []] }))
  t.match(notCallable.message, /the callable of a reduce value must be a PyGlobal, an opaque placeholder or a registered function, got string "not callable"/)
  const args = caught(() => dumps([new Thing()], { reducerOverride: (v) => (v instanceof Thing ? [new PyGlobal('m', 'f'), 'x' as never] : NotImplemented) }))
  t.match(args.message, /the second item of a reduce value must be an array of arguments, got string "x"/)
  const items = caught(() => dumps([new Thing()], { reducerOverride: (v) => (v instanceof Thing ? [new PyGlobal('m', 'f'), [], null, null, [[1, 2, 3]] as never] : NotImplemented) }))
  t.match(items.message, /dict items must be \[key, value\] pairs, got Array/)
  const pid = caught(() => dumps([1], { protocol: 0, persistentId: (v) => (v === 1 ? 'two\nlines' : null) }))
  t.match(pid.message, /persistent IDs in protocol 0 must be ASCII strings without newlines, got string "two\\nlines"/)
})

t.test('a failed dump writes nothing to the sink', async (t) => {
  const writes: Uint8Array[] = []
  const sink = { write: (chunk: Uint8Array) => void writes.push(chunk) }
  t.throws(() => dump([1, 'two', new Uint8Array(100_000), () => 3], sink), PicklingError)
  t.equal(writes.length, 0, 'dump()')
  const p = new Pickler(sink, { protocol: 2 })
  p.dump(['first'])
  t.throws(() => p.dump(['second', Symbol('no')]), PicklingError)
  t.equal(writes.length, 1, 'Pickler.dump(): only the pickle that succeeded')
  t.same(loads(writes[0]!), ['first'])
  p.dump(['second', 'first'])
  t.equal(writes.length, 2, 'the Pickler still works after a failure')
  // The failed dump memoized 'second' but wrote nothing: the memo must forget it, or the next
  // pickle would refer to a memo entry the reader never saw.
  const reader = new Unpickler(Buffer.concat(writes))
  t.same([reader.load(), reader.load()], [['first'], ['second', 'first']], 'the stream loads with one Unpickler')
})

t.test('bad options are refused up front', async (t) => {
  t.throws(() => dumps(1, { protocol: 6 }), { name: 'PickleError', message: /pickle protocol must be <= 5, got 6/ })
  t.throws(() => dumps(1, { protocol: 1.5 }), { name: 'PickleError', message: /protocol must be an integer, got number 1.5/ })
  t.throws(() => new Pickler(null).dump(1), PickleError, 'dump() needs a sink')
  t.equal(new Pickler(null, { protocol: -1 }).protocol, 5, 'a negative protocol means HIGHEST_PROTOCOL')
  t.equal(new Pickler(null).protocol, 4, 'the default protocol is 4')
})
