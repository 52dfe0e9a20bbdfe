/**
 * The pickler's hooks against CPython's: registered classes (getState, setState, getNewArgs,
 * reduce) round-trip JavaScript -> Python -> JavaScript, and persistentId, dispatchTable,
 * reducerOverride and extensions write byte for byte what persistent_id, dispatch_table,
 * reducer_override and copyreg.add_extension make CPython write.
 */
import t from 'tap'
import {
  GlobalRegistry, NotImplemented, OrderedDict, PicklingError, PyGlobal, PyPersistentRef, Tuple, defaultGlobals, dumps, loads,
  type ReduceValue,
} from '@picklewire/codec'
import { explainDifference, firstDifference, pwtestModule, pyBatch, type Answer, type Job } from '../helpers/pyvalues.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

const PROTOCOLS = [0, 1, 2, 3, 4, 5]
const mod = pwtestModule()
t.teardown(mod.cleanup)

const MAKE_THING = new PyGlobal('pwtest_classes', 'make_thing')
const SET_NAME = new PyGlobal('pwtest_classes', 'set_name')
const QUESTION = Tuple.fromItems(['?'])

class Point {
  constructor(public x: unknown, public y: unknown) {}
}
class Plain {}
class WithNewArgs {
  constructor(public x: unknown, public y: unknown) {}
}
class Thing {
  constructor(public name: string) {}
}
class Ref {
  constructor(readonly id: unknown) {}
}

const setStates: unknown[] = []
const registry = new GlobalRegistry(defaultGlobals)
registry.registerClass(Point, 'pwtest_classes.Point', {
  getState: (p) => ({ x: p.x, y: p.y }),
  setState: (p, state) => {
    setStates.push(state)
    const m = state as Map<string, unknown>
    p.x = m.get('x')
    p.y = m.get('y')
  },
})
registry.registerClass(Plain, 'pwtest_classes.Plain')
registry.registerClass(WithNewArgs, 'pwtest_classes.WithNewArgs', { getNewArgs: (o) => [o.x, o.y] })
registry.registerClass(Thing, 'pwtest_classes.Thing', { reduce: (o) => [MAKE_THING, [o.name]] })

/** Python code that pickles `value` at every protocol with a Pickler set up by `setup` (may define P). */
function pyPickles(value: string, setup = 'P = pickle.Pickler'): string {
  return `import pwtest_classes as m\n${setup}\n${value}\nout = []\n` +
    'for p in range(6):\n    f = io.BytesIO()\n    try:\n        P(f, p).dump(value)\n        out.append(f.getvalue())\n' +
    '    except Exception as e:\n        out.append(("error: " + type(e).__name__ + ": " + str(e)).encode())\n' +
    "out.append(','.join(str(x) for x in globals().get('seen', [])))"
}

interface Scenario {
  name: string
  js: () => unknown
  /** Python code that sets value, pickled by the Pickler class P of setup. */
  py: string
  setup?: string
  options?: Parameters<typeof dumps>[1]
  protocols?: number[]
}

const plainWith = (attrs: Record<string, unknown>): Plain => Object.assign(new Plain(), attrs)

const SCENARIOS: Scenario[] = [
  {
    name: 'a registered class with getState and setState hooks',
    js: () => {
      const a = new Point(1, [2.5, 'y'])
      return [a, new Point('x', null), a]
    },
    py: "a = m.Point(1, [2.5, 'y'])\nvalue = [a, m.Point('x', None), a]",
  },
  {
    name: 'a registered class with the default hooks (own properties as the state, none when empty)',
    js: () => [plainWith({ b: 1, a: [true] }), new Plain(), plainWith({ nested: plainWith({ k: 'v' }) })],
    py: "value = [m.Plain(b=1, a=[True]), m.Plain(), m.Plain(nested=m.Plain(k='v'))]",
  },
  {
    name: 'a registered class with getNewArgs (NEWOBJ from protocol 2)',
    js: () => [new WithNewArgs(1, 'b'), new WithNewArgs([2], null)],
    py: "value = [m.WithNewArgs(1, 'b'), m.WithNewArgs([2], None)]",
    protocols: [2, 3, 4, 5],
  },
  {
    name: 'a registered class with a reduce hook',
    js: () => {
      const t1 = new Thing('one')
      return [t1, new Thing('two'), t1]
    },
    py: "t1 = m.Thing('one')\nvalue = [t1, m.Thing('two'), t1]",
    setup: 'class P(pickle.Pickler):\n    dispatch_table = {m.Thing: lambda o: (m.make_thing, (o.name,))}',
  },
  {
    name: 'persistentId with string ids',
    js: () => {
      const a = new Ref('a')
      return [1, a, 'text', { k: new Ref('b') }, a]
    },
    options: { persistentId: (v) => (v instanceof Ref ? v.id : null) },
    py: "class Ref:\n    def __init__(self, id):\n        self.id = id\na = Ref('a')\nvalue = [1, a, 'text', {'k': Ref('b')}, a]",
    setup: 'class P(pickle.Pickler):\n    def persistent_id(self, obj):\n        return obj.id if type(obj).__name__ == "Ref" else None',
  },
  {
    name: 'persistentId with tuple ids, next to the same tuple as a value',
    js: () => [new Ref(7), 'ref', new Ref(8)],
    options: { persistentId: (v) => (v instanceof Ref ? Tuple.fromItems(['ref', v.id]) : null) },
    py: "class Ref:\n    def __init__(self, id):\n        self.id = id\nvalue = [Ref(7), 'ref', Ref(8)]",
    setup: 'class P(pickle.Pickler):\n    def persistent_id(self, obj):\n        return ("ref", obj.id) if type(obj).__name__ == "Ref" else None',
    protocols: [1, 2, 3, 4, 5],
  },
  {
    name: 'persistentId is not asked about a persistent id itself',
    js: () => ['Pa', 'b', 'Pa'],
    options: { persistentId: (v) => (typeof v === 'string' && v.startsWith('P') ? 'P' + v : null) },
    py: "value = ['Pa', 'b', 'Pa']",
    // One str object per id, as JavaScript strings have no identity (setdefault keeps the first).
    setup: 'PIDS = {}\nclass P(pickle.Pickler):\n    def persistent_id(self, obj):\n' +
      '        return PIDS.setdefault("P" + obj, "P" + obj) if isinstance(obj, str) and obj.startswith("P") else None',
  },
  {
    name: 'persistentId sees the globals and their names, as persistent_id does',
    js: () => [new OrderedDict([['k', 1]]), new PyGlobal('collections', 'Counter')],
    options: { persistentId: (v) => (v === 'Counter' ? 'the Counter name' : null) },
    py: "value = [collections.OrderedDict(k=1), collections.Counter]",
    setup: 'class P(pickle.Pickler):\n    def persistent_id(self, obj):\n        return "the Counter name" if obj == "Counter" else None',
  },
  {
    name: 'dispatchTable',
    js: () => {
      const t1 = new Thing('one')
      return [t1, new Thing('two'), t1, new OrderedDict([['k', new Thing('three')]])]
    },
    options: { dispatchTable: new Map([[Thing, (o: Thing): ReduceValue => [MAKE_THING, [o.name]]]]) },
    py: "t1 = m.Thing('one')\nvalue = [t1, m.Thing('two'), t1, collections.OrderedDict(k=m.Thing('three'))]",
    setup: 'class P(pickle.Pickler):\n    dispatch_table = {m.Thing: lambda o: (m.make_thing, (o.name,))}',
  },
  {
    name: 'dispatchTable with a state and a state setter',
    js: () => [new Thing('one'), new Thing('two')],
    // ('?',) is one constant tuple in Python, so the arguments are one Tuple here.
    options: { dispatchTable: new Map([[Thing, (o: Thing): ReduceValue => [MAKE_THING, QUESTION, { name: o.name }, null, null, SET_NAME]]]) },
    py: "value = [m.Thing('one'), m.Thing('two')]",
    setup: "class P(pickle.Pickler):\n    dispatch_table = {m.Thing: lambda o: (m.make_thing, ('?',), {'name': o.name}, None, None, m.set_name)}",
  },
  {
    name: 'reducerOverride, declining with NotImplemented',
    js: () => [new Thing('a'), new OrderedDict([['k', 1]]), [new Thing('b')], 'x', 1.5],
    options: { reducerOverride: (v) => (v instanceof Thing ? [MAKE_THING, [v.name]] : NotImplemented) },
    py: "value = [m.Thing('a'), collections.OrderedDict(k=1), [m.Thing('b')], 'x', 1.5]",
    setup: 'class P(pickle.Pickler):\n    def reducer_override(self, obj):\n        return (m.make_thing, (obj.name,)) if isinstance(obj, m.Thing) else NotImplemented',
  },
  {
    name: 'reducerOverride sees the callables of reductions too',
    js: () => [new OrderedDict([['k', 1]]), new OrderedDict()],
    options: { reducerOverride: (v) => (v instanceof PyGlobal && v.name === 'OrderedDict' ? [MAKE_THING, ['not OrderedDict']] : NotImplemented) },
    py: 'value = [collections.OrderedDict(k=1), collections.OrderedDict()]',
    setup: 'class P(pickle.Pickler):\n    def reducer_override(self, obj):\n        return (m.make_thing, ("not OrderedDict",)) if obj is collections.OrderedDict else NotImplemented',
  },
  {
    name: 'extension codes (EXT1, EXT2, EXT4)',
    js: () => [new Thing('a'), new OrderedDict([['k', 1]]), new PyGlobal('pwtest_classes', 'Thing'), new Thing('b')],
    options: {
      dispatchTable: new Map([[Thing, (o: Thing): ReduceValue => [MAKE_THING, [o.name]]]]),
      extensions: new Map([[240, ['pwtest_classes', 'make_thing'] as const], [0x1234, ['pwtest_classes', 'Thing'] as const],
        [0x123456, ['collections', 'OrderedDict'] as const]]),
    },
    py: "value = [m.Thing('a'), collections.OrderedDict(k=1), m.Thing, m.Thing('b')]",
    setup: "copyreg.add_extension('pwtest_classes', 'make_thing', 240)\ncopyreg.add_extension('pwtest_classes', 'Thing', 0x1234)\n" +
      "copyreg.add_extension('collections', 'OrderedDict', 0x123456)\n" +
      'class P(pickle.Pickler):\n    dispatch_table = {m.Thing: lambda o: (m.make_thing, (o.name,))}',
  },
]

const jobs: Job[] = SCENARIOS.map((s) => ({ op: 'run', code: pyPickles(s.py, s.setup) }))
const cpython: Answer[][] = pyBatch(jobs, [mod.dir])

SCENARIOS.forEach((s, k) => {
  const protocols = s.protocols ?? PROTOCOLS
  if (protocols.length === 0) return
  t.test(`${s.name}: the same bytes as CPython`, async (t) => {
    const answers = cpython[k]!
    if (!answers[0]!.ok) return void t.fail(`python3: ${answers[0]!.text}`)
    const identical: number[] = []
    for (const p of protocols) {
      const theirs = answers[p]!
      if (theirs.text.startsWith('error: ')) {
        t.fail(`protocol ${p}: CPython refused: ${theirs.text}`)
        continue
      }
      const ours = dumps(s.js(), { ...s.options, globals: registry, protocol: p })
      if (firstDifference(ours, theirs.data) === -1) identical.push(p)
      else t.comment(explainDifference(`${s.name}, protocol ${p}`, ours, theirs.data))
    }
    t.same(identical, protocols, `identical at protocols ${protocols.join(', ')}`)
  })
})

const scenario = (name: string): [Scenario, Answer[]] => {
  const k = SCENARIOS.findIndex((s) => s.name.startsWith(name))
  return [SCENARIOS[k]!, cpython[k]!]
}

t.test('registered classes round-trip JavaScript -> Python -> JavaScript', async (t) => {
  const jsValue = [new Point(1, [2.5, 'y']), new Point('x', null)]
  jsValue.push(jsValue[0]!)
  const checks: Job[] = PROTOCOLS.map((protocol) => ({
    op: 'check',
    code: "import pwtest_classes as m\na = m.Point(1, [2.5, 'y'])\nvalue = [a, m.Point('x', None), a]",
    pickles: [{ data: dumps(jsValue, { protocol, globals: registry }) }],
  }))
  checks.push(...PROTOCOLS.map((protocol) => ({
    op: 'check' as const,
    code: "import pwtest_classes as m\nvalue = [m.Thing('one'), m.Plain(b=1, a=[True]), m.Plain()]",
    pickles: [{ data: dumps([new Thing('one'), plainWith({ b: 1, a: [true] }), new Plain()], { protocol, globals: registry }) }],
  })))
  pyBatch(checks, [mod.dir]).forEach(([answer], i) =>
    t.equal(answer!.text, '', `protocol ${i % 6}: CPython loads picklewire's ${i < 6 ? 'Points' : 'Things and Plains'} as its own`))

  // And back: what CPython pickles, picklewire loads as instances of the registered classes.
  const [, points] = scenario('a registered class with getState')
  const [, plains] = scenario('a registered class with the default hooks')
  for (const p of PROTOCOLS) {
    setStates.length = 0
    const v = loads(points[p]!.data, { globals: registry }) as Point[]
    t.ok(v[0] instanceof Point && v[1] instanceof Point, `protocol ${p}: Points again`)
    t.same([v[0]!.x, v[0]!.y, v[1]!.x, v[1]!.y], [1, [2.5, 'y'], 'x', null], `protocol ${p}: their state, through the setState hook`)
    t.equal(v[2], v[0], `protocol ${p}: the same Point twice`)
    t.equal(setStates.length, 2, `protocol ${p}: setState once per Point`)
    const w = loads(plains[p]!.data, { globals: registry }) as Plain[]
    t.ok(w.every((x) => x instanceof Plain), `protocol ${p}: Plains again`)
    t.same({ ...w[0] }, { b: 1, a: [true] }, `protocol ${p}: with their attributes as own properties`)
    t.same(Object.keys(w[1]!), [], `protocol ${p}: no state, no properties`)
    t.equal(dumps(w, { protocol: p, globals: registry }).join(), plains[p]!.data.join(), `protocol ${p}: and pickled again, CPython's bytes`)
  }
})

t.test('getNewArgs below protocol 2: refused, where CPython silently drops the arguments', async (t) => {
  const [, answers] = scenario('a registered class with getNewArgs')
  for (const p of [0, 1]) {
    t.throws(() => dumps(new WithNewArgs(1, 'b'), { protocol: p, globals: registry }),
      { name: 'PicklingError', message: /pwtest_classes\.WithNewArgs needs protocol >= 2 to pickle its __getnewargs__ arguments/ })
    t.match(Buffer.from(answers[p]!.data).toString('latin1'), /copy_reg\n_reconstructor/, `protocol ${p}: CPython writes copyreg._reconstructor(cls, object, None)`)
  }
})

t.test('persistent ids: loaded opaquely, they pickle back to CPython\'s bytes; persistentLoad resolves them', async (t) => {
  const [, answers] = scenario('persistentId with string ids')
  for (const p of PROTOCOLS) {
    const v = loads(answers[p]!.data, { opaque: true }) as unknown[]
    t.type(v[1], PyPersistentRef, `protocol ${p}: a placeholder`)
    t.equal((v[1] as PyPersistentRef).id, 'a')
    t.equal(firstDifference(dumps(v, { protocol: p }), answers[p]!.data), -1, `protocol ${p}: relayed byte for byte`)
    const refs = loads(answers[p]!.data, { persistentLoad: (pid) => new Ref(pid) }) as unknown[]
    t.same([(refs[1] as Ref).id, ((refs[3] as Map<string, Ref>).get('k'))!.id, (refs[4] as Ref).id], ['a', 'b', 'a'], `protocol ${p}: persistentLoad`)
  }
})

t.test('extension codes: loaded, with or without the table, they pickle back to CPython\'s bytes', async (t) => {
  const [s, answers] = scenario('extension codes')
  for (const p of PROTOCOLS) {
    const withTable = loads(answers[p]!.data, { opaque: true, extensions: s.options!.extensions! })
    t.equal(firstDifference(dumps(withTable, { protocol: p, extensions: s.options!.extensions! }), answers[p]!.data), -1,
      `protocol ${p}: with the extension table`)
    const without = loads(answers[p]!.data, { opaque: true })
    t.equal(firstDifference(dumps(without, { protocol: p }), answers[p]!.data), -1, `protocol ${p}: unknown codes kept as such`)
  }
  t.throws(() => dumps(new PyGlobal('', '', {}, true, 240), { protocol: 1 }), PicklingError, 'an unresolved extension code needs protocol 2')
})
