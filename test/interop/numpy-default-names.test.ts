/**
 * What Node writes for numpy with default options loads without any warning in numpy 1.x
 * (/usr/bin/python3) and numpy 2.x (python3), each run with `python -W error`: arrays of
 * several dtypes and layouts (0-d and empty among them), TypedArrays, numpy scalars and a
 * dtype, at protocols 2 to 5 in band and at 5 out of band. Each value must equal the one numpy
 * builds from the same expression (type, dtype, shape and elements; the layout where it
 * matters). The names numpy 1.x and 2.x write themselves are checked against the same
 * interpreters: numpy 2.x warns on numpy 1.x's protocol 5 names, numpy 1.x cannot load 2.x's.
 */
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { Complex, DType, NDArray, NumpyScalar, PickleBuffer, dumps, type NumpyNames } from '@picklewire/codec'
import { numpyPythons } from '../helpers/numpy.js'

/** A value Node dumps, and the Python expression (numpy as np) it must load as. */
type Case = readonly [label: string, value: () => unknown, expr: string]

const iota = (n: number) => Array.from({ length: n }, (_, i) => i)

const CASES: readonly Case[] = [
  ['float32 2x3', () => new NDArray(Float32Array.from(iota(6)), { shape: [2, 3] }), "np.arange(6, dtype='<f4').reshape(2, 3)"],
  ['float64 2x3 Fortran order', () => new NDArray(Float64Array.from([0, 3, 1, 4, 2, 5]), { shape: [2, 3], order: 'F' }), "np.asfortranarray(np.arange(6, dtype='<f8').reshape(2, 3))"],
  ['int32 2x3x4 transposed (neither C nor F)', () => new NDArray(Int32Array.from(iota(24)), { shape: [2, 3, 4] }).transpose(1, 0, 2), "np.arange(24, dtype='<i4').reshape(2, 3, 4).transpose(1, 0, 2)"],
  ['float64 0-d', () => new NDArray(Float64Array.of(2.5), { shape: [] }), "np.array(2.5, dtype='<f8')"],
  ['float32 empty 0x3', () => new NDArray(new Float32Array(0), { shape: [0, 3] }), "np.zeros((0, 3), dtype='<f4')"],
  ['uint16 read-only', () => new NDArray(Uint16Array.of(1, 2, 3), { readonly: true }), "np.array([1, 2, 3], dtype='<u2')"],
  ['bool', () => new NDArray(Uint8Array.of(1, 0, 1), { dtype: '?' }), 'np.array([True, False, True])'],
  ['complex128', () => new NDArray(Float64Array.of(1, 2, 3, 4), { dtype: '<c16' }), "np.array([1 + 2j, 3 + 4j], dtype='<c16')"],
  ['str <U2', () => new NDArray(Uint32Array.of(97, 98, 99, 0), { dtype: '<U2', shape: [2] }), "np.array(['ab', 'c'], dtype='<U2')"],
  ['bytes |S3', () => new NDArray(Uint8Array.of(120, 121, 122, 0, 0, 0), { dtype: '|S3', shape: [2] }), "np.array([b'xyz', b''], dtype='|S3')"],
  ['datetime64[ns]', () => new NDArray(BigInt64Array.of(1n, 2n), { dtype: '<M8[ns]' }), "np.array([1, 2], dtype='<M8[ns]')"],
  ['object array', () => new NDArray(['a', 1, null], { dtype: 'O' }), "np.array(['a', 1, None], dtype=object)"],
  ['Float32Array', () => Float32Array.of(1.5, -2), "np.array([1.5, -2], dtype='<f4')"],
  ['BigInt64Array', () => BigInt64Array.of(-1n, 2n ** 40n), "np.array([-1, 2 ** 40], dtype='<i8')"],
  ['float32 scalar', () => new NumpyScalar('f4', 1.5), "np.float32(1.5)"],
  ['int64 scalar', () => new NumpyScalar('i8', -7n), 'np.int64(-7)'],
  ['complex128 scalar', () => new NumpyScalar('c16', new Complex(1, -1)), 'np.complex128(1 - 1j)'],
  ['bool scalar', () => new NumpyScalar('?', true), 'np.bool_(True)'],
  ['datetime64[s] scalar', () => new NumpyScalar('<M8[s]', 86400n), "np.datetime64(86400, 's')"],
  ['dtype <f8', () => DType.of('<f8'), "np.dtype('<f8')"],
  ['dtype <M8[us]', () => DType.of('<M8[us]'), "np.dtype('<M8[us]')"],
]

const PROTOCOLS: readonly (readonly [number, boolean])[] = [[2, false], [3, false], [4, false], [5, false], [5, true]]

/** Loads every case with pickle.loads (warnings are errors: `-W error`) and compares it with eval(expr). */
const CHECK = `
import base64, json, pickle, sys
import numpy as np

def same(got, want):
    if type(got) is not type(want):
        return f'loaded a {type(got).__module__}.{type(got).__name__}, expected {type(want).__name__}'
    if isinstance(want, np.dtype):
        return None if got == want and got.str == want.str else f'dtype {got.str}, expected {want.str}'
    if got.dtype.str != want.dtype.str or got.shape != want.shape:
        return f'{got.dtype.str} {got.shape}, expected {want.dtype.str} {want.shape}'
    if got.tolist() != want.tolist():
        return f'values {got.tolist()!r}, expected {want.tolist()!r}'
    if isinstance(want, np.ndarray) and want.ndim > 1 and want.size and got.strides != want.strides and not names_1_k:
        return f'strides {got.strides}, expected {want.strides}'
    return None

out = []
for case in json.loads(sys.stdin.read()):
    names_1_k = case['inBandLayout']
    try:
        got = pickle.loads(base64.b64decode(case['pickle']), buffers=[base64.b64decode(b) for b in case['buffers']])
        out.append(same(got, eval(case['expr'])))
    except Exception as e:
        out.append(f'{type(e).__name__}: {e}')
print(json.dumps({'numpy': np.__version__, 'problems': out}))
`

interface Made {
  label: string
  expr: string
  pickle: string
  buffers: string[]
  /** numpy 1.x's names write a layout that is neither C nor F in band, in C order. */
  inBandLayout: boolean
}

function make(names: NumpyNames | undefined, protocols = PROTOCOLS, cases = CASES): Made[] {
  const made: Made[] = []
  for (const [label, value, expr] of cases) {
    for (const [protocol, oob] of protocols) {
      const buffers: PickleBuffer[] = []
      const options = { protocol, bufferCallback: oob ? (b: PickleBuffer) => void buffers.push(b) : null, ...(names ? { numpy: names } : {}) }
      const pickle = dumps(value(), options)
      made.push({
        label: `${label}, protocol ${protocol}${oob ? ' out of band' : ''}`,
        expr,
        pickle: Buffer.from(pickle).toString('base64'),
        buffers: buffers.map((b) => Buffer.from(b.raw()).toString('base64')),
        inBandLayout: names === '1' || protocol < 5,
      })
    }
  }
  return made
}

function check(python: string, made: Made[]): { numpy: string; problems: (string | null)[] } {
  const r = spawnSync(python, ['-W', 'error', '-c', CHECK], { input: JSON.stringify(made), encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`${python} -W error failed:\n${r.stderr}`)
  return JSON.parse(r.stdout)
}

const { found, missing } = numpyPythons()
for (const why of missing) t.comment(`skipped: ${why}`)
if (found.length === 0) t.pass('skipped: no python3 with numpy')

for (const py of found) {
  t.test(`numpy ${py.version} (${py.python} -W error) loads what Node writes with default options`, async (t) => {
    const made = make(undefined)
    const out = check(py.python, made)
    t.equal(out.numpy, py.version)
    const problems = made.map((m, i) => out.problems[i] ? `${m.label}: ${out.problems[i]}` : null).filter((p) => p !== null)
    t.same(problems, [], `all ${made.length} pickles load, without a warning, as the values numpy builds`)
    const outOfBand = made.filter((m) => m.buffers.length > 0).length
    t.ok(outOfBand >= 10, `${outOfBand} of them with their buffer out of band`)
  })

  const oob: readonly (readonly [number, boolean])[] = [[5, true]]
  const float32 = CASES.slice(0, 1)
  if (py.major === 2) {
    t.test(`numpy ${py.version} -W error: numpy 1.x's protocol 5 names ('1') warn, numpy 2.x's ('2') load`, async (t) => {
      const out = check(py.python, [...make('1', oob, float32), ...make('2', oob, float32)])
      t.match(out.problems[0], /DeprecationWarning: numpy\.core\.numeric is deprecated/, "'1': numpy.core.numeric._frombuffer warns")
      t.equal(out.problems[1], null, "'2' loads silently")
    })
  } else {
    t.test(`numpy ${py.version} -W error: numpy 2.x's names ('2') do not load, numpy 1.x's ('1') do`, async (t) => {
      const out = check(py.python, [...make('2', oob, float32), ...make('1', oob, float32)])
      t.match(out.problems[0], /No module named 'numpy\._core'/, "'2': numpy 1.x has no numpy._core")
      t.equal(out.problems[1], null, "'1' loads silently")
    })
  }
}
