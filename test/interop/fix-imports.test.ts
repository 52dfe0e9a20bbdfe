/**
 * fixImports maps Python 2 names to Python 3 ones exactly as CPython's Unpickler does with
 * _compat_pickle, for pickles below protocol 3 only.
 */
import t from 'tap'
import { FrozenSet, PyGlobal, Unpickler, loads, type UnpicklerOptions } from '@picklewire/codec'
import { fixImport } from '../../packages/codec/dist/globals.js'
import { pickle } from '../helpers/craft.js'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

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

t.test('__builtin__ names resolve exactly where CPython resolves them: every protocol, every way of naming a global', async (t) => {
  // Each pickle names a Python 2 global (GLOBAL, STACK_GLOBAL, INST, EXT1) after a PROTO of
  // 0-5 or none, alone or after an earlier pickle of protocol 3 in the same stream (CPython
  // starts each load at protocol 0). CPython loads every one; picklewire must resolve the same
  // ones to the same names and refuse the others.
  const EXT_CODE = 240
  const names = [['__builtin__', 'set'], ['__builtin__', 'xrange'], ['__builtin__', 'unicode'], ['__builtin__', 'frozenset'], ['copy_reg', '_reconstructor']] as const
  const headers: [string, string][] = [['no PROTO', ''], ...[0, 1, 2, 3, 4, 5].map((p): [string, string] => [`PROTO ${p}`, `\x80${String.fromCharCode(p)}`])]
  const cases: { label: string; data: Uint8Array; second: boolean; ext: readonly [string, string] | null }[] = []
  for (const [hLabel, header] of headers) {
    for (const [m, n] of names) {
      const short = (s: string): string => `\x8c${String.fromCharCode(s.length)}${s}`
      const forms: [string, string][] = [
        ['GLOBAL', `${header}c${m}\n${n}\n.`],
        ['STACK_GLOBAL', `${header}${short(m)}${short(n)}\x93.`],
        ['EXT1', `${header}\x82${String.fromCharCode(EXT_CODE)}.`],
      ]
      if (n === 'set' || n === 'frozenset') forms.push(['INST', `${header}(i${m}\n${n}\n.`])
      for (const [form, text] of forms) {
        for (const second of [false, true]) {
          const one = pickle(text)
          cases.push({
            label: `${hLabel}, ${form} ${m}.${n}${second ? ', after a protocol 3 pickle' : ''}`,
            data: second ? pickle('\x80\x03N.', one) : one,
            second,
            ext: form === 'EXT1' ? [m, n] : null,
          })
        }
      }
    }
  }
  const script = String.raw`
import copyreg, io, json, pickle, sys
out = []
for c in json.loads(sys.stdin.read()):
    if c['ext']:
        copyreg.add_extension(c['ext'][0], c['ext'][1], ${EXT_CODE})
    u = pickle.Unpickler(io.BytesIO(bytes.fromhex(c['hex'])))
    try:
        if c['second']:
            u.load()
        v = u.load()
        out.append('set' if isinstance(v, set) else 'frozenset' if isinstance(v, frozenset) else v.__module__ + '.' + v.__qualname__)
    except Exception as e:
        out.append('error ' + type(e).__name__)
    if c['ext']:
        copyreg.remove_extension(c['ext'][0], c['ext'][1], ${EXT_CODE})
json.dump(out, sys.stdout)
`
  const expected = JSON.parse(runPython(script, new TextEncoder().encode(JSON.stringify(
    cases.map((c) => ({ hex: Buffer.from(c.data).toString('hex'), second: c.second, ext: c.ext })),
  ))).toString()) as string[]
  let refusedAbove2 = 0
  cases.forEach((c, i) => {
    const u = new Unpickler(c.data, c.ext ? { extensions: new Map([[EXT_CODE, c.ext]]) } : {})
    let got: string
    try {
      if (c.second) u.load()
      const v = u.load()
      got = v instanceof FrozenSet ? 'frozenset' : v instanceof Set ? 'set' : v instanceof PyGlobal ? `${v.module}.${v.name}` : `unexpected ${String(v)}`
    } catch (err) {
      t.match(err, { name: 'UnpicklingError', message: /^global '.*' is forbidden/ }, `${c.label}: refused as a forbidden global`)
      got = 'error'
    }
    const want = expected[i]!.startsWith('error') ? 'error' : expected[i]
    if (want === 'error') refusedAbove2++
    t.equal(got, want, `${c.label}: CPython gives ${expected[i]}`)
  })
  t.ok(refusedAbove2 >= 60, `${refusedAbove2} of ${cases.length} refused by CPython (protocols 3-5)`)
})

t.test('the opaque mode refuses Python 2 module names where CPython cannot import them', async (t) => {
  // Kept as an inert placeholder, __builtin__.eval from a protocol 3 pickle (which CPython
  // refuses) would be written by a relay dumping at protocol 2 as a name CPython reads as
  // builtins.eval.
  const cases: [string, Uint8Array, UnpicklerOptions][] = [
    ['protocol 3, GLOBAL', pickle('\x80\x03c__builtin__\neval\n.'), { opaque: true }],
    ['protocol 4, STACK_GLOBAL', pickle('\x80\x04\x8c\x0b__builtin__\x8c\x04eval\x93.'), { opaque: true }],
    ['protocol 5, copy_reg', pickle('\x80\x05\x8c\x08copy_reg\x8c\x0e_reconstructor\x93.'), { opaque: true }],
    ['protocol 3, exceptions', pickle('\x80\x03cexceptions\nValueError\n.'), { opaque: true }],
    ['protocol 2 with fixImports off', pickle('\x80\x02c__builtin__\neval\n.'), { opaque: true, fixImports: false }],
    ['protocol 3, the default mode', pickle('\x80\x03c__builtin__\neval\n.'), {}],
  ]
  for (const [label, data, options] of cases) {
    t.throws(() => loads(data, options), { name: 'UnpicklingError', message: /is forbidden: '(__builtin__|copy_reg|exceptions)' is a Python 2 module name, which CPython reads as '(builtins|copyreg)\.\w+' only below protocol 3/ }, label)
    const py = runPython(`import pickle, sys\ntry:\n    pickle.loads(sys.stdin.buffer.read(), fix_imports=${options.fixImports === false ? 'False' : 'True'})\nexcept Exception as e:\n    print(type(e).__name__)`, data).toString().trim()
    t.equal(py, 'ModuleNotFoundError', `${label}: CPython cannot import it either`)
  }
  const below3 = loads(pickle('\x80\x02c__builtin__\nset\n.'), { opaque: true })
  t.ok(below3 instanceof PyGlobal && below3.module === 'builtins' && below3.name === 'set' && !below3.opaque, 'below protocol 3 it is builtins.set, as in CPython')
  const other = loads(pickle('\x80\x03cmymodule\nThing\n.'), { opaque: true })
  t.ok(other instanceof PyGlobal && other.opaque && other.module === 'mymodule', 'other unknown modules stay inert placeholders')
})
