/**
 * For hundreds of random value trees (None, bool, int of any size, float, str, bytes,
 * bytearray, tuple, list, dict, nested, shared and recursive), picklewire's dumps writes at
 * every protocol exactly the bytes CPython's C pickle.dumps writes for the same value.
 */
import t from 'tap'
import { ByteArray, Complex, Decimal, OrderedDict, PickleError, PyDate, PyGlobal, UUID, dumps } from '@picklewire/codec'
import { ValueGen, explainDifference, firstDifference, graphFacts, pyBatch, toPython } from '../helpers/pyvalues.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** Another seed explores other values: PICKLEWIRE_SEED=123 tap ... */
const SEED = Number(process.env.PICKLEWIRE_SEED ?? 0x5eed_0003)
const COUNT = 600
const PROTOCOLS = [0, 1, 2, 3, 4, 5]
/** Mismatches shown in full per protocol (the rest are counted). */
const SHOWN = 3

const gen = new ValueGen(SEED)
const values = Array.from({ length: COUNT }, (_, i) => gen.value(i % 15 === 7))
const codes = values.map((v) => toPython(v))
const cpython = pyBatch(codes.map((code) => ({ op: 'dumps', code, protocols: PROTOCOLS })))

t.test('CPython built every generated value', async (t) => {
  const failed = cpython.map((a, i) => (a[0]!.ok ? null : `value ${i}: ${a[0]!.text}\n${codes[i]!.slice(0, 500)}`)).filter((x) => x !== null)
  t.same(failed, [], 'python3 ran the code of every value')
})

t.test('the values cover what the generator promises', async (t) => {
  const sizes = cpython.map((a) => a[4]?.data.length ?? 0)
  t.ok(sizes.some((n) => n > 200_000), 'some pickles span several frames')
  t.ok(codes.some((c) => /\\U0001/.test(c)), 'astral characters')
  t.ok(codes.some((c) => /\\ud[89ab]/.test(c)), 'lone surrogates')
  const facts = values.map(graphFacts)
  const shared = facts.filter((f) => f.shared).length
  const recursive = facts.filter((f) => f.recursive).length
  t.ok(shared > COUNT / 10, `${shared} values share an object between two places`)
  t.ok(recursive > COUNT / 10, `${recursive} values hold an object that holds itself`)
  t.ok(codes.some((c) => /^(_v\d+) = \(.*\b(_v\d+)\b.*\n(.*\n)*\2\.extend\(\[.*\1/m.test(c)), 'a tuple reached through a list inside it')
  t.ok(codes.some((c) => /0x[0-9a-f]{200}/.test(c)), 'huge ints')
})

for (const protocol of PROTOCOLS) {
  t.test(`protocol ${protocol}: byte for byte the same as CPython's C pickler`, async (t) => {
    let identical = 0
    const different: number[] = []
    for (let i = 0; i < COUNT; i++) {
      const theirs = cpython[i]![protocol]
      if (!theirs?.ok) continue
      let ours: Uint8Array
      try {
        ours = dumps(values[i], { protocol })
      } catch (err) {
        if (!(err instanceof PickleError)) throw err
        t.fail(`value ${i}: picklewire refused it: ${err.message}\n${codes[i]!.slice(0, 1000)}`)
        continue
      }
      if (firstDifference(ours, theirs.data) === -1) identical++
      else different.push(i)
    }
    for (const i of different.slice(0, SHOWN)) {
      t.comment(explainDifference(`value ${i}, protocol ${protocol}`, dumps(values[i], { protocol }), cpython[i]![protocol]!.data, codes[i]))
    }
    t.comment(`protocol ${protocol}: ${identical} of ${COUNT} values byte-identical with CPython`)
    t.equal(identical, COUNT, `protocol ${protocol}: ${identical} of ${COUNT} identical` +
      (different.length > 0 ? `; different: values ${different.slice(0, 20).join(', ')}` : ''))
  })
}

t.test('one-character strings: the ones CPython caches are memoized by value, like every str', async (t) => {
  // CPython decodes one-byte bytes to its cached one-character strings (protocols 0 to 2 write
  // bytes as _codecs.encode(str, 'latin1')), the same objects as such a str elsewhere.
  const x00 = Uint8Array.of(0)
  const e9 = Uint8Array.of(0xe9)
  const cases: [unknown, string][] = [
    [[x00, '\x00'], "value = [b'\\x00', '\\x00']"],
    [['\x00', x00], "value = ['\\x00', b'\\x00']"],
    [['é', e9, ByteArray.of(0xe9), ByteArray.of(0xe9)], "value = ['\\xe9', b'\\xe9', bytearray(b'\\xe9'), bytearray(b'\\xe9')]"],
    [[ByteArray.of(0x79), ' ', ByteArray.of(0x79)], "value = [bytearray(b'y'), ' ', bytearray(b'y')]"],
  ]
  const answers = pyBatch(cases.map(([, code]) => ({ op: 'dumps', code, protocols: PROTOCOLS })))
  cases.forEach(([value, code], i) => {
    const same = PROTOCOLS.filter((p) => firstDifference(dumps(value, { protocol: p }), answers[i]![p]!.data) === -1)
    t.same(same, PROTOCOLS, `${code}: identical at every protocol`)
  })
})

t.test('frames end where CPython ends them, also inside the globals of value classes', async (t) => {
  // A string pushes the frame to just under 64 KiB, so that it ends somewhere inside the
  // STACK_GLOBAL, REDUCE and NEWOBJ of the values after it: every offset of the boundary.
  const sizes = Array.from({ length: 130 }, (_, i) => 65430 + i)
  const value = (n: number): unknown[] => ['x'.repeat(n), new OrderedDict([['a', 1]]), new Complex(1, 2), new PyDate(2020, 1, 1),
    [new PyGlobal('builtins', 'int'), new PyGlobal('collections', 'Counter')], new UUID(5n), new Decimal('1.5')]
  const code = (n: number): string => `value = ['x' * ${n}, collections.OrderedDict(a=1), complex(1, 2), datetime.date(2020, 1, 1), ` +
    '[int, collections.Counter], uuid.UUID(int=5), decimal.Decimal("1.5")]'
  const answers = pyBatch(sizes.map((n) => ({ op: 'dumps', code: code(n), protocols: [4, 5] })))
  for (const [k, p] of [4, 5].entries()) {
    const different = sizes.filter((n, i) => firstDifference(dumps(value(n), { protocol: p }), answers[i]![k]!.data) !== -1)
    if (different.length > 0) {
      const i = sizes.indexOf(different[0]!)
      t.comment(explainDifference(`${different[0]} characters first, protocol ${p}`, dumps(value(different[0]!), { protocol: p }), answers[i]![k]!.data))
    }
    t.same(different, [], `protocol ${p}: identical for all ${sizes.length} frame boundaries`)
  }
})
