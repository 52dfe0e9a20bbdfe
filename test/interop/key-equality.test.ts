/**
 * Dict keys and set members that Python's == merges are merged by picklewire the same way: a
 * pickle written by hand with {1: 'a', True: 'b'} loads in CPython as {1: 'b'} (the first key
 * kept, the last value), and must not load as two entries in Node, or a relay would read one
 * message two ways. Each case is built and loaded by the real CPython, then loaded by
 * picklewire, dumped back and described by CPython again: the two descriptions must match.
 */
import t from 'tap'
import { Unpickler, dumps, loads } from '@picklewire/codec'
import { pickle, shortStr, type Part } from '../helpers/craft.js'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t, ['numpy'])

/** How a case puts its keys together: opcodes or a reconstructor call, as CPython would read them. */
type Form = 'dict' | 'set' | 'frozenset' | 'dict()' | 'set()' | 'frozenset()' | 'OrderedDict()' | 'Counter()' | 'OrderedDict+SETITEMS'

interface Case {
  name: string
  form: Form
  /** Python expressions, pickled one by one (protocol 3, no memo) and put side by side. */
  keys: string[]
}

const numeric1 = ['1', 'True', '1.0', 'decimal.Decimal(1)', 'decimal.Decimal("1.000")', 'complex(1, 0)', 'numpy.float64(1.0)', 'numpy.int64(1)']
const zeros = ['0', 'False', '0.0', '-0.0', 'decimal.Decimal("-0")', 'complex(-0.0, 0)', 'numpy.bool_(False)']

const cases: Case[] = []
for (const form of ['dict', 'set', 'frozenset', 'dict()', 'set()', 'frozenset()', 'OrderedDict()', 'Counter()', 'OrderedDict+SETITEMS'] as const) {
  cases.push(
    { name: '1 and True', form, keys: ['1', 'True'] },
    { name: 'True and 1', form, keys: ['True', '1'] },
    { name: 'every kind of 1', form, keys: numeric1 },
    { name: 'every kind of 1, reversed', form, keys: [...numeric1].reverse() },
    { name: 'every kind of 0', form, keys: zeros },
    { name: '-0.0 first', form, keys: ['-0.0', '0', 'False'] },
    { name: 'equal bytes', form, keys: ["b'ab'", "b'ab'", "b'ac'"] },
    { name: 'equal tuples, recursively', form, keys: ["(1, (b'x', 'y'), 2.5)", "(True, (b'x', 'y'), decimal.Decimal('2.5'))", "(1, (b'x', 'z'), 2.5)"] },
    { name: 'equal frozensets', form, keys: ['frozenset({1, 2})', 'frozenset({2.0, True})', 'frozenset({(1, 2)})'] },
    { name: 'big ints and floats', form, keys: ['2**60', 'float(2**60)', '2**60 + 1', 'float(2**60 + 1)', '10**400', 'decimal.Decimal(2**60)'] },
    { name: 'fractions of floats and Decimals', form, keys: ['0.5', "decimal.Decimal('0.5')", "decimal.Decimal('0.1')", '0.1', 'complex(0.5, 0)'] },
    { name: 'complex numbers', form, keys: ['complex(1, 2)', 'complex(1.0, 2.0)', 'complex(1, -2)'] },
    { name: 'str, bytes and ints stay apart', form, keys: ["'1'", "b'1'", '1', "'a'", "b'a'"] },
    { name: 'infinities', form, keys: ["float('inf')", "decimal.Decimal('Infinity')", "float('-inf')", "complex(float('inf'), 0)"] },
    { name: 'dates and times', form, keys: [
      'datetime.date(2020, 1, 2)', 'datetime.date(2020, 1, 2)', 'datetime.datetime(2020, 1, 2, 3, 4, 5)', 'datetime.datetime(2020, 1, 2, 3, 4, 5)',
      'datetime.datetime(2020, 1, 2, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))',
      'datetime.datetime(2020, 1, 2, 11, tzinfo=datetime.timezone.utc)',
      'datetime.timedelta(days=1)', 'datetime.timedelta(seconds=86400)',
      "datetime.timezone(datetime.timedelta(hours=2), 'A')", "datetime.timezone(datetime.timedelta(hours=2), 'B')",
      'datetime.time(1, 2)', 'datetime.time(1, 2)',
    ] },
    { name: 'ranges and UUIDs', form, keys: ['range(0)', 'range(5, 5)', 'range(0, 3, 2)', 'range(0, 4, 2)', "uuid.UUID(int=5)", "uuid.UUID(int=5)"] },
    { name: 'an unhashable list inside a tuple', form, keys: ['(1, [2])'] },
    { name: 'two NaN objects', form, keys: ["float('nan')", "float('nan')"] },
    // Past 8 keys a container's index is built from the keys it holds (below, they are searched one by one).
    { name: 'equal keys after many others', form, keys: [
      ...Array.from({ length: 12 }, (_, i) => String(i)), 'True', '1.0', '(1, 2)', "b'x'", '(True, 2.0)', "b'x'", 'False', '11.0', "decimal.Decimal('5')",
    ] },
    { name: 'equal keys among the first few, then many', form, keys: [
      'True', '(1, 2)', "b'x'", '1', '(True, 2.0)', "b'x'", ...Array.from({ length: 12 }, (_, i) => `(${i}, 2)`), "b'y'", "b'x'",
    ] },
  )
}

/** CPython builds every case's pickle, loads it, and describes what it got (or the error). */
const BUILD = String.raw`
import collections, datetime, decimal, io, json, pickle, sys, uuid, numpy

def frag(expr):
    f = io.BytesIO()
    p = pickle.Pickler(f, protocol=3)
    p.fast = True  # no memo: fragments are put side by side without clashing PUT indexes
    p.dump(eval(expr))
    b = f.getvalue()
    assert b[:2] == b'\x80\x03' and b[-1:] == b'.'
    return b[2:-1]

def val(i):
    return frag(repr('v%d' % i))

def build(form, keys):
    ks = [frag(k) for k in keys]
    if form == 'dict':
        return b'\x80\x03}(' + b''.join(k + val(i) for i, k in enumerate(ks)) + b'u.'
    if form == 'set':
        return b'\x80\x04\x8f(' + b''.join(ks) + b'\x90.'
    if form == 'frozenset':
        return b'\x80\x04(' + b''.join(ks) + b'\x91.'
    if form in ('set()', 'frozenset()'):
        return b'\x80\x03cbuiltins\n' + form[:-2].encode() + b'\n](' + b''.join(ks) + b'e\x85R.'
    if form == 'OrderedDict+SETITEMS':
        return b'\x80\x03ccollections\nOrderedDict\n)R(' + b''.join(k + val(i) for i, k in enumerate(ks)) + b'u.'
    g = {'dict()': b'builtins\ndict', 'OrderedDict()': b'collections\nOrderedDict', 'Counter()': b'collections\nCounter'}[form]
    return b'\x80\x03c' + g + b'\n](' + b''.join(k + val(i) + b'\x86' for i, k in enumerate(ks)) + b'e\x85R.'

def describe(v):
    if isinstance(v, dict):
        return [type(v).__name__, [[repr(k), repr(x)] for k, x in v.items()]]
    if isinstance(v, (set, frozenset)):
        return [type(v).__name__, sorted(repr(x) for x in v)]
    return ['?', repr(v)]

out = []
for form, keys in json.loads(sys.stdin.read()):
    data = build(form, keys)
    try:
        d = describe(pickle.loads(data))
    except Exception as e:
        d = ['error', type(e).__name__ + ': ' + str(e)]
    out.append([data.hex(), d])
json.dump(out, sys.stdout)
`

/** CPython describes what picklewire loaded, after picklewire dumped it back. */
const DESCRIBE = String.raw`
import json, pickle, sys, numpy
def describe(v):
    if isinstance(v, dict):
        return [type(v).__name__, [[repr(k), repr(x)] for k, x in v.items()]]
    if isinstance(v, (set, frozenset)):
        return [type(v).__name__, sorted(repr(x) for x in v)]
    return ['?', repr(v)]
json.dump([describe(pickle.loads(bytes.fromhex(h))) for h in json.loads(sys.stdin.read())], sys.stdout)
`

function python<T>(script: string, input: unknown): T {
  return JSON.parse(runPython(script, new TextEncoder().encode(JSON.stringify(input))).toString()) as T
}

const built = python<[string, [string, unknown]][]>(BUILD, cases.map((c) => [c.form, c.keys]))

t.test('CPython and picklewire (lossless) load the same entries: first key kept, last value', async (t) => {
  const redumped: string[] = []
  const compared: [Case, unknown][] = []
  built.forEach(([hexData, expected], i) => {
    const c = cases[i]!
    const label = `${c.form}: ${c.name}`
    let value: unknown
    try {
      value = loads(Buffer.from(hexData, 'hex'), { lossless: true })
    } catch (err) {
      if (expected[0] === 'error') {
        t.match((err as Error).message, /unhashable type: 'list'/, `${label}: refused, as CPython refuses it (${String(expected[1])})`)
      } else {
        t.equal(c.name, 'two NaN objects', `${label}: only NaN cases may be refused where CPython loads them`)
        t.match(err, { name: 'UnpicklingError', message: /two NaN/ }, `${label}: refused with a clear error`)
        t.same(expected, [expected[0], expected[0] === 'dict' || expected[0] === 'OrderedDict' || expected[0] === 'Counter'
          ? [['nan', "'v0'"], ['nan', "'v1'"]] : ['nan', 'nan']], `${label}: CPython keeps the two NaNs apart`)
      }
      return
    }
    t.not(expected[0], 'error', `${label}: CPython refused it (${String(expected[1])}), picklewire did not`)
    redumped.push(Buffer.from(dumps(value, { protocol: 4 })).toString('hex'))
    compared.push([c, expected])
  })
  const described = python<unknown[]>(DESCRIBE, redumped)
  compared.forEach(([c, expected], i) => t.same(described[i], expected, `${c.form}: ${c.name}`))
  t.ok(compared.length >= 150, `${compared.length} cases compared`)
})

t.test('the default mode keeps the same entries (values in the same order, same count)', async (t) => {
  built.forEach(([hexData, expected], i) => {
    const c = cases[i]!
    if (expected[0] === 'error' || c.name === 'two NaN objects') return
    const value = loads(Buffer.from(hexData, 'hex'))
    const entries = expected[1] as [string, string][] | string[]
    if (value instanceof Map) {
      t.equal(value.size, entries.length, `${c.form}: ${c.name}: ${entries.length} entries`)
      t.same([...value.values()].map((v) => (typeof v === 'string' ? `'${v}'` : String(v))), (entries as [string, string][]).map((e) => e[1]), `${c.form}: ${c.name}: the values`)
    } else {
      t.equal((value as Set<unknown>).size, entries.length, `${c.form}: ${c.name}: ${entries.length} members`)
    }
  })
})

t.test('the first key is the one kept, by type', async (t) => {
  const dict = (...parts: Part[]): Uint8Array => pickle('\x80\x02}(', ...parts, 'u.')
  const a = shortStr('a')
  const b = shortStr('b')
  t.same([...(loads(dict('K\x01', ...a, '\x88', ...b)) as Map<unknown, unknown>)], [[1, 'b']], '{1: a, True: b} is {1: b}')
  t.same([...(loads(dict('\x88', ...a, 'K\x01', ...b)) as Map<unknown, unknown>)], [[true, 'b']], '{True: a, 1: b} is {True: b}')
  const big = loads(dict('\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x10', ...a, 'G\x44\x30\x00\x00\x00\x00\x00\x00', ...b)) as Map<unknown, unknown>
  t.same([...big], [[2n ** 68n, 'b']], '{2**68: a, float(2**68): b} is {2**68: b}')
})

t.test('a NaN memoized and fetched again is one object, hence one key in CPython; picklewire refuses it', async (t) => {
  // G nan, BINPUT 0, then BINGET 0: the same float object twice.
  const data = pickle('\x80\x02}(G\x7f\xf8\x00\x00\x00\x00\x00\x00q\x00K\x01h\x00K\x02u.')
  const py = runPython('import pickle, sys; d = pickle.loads(sys.stdin.buffer.read()); print(len(d), list(d.values()))', data).toString().trim()
  t.equal(py, '1 [2]', 'CPython: one entry, the last value')
  t.throws(() => loads(data), { name: 'UnpicklingError', message: /two NaN dict keys/ })
  t.throws(() => loads(pickle('\x80\x04\x8f(G\x7f\xf8\x00\x00\x00\x00\x00\x00G\x7f\xf8\x00\x00\x00\x00\x00\x00\x90.')), { name: 'UnpicklingError', message: /two NaN set members/ })
  t.same([...(loads(pickle('\x80\x04\x8f(G\x7f\xf8\x00\x00\x00\x00\x00\x00K\x01\x90.')) as Set<unknown>)], [NaN, 1], 'one NaN is a member like any other')
})

t.test('keys Python cannot hash are refused wherever they are', async (t) => {
  const cases: [string, Uint8Array, RegExp][] = [
    ['a list in a tuple key', pickle('\x80\x02}(K\x01]\x86K\x02u.'), /unhashable type: 'list' as a dict key/],
    ['a dict in a frozenset in a tuple', pickle('\x80\x04}((}\x91\x85K\x02u.'), /unhashable type: 'dict' as a set member/],
    ['a slice as a set member', pickle('\x80\x04\x8f(cbuiltins\nslice\nK\x01\x85R\x90.'), /unhashable type: 'slice' as a set member/],
    ['a list through set()', pickle('\x80\x02cbuiltins\nset\n]](K\x01ea\x85R.'), /unhashable type: 'list' as a set member/],
    ['a list key through dict()', pickle('\x80\x02cbuiltins\ndict\n]]K\x01\x86a\x85R.'), /unhashable type: 'list' as a dict key/],
    ['a plain-object dict in a set (dict: object)', pickle('\x80\x04\x8f(}\x90.'), /unhashable type: 'dict' as a set member/],
    ['a signaling NaN Decimal', pickle('\x80\x02}(cdecimal\nDecimal\nX\x04\x00\x00\x00sNaN\x85RK\x01u.'), /cannot hash a signaling NaN value/],
  ]
  for (const [label, data, message] of cases) {
    t.throws(() => loads(data, { dict: label.includes('dict: object') ? 'object' : 'map' }), { name: 'UnpicklingError', message }, label)
    t.throws(() => runPython('import pickle, sys; pickle.loads(sys.stdin.buffer.read())', data), `${label}: CPython refuses it too`)
  }
})

t.test('a memoized big key is hashed once; comparing equal big keys again and again runs out of the work budget', async (t) => {
  // A 100,000-item tuple, memoized, then used as the key of 1,000 dicts, and wrapped in 20,000
  // fresh one-tuples (3 bytes each): its hash is made once.
  const items = pickle('(', ...Array.from({ length: 100_000 }, () => 'K\x07'), 't')
  const many = pickle('\x80\x02', items, 'q\x00(', ...Array.from({ length: 1000 }, () => '}h\x00K\x01s'), 'l.')
  t.equal((loads(many) as unknown[]).length, 1000, 'a list of 1,000 dicts keyed by one tuple')
  const wrapped = pickle('\x80\x02', items, 'q\x00}(', ...Array.from({ length: 20_000 }, () => 'h\x00\x85K\x01'), 'u.')
  t.equal((loads(wrapped) as Map<unknown, unknown>).size, 1, '20,000 wrappers of one tuple are one key')
  // Two equal big tuples, each written in full, wrapped alternately: each wrapper of the second
  // is compared with the first item by item, 100,000 items for 6 bytes of pickle.
  const twins = pickle('\x80\x02', items, 'q\x00', items, 'q\x01}(', ...Array.from({ length: 10_000 }, () => 'h\x00\x85K\x01h\x01\x85K\x02'), 'u.')
  t.throws(() => loads(twins), { name: 'UnpicklingError', message: /work budget .* comparing dict keys and set members/ })
  const fewTwins = pickle('\x80\x02', items, 'q\x00', items, 'q\x01}(', ...Array.from({ length: 20 }, () => 'h\x00\x85K\x01h\x01\x85K\x02'), 'u.')
  t.equal((loads(fewTwins) as Map<unknown, unknown>).size, 1, '20 such pairs stay within the default budget: one key, as in CPython')
})

t.test('one Unpickler keeps a dict\'s index across loads (a later pickle adding to a memoized dict)', async (t) => {
  const first = pickle('\x80\x02}q\x00(\x88K\x01u.')
  const second = pickle('\x80\x02h\x00(K\x01K\x02u.')
  const u = new Unpickler(pickle(first, second))
  const d = u.load() as Map<unknown, unknown>
  t.same([...d], [[true, 1]])
  t.equal(u.load(), d)
  t.same([...d], [[true, 2]], '1 is True: the value replaced, the key kept')
})
