/**
 * What a fuzz campaign of the pickler found (2026-11-21: 87,978 byte comparisons with CPython,
 * all identical, and 122 hostile values), each checked against CPython where it writes bytes.
 */
import t from 'tap'
import { FrozenSet, PickleBuffer, PicklingError, Tuple, dumps, loads } from '@picklewire/codec'
import { endFileWithoutPython, pyDumpsAll, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

t.test('a plain object with its own "constructor" key is a dict like any other', async (t) => {
  const json = JSON.parse('{"constructor": "Ferrari", "a": 1}') as Record<string, unknown>
  const exprs = [0, 2, 4, 5].map((p) => [`{'constructor': 'Ferrari', 'a': 1}`, p] as const)
  const python = pyDumpsAll(exprs)
  exprs.forEach(([, p], i) => t.equal(hex(dumps(json, { protocol: p })), hex(python[i]!), `protocol ${p}: CPython's bytes`))
  // An own constructor that is a class is data too, not the type: here an unpicklable value.
  t.throws(() => dumps({ constructor: Map, size: 0 }), { name: 'PicklingError', message: /cannot pickle function Map.*\(at value\.constructor\)/ })
})

t.test("every empty Uint8Array is CPython's one b'' (memoized by value); one-byte ones by identity", async (t) => {
  const value = [new Uint8Array(0), new Uint8Array(0), Uint8Array.of(7), Uint8Array.of(7)]
  // (7).to_bytes(...) makes a new object each time; bytes([7]) or b'\x07' would be CPython's
  // cached one (which of the two a Python program holds cannot be told from JavaScript).
  const exprs = [0, 1, 2, 3, 4, 5].map((p) => [`[b'', b'', (7).to_bytes(1, 'big'), (7).to_bytes(1, 'big')]`, p] as const)
  const python = pyDumpsAll(exprs)
  exprs.forEach(([, p], i) => t.equal(hex(dumps(value, { protocol: p })), hex(python[i]!), `protocol ${p}`))
  t.equal(hex(dumps(value, { protocol: 4, fast: true })), hex(dumps([new Uint8Array(0), new Uint8Array(0), Uint8Array.of(7), Uint8Array.of(7)], { protocol: 4, fast: true })),
    'fast mode writes each one again')
})

t.test('keys and members Python cannot hash are refused, with their path', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['a list in a set', new Set([[1, 2]]), /unhashable type: 'list' as a set member .*\(at value\[0\]\)/],
    ['a set in a frozenset', new FrozenSet([new Set([1])]), /unhashable type: 'set' as a set member/],
    ['a list as a Map key', new Map([[[1], 2]]), /unhashable type: 'list' as a dict key/],
    ['a Map as a Map key', new Map([[new Map(), 2]]), /unhashable type: 'dict' as a dict key/],
    ['a plain object in a set', new Set([{ a: 1 }]), /unhashable type: 'dict' as a set member/],
    ['a list inside a tuple key', new Map([[Tuple.fromItems([1, [2]]), 1]]), /unhashable type: 'list' as a dict key/],
  ]
  for (const [what, value, message] of cases) {
    for (const protocol of [2, 5]) t.throws(() => dumps(value, { protocol }), { name: 'PicklingError', message }, `${what}, protocol ${protocol}`)
  }
  t.equal(hex(dumps(new Map([[Tuple.fromItems([1, 'a']), 2]]), { protocol: 4 })), hex(pyDumpsAll([[`{(1, 'a'): 2}`, 4]])[0]!), 'a tuple of atoms is a key as in CPython')
  t.equal(hex(dumps(new Set([new FrozenSet([1])]), { protocol: 4 })), hex(pyDumpsAll([[`{frozenset({1})}`, 4]])[0]!), 'a frozenset is a member as in CPython')
})

t.test('ints over 4,300 digits at protocols 0 and 1 are refused, as CPython refuses them', async (t) => {
  const big = 10n ** 4300n
  for (const protocol of [0, 1]) {
    t.throws(() => dumps(big, { protocol }), { name: 'PicklingError', message: /an int of 4301 digits is over the 4300/ }, `protocol ${protocol}`)
  }
  t.equal(loads(dumps(big, { protocol: 2 })), big, 'protocol 2 writes it in binary')
  t.equal(hex(dumps(10n ** 4299n, { protocol: 0 })), hex(pyDumpsAll([['10 ** 4299', 0]])[0]!), '4,300 digits are written as CPython writes them')
})

t.test('a released PickleBuffer is a PicklingError naming its path', async (t) => {
  const pb = new PickleBuffer(new Uint8Array(4))
  pb.release()
  t.throws(() => dumps({ x: [pb] }, { protocol: 5 }), new PicklingError('cannot pickle a released PickleBuffer (at value.x[0])'))
})

t.test("a getter that throws is named by its own key in the path", async (t) => {
  const value = { x: { y: { get z(): unknown { throw new Error('boom') } } } }
  t.throws(() => dumps(value), { name: 'PicklingError', message: 'boom (at value.x.y.z)' })
})

t.test('protocol 0 strings (raw-unicode-escape, rewritten for speed) stay byte-identical with CPython', async (t) => {
  // Random strings of escapes, Latin-1, BMP, astral characters and lone or paired surrogates.
  let seed = 12345
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
  const pool = [0x5c, 0x0a, 0x0d, 0x00, 0x1a, 0x41, 0xe9, 0xff, 0x100, 0x2603, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xfffd]
  const strs: string[] = []
  for (let k = 0; k < 300; k++) {
    let s = ''
    const n = Math.floor(rnd() * 12)
    for (let i = 0; i < n; i++) {
      s += rnd() < 0.15 ? String.fromCodePoint(0x10000 + Math.floor(rnd() * 0xfffff)) : String.fromCharCode(pool[Math.floor(rnd() * pool.length)]!)
    }
    strs.push(s)
  }
  const units = strs.map((s) => Array.from({ length: s.length }, (_, i) => s.charCodeAt(i)))
  const python = runPython(`
import sys, json, pickle
for u in json.loads(sys.stdin.read()):
    s = ''.join(map(chr, u)).encode('utf-16', 'surrogatepass').decode('utf-16', 'surrogatepass')
    print(pickle.dumps(s, 0).hex())
`, new TextEncoder().encode(JSON.stringify(units))).toString().trim().split('\n')
  const differing = strs.filter((s, i) => hex(dumps(s, { protocol: 0 })) !== python[i])
  t.same(differing, [], `${strs.length - differing.length} of ${strs.length} identical`)
})
