import t from 'tap'
import { NotImplemented, PyGlobal, dumps, loads } from '@picklewire/codec'

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
