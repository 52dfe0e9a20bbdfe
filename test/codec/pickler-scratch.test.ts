import t from 'tap'
import { NotImplemented, Pickler, PicklingError, PyGlobal, dumps, dumpsTransient, loads } from '@picklewire/codec'

// dumps() lends one output buffer to whichever dump runs; a dump started from inside another
// (a hook calling dumps) must get its own, or the two pickles would overwrite each other.
t.test('a dump nested inside another dump does not share its output buffer', async (t) => {
  class Wrapped {
    constructor(readonly inner: unknown) {}
  }
  const unwrap = new PyGlobal('builtins', 'bytes')
  const reducerOverride = (v: unknown) =>
    v instanceof Wrapped ? ([unwrap, [dumps(v.inner, { protocol: 5 })]] as const) : NotImplemented
  const big = 'x'.repeat(5000)
  const outer = dumps([big, new Wrapped(['inner', big, 42]), big], { protocol: 5, reducerOverride })
  const back = loads(outer) as unknown[]
  t.equal(back[0], big)
  t.equal(back[2], big)
  t.same(loads(back[1] as Uint8Array), ['inner', big, 42], 'the nested pickle is whole and loads')
  const again = dumps(['after', 1], { protocol: 5 })
  t.same(loads(again), ['after', 1], 'the next dump starts clean')
  t.same(loads(outer), back, 'the first result was not overwritten by later dumps')
})

t.test('big pickles are handed over with no stale bytes past their end', async (t) => {
  const payload = new Uint8Array(3 << 20).fill(9)
  const out = dumps(payload, { protocol: 4 })
  t.equal(out.length, payload.length + 9, 'PROTO (2), BINBYTES header (5), payload, MEMOIZE, STOP')
  const tail = new Uint8Array(out.buffer, out.byteOffset + out.length)
  t.ok(tail.every((b) => b === 0), `the ${tail.length} bytes past the pickle in its ArrayBuffer are zero`)
})

t.test('dumpsTransient lends the pickle for the length of the callback only', async (t) => {
  const value = { seq: 7, payload: new Uint8Array(1000).fill(3), name: 'x'.repeat(20) }
  const expected = dumps(value, { protocol: 5 })
  let lent: Uint8Array | null = null
  const copy = dumpsTransient(value, { protocol: 5 }, (pickle) => {
    lent = pickle
    return pickle.slice()
  })
  t.same(copy, expected, 'the same bytes as dumps')
  t.equal(lent!.buffer, dumpsTransient(1, { protocol: 5 }, (p) => p.buffer), 'the view is over reused memory, not a fresh allocation')
  // A dumps inside the callback gets its own memory: the lent view stays whole meanwhile.
  const nested = dumpsTransient(['a', 1], { protocol: 5 }, (outer) => {
    const before = outer.slice()
    const inner = dumps(['b'.repeat(5000)], { protocol: 5 })
    t.same(outer, before, 'a nested dumps does not write over the lent pickle')
    return inner
  })
  t.same(loads(nested), ['b'.repeat(5000)])
  // Even a dump with the same Pickler from inside consume writes elsewhere.
  const pickler = new Pickler(null, { protocol: 5 })
  const same = pickler.dumpTransient(['outer', 1], (outer) => {
    const before = outer.slice()
    const inner = pickler.dumpToBytes(['inner'.repeat(100)])
    t.same(outer, before, 'the lent pickle is intact after a nested dump on the same pickler')
    return [before, inner] as const
  })
  t.same(loads(same[0]), ['outer', 1])
  t.same(loads(same[1]), ['inner'.repeat(100)])
  // A failed dump never calls consume, and the next one starts clean.
  let called = false
  t.throws(() => dumpsTransient([Symbol('no')], { protocol: 5 }, () => { called = true }), PicklingError)
  t.notOk(called)
  t.same(dumpsTransient([1, 2], { protocol: 5 }, (p) => loads(p)), [1, 2])
  // An exception from consume passes through, and the memory is returned all the same.
  t.throws(() => dumpsTransient(1, { protocol: 5 }, () => { throw new Error('consumer failed') }), { message: 'consumer failed' })
  t.same(dumpsTransient('after', { protocol: 5 }, (p) => loads(p)), 'after')
})
