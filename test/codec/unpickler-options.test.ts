/**
 * The Unpickler's options, each with its default and its effect, on pickles CPython wrote
 * (test/interop/make_option_pickles.py) or hand-made ones where CPython never writes the input.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import {
  Decimal, GlobalRegistry, OrderedDict, PickleError, PyDate, PyGlobal, PyObject, PyPersistentRef, Tuple, UnpicklingError,
  defaultGlobals, load, loads,
} from '@picklewire/codec'
import { pickle, shortStr } from '../helpers/craft.js'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

const script = fileURLToPath(new URL('../interop/make_option_pickles.py', import.meta.url))
const made = Object.fromEntries(Object.entries(JSON.parse(
  runPython(`import runpy; runpy.run_path(${JSON.stringify(script)}, run_name='__main__')`).toString(),
) as Record<string, string>).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))]))

function py(name: string): Uint8Array {
  const p = made[name]
  if (!p) throw new Error(`no pickle ${name}`)
  return p
}

t.test('persistentLoad resolves PERSID (protocol 0) and BINPERSID ids', async (t) => {
  for (let p = 0; p <= 5; p++) {
    const ids: unknown[] = []
    const v = loads(py(`persistent ${p}`), { persistentLoad: (pid) => (ids.push(pid), { resolved: ids.length }) }) as unknown[]
    t.same(v, [{ resolved: 1 }, 1, { resolved: 2 }], `protocol ${p}`)
    if (p === 0) t.same(ids, ['ref:a', 'ref:b'], 'text ids at protocol 0')
    else {
      t.type(ids[0], Tuple)
      t.same([...(ids[1] as Tuple)], ['ref', 'b'], `protocol ${p}: the tuple CPython's persistent_id returned`)
    }
  }
})

t.test('without persistentLoad a persistent id is an error, or an inert PyPersistentRef when opaque', async (t) => {
  for (let p = 0; p <= 5; p++) {
    t.throws(() => loads(py(`persistent ${p}`)), { name: 'UnpicklingError', message: /no persistentLoad function was specified/ }, `protocol ${p}`)
    const v = loads(py(`persistent ${p}`), { opaque: true }) as unknown[]
    t.type(v[0], PyPersistentRef)
    t.equal((v[0] as PyPersistentRef).binary, p > 0)
  }
  t.throws(() => loads(pickle('P\xe9\n.'), { persistentLoad: (x) => x }), { message: /persistent IDs in protocol 0 must be ASCII strings/ })
})

t.test('extensions resolve EXT1, EXT2 and EXT4 codes as copyreg.add_extension registered them', async (t) => {
  const extensions = new Map<number, readonly [string, string]>([
    [1, ['collections', 'OrderedDict']], [300, ['datetime', 'date']], [70000, ['decimal', 'Decimal']],
  ])
  for (let p = 2; p <= 5; p++) {
    const [od, date, dec] = loads(py(`ext ${p}`), { extensions }) as unknown[]
    t.type(od, OrderedDict, `protocol ${p}`)
    t.same([...(od as OrderedDict)], [['a', 1]])
    t.type(date, PyDate)
    t.equal(String(date), '2020-01-02')
    t.type(dec, Decimal)
    t.equal((dec as Decimal).value, '1.5')
    t.throws(() => loads(py(`ext ${p}`)), { name: 'UnpicklingError', message: /unregistered extension code 1\b/ }, `protocol ${p} without the table`)
    const opaque = loads(py(`ext ${p}`), { opaque: true, extensions: new Map([[1, ['collections', 'OrderedDict'] as const]]) }) as unknown[]
    t.type(opaque[1], PyObject, 'an unknown code in opaque mode makes a placeholder')
    t.equal(((opaque[1] as PyObject).callable as PyGlobal).extensionCode, 300)
  }
  t.throws(() => loads(pickle('\x80\x02\x84', [0, 0, 0, 0], '.')), { message: /EXT specifies code <= 0: 0/ })
  t.throws(() => loads(pickle('\x80\x02\x84', [0xff, 0xff, 0xff, 0xff], '.')), { message: /EXT specifies code <= 0: -1/ })
})

t.test('opaque keeps instances of unknown classes with everything that built them', async (t) => {
  for (let p = 0; p <= 5; p++) {
    t.throws(() => loads(py(`custom ${p}`)), { name: 'UnpicklingError', message: "global '__main__.Custom' is forbidden" }, `protocol ${p}`)
    const v = loads(py(`custom ${p}`), { opaque: true })
    t.type(v, PyObject, `protocol ${p}`)
    const o = v as PyObject
    t.equal(`${o.callable.module}.${o.callable.name}`, '__main__.Custom')
    t.same([...(o.state as Map<string, unknown>)], [['x', 1], ['items', [1, 2]]], 'the BUILD state, as a Map')
    t.equal(o.origin, p >= 2 ? 'newobj' : 'reconstructor')

    const list = loads(py(`mylist ${p}`), { opaque: true }) as PyObject
    const dict = loads(py(`mydict ${p}`), { opaque: true }) as PyObject
    if (p >= 2) {
      t.same(list.listItems, [1, 2], `protocol ${p}: a list subclass keeps its APPENDS`)
      t.same(dict.dictItems, [['k', 'v']], `protocol ${p}: a dict subclass keeps its SETITEMS`)
    } else {
      // Below protocol 2: copyreg._reconstructor(cls, base, state), kept as that very call.
      t.same(list.args.slice(1).map(String), ['builtins.list', '1,2'], `protocol ${p}: list subclass by _reconstructor`)
      t.same([...(dict.args[2] as Map<string, unknown>)], [['k', 'v']], `protocol ${p}: dict subclass by _reconstructor`)
    }
  }
  const kw = loads(py('withkw 4'), { opaque: true }) as PyObject
  t.equal(kw.origin, 'newobj_ex')
  t.same([...kw.args], [1])
  t.same([...(kw.kwargs as Map<string, unknown>)], [['k', 2]])
  const a = loads(py('custom 4'), { opaque: true }) as PyObject
  const b = loads(pickle('\x80\x04', ...shortStr('__main__'), ...shortStr('Custom'), '\x93\x94', ...shortStr('__main__'), ...shortStr('Custom'), '\x93\x86.'), { opaque: true }) as Tuple
  t.equal(b[0], b[1], 'one placeholder per global within a load')
  t.type(a.callable, PyGlobal)
})

t.test('globals: a registry extending the default one', async (t) => {
  class Custom {
    x?: number
  }
  const globals = new GlobalRegistry(defaultGlobals)
  globals.define('__main__', 'Custom', { newObject: () => new Custom(), call: () => new Custom() })
  for (let p = 0; p <= 5; p++) {
    const v = loads(py(`custom ${p}`), { globals }) as Custom
    t.type(v, Custom, `protocol ${p}`)
    t.equal(v.x, 1)
    t.same((v as unknown as { items: unknown }).items, [1, 2])
  }
  t.throws(() => defaultGlobals.set('os', 'system', () => 0), PickleError, 'the default registry is frozen')
})

t.test('findClass: receives module and name, may defer, and its result is used', async (t) => {
  const calls: string[] = []
  const v = loads(pickle('\x80\x04', ...shortStr('app'), ...shortStr('add'), '\x93K\x02K\x03\x86R.'), {
    findClass: (m, n, dflt) => {
      calls.push(`${m}.${n}`)
      return m === 'app' && n === 'add' ? (a: number, b: number) => a + b : dflt(m, n)
    },
  })
  t.equal(v, 5, 'a function the application returned is called with the arguments')
  t.same(calls, ['app.add'])
  t.throws(() => loads(pickle('capp\nadd\n.'), { findClass: () => { throw new TypeError('nope') } }),
    { name: 'UnpicklingError', message: /nope/ }, 'a hook\'s own error comes back as an UnpicklingError')
})

t.test('encoding and errors: defaults ASCII and strict; bad names are refused', async (t) => {
  const str = pickle('U\x03a\xe9b.')
  t.throws(() => loads(str), { name: 'UnpicklingError', message: /'ascii' codec can't decode byte 0xe9 in position 1/ }, 'ASCII, strict by default')
  t.equal(loads(str, { encoding: 'latin1' }), 'aéb')
  t.same(loads(str, { encoding: 'bytes' }), new Uint8Array([0x61, 0xe9, 0x62]))
  t.equal(loads(str, { errors: 'replace' }), 'a\ufffdb')
  t.throws(() => loads(str, { encoding: 'no-such-codec' }), { message: /unknown encoding: no-such-codec/ })
  t.throws(() => loads(str, { errors: 'bogus' }), { message: /unknown error handler name 'bogus'/ })
  t.equal(loads(pickle('U\x03abc.'), { errors: 'bogus' }), 'abc', 'the handler is only needed for a bad byte, as in Python')
})

t.test('invalid option values are refused when the Unpickler is made', async (t) => {
  const data = pickle('N.')
  t.throws(() => loads(data, { dict: 'array' as 'map' }), { name: 'PickleError', message: `option dict must be one of 'map', 'object', got "array"` })
  for (const bad of [0, -1, NaN]) {
    t.throws(() => loads(data, { maxDepth: bad }), { name: 'PickleError', message: /option maxDepth must be a positive number/ }, `maxDepth ${bad}`)
    t.throws(() => loads(data, { maxSize: bad }), { name: 'PickleError', message: /option maxSize must be a positive number/ }, `maxSize ${bad}`)
  }
  t.throws(() => loads('not bytes' as unknown as Uint8Array), { name: 'PickleError', message: /expected bytes/ })
})

t.test('every kind of bytes input, including views at an offset inside a larger buffer', async (t) => {
  // A float, an int and a string read through the view's own offset.
  const body = pickle('\x80\x02G\x40\x09\x21\xfb\x54\x44\x2d\x18J\x78\x56\x34\x12X\x02\x00\x00\x00\xc3\xa9\x87.')
  const expected = [Math.PI, 0x12345678, 'é']
  const big = new Uint8Array(body.length + 10).fill(0x2e)
  big.set(body, 3)
  const inputs: [string, unknown][] = [
    ['Uint8Array', body],
    ['ArrayBuffer', body.slice().buffer],
    ['SharedArrayBuffer', (() => { const s = new SharedArrayBuffer(body.length); new Uint8Array(s).set(body); return s })()],
    ['a subarray at offset 3', big.subarray(3, 3 + body.length)],
    ['a DataView at offset 3', new DataView(big.buffer, 3, body.length)],
    ['a Node Buffer', Buffer.from(body)],
  ]
  for (const [label, input] of inputs) t.same([...(loads(input as Uint8Array) as Tuple)], expected, label)
  t.same([...(await load([body.subarray(0, 5), body.subarray(5)]) as Tuple)], expected, 'load() from chunks')
  t.same([...(await load(body) as Tuple)], expected, 'load() from bytes')
})

t.test('lossless keeps integral floats as PyFloat; the default gives plain numbers', async (t) => {
  const data = pickle('\x80\x02G\x3f\xf0\x00\x00\x00\x00\x00\x00K\x01\x86.')
  const plain = loads(data) as Tuple
  t.equal(plain[0], 1)
  const lossless = loads(data, { lossless: true }) as Tuple
  t.equal((lossless[0] as { value: number }).value, 1)
  t.equal(lossless[1], 1, 'an int stays a number')
  t.throws(() => loads(pickle('\x80\x02}K\x01K\x02s.'), { dict: 'object' }), { name: 'UnpicklingError', message: /dict key number 1 cannot be an object property with dict: 'object'/ })
  t.type(loads(pickle('}.')), Map, 'dict: map by default')
  t.type(new UnpicklingError('x'), PickleError)
})
