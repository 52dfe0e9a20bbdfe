/**
 * Writing numpy arrays: NDArrays and plain TypedArrays dumped by picklewire for every dtype,
 * layout and protocol (0 to 5 in band, 5 out of band) with the default 'portable' names, numpy
 * 1.x names (numpy.core.*) and 2.x names (numpy._core.*); numpy 2.x (python3) loads all three,
 * numpy 1.x (/usr/bin/python3) the portable and numpy.core ones, and each array must equal, bit
 * for bit, the array numpy_cases.py builds from the same formulas, with the same dtype, shape
 * and layout. The portable pickles must load without any warning (numpy_cases.py turns warnings
 * into errors for them). Where the numpy version matches the names, the pickle (and each
 * out-of-band buffer) must be the very bytes numpy itself writes.
 * Out of band, the PickleBuffer bufferCallback gets is a view of the array's own memory.
 */
import t from 'tap'
import {
  DType, NDArray, NumpyScalar, PickleBuffer, PickleError, PicklingError, dumps, loads, type NumpyNames,
} from '@picklewire/codec'
import { LAYOUTS, frameCases, makeArray, numpyPythons, runCases, type NumpyPython } from '../helpers/numpy.js'
import { runPython } from '../helpers/python.js'

const DTYPES = ['?', 'i1', 'u1', 'i2', 'u2', 'i4', 'u4', 'i8', 'u8', 'f2', 'f4', 'f8', 'c8', 'c16',
  'S5', 'U3', 'M8[ns]', 'M8[D]', 'm8[s]', 'm8[2h]', 'M8', 'O']
const PROTOCOLS: readonly (readonly [number, boolean])[] = [[0, false], [1, false], [2, false], [3, false], [4, false], [5, false], [5, true]]
/** The TypedArray each dtype dumps from, for the 1-d layout (a Uint8Array would be bytes: Uint8ClampedArray stands for uint8). */
const TYPED: Record<string, new (items: ArrayLike<number> & ArrayLike<bigint>) => ArrayBufferView> = {
  i1: Int8Array, u1: Uint8ClampedArray, i2: Int16Array, u2: Uint16Array, i4: Int32Array, u4: Uint32Array,
  i8: BigInt64Array, u8: BigUint64Array, f4: Float32Array, f8: Float64Array,
}

interface DumpCase {
  meta: { dtype: string; layout: string; protocol: number; oob: boolean; names: NumpyNames; input: 'ndarray' | 'typed'; expectOrder: string; compareBytes: boolean }
  pickle: Uint8Array
  buffers: Uint8Array[]
  /** What is wrong on the JavaScript side (a buffer that is not a view of the array's memory). */
  problem: string | null
}

function buffered(kind: string): boolean {
  return kind !== 'O' && kind !== 'M' && kind !== 'm'
}

/** The layout numpy loads: Fortran stays Fortran, a transposed view stays one only through protocol 5's buffer (not with numpy 1.x's names). */
function expectOrder(spec: string, layout: string, protocol: number, names: NumpyNames): string {
  if (layout === 'f') return 'F'
  if (layout === 'k' && protocol === 5 && names !== '1' && buffered(DType.of(spec).kind)) return 'K'
  return 'C'
}

function makeCases(namesList: readonly NumpyNames[], major: 1 | 2): DumpCase[] {
  const cases: DumpCase[] = []
  for (const names of namesList) {
    for (const dtype of DTYPES) {
      for (const layout of Object.keys(LAYOUTS)) {
        const inputs: ('ndarray' | 'typed')[] = layout === '1d' && TYPED[dtype] ? ['ndarray', 'typed'] : ['ndarray']
        for (const input of inputs) {
          for (const [protocol, oob] of PROTOCOLS) {
            const array = makeArray(dtype, layout)
            const value = input === 'typed' ? new TYPED[dtype]!(array.data as ArrayLike<number> & ArrayLike<bigint>) : array
            const memory = array.dtype.kind === 'O' ? null : value instanceof NDArray ? value.bytes() : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
            const buffers: Uint8Array[] = []
            let problem: string | null = null
            const bufferCallback = (b: PickleBuffer): boolean => {
              const raw = b.raw()
              if (memory === null || raw.buffer !== memory.buffer || raw.byteOffset !== memory.byteOffset || raw.byteLength !== memory.byteLength) {
                problem = 'the PickleBuffer is not a view of the array\'s memory'
              }
              buffers.push(raw)
              return false
            }
            const pickle = dumps(value, { protocol, numpy: names, bufferCallback: oob ? bufferCallback : null })
            cases.push({
              meta: { dtype, layout, protocol, oob, names, input, expectOrder: expectOrder(dtype, layout, protocol, names), compareBytes: Number(names) === major },
              pickle, buffers, problem,
            })
          }
        }
      }
    }
  }
  return cases
}

function label(c: DumpCase): string {
  const m = c.meta
  return `${m.input === 'typed' ? 'TypedArray' : 'NDArray'} ${m.dtype} ${m.layout} protocol ${m.protocol}${m.oob ? ' out of band' : ''} numpy '${m.names}'`
}

function checkInterpreter(py: NumpyPython): void {
  t.test(`numpy ${py.version} (${py.python}) loads what picklewire dumps`, async (t) => {
    // numpy 1.x cannot import numpy._core: it gets the portable and numpy.core pickles only.
    const cases = makeCases(py.major === 2 ? ['portable', '1', '2'] : ['portable', '1'], py.major)
    const out = JSON.parse(runCases(py.python, 'check', frameCases(cases)).toString()) as { numpy: string; results: { problem: string | null; sameBytes: boolean | null }[] }
    t.equal(out.numpy, py.version)
    t.equal(out.results.length, cases.length)
    const byDtype = new Map<string, string[]>()
    let compared = 0
    cases.forEach((c, i) => {
      const r = out.results[i]!
      const failures = byDtype.get(c.meta.dtype) ?? []
      byDtype.set(c.meta.dtype, failures)
      if (c.problem) failures.push(`${label(c)}: ${c.problem}`)
      // numpy 1.x sends an array that is neither C- nor F-contiguous in band.
      const expectBuffers = buffered(DType.of(c.meta.dtype).kind) && !(c.meta.layout === 'k' && c.meta.names === '1') ? 1 : 0
      if (c.meta.oob && c.buffers.length !== expectBuffers) {
        failures.push(`${label(c)}: ${c.buffers.length} out-of-band buffers`)
      }
      if (r.problem) failures.push(`${label(c)}: ${r.problem}`)
      if (r.sameBytes !== null) {
        compared++
        if (!r.sameBytes) failures.push(`${label(c)}: not the bytes numpy writes`)
      }
    })
    for (const [dtype, failures] of byDtype) t.same(failures, [], `${dtype}: every layout and protocol loads as the same array`)
    t.ok(compared > 500, `${compared} pickles compared byte for byte with numpy's own`)
  })
}

const { found, missing } = numpyPythons()
for (const why of missing) t.comment(`skipped: ${why}`)
if (found.length === 0) t.pass('skipped: no python3 with numpy')
for (const py of found) checkInterpreter(py)

for (const py of found) {
  t.test(`numpy ${py.version}: a list of arrays, one of them twice, is numpy's very pickle at every protocol`, async (t) => {
    // The memo at work: the dtype, the globals, the b'b' type code and the repeated array are written once.
    const out = runPython(`
import numpy as np, pickle, sys, struct
base = np.arange(16, dtype=np.float32)
a, b = base.reshape(4, 4), (base + 1).reshape(2, 8)
for protocol, oob in [(0, False), (1, False), (2, False), (3, False), (4, False), (5, False), (5, True)]:
    bufs = []
    data = pickle.dumps([a, b, a, np.float64(2.5)], protocol=protocol, buffer_callback=bufs.append if oob else None)
    sys.stdout.buffer.write(struct.pack('<II', len(data), len(bufs)) + data)`, undefined, py.python)
    const base = Float32Array.from({ length: 16 }, (_, i) => i)
    const a = new NDArray(base, { shape: [4, 4] })
    const b = new NDArray(base.map((x) => x + 1), { shape: [2, 8] })
    let at = 0
    for (const [protocol, oob] of PROTOCOLS) {
      const n = out.readUInt32LE(at)
      const buffers = out.readUInt32LE(at + 4)
      const theirs = out.subarray(at + 8, at + 8 + n)
      at += 8 + n
      const sent: PickleBuffer[] = []
      const ours = dumps([a, b, a, new NumpyScalar('f8', 2.5)], { protocol, numpy: py.major === 2 ? '2' : '1', bufferCallback: oob ? (pb) => void sent.push(pb) : null })
      t.equal(Buffer.compare(Buffer.from(ours), theirs), 0, `protocol ${protocol}${oob ? ' out of band' : ''}: the same bytes`)
      t.equal(sent.length, buffers, 'as many out-of-band buffers')
    }
  })
}

t.test('out of band, the buffer is the TypedArray\'s own memory: a later write shows in it', async (t) => {
  const memory = new Float32Array(new ArrayBuffer(64), 16, 6)
  memory.set([1, 2, 3, 4, 5, 6])
  const seen: PickleBuffer[] = []
  dumps(new NDArray(memory, { shape: [2, 3] }), { protocol: 5, bufferCallback: (b) => void seen.push(b) })
  t.equal(seen.length, 1)
  const raw = seen[0]!.raw()
  t.equal(raw.buffer, memory.buffer)
  t.equal(raw.byteOffset, 16)
  t.equal(raw.byteLength, 24)
  memory[0] = 42
  t.equal(new Float32Array(raw.buffer, raw.byteOffset, 6)[0], 42, 'no copy was made')
  t.equal(seen[0]!.readonly, false)
  const ro = new NDArray(memory, { readonly: true })
  const roSeen: PickleBuffer[] = []
  const pickle = dumps(ro, { protocol: 5, bufferCallback: (b) => void roSeen.push(b) })
  t.equal(roSeen[0]!.readonly, true, 'a read-only array sends a read-only buffer')
  t.ok(pickle.includes(0x98), 'READONLY_BUFFER is written')
})

t.test('relaying: an array loaded out of band dumps out of band over the same memory', async (t) => {
  if (found.length === 0) return t.pass('skipped: no numpy')
  const py = found[0]!
  const out = runPython(`
import numpy as np, pickle, sys
bufs = []
data = pickle.dumps(np.asfortranarray(np.arange(12, dtype='f4').reshape(3, 4)), protocol=5, buffer_callback=bufs.append)
sys.stdout.buffer.write(len(data).to_bytes(4, 'little') + data + bytes(bufs[0].raw()))`, undefined, py.python)
  const n = out.readUInt32LE(0)
  const received = new Uint8Array(out.subarray(4 + n)) // the frame as a receiver holds it
  const arr = loads(new Uint8Array(out.subarray(4, 4 + n)), { buffers: [received] }) as NDArray
  t.equal(arr.order, 'F')
  const sent: PickleBuffer[] = []
  const pickle = dumps(arr, { protocol: 5, numpy: py.major === 2 ? '2' : '1', bufferCallback: (b) => void sent.push(b) })
  t.equal(sent[0]!.raw().buffer, received.buffer, 'the outgoing buffer is the incoming frame')
  const frames = Buffer.concat([Buffer.from(Uint32Array.of(pickle.length).buffer), Buffer.from(pickle), Buffer.from(sent[0]!.raw())])
  const text = runPython(`
import numpy as np, pickle, sys
d = sys.stdin.buffer.read(); n = int.from_bytes(d[:4], 'little')
a = pickle.loads(d[4:4 + n], buffers=[d[4 + n:]])
print(a.flags.f_contiguous, a.dtype, a.tolist())`, frames, py.python).toString().trim()
  t.equal(text, 'True float32 [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]')
})

t.test('what stays as it was: Uint8Array and Buffer are bytes, DataView is refused', async (t) => {
  t.same(loads(dumps(new Uint8Array([1, 2]))), new Uint8Array([1, 2]))
  t.same(loads(dumps(Buffer.from([1, 2]))), new Uint8Array([1, 2]))
  t.throws(() => dumps(new DataView(new ArrayBuffer(4))), PicklingError)
  t.throws(() => dumps(new Float32Array(2), { numpy: '3' as NumpyNames }), PickleError)
  const scalar = new NumpyScalar('f4', 1.5)
  t.same(loads(dumps(scalar)), 1.5, 'a NumpyScalar dumps as numpy.float32')
})
