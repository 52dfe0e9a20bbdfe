/**
 * The numpy reconstructors on hostile input: shapes that are negative, overflow or do not match
 * the bytes, axis orders that are not permutations, dtypes that do not exist, states of the wrong
 * shape. Each is an UnpicklingError naming the global and the bad value, found before anything is
 * allocated from a shape. Also the NDArray constructor's own checks, and float16 both ways.
 */
import t from 'tap'
import {
  DType, NDArray, NumpyScalar, PickleBuffer, PyGlobal, PyObject, Tuple, UnpicklingError, dumps, float16ToNumber,
  loads, numberToFloat16, reduceEx, type ReduceValue,
} from '@picklewire/codec'

const frombuffer = new PyGlobal('numpy.core.numeric', '_frombuffer')
const reconstruct = new PyGlobal('numpy._core.multiarray', '_reconstruct')
const ndarray = new PyGlobal('numpy', 'ndarray')
const scalar = new PyGlobal('numpy.core.multiarray', 'scalar')
const dtypeG = new PyGlobal('numpy', 'dtype')

/** A value that pickles as the reduce value it holds. */
class Crafted {
  constructor(readonly recipe: ReduceValue) {}
  [reduceEx](): ReduceValue {
    return this.recipe
  }
}

/** A pickle of callable(*args) (and BUILD state), written with picklewire's own pickler. */
function craft(callable: PyGlobal, args: unknown[], state?: unknown, protocol = 5): Uint8Array {
  return dumps(new Crafted(state === undefined ? [callable, args] : [callable, args, state]), { protocol })
}

const f8 = DType.of('f8')
const bytes8 = new Uint8Array(8)

t.test('_frombuffer refuses shapes and buffers that do not fit, before allocating', async (t) => {
  const cases: [what: string, args: unknown[], message: RegExp][] = [
    ['a negative dimension', [bytes8, f8, Tuple.fromItems([-1]), 'C'], /negative dimension -1/],
    ['a shape whose product overflows', [bytes8, f8, Tuple.fromItems([2 ** 40, 2 ** 40]), 'C'], /is too large/],
    ['a shape times itemsize beyond 2^53', [bytes8, f8, Tuple.fromItems([2 ** 52]), 'C'], /is too large/],
    ['a shape that needs more bytes than given', [bytes8, f8, Tuple.fromItems([3]), 'C'], /8 bytes cannot hold shape \(3\) of <f8 \(24 bytes\)/],
    ['a shape that needs fewer', [new Uint8Array(16), f8, Tuple.fromItems([1]), 'C'], /16 bytes cannot hold/],
    ['a huge dimension', [bytes8, f8, Tuple.fromItems([2n ** 80n]), 'C'], /needs an integer, got bigint/],
    ['a fractional dimension', [bytes8, f8, Tuple.fromItems([1.5]), 'C'], /needs an integer, got number 1.5/],
    ['65 dimensions', [bytes8, f8, Tuple.fromItems(new Array(65).fill(1)), 'C'], /65 dimensions, more than 64/],
    ['an unknown order', [bytes8, f8, Tuple.fromItems([1]), 'X'], /order must be 'C', 'F' or 'K', got "X"/],
    ['an axis order that repeats an axis', [new Uint8Array(16), f8, Tuple.fromItems([1, 2]), 'K', Tuple.fromItems([0, 0])], /not a permutation of 2 axes/],
    ['an axis order out of range', [new Uint8Array(16), f8, Tuple.fromItems([1, 2]), 'K', Tuple.fromItems([0, 2])], /not a permutation/],
    ['an object dtype', [bytes8, DType.of('O'), Tuple.fromItems([1]), 'C'], /object arrays cannot be made from a buffer/],
    ['a dtype that is a str', [bytes8, 'f8', Tuple.fromItems([1]), 'C'], /needs a numpy.dtype, got string "f8"/],
    ['a buffer that is an int', [8, f8, Tuple.fromItems([1]), 'C'], /needs a buffer, got number 8/],
    ['too few arguments', [bytes8, f8], /takes 4 to 5 arguments, got 2/],
  ]
  for (const [what, args, message] of cases) {
    t.throws(() => loads(craft(frombuffer, args)), { name: 'UnpicklingError', message }, what)
  }
})

t.test('_reconstruct and the ndarray state are checked against the bytes and the list', async (t) => {
  const base = [ndarray, Tuple.fromItems([0]), Uint8Array.of(0x62)]
  const state = (shape: number[], dtype: unknown, data: unknown, version: unknown = 1): Tuple => Tuple.fromItems([version, Tuple.fromItems(shape), dtype, false, data])
  const cases: [what: string, args: unknown[], st: unknown, message: RegExp][] = [
    ['a class other than numpy.ndarray', [new PyGlobal('builtins', 'object'), Tuple.fromItems([0]), Uint8Array.of(0x62)], null, /supports numpy.ndarray only, got global builtins.object/],
    ['bytes that do not match the shape', base, state([2, 2], f8, bytes8), /buffer size does not match array size: shape \(2, 2\) of <f8 is 32 bytes, got 8/],
    ['a shape of 2^50 elements over 8 bytes', base, state([2 ** 50], f8, bytes8), /the shape \(1125899906842624\) is too large/],
    ['a shape of 2^40 elements over 8 bytes', base, state([2 ** 40], f8, bytes8), /buffer size does not match/],
    ['a negative dimension', base, state([-8], f8, bytes8), /negative dimension -8/],
    ['an unknown version', base, state([1], f8, bytes8, 2), /can't handle version number 2/],
    ['a state of 3 items', base, Tuple.fromItems([1, Tuple.fromItems([1]), f8]), /must be \(version, shape, dtype, is_fortran, data\)/],
    ['a list of the wrong length for an object array', base, state([4], DType.of('O'), [1, 2]), /needs 4 objects, got 2/],
    ['data that is a list for a float array', base, state([1], f8, [1]), /the data must be bytes, got Array/],
    ['a dtype that is not a dtype', base, state([1], 'f8', bytes8), /needs a numpy.dtype, got string "f8"/],
  ]
  for (const [what, args, st, message] of cases) {
    t.throws(() => loads(craft(reconstruct, args, st ?? undefined)), { name: 'UnpicklingError', message }, what)
  }
  // An ndarray subclass nobody registered, in opaque mode: an inert placeholder that pickles back the same.
  const matrix = new PyGlobal('numpy', 'matrix', {}, true)
  const p = craft(reconstruct, [matrix, Tuple.fromItems([0]), Uint8Array.of(0x62)], state([1], f8, bytes8), 4)
  t.throws(() => loads(p), { message: /global 'numpy.matrix' is forbidden/ })
  const kept = loads(p, { opaque: true })
  t.type(kept, PyObject)
  t.same(dumps(kept, { protocol: 4 }), p, 'dumps back byte for byte')
})

t.test('dtypes: unknown codes, sizes, units and states are refused', async (t) => {
  const cases: [what: string, args: unknown[], st: unknown, message: RegExp][] = [
    ['an unknown type code', ['q7', false, true], undefined, /not a numpy dtype this codec knows: "q7"/],
    ['an int of 3 bytes', ['i3', false, true], undefined, /no i type of 3 bytes/],
    ['a str of 10^12 characters', ['U999999999999', false, true], undefined, /is too large/],
    ['a state of 5 items', ['f8', false, true], Tuple.fromItems([3, '<', null, null, null]), /8 or 9 items/],
    ['a bad byte order', ['f8', false, true], Tuple.fromItems([3, '!', null, null, null, -1, -1, 0]), /bad byte order "!"/],
    ['an unknown datetime unit', ['M8', false, true],
      Tuple.fromItems([4, '<', null, null, null, -1, -1, 0, Tuple.fromItems([null, Tuple.fromItems([new TextEncoder().encode('fortnight'), 1, 1, 1])])]),
      /unknown datetime unit "fortnight"/],
    ['a str itemsize that is not a multiple of 4', ['U1', false, true], Tuple.fromItems([3, '<', null, null, null, 6, 4, 8]), /bad itemsize 6 for kind 'U'/],
  ]
  for (const [what, args, st, message] of cases) {
    t.throws(() => loads(craft(dtypeG, args, st)), { name: 'UnpicklingError', message }, what)
  }
})

t.test('scalars need exactly itemsize bytes', async (t) => {
  t.throws(() => loads(craft(scalar, [f8, new Uint8Array(7)])), { name: 'UnpicklingError', message: /needs 8 bytes, got 7/ })
  t.throws(() => loads(craft(scalar, [f8, 1.5])), { name: 'UnpicklingError', message: /needs bytes, got number 1.5/ })
  t.equal(loads(craft(scalar, [DType.of('O'), 'any object'])), 'any object', 'an object dtype\'s scalar is the object')
  t.equal(loads(craft(scalar, [f8, new Uint8Array(new Float64Array([2.5]).buffer)])), 2.5)
})

t.test('the NDArray constructor checks data, dtype and shape', async (t) => {
  t.throws(() => new NDArray(new Float32Array(6), { shape: [4, 2] }), { message: /shape \(4, 2\) of <f4 needs 8 items of data, got 6/ })
  t.throws(() => new NDArray(new Float32Array(6), { dtype: 'f8' }), { message: /dtype <f8 needs its data as Float64Array, got Float32Array/ })
  t.throws(() => new NDArray(new Float64Array(2), { dtype: '>f8' }), { message: /not in the machine's byte order/ })
  t.throws(() => new NDArray(new Float64Array(2), { shape: [-2, -1] }), { message: /negative dimension -2/ })
  t.throws(() => new NDArray(new Float64Array(2), { order: 'K' as 'C' }), { message: /order must be 'C' or 'F'/ })
  t.throws(() => new NDArray(new DataView(new ArrayBuffer(8)) as unknown as Uint8Array), { message: /needs a TypedArray or an Array, got DataView/ })
  t.throws(() => new NDArray(new Float32Array(6)).transpose(1), { message: /not a permutation of 1 axes/ })
  const a = new NDArray(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3], order: 'F' })
  t.same(a.strides, [4, 8])
  t.same(a.toList(), [[1, 3, 5], [2, 4, 6]], 'F order: data is column-major, nothing transposed')
  t.equal(a.get(1, 2), 6)
  t.equal(a.get(-1, -1), 6)
  t.throws(() => a.get(2, 0), { message: /index 2 is out of bounds for axis 0 with size 2/ })
  const tr = a.transpose()
  t.same(tr.shape, [3, 2])
  t.equal(tr.order, 'C', 'the transpose of an F array is a C array over the same data')
  t.equal(tr.data, a.data)
  t.same(new NDArray(new Uint32Array([0x68, 0x69, 0, 0, 0x1f642, 0]), { dtype: 'U2', shape: [3] }).toList(), ['hi', '', '\u{1f642}'])
  t.same(new NDArray(new BigInt64Array([5n]), { dtype: 'M8[ns]', shape: [] }).toList(), 5n, 'a 0-d array\'s toList is its element')
  t.same(new NDArray([1, 'a', null], { shape: [3] }).dtype.str, '|O')
  t.equal(new NumpyScalar('m8[s]', 90n).toString(), 'numpy.timedelta64[s](90n)')
  t.ok(new PickleBuffer(new NDArray(new Float32Array(2)).bytes()).raw().byteLength === 8)
})

t.test('dtype strings: numpy\'s names and codes', async (t) => {
  const cases: [spec: string, str: string, name: string][] = [
    ['float32', '<f4', 'float32'], ['>i8', '>i8', 'int64'], ['?', '|b1', 'bool'], ['u1', '|u1', 'uint8'],
    ['S5', '|S5', 'bytes40'], ['U3', '<U3', 'str96'], ['>U3', '>U3', 'str96'], ['M8[ns]', '<M8[ns]', 'datetime64[ns]'],
    ['m8[2h]', '<m8[2h]', 'timedelta64[2h]'], ['M8', '<M8', 'datetime64'], ['O', '|O', 'object'], ['c16', '<c16', 'complex128'],
    ['f2', '<f2', 'float16'], ['V12', '|V12', 'void96'],
  ]
  for (const [spec, str, name] of cases) {
    const d = DType.of(spec)
    t.equal(d.str, str, `${spec}: str`)
    t.equal(d.name, name, `${spec}: name`)
  }
  t.equal(DType.of('f4'), DType.of('f4'), 'the same object each time, as numpy\'s builtin dtypes')
})

t.test('float16: every bit pattern round-trips; rounding is to nearest, ties to even', async (t) => {
  let wrong = 0
  for (let bits = 0; bits < 0x10000; bits++) {
    const x = float16ToNumber(bits)
    if (Number.isNaN(x)) {
      if ((bits & 0x7c00) !== 0x7c00 || (bits & 0x3ff) === 0) wrong++
    } else if (numberToFloat16(x) !== bits) {
      wrong++
    }
  }
  t.equal(wrong, 0, '65,536 patterns')
  t.equal(numberToFloat16(1 + 2 ** -11), 0x3c00, 'a tie between 1 and the next float16 goes to the even one (1)')
  t.equal(numberToFloat16(1 + 3 * 2 ** -11), 0x3c02, 'the next tie goes up (to the even one)')
  t.equal(numberToFloat16(65504), 0x7bff)
  t.equal(numberToFloat16(65519.99), 0x7bff)
  t.equal(numberToFloat16(65520), 0x7c00, 'half-way to 2^16 rounds to infinity')
  t.equal(numberToFloat16(2 ** -25), 0, 'half the smallest subnormal ties to zero')
  t.equal(numberToFloat16(3 * 2 ** -25), 2, '1.5 subnormal steps round to 2')
  t.equal(numberToFloat16(-0), 0x8000)
  t.equal(numberToFloat16(NaN), 0x7e00)
  t.ok(loads(dumps(new NumpyScalar('f2', 1.5), { protocol: 4 }), { lossless: true }) instanceof NumpyScalar)
})

t.test('UnpicklingError is what every refusal is', async (t) => {
  try {
    loads(craft(frombuffer, [bytes8, f8, Tuple.fromItems([-1]), 'C']))
    t.fail('loaded')
  } catch (err) {
    t.type(err, UnpicklingError)
    t.match((err as Error).message, /^numpy\.core\.numeric\._frombuffer: _frombuffer: negative dimension -1 in the shape/)
  }
})
