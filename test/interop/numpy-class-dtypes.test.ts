/**
 * numpy dtypes made from a class rather than a type string: numpy.record (record arrays, numpy
 * 1.x and 2.x) loads without opaque; another library's dtype class (ml_dtypes.bfloat16) loads
 * in opaque mode. Either is a DType of kind 'V' naming its class, and dumps back to numpy's
 * bytes, in band and out of band, which numpy loads to an equal array of the same dtype. And a
 * dtype numpy builds by a call (numpy 2's StringDType) keeps its array in opaque mode.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { DType, NDArray, PyObject, UnpicklingError, dumps, loads } from '@picklewire/codec'
import { numpyPythons } from '../helpers/numpy.js'
import { check, dumpLike, make, type Made } from './numpy-pickles.js'

const PROTOCOLS: readonly (readonly [number, boolean])[] = [[2, false], [4, false], [5, false], [5, true]]
// Field names other than 'b': the pickler shares equal strings through its memo, where CPython shares
// the same str object only, and numpy's protocol 2 pickle also holds a 'b' (the _codecs.encode argument).
const REC = "np.array([(1, 2.5), (-3, 4.0)], dtype=np.dtype((np.record, [('id', '<i4'), ('x', '<f8')])))"

const { found } = numpyPythons()
for (const { python, version, major } of found) {
  const numpy = major === 2 ? '2' : '1'
  t.test(`numpy ${version}: an ndarray of numpy.record loads without opaque and dumps back`, async (t) => {
    const cases = PROTOCOLS.map(([p, oob]) => [REC, p, oob] as const)
    const made = make(python, '', cases)
    const back: [string, Made][] = []
    cases.forEach(([expr, protocol, oob], i) => {
      const what = `protocol ${protocol}${oob ? ' out of band' : ''}`
      const { data, buffers } = made[i]!
      const a = loads(data, { buffers, lossless: true })
      t.ok(a instanceof NDArray, `${what}: an NDArray`)
      const d = (a as NDArray).dtype
      t.ok(d instanceof DType && d.kind === 'V' && d.itemsize === 12, `${what}: a void dtype of 12 bytes`)
      t.equal(d.scalarType?.toString(), 'numpy.record', `${what}: made from numpy.record`)
      t.same((a as NDArray).shape, [2])
      const ours = dumpLike(a, protocol, oob, numpy)
      t.same(Buffer.from(ours.data), Buffer.from(data), `${what}: dumps back to numpy's bytes`)
      back.push([expr, ours])
    })
    t.same(check(python, '', back), back.map(() => 'ok'), 'numpy loads each back to an equal array of the record dtype')
  })

  t.test(`numpy ${version}: a recarray (a subclass) of numpy.record loads in opaque mode and dumps back`, async (t) => {
    const expr = `${REC}.view(np.recarray)`
    const made = make(python, '', [[expr, 2, false], [expr, 5, false]])
    for (const [i, protocol] of [2, 5].entries()) {
      const { data } = made[i]!
      t.throws(() => loads(data), UnpicklingError, `protocol ${protocol}: numpy.recarray stays refused without opaque`)
      const v = loads(data, { opaque: true, lossless: true })
      t.ok(v instanceof PyObject, `protocol ${protocol}: a placeholder of the subclass`)
      t.same(Buffer.from(dumps(v, { protocol, numpy })), Buffer.from(data), `protocol ${protocol}: dumps back to numpy's bytes`)
    }
  })
}

t.test('numpy.dtype of a class that is neither numpy.record nor a placeholder is refused', async (t) => {
  const data = Buffer.from('\x80\x02cnumpy\ndtype\ncbuiltins\nint\n\x89\x88\x87R.', 'latin1')
  t.throws(() => loads(data), { constructor: UnpicklingError, message: /numpy\.dtype needs a str or a dtype's class.*got global builtins\.int/ })
})

// ml_dtypes is not part of python3's site-packages: it goes into a venv of the test's own, from
// the wheel folder, when the folder has it.
const WHEELS = '/opt/pypi/files'
const wheel = existsSync(WHEELS) ? readdirSync(WHEELS).find((f) => /^ml_dtypes-.*-cp311-.*x86_64.*\.whl$/.test(f)) : undefined
const numpy2 = found.find((f) => f.major === 2)
t.test('an ml_dtypes.bfloat16 array loads in opaque mode and dumps back', { skip: wheel === undefined || numpy2 === undefined ? 'no ml_dtypes wheel or no numpy 2.x' : false }, async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'pw-mldtypes-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  execFileSync(numpy2!.python, ['-m', 'venv', '--system-site-packages', join(dir, 'venv')])
  const python = join(dir, 'venv', 'bin', 'python')
  execFileSync(python, ['-m', 'pip', 'install', '-q', '--no-index', '--no-deps', join(WHEELS, wheel!)])
  const imports = 'import ml_dtypes'
  const expr = 'np.array([1.5, -2.0, 3.0], dtype=ml_dtypes.bfloat16)'
  const cases = PROTOCOLS.map(([p, oob]) => [expr, p, oob] as const)
  const made = make(python, imports, cases)
  const back: [string, Made][] = []
  cases.forEach(([, protocol, oob], i) => {
    const what = `protocol ${protocol}${oob ? ' out of band' : ''}`
    const { data, buffers } = made[i]!
    t.throws(() => loads(data, { buffers }), { constructor: UnpicklingError, message: /ml_dtypes\.bfloat16/ }, `${what}: refused without opaque, naming the class`)
    const a = loads(data, { buffers, opaque: true, lossless: true }) as NDArray
    t.ok(a instanceof NDArray, `${what}: an NDArray`)
    t.equal(a.dtype.scalarType?.toString(), 'ml_dtypes.bfloat16', `${what}: its dtype names ml_dtypes.bfloat16`)
    t.same([a.dtype.kind, a.dtype.itemsize, a.dtype.byteorder], ['V', 2, '<'], `${what}: 2 raw bytes per element, little-endian`)
    // bfloat16 is the top half of a float32: 1.5 is 0x3fc0.
    t.same([...(a.data as Uint8Array).subarray(0, 2)], [0xc0, 0x3f], `${what}: the element bytes as numpy wrote them`)
    const ours = dumpLike(a, protocol, oob, '2')
    t.same(Buffer.from(ours.data), Buffer.from(data), `${what}: dumps back to numpy's bytes`)
    back.push([expr, ours])
  })
  t.same(check(python, imports, back), back.map(() => 'ok'), 'numpy loads each back to an equal bfloat16 array')
})

t.test('opaque mode: a numpy 2 StringDType array loads as a list of its strings and dumps back', { skip: numpy2 === undefined ? 'no numpy 2.x' : false }, async (t) => {
  const python = numpy2!.python
  const expr = "np.array(['a', 'bc', 'é😀', ''], dtype=np.dtypes.StringDType())"
  const cases = [[expr, 2, false], [expr, 4, false], [expr, 5, false], [expr, 5, true]] as const
  const made = make(python, '', cases)
  const back: [string, Made][] = []
  cases.forEach(([, protocol, oob], i) => {
    const what = `protocol ${protocol}${oob ? ' with a buffer_callback' : ''}`
    const { data, buffers } = made[i]!
    t.same(buffers, [], `${what}: numpy keeps StringDType data in band`)
    t.throws(() => loads(data), { constructor: UnpicklingError, message: /_convert_to_stringdtype_kwargs/ }, `${what}: refused without opaque, naming numpy's dtype maker`)
    const a = loads(data, { opaque: true, lossless: true }) as NDArray
    t.ok(a instanceof NDArray, `${what}: an NDArray`)
    const p = a.dtype.placeholder
    t.ok(p instanceof PyObject && p.callable.name === '_convert_to_stringdtype_kwargs', `${what}: its dtype keeps numpy's call as a placeholder`)
    t.same(a.flat(), ['a', 'bc', 'é😀', ''], `${what}: the elements are the strings`)
    const ours = dumpLike(a, protocol, oob, '2')
    t.same(Buffer.from(ours.data), Buffer.from(data), `${what}: dumps back to numpy's bytes`)
    back.push([expr, ours])
  })
  t.same(check(python, '', back), back.map(() => 'ok'), 'numpy loads each back to an equal StringDType array')
})

t.test('opaque mode: an array whose placeholder dtype comes with bytes, not a list, is refused by name', { skip: numpy2 === undefined ? 'no numpy 2.x' : false }, async (t) => {
  // numpy's own _reconstruct and BUILD, with an unknown call where the dtype goes and raw bytes as the data.
  const out = execFileSync(numpy2!.python, ['-c', String.raw`
import sys, pickle, os, numpy as np
from numpy._core.multiarray import _reconstruct
class UnknownDType:
    def __reduce__(self): return (os.getcwd, ())
class Arr:
    def __reduce__(self): return (_reconstruct, (np.ndarray, (0,), b'b'), (1, (2,), UnknownDType(), False, b'ab'))
sys.stdout.buffer.write(pickle.dumps(Arr(), 4))
`], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.throws(() => loads(new Uint8Array(out), { opaque: true }), { constructor: UnpicklingError, message: /a dtype this codec does not know \(PyObject\) loads only when numpy pickled its elements as a list, got Uint8Array/ })
})
