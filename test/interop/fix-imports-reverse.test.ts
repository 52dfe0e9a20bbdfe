/**
 * Below protocol 3 with fixImports (the default), the pickler writes Python 3 names the Python 2
 * way, as CPython's does: every entry of CPython's _compat_pickle.REVERSE_NAME_MAPPING (112) and
 * REVERSE_IMPORT_MAPPING (47), read from the python3 that runs the test, and the forward tables
 * the unpickler reads are unchanged. Where the global is importable here, our bytes are CPython's.
 */
import t from 'tap'
import { PyGlobal, dumps } from '@picklewire/codec'
import { fixImport, reverseFixImport } from '../../packages/codec/dist/globals.js'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

type Pair = [string, string]

const tables = JSON.parse(runPython(String.raw`
import _compat_pickle as c, json
print(json.dumps({
    'reverseNames': [[list(k), list(v)] for k, v in c.REVERSE_NAME_MAPPING.items()],
    'reverseModules': list(c.REVERSE_IMPORT_MAPPING.items()),
    'names': [[list(k), list(v)] for k, v in c.NAME_MAPPING.items()],
    'modules': list(c.IMPORT_MAPPING.items()),
}))
`).toString()) as { reverseNames: [Pair, Pair][], reverseModules: Pair[], names: [Pair, Pair][], modules: Pair[] }

t.test('reverseFixImport is CPython 3.11\'s reverse mapping, entry for entry', async (t) => {
  t.equal(tables.reverseNames.length + tables.reverseModules.length, 159, 'CPython has 159 reverse entries')
  for (const [[m, n], want] of tables.reverseNames) t.same(reverseFixImport(m, n), want, `${m}.${n}`)
  for (const [py3, py2] of tables.reverseModules) {
    // A name of no NAME entry: the module rename alone applies.
    t.same(reverseFixImport(py3, 'Unlisted_name'), [py2, 'Unlisted_name'], `module ${py3}`)
  }
  t.same(reverseFixImport('collections', 'OrderedDict'), ['collections', 'OrderedDict'], 'a name in neither table is left as it is')
})

t.test('fixImport still reads every forward entry', async (t) => {
  for (const [[m, n], want] of tables.names) t.same(fixImport(m, n), want, `${m}.${n}`)
  for (const [py2, py3] of tables.modules) t.same(fixImport(py2, 'Unlisted_name'), [py3, 'Unlisted_name'], `module ${py2}`)
})

t.test('globals written below protocol 3 are CPython\'s bytes', async (t) => {
  // Each reverse name importable here, and for each reverse module a class of its own (one that
  // names that module and no NAME entry): CPython's pickle of it at protocols 0, 1 and 2, with
  // and without fix_imports, under the names the object itself gives.
  const out = runPython(String.raw`
import _compat_pickle as c, importlib, inspect, json, pickle, base64
def find(m, n):
    try:
        o = importlib.import_module(m)
        for part in n.split('.'): o = getattr(o, part)
        return o
    except Exception:
        return None
cases = [(m, n) for (m, n) in c.REVERSE_NAME_MAPPING]
for m in c.REVERSE_IMPORT_MAPPING:
    try: mod = importlib.import_module(m)
    except Exception: continue
    for n, o in sorted(vars(mod).items()):
        if inspect.isclass(o) and o.__module__ == m and o.__qualname__ == n and (m, n) not in c.REVERSE_NAME_MAPPING:
            cases.append((m, n)); break
res, seen = [], set()
for m, n in cases:
    o = find(m, n)
    if o is None: continue
    # CPython writes the names the object gives (IOError is OSError, functools.reduce is _functools').
    m, n = getattr(o, '__module__', m), getattr(o, '__qualname__', n)
    if (m, n) in seen: continue
    seen.add((m, n))
    try:
        d = [[base64.b64encode(pickle.dumps(o, p, fix_imports=f)).decode() for p in (0, 1, 2)] for f in (True, False)]
    except Exception:
        continue
    res.append([m, n, d])
print(json.dumps(res))
`).toString()
  const cases = JSON.parse(out) as [string, string, string[][]][]
  t.ok(cases.length >= 100, `${cases.length} of the mapped globals are importable and picklable here`)
  for (const [m, n, [fixed, plain]] of cases) {
    for (const [i, protocol] of [0, 1, 2].entries()) {
      const g = new PyGlobal(m, n)
      t.equal(Buffer.from(dumps(g, { protocol })).toString('base64'), fixed![i], `${m}.${n} at protocol ${protocol}`)
      t.equal(Buffer.from(dumps(g, { protocol, fixImports: false })).toString('base64'), plain![i], `${m}.${n} at protocol ${protocol} without fixImports`)
    }
  }
})
