import t from 'tap'
import { Deque, EOFError, Tuple, UnpicklingError, loads } from '@picklewire/codec'
import { endFileWithoutPython, pyDumps } from '../helpers/python.js'

endFileWithoutPython(t)

t.test('a list that contains itself loads as a recursive Array at every protocol', async (t) => {
  for (let p = 0; p <= 5; p++) {
    const v = loads(pyDumps('(lambda l: (l.append(l), l)[1])([1])', p)) as unknown[]
    t.equal(v.length, 2, `protocol ${p}`)
    t.equal(v[0], 1)
    t.equal(v[1], v, `protocol ${p}: the second item is the list itself`)
  }
})

t.test('a tuple reached through a list inside it keeps its identity', async (t) => {
  for (let p = 0; p <= 5; p++) {
    const v = loads(pyDumps('(lambda l: (lambda tup: (l.append(tup), tup)[1])((l, 2)))([])', p)) as Tuple
    t.type(v, Tuple, `protocol ${p}`)
    const inner = v[0] as unknown[]
    t.equal(inner[0], v, `protocol ${p}: the list holds the very tuple`)
  }
})

t.test('empty input is EOFError; a cut pickle is UnpicklingError', async (t) => {
  t.throws(() => loads(new Uint8Array(0)), EOFError)
  const whole = pyDumps('[1, 2, 3]', 4)
  for (let n = 1; n < whole.length; n++) {
    t.throws(() => loads(whole.subarray(0, n)), UnpicklingError, `cut at ${n} of ${whole.length}`)
  }
})

t.test('a long string with a lone surrogate decodes by hand, at any length', async (t) => {
  for (const n of [10, 70, 200_000]) {
    const text = 'é'.repeat(n) + '\ud800' + 'x'.repeat(n)
    const v = loads(pyDumps(`'é' * ${n} + '\\ud800' + 'x' * ${n}`, 4))
    t.equal(v, text, `${n} characters each side`)
  }
})

t.test('big lists filled ahead are whole wherever they are looked at', async (t) => {
  for (let p = 1; p <= 5; p++) {
    // set(l) and tuple(l) run while the load is under way: they must see all 2,500 items.
    const v = loads(pyDumps('(lambda l: [l, set(l), tuple(l), l])(list(range(2500)))', p)) as unknown[]
    const l = v[0] as number[]
    t.equal(l.length, 2500, `protocol ${p}: the list has exactly its items`)
    t.equal(l[2499], 2499)
    t.equal((v[1] as Set<number>).size, 2500, `protocol ${p}: set() saw every item`)
    t.equal((v[2] as number[]).length, 2500, `protocol ${p}: tuple() saw every item`)
    t.equal(v[3], l, 'the same list object both times')
  }
  // A single APPEND after a big APPENDS batch lands after the batch (a crafted pickle).
  const bytes = [0x80, 0x04, 0x5d, 0x28, ...Array.from({ length: 1000 }, (_, i) => [0x4b, i % 256]).flat(), 0x65, 0x4b, 7, 0x61, 0x2e]
  const list = loads(Uint8Array.from(bytes)) as number[]
  t.equal(list.length, 1001)
  t.equal(list[999], 999 % 256)
  t.equal(list[1000], 7)
})

t.test('slice, map, filter and concat of a Tuple or a Deque give plain Arrays (Symbol.species)', async (t) => {
  const tup = loads(pyDumps('(1, 2, 3)', 5)) as Tuple<number>
  t.type(tup, Tuple)
  for (const [name, r] of [['slice', tup.slice(1)], ['map', tup.map((x) => x * 2)], ['filter', tup.filter((x) => x > 1)], ['concat', tup.concat([4])]] as const) {
    t.equal(Object.getPrototypeOf(r), Array.prototype, `tuple.${name} is a plain Array`)
  }
  t.same(tup.map((x) => x * 2), [2, 4, 6])
  const dq = Deque.from([1, 2]) as Deque<number>
  t.type(dq, Deque)
  t.equal(Object.getPrototypeOf(dq.slice(0)), Array.prototype, 'deque.slice is a plain Array')
  // A data property, not an accessor: V8 never finishes optimizing `new Tuple(n)` under a getter.
  const d = Object.getOwnPropertyDescriptor(Tuple, Symbol.species)
  t.equal(d?.value, Array)
  t.equal(d?.get, undefined)
})
