/**
 * Out-of-band buffers longer than a Uint8Array can be (Node 20 makes none over 2^32 bytes, but
 * an ArrayBuffer of 5 GiB, a Uint16Array or a DataView over it): a PickleBuffer wraps any range
 * of an ArrayBuffer or SharedArrayBuffer and reaches it through buffer, byteOffset, byteLength
 * and view(ctor); raw() keeps its Uint8Array for buffers that fit one and throws a RangeError
 * naming the size for larger ones; numpy arrays load over the range as views of the wider
 * TypedArray, and a one-byte dtype over more than a Uint8Array can hold is refused naming the
 * dtype, the size and the way around it.
 *
 * The always-on tests run the same code paths with buffers of ordinary sizes (a DataView, an
 * offset range, a byte-swapped and a misaligned range). With PICKLEWIRE_BIG=1 one real
 * ArrayBuffer of 4.5 GiB goes through the pickler and the unpickler (its pages are mostly never
 * touched, so it costs little memory).
 */
import t from 'tap'
import {
  DType, NDArray, PickleBuffer, PickleError, PyGlobal, Tuple, dumps, loads, reduceEx, type ReduceValue,
} from '@picklewire/codec'

const BIG = process.env['PICKLEWIRE_BIG'] === '1'

const ndarray = new PyGlobal('numpy', 'ndarray')

/** A value that pickles as the reduce value it holds. */
class Crafted {
  constructor(readonly recipe: ReduceValue) {}
  [reduceEx](): ReduceValue {
    return this.recipe
  }
}

/** Dumps a value with every buffer out of band; returns the pickle and the PickleBuffers. */
function dumpOutOfBand(value: unknown): { pickle: Uint8Array; buffers: PickleBuffer[] } {
  const buffers: PickleBuffer[] = []
  const pickle = dumps(value, { protocol: 5, bufferCallback: (b) => void buffers.push(b) })
  return { pickle, buffers }
}

t.test('a PickleBuffer over a range of an ArrayBuffer reaches it through buffer, byteOffset, byteLength and view', async (t) => {
  const ab = new ArrayBuffer(64)
  const pb = new PickleBuffer(new DataView(ab, 8, 32))
  t.equal(pb.buffer, ab)
  t.equal(pb.byteOffset, 8)
  t.equal(pb.byteLength, 32)
  const u16 = pb.view(Uint16Array)
  t.ok(u16 instanceof Uint16Array)
  t.equal(u16.length, 16)
  u16[0] = 0x0201
  t.equal(new Uint8Array(ab)[8], 1, 'view(Uint16Array) writes the wrapped memory, not a copy')
  t.equal(pb.raw().buffer, ab, 'raw() is a Uint8Array over the same memory when it fits one')
  t.equal(pb.raw().byteOffset, 8)
  t.equal(pb.raw()[1], 2)
  const f64 = pb.view(Float64Array)
  t.equal(f64.length, 4)
  t.equal(f64.byteOffset, 8)
})

t.test('a PickleBuffer over a whole ArrayBuffer, a SharedArrayBuffer, a wider TypedArray or another PickleBuffer', async (t) => {
  const sab = new SharedArrayBuffer(16)
  const fromSab = new PickleBuffer(sab)
  t.equal(fromSab.buffer, sab)
  t.equal(fromSab.byteLength, 16)
  const f32 = new Float32Array([1.5, -2])
  const fromF32 = new PickleBuffer(f32, { readonly: true })
  t.same(Array.from(fromF32.view(Float32Array)), [1.5, -2])
  const again = new PickleBuffer(fromF32)
  t.equal(again.buffer, f32.buffer)
  t.equal(again.readonly, true, 'the readonly flag comes along from the wrapped PickleBuffer')
  t.equal(again.raw().byteLength, 8)
})

t.test('view refuses misaligned and partial ranges and what is not a TypedArray constructor', async (t) => {
  const ab = new ArrayBuffer(16)
  t.throws(() => new PickleBuffer(new DataView(ab, 1, 8)).view(Uint16Array), { name: 'RangeError', message: /starts at byte 1, not a multiple of 2/ })
  t.throws(() => new PickleBuffer(new DataView(ab, 0, 6)).view(Uint32Array), { name: 'RangeError', message: /6 bytes are not a whole number of 4-byte elements/ })
  t.throws(() => new PickleBuffer(ab).view(DataView as never), { name: 'TypeError', message: /needs a TypedArray constructor/ })
  const pb = new PickleBuffer(ab)
  pb.release()
  t.throws(() => pb.view(Uint8Array), PickleError)
  t.throws(() => pb.buffer, { message: /released PickleBuffer/ })
  t.throws(() => pb.byteLength, { message: /released PickleBuffer/ })
})

t.test('an out-of-band buffer given as a DataView loads as an array over the same ArrayBuffer', async (t) => {
  const values = Float32Array.from({ length: 1000 }, (_, i) => i * 0.25)
  const { pickle, buffers } = dumpOutOfBand(new NDArray(values, { shape: [10, 100] }))
  t.equal(buffers.length, 1)
  const ab = new ArrayBuffer(4096 + 8)
  new Uint8Array(ab, 8, 4000).set(buffers[0]!.raw())
  const a = loads(pickle, { buffers: [new DataView(ab, 8, 4000)] }) as NDArray
  t.same(a.shape, [10, 100])
  const data = a.data as Float32Array
  t.ok(data instanceof Float32Array)
  t.equal(data.buffer, ab, 'a view of the memory handed to the unpickler: no copy')
  t.equal(data.byteOffset, 8)
  t.equal(a.get(9, 99), 999 * 0.25)
})

t.test('a float16 array over a bare ArrayBuffer loads as a Uint16Array view of it', async (t) => {
  const bits = Uint16Array.from({ length: 512 }, (_, i) => i * 3)
  const { pickle, buffers } = dumpOutOfBand(new NDArray(bits, { dtype: 'f2' }))
  const ab = new ArrayBuffer(1024)
  new Uint16Array(ab).set(buffers[0]!.view(Uint16Array))
  const a = loads(pickle, { buffers: [ab] }) as NDArray
  t.equal(a.dtype.toString(), DType.of('f2').toString())
  const data = a.data as Uint16Array
  t.ok(data instanceof Uint16Array)
  t.equal(data.buffer, ab)
  t.equal(data[511], 511 * 3)
})

t.test('a range in the other byte order or at an odd offset is copied once, to the right values', async (t) => {
  const wire = Uint8Array.from([0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4]) // big-endian int32 1, -2, 0x01020304
  const { pickle } = dumpOutOfBand(new Crafted([ndarray, [Tuple.fromItems([3]), DType.of('>i4'), new PickleBuffer(wire), 0, null, 'C']]))
  const ab = new ArrayBuffer(13)
  new Uint8Array(ab, 1, 12).set(wire)
  const a = loads(pickle, { buffers: [new DataView(ab, 1, 12)] }) as NDArray
  t.same(Array.from(a.data as Int32Array), [1, -2, 0x01020304])
  t.not((a.data as Int32Array).buffer, ab, 'swapped into memory of its own')

  const le = dumpOutOfBand(new NDArray(Float64Array.from([0.5, 7])))
  const odd = new ArrayBuffer(17)
  new Uint8Array(odd, 1, 16).set(le.buffers[0]!.raw())
  const b = loads(le.pickle, { buffers: [new DataView(odd, 1, 16)] }) as NDArray
  t.same(Array.from(b.data as Float64Array), [0.5, 7], 'misaligned: one aligned copy')
})

t.test('a buffer of the wrong size for its array is refused naming both sizes', async (t) => {
  const { pickle } = dumpOutOfBand(new NDArray(new Float32Array(8)))
  t.throws(() => loads(pickle, { buffers: [new DataView(new ArrayBuffer(40))] }), { name: 'UnpicklingError', message: /a buffer of 40 bytes .* \(32 bytes\)/ })
})

t.test('with PICKLEWIRE_BIG=1: one ArrayBuffer of 4.5 GiB through the pickler and the unpickler', { skip: BIG ? false : 'set PICKLEWIRE_BIG=1' }, async (t) => {
  const size = 4.5 * 2 ** 30
  const ab = new ArrayBuffer(size)
  const halves = new Uint16Array(ab)
  const last = halves.length - 1
  halves[0] = 0x3c00 // float16 1.0
  halves[last] = 0xc000 // float16 -2.0
  t.throws(() => new Uint8Array(ab), RangeError, 'the engine makes no Uint8Array of this size')

  const pb = new PickleBuffer(ab)
  t.equal(pb.byteLength, size)
  t.equal(pb.view(Uint16Array).length, size / 2)
  t.throws(() => pb.raw(), { name: 'RangeError', message: new RegExp(`${size} bytes is longer than a Uint8Array can be.*view\\(ctor\\)`) })

  // The pickler hands the buffer to the callback without making a Uint8Array of it.
  const { pickle, buffers } = dumpOutOfBand(new NDArray(halves, { dtype: 'f2', shape: [size / 2 ** 20, 2 ** 19] }))
  t.equal(buffers.length, 1)
  t.equal(buffers[0]!.buffer, ab)
  t.equal(buffers[0]!.byteLength, size)
  // In band it cannot go: a pickle is one Uint8Array.
  t.throws(() => dumps(new PickleBuffer(ab), { protocol: 5 }), { name: 'PicklingError', message: /raw\(\): the buffer of \d+ bytes is longer than a Uint8Array can be/ })

  for (const given of [buffers[0]!, ab, new DataView(ab)]) {
    const a = loads(pickle, { buffers: [given] }) as NDArray
    const data = a.data as Uint16Array
    t.ok(data instanceof Uint16Array)
    t.equal(data.buffer, ab, `loaded from a ${given.constructor.name}: a view of the same memory`)
    t.equal(data.length, size / 2)
    t.equal(a.get(0, 0), 1)
    t.equal(a.get(size / 2 ** 20 - 1, 2 ** 19 - 1), -2)
    t.throws(() => a.bytes(), { name: 'RangeError', message: /longer than a Uint8Array can be.*Uint16Array/ })
  }

  // uint8 and bool over the same 4.5 GiB: no Uint8Array can hold them, refused with the way around it.
  for (const code of ['u1', 'i1', '?']) {
    const recipe: ReduceValue = [ndarray, [Tuple.fromItems([size]), DType.of(code), new PickleBuffer(ab), 0, null, 'C']]
    const crafted = dumpOutOfBand(new Crafted(recipe))
    t.throws(() => loads(crafted.pickle, { buffers: [ab] }), {
      name: 'UnpicklingError',
      message: new RegExp(`an array of ${DType.of(code)} over ${size} bytes .* more than this JavaScript engine allows; send it viewed as a wider dtype`),
    })
  }
})
