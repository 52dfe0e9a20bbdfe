/**
 * numpy.ndarray(shape, dtype, buffer, 0, strides, order), what the pickler writes for an array
 * at protocol 5 with the default 'portable' names: Node loads its own arrays back (C, F and
 * permuted layouts, 0-d, empty, read-only, out of band as a view of the buffer), and refuses a
 * call that is not an array laid out densely over exactly its buffer with an UnpicklingError
 * naming what was wrong, before allocating anything from a shape.
 */
import t from 'tap'
import {
  DType, NDArray, PickleBuffer, PyGlobal, Tuple, UnpicklingError, dumps, loads, reduceEx, type ReduceValue,
} from '@picklewire/codec'

const ndarray = new PyGlobal('numpy', 'ndarray')

/** A value that pickles as the reduce value it holds. */
class Crafted {
  constructor(readonly recipe: ReduceValue) {}
  [reduceEx](): ReduceValue {
    return this.recipe
  }
}

const f8 = DType.of('f8')
const shape = (...dims: number[]) => Tuple.fromItems(dims)

t.test('arrays dumped at protocol 5 load back with their layout, in band and out of band', async (t) => {
  const values: [string, NDArray][] = [
    ['C', new NDArray(Float32Array.from([1, 2, 3, 4, 5, 6]), { shape: [2, 3] })],
    ['F', new NDArray(Float64Array.from([1, 4, 2, 5, 3, 6]), { shape: [2, 3], order: 'F' })],
    ['permuted', new NDArray(Int32Array.from({ length: 24 }, (_, i) => i), { shape: [2, 3, 4] }).transpose(2, 0, 1)],
    ['0-d', new NDArray(Float64Array.of(2.5), { shape: [] })],
    ['empty', new NDArray(new Float32Array(0), { shape: [0, 3] })],
    ['read-only', new NDArray(Uint16Array.of(1, 2), { readonly: true })],
  ]
  for (const [what, a] of values) {
    for (const oob of [false, true]) {
      const buffers: PickleBuffer[] = []
      const pickle = dumps(a, { protocol: 5, bufferCallback: oob ? (b) => void buffers.push(b) : null })
      t.ok(Buffer.from(pickle).includes('ndarray'), `${what}: written as numpy.ndarray(...)`)
      t.notOk(Buffer.from(pickle).includes('_frombuffer'), `${what}: not as _frombuffer`)
      const back = loads(pickle, { buffers: buffers.map((b) => b.raw()) }) as NDArray
      const label = `${what}${oob ? ' out of band' : ' in band'}`
      t.same([back.dtype.str, back.shape, back.strides, back.order], [a.dtype.str, a.shape, a.strides, a.order], `${label}: dtype, shape, strides`)
      t.same(Array.from(back.data as ArrayLike<number>), Array.from(a.data as ArrayLike<number>), `${label}: elements, in the same memory order`)
      t.equal(back.readonly, a.readonly, `${label}: read-only as sent`)
      if (oob && a.size > 0) t.equal(buffers[0]!.raw().buffer, (back.data as Float32Array).buffer, `${label}: a view of the buffer, no copy`)
    }
  }
})

t.test('numpy.ndarray calls that are not an array densely over exactly its buffer are refused', async (t) => {
  const bytes16 = new Uint8Array(16)
  const cases: [what: string, args: unknown[], message: RegExp][] = [
    ['no buffer (numpy would allocate the shape)', [shape(2 ** 40), f8], /numpy\.ndarray\(\) takes 3 to 6 arguments, got 2/],
    ['a buffer shorter than the shape', [shape(3), f8, bytes16], /a buffer of 16 bytes does not hold shape \(3\) of <f8 \(24 bytes\)/],
    ['a buffer longer than the shape', [shape(1), f8, bytes16], /a buffer of 16 bytes does not hold shape \(1\)/],
    ['an offset', [shape(1), f8, bytes16, 8, null, 'C'], /offset must be 0, got 8/],
    ['strides with a gap', [shape(2), f8, bytes16, 0, shape(16), 'C'], /strides \(16\) do not lay out shape \(2\) of <f8 densely/],
    ['strides that repeat an element', [shape(2, 1), f8, bytes16, 0, shape(0, 8), 'C'], /strides \(0, 8\) do not lay out/],
    ['strides of another rank', [shape(2), f8, bytes16, 0, shape(8, 8), 'C'], /strides \(8, 8\) do not lay out shape \(2\)/],
    ['an order other than C or F', [shape(2), f8, bytes16, 0, null, 'K'], /order must be 'C' or 'F', got "K"/],
    ['an object dtype', [shape(2), DType.of('O'), bytes16], /an array of \|O cannot be made over a buffer/],
    ['a dtype that is not one', [shape(2), 'f8', bytes16], /numpy\.ndarray needs a numpy\.dtype, got/],
    ['a buffer that is not one', [shape(2), f8, 42], /numpy\.ndarray needs a buffer, got/],
  ]
  for (const [what, args, message] of cases) {
    const pickle = dumps(new Crafted([ndarray, args]), { protocol: 5 })
    t.throws(() => loads(pickle), { name: 'UnpicklingError', message }, what)
    t.throws(() => loads(pickle), UnpicklingError)
  }
})
