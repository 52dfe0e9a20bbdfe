/**
 * CPython loads everything picklewire writes, at every protocol, to a value equal to its own
 * construction: the same types at every level (tuple and list, bytes and bytearray, int and
 * float, set and frozenset by value) and the same sharing (x[0] is x[1]).
 */
import t from 'tap'
import {
  ByteArray, Complex, Counter, Decimal, DefaultDict, Deque, Ellipsis, FrozenSet, NotImplemented, OrderedDict, PyDate,
  PyDateTime, PyFloat, PyGlobal, PyObject, PyRange, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, UUID, dumps,
} from '@picklewire/codec'
import { ValueGen, firstDifference, graphFacts, pwtestModule, pyBatch, toPython, type Job } from '../helpers/pyvalues.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

const PROTOCOLS = [0, 1, 2, 3, 4, 5]
const COUNT = 300

const tuple = (...items: unknown[]): Tuple => Tuple.fromItems(items)
const map = (...entries: [unknown, unknown][]): Map<unknown, unknown> => new Map(entries)
function deque(items: unknown[], maxlen: number | null = null): Deque {
  const d = new Deque()
  d.push(...items)
  d.maxlen = maxlen
  return d
}
const UTC = new PyTimeZone(new PyTimeDelta(0, 0, 0))
const IST = new PyTimeZone(new PyTimeDelta(0, 19800, 0), 'IST')
const MINUS3 = new PyTimeZone(new PyTimeDelta(-1, 75600, 0))
const PLAIN = new PyGlobal('pwtest_classes', 'Plain')
const REDUCED = new PyGlobal('pwtest_classes', 'Reduced')
const WITH_NEW_ARGS = new PyGlobal('pwtest_classes', 'WithNewArgs')
const WITH_NEW_ARGS_EX = new PyGlobal('pwtest_classes', 'WithNewArgsEx')

function opaque(cls: PyGlobal, origin: 'reduce' | 'newobj' | 'newobj_ex', args: unknown[], fill: Partial<Pick<PyObject, 'state'>> & {
  listItems?: unknown[]
  dictItems?: [unknown, unknown][]
  kwargs?: unknown
} = {}): PyObject {
  const o = new PyObject(cls, origin, Tuple.fromItems(args), fill.kwargs ?? null)
  if ('state' in fill) o.state = fill.state
  o.listItems.push(...(fill.listItems ?? []))
  o.dictItems.push(...(fill.dictItems ?? []))
  return o
}

/** Every exported value class, as JavaScript and as the Python that builds the same value. */
function valueClasses(): [name: string, js: unknown, python: string, protocols?: number[]][] {
  const shared = new OrderedDict([['k', [1]]])
  const sharedDeque = deque([1, 2])
  // __getnewargs_ex__ returns the very tuple and dict the state holds
  const exArgs = tuple(1)
  const exKwargs = map(['k', 2])
  const newObjEx = new PyObject(WITH_NEW_ARGS_EX, 'newobj_ex', exArgs, exKwargs)
  newObjEx.state = map(['args', exArgs], ['kwargs', exKwargs])
  return [
    ['complex', [new Complex(1, 2), new Complex(-0, -1), new Complex(Infinity, NaN), new Complex(0, 0), new Complex(0, 1e300)],
      "value = [1+2j, complex(-0.0, -1.0), complex(float('inf'), float('nan')), 0j, 1e300j]"],
    ['range', [new PyRange(0, 10), new PyRange(-5, 100, 7), new PyRange(10, 0, -2), new PyRange(0, 0), new PyRange(2n ** 70n, 2n ** 71n, 2n ** 60n)],
      'value = [range(10), range(-5, 100, 7), range(10, 0, -2), range(0), range(2**70, 2**71, 2**60)]'],
    ['slice', [new Slice(1, 2, 3), new Slice(null, 5, null), new Slice('ab', null, [1]), new Slice(null, null, null)],
      "value = [slice(1, 2, 3), slice(None, 5), slice('ab', None, [1]), slice(None)]"],
    ['OrderedDict', [new OrderedDict<unknown, unknown>([['b', 1], ['a', [2]], [3, 'c']]), new OrderedDict(), shared, shared],
      "shared = collections.OrderedDict(k=[1])\nvalue = [collections.OrderedDict([('b', 1), ('a', [2]), (3, 'c')]), collections.OrderedDict(), shared, shared]"],
    ['Counter', [new Counter<unknown>([['h', 1], ['l', 3], [7, -2]]), new Counter()], "value = [collections.Counter({'h': 1, 'l': 3, 7: -2}), collections.Counter()]"],
    ['defaultdict', [new DefaultDict(new PyGlobal('builtins', 'int'), [['x', 1]]), new DefaultDict(new PyGlobal('builtins', 'list'), [[1, [2]]]),
      new DefaultDict(null, [['k', 'v']])],
    "value = [collections.defaultdict(int, {'x': 1}), collections.defaultdict(list, {1: [2]}), collections.defaultdict(None, {'k': 'v'})]"],
    ['deque', [deque([1, 'two', tuple(3)]), deque([1, 2], 5), deque([], 0), sharedDeque, sharedDeque],
      "shared = collections.deque([1, 2])\nvalue = [collections.deque([1, 'two', (3,)]), collections.deque([1, 2], maxlen=5), collections.deque([], maxlen=0), shared, shared]"],
    ['date', [new PyDate(2024, 2, 29), new PyDate(1, 1, 1), new PyDate(9999, 12, 31)],
      'value = [datetime.date(2024, 2, 29), datetime.date(1, 1, 1), datetime.date(9999, 12, 31)]'],
    ['time', [new PyTime(0, 0, 0, 0), new PyTime(23, 59, 59, 999999), new PyTime(1, 2, 3, 0, UTC), new PyTime(4, 5, 6, 7, IST)],
      "IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30), 'IST')\n" +
      'value = [datetime.time(), datetime.time(23, 59, 59, 999999), datetime.time(1, 2, 3, tzinfo=datetime.timezone.utc), datetime.time(4, 5, 6, 7, tzinfo=IST)]'],
    // As in CPython, fold is written from protocol 4 only.
    ['time and datetime with fold=1', [new PyTime(12, 30, 0, 0, null, 1), new PyDateTime(2021, 11, 7, 1, 30, 0, 0, null, 1)],
      'value = [datetime.time(12, 30, fold=1), datetime.datetime(2021, 11, 7, 1, 30, fold=1)]', [4, 5]],
    ['time and datetime with fold=1 below protocol 4 (fold dropped)', [new PyTime(12, 30, 0, 0, null, 1), new PyDateTime(2021, 11, 7, 1, 30, 0, 0, null, 1)],
      'value = [datetime.time(12, 30), datetime.datetime(2021, 11, 7, 1, 30)]', [0, 1, 2, 3]],
    ['datetime', [new PyDateTime(2024, 1, 2, 3, 4, 5, 678901), new PyDateTime(1, 1, 1), new PyDateTime(9999, 12, 31, 23, 59, 59, 999999),
      new PyDateTime(2000, 1, 1, 0, 0, 0, 0, UTC),
      new PyDateTime(2000, 6, 15, 12, 0, 0, 0, IST), new PyDateTime(1999, 12, 31, 23, 59, 0, 0, MINUS3)],
    "IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30), 'IST')\n" +
      'value = [datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.datetime(1, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), ' +
      'datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc), ' +
      'datetime.datetime(2000, 6, 15, 12, tzinfo=IST), datetime.datetime(1999, 12, 31, 23, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-3)))]'],
    ['timedelta and timezone', [new PyTimeDelta(0, 0, 0), new PyTimeDelta(-1, 5, 7), new PyTimeDelta(999999999, 86399, 999999), UTC, MINUS3, IST],
      "value = [datetime.timedelta(0), datetime.timedelta(days=-1, seconds=5, microseconds=7), datetime.timedelta(999999999, 86399, 999999), " +
      "datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=-3)), datetime.timezone(datetime.timedelta(hours=5, minutes=30), 'IST')]"],
    ['Decimal', ['3.14', '-0', 'NaN', 'sNaN', '1E+1000', '-Infinity', '0.000001000'].map((d) => new Decimal(d)),
      "value = [decimal.Decimal(d) for d in ['3.14', '-0', 'NaN', 'sNaN', '1E+1000', '-Infinity', '0.000001000']]"],
    ['UUID', [new UUID(0x12345678123456781234567812345678n), new UUID(0n), new UUID(2n ** 128n - 1n), new UUID(5n, 0), new UUID(6n, -1)],
      "value = [uuid.UUID('12345678-1234-5678-1234-567812345678'), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), " +
      'uuid.UUID(int=5, is_safe=uuid.SafeUUID.safe), uuid.UUID(int=6, is_safe=uuid.SafeUUID.unsafe)]'],
    ['Ellipsis and NotImplemented', [Ellipsis, NotImplemented, Ellipsis], 'value = [Ellipsis, NotImplemented, Ellipsis]'],
    ['globals', [new PyGlobal('builtins', 'int'), new PyGlobal('collections', 'OrderedDict'), new PyGlobal('builtins', 'int'), PLAIN],
      'import pwtest_classes\nvalue = [int, collections.OrderedDict, int, pwtest_classes.Plain]'],
    ['set and frozenset', [new Set([1, 'a', tuple(1, 2), null, Uint8Array.of(1, 2)]), new Set(), new FrozenSet([1, 'b']), new FrozenSet(),
      new FrozenSet([new FrozenSet([2])])],
    "value = [{1, 'a', (1, 2), None, b'\\x01\\x02'}, set(), frozenset({1, 'b'}), frozenset(), frozenset({frozenset({2})})]"],
    ['integral floats', [new PyFloat(1), new PyFloat(-0), new PyFloat(2 ** 53), new PyFloat(1e300), 1, -0, 2 ** 60],
      'value = [1.0, -0.0, 2.0**53, 1e300, 1, -0.0, float(2**60)]'],
    ['PyObject made with NEWOBJ and a dict state', [opaque(PLAIN, 'newobj', [], { state: map(['x', 1], ['y', [2]]) })],
      "import pwtest_classes\nvalue = [pwtest_classes.Plain(x=1, y=[2])]", [2, 3, 4, 5]],
    ['PyObject made with copyreg._reconstructor', [opaque(new PyGlobal('copyreg', '_reconstructor'), 'reduce',
      [PLAIN, new PyGlobal('builtins', 'object'), null], { state: map(['x', 1]) })],
    'import pwtest_classes\nvalue = [pwtest_classes.Plain(x=1)]'],
    ['PyObject made with REDUCE, list and dict items', [opaque(REDUCED, 'reduce', ['t'], { listItems: [1, 2, 3], dictItems: [['k', 'v'], [2, null]] })],
      "import pwtest_classes\nr = pwtest_classes.Reduced('t')\nr.extend([1, 2, 3])\nr['k'] = 'v'\nr[2] = None\nvalue = [r]"],
    ['PyObject made with NEWOBJ and arguments', [opaque(WITH_NEW_ARGS, 'newobj', [1, 'b'], { state: map(['x', 1], ['y', 'b']) })],
      "import pwtest_classes\nvalue = [pwtest_classes.WithNewArgs(1, 'b')]", [2, 3, 4, 5]],
    ['PyObject made with NEWOBJ_EX', [newObjEx],
      'import pwtest_classes\nvalue = [pwtest_classes.WithNewArgsEx(1, k=2)]', [4, 5]],
  ]
}

const generated = (() => {
  const gen = new ValueGen(0x10ad5, { sets: true })
  return Array.from({ length: COUNT }, (_, i) => gen.value(i % 40 === 3))
})()
const classes = valueClasses()

const mod = pwtestModule()
t.teardown(mod.cleanup)

const jobs: Job[] = []
for (const v of generated) {
  jobs.push({ op: 'check', code: toPython(v), pickles: PROTOCOLS.map((protocol) => ({ data: dumps(v, { protocol }) })) })
}
for (const [, js, code, protocols = PROTOCOLS] of classes) {
  jobs.push({ op: 'check', code, pickles: protocols.map((protocol) => ({ data: dumps(js, { protocol }) })) })
  jobs.push({ op: 'dumps', code, protocols })
}
/** Near misses the comparison must notice: the wrong type, or the wrong sharing. */
const NEAR_MISSES: [python: string, js: unknown][] = [
  ['value = [(1, 2)]', [[1, 2]]],
  ["value = [b'ab']", [ByteArray.of(97, 98)]],
  ['value = [1.0]', [1]],
  ['value = [True]', [1]],
  ['x = [1]\nvalue = [x, x]', [[1], [1]]],
  ['value = [[1], [1]]', (() => { const x = [1]; return [x, x] })()],
  ['value = [{1, 2}]', [new FrozenSet([1, 2])]],
  ["value = [{'1': 'a'}]", [new Map([[1, 'a']])]],
]
for (const [code, js] of NEAR_MISSES) jobs.push({ op: 'check', code, pickles: [{ data: dumps(js, { protocol: 4 }) }] })
const answers = pyBatch(jobs, [mod.dir])

t.test('CPython loads every generated value at every protocol, equal to its own construction', async (t) => {
  const loaded = PROTOCOLS.map(() => 0)
  for (let i = 0; i < COUNT; i++) {
    const a = answers[i]!
    if (!a[0]!.ok) {
      t.fail(`value ${i}: python3 could not build it: ${a[0]!.text}`)
      continue
    }
    PROTOCOLS.forEach((p, k) => {
      if (a[k]!.text === '') loaded[p]!++
      else t.fail(`value ${i}, protocol ${p}: ${a[k]!.text}\n${toPython(generated[i]).slice(0, 1500)}`)
    })
  }
  for (const p of PROTOCOLS) t.equal(loaded[p], COUNT, `protocol ${p}: CPython loaded ${loaded[p]} of ${COUNT} to an equal value`)
})

t.test('the generated values have sets, frozensets, sharing and recursion', async (t) => {
  const facts = generated.map(graphFacts)
  for (const kind of ['Set', 'FrozenSet', 'Tuple', 'Array', 'Map', 'ByteArray', 'Object']) {
    t.ok(facts.some((f) => f.kinds.has(kind)), `${facts.filter((f) => f.kinds.has(kind)).length} values hold a ${kind}`)
  }
  t.ok(facts.filter((f) => f.shared).length > COUNT / 10, 'many share an object between two places')
  t.ok(facts.filter((f) => f.recursive).length > COUNT / 10, 'many hold an object that holds itself')
})

classes.forEach(([name, js, code, protocols = PROTOCOLS], k) => {
  t.test(`${name}: CPython loads picklewire's pickle at protocols ${protocols.join(', ')}`, async (t) => {
    const [checked, cpython] = [answers[COUNT + 2 * k]!, answers[COUNT + 2 * k + 1]!]
    if (!checked[0]!.ok) return void t.fail(`python3 could not build ${name}: ${checked[0]!.text}`)
    protocols.forEach((p, i) => t.equal(checked[i]!.text, '', `protocol ${p}: loaded an equal value`))
    // Not promised, but worth knowing: how often the bytes are CPython's own.
    const same = protocols.filter((p, i) => cpython[i]!.ok && firstDifference(dumps(js, { protocol: p }), cpython[i]!.data) === -1)
    t.comment(`${name}: byte-identical with CPython at protocols [${same.join(', ')}] of [${protocols.join(', ')}]`)
  })
})

t.test('the comparison notices the wrong type and the wrong sharing', async (t) => {
  NEAR_MISSES.forEach(([code], i) => {
    const [answer] = answers[COUNT + 2 * classes.length + i]!
    t.match(answer!.text, /^loaded a different value: value/, `${code.replace('\n', '; ')}: ${answer!.text}`)
  })
})
