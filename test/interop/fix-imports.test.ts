/**
 * fixImports maps Python 2 names to Python 3 ones exactly as CPython's Unpickler does with
 * _compat_pickle, for pickles below protocol 3 only.
 */
import t from 'tap'
import { fixImport, loads } from '@picklewire/codec'
import { pickle } from '../helpers/craft.js'
import { runPython } from '../helpers/python.js'

const tables = JSON.parse(runPython(`
import _compat_pickle as c, json, sys
json.dump({'modules': c.IMPORT_MAPPING, 'names': [[list(k), list(v)] for k, v in c.NAME_MAPPING.items()]}, sys.stdout)
`).toString()) as { modules: Record<string, string>; names: [[string, string], [string, string]][] }

t.test('every (module, name) of _compat_pickle.NAME_MAPPING', async (t) => {
  for (const [[m, n], [m3, n3]] of tables.names) t.same(fixImport(m, n), [m3, n3], `${m}.${n}`)
})

t.test('every module of _compat_pickle.IMPORT_MAPPING, for a name without its own entry', async (t) => {
  for (const [m, m3] of Object.entries(tables.modules)) t.same(fixImport(m, 'SomeName'), [m3, 'SomeName'], m)
})

t.test('names without an entry stay as they are', async (t) => {
  for (const [m, n] of [['exceptions', 'NotAnException'], ['collections', 'OrderedDict'], ['os', 'system'], ['__main__', 'Point']]) {
    t.same(fixImport(m!, n!), [m, n], `${m}.${n}`)
  }
})

t.test('the unpickler applies the mapping below protocol 3 only, and findClass sees the result', async (t) => {
  const seen: string[] = []
  const findClass = (m: string, n: string, dflt: (m: string, n: string) => unknown): unknown => {
    seen.push(`${m}.${n}`)
    return dflt(m, n)
  }
  t.throws(() => loads(pickle('ccommands\nPopen\n.'), { findClass }), { message: "global 'subprocess.Popen' is forbidden" }, 'protocol 0')
  t.throws(() => loads(pickle('\x80\x02ccommands\nPopen\n.')), { message: "global 'subprocess.Popen' is forbidden" }, 'protocol 2')
  t.throws(() => loads(pickle('\x80\x03ccommands\nPopen\n.')), { message: "global 'commands.Popen' is forbidden" }, 'protocol 3 keeps the name')
  t.throws(() => loads(pickle('\x80\x02ccommands\nPopen\n.'), { fixImports: false }), { message: "global 'commands.Popen' is forbidden" }, 'fixImports: false')
  loads(pickle('c__builtin__\nxrange\n(I3\ntR.'), { findClass })
  t.same(seen, ['subprocess.Popen', 'builtins.range'])
})
