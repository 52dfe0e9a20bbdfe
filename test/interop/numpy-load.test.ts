/**
 * Loading what numpy pickles, for numpy 2.x (python3) and numpy 1.x (Debian's, /usr/bin/python3):
 * every dtype, layout (1-d, C, Fortran, a transposed view, 0-d, empty) and protocol (0 to 5 in
 * band, 5 out of band), compared element by element with numpy's own tolist(), and with the shape,
 * strides and writeability numpy itself loads back. Out-of-band arrays are views over the buffer
 * the test passed: a write through the loaded array shows in it. Misaligned and big-endian
 * buffers are copied once, and say so. numpy scalars load as plain values, or as NumpyScalar
 * with lossless: true, which pickles back to numpy's very bytes.
 */
import t, { type Test } from 'tap'
import { Complex, DType, NDArray, NumpyScalar, dumps, loads, type NDArrayOrder } from '@picklewire/codec'
import { firstMismatch, numpyPythons, runCases, sameElement, type NumpyPython } from '../helpers/numpy.js'
import { runPython } from '../helpers/python.js'

type LoadCase = [dtype: string, layout: string, protocol: number, oob: boolean, data: Uint8Array, buffers: Uint8Array[],
  expected: unknown[], shape: number[], order: NDArrayOrder, strides: number[], readonly: boolean]
/** dtype: the scalar's own (numpy scalars are in the machine's byte order; S and U as long as the value). */
type ScalarCase = [dtype: string, protocol: number, data: Uint8Array, plain: unknown, typeName: string]
type Py2Case = [dtype: string, data: Uint8Array, expected: unknown[], shape: number[], order: NDArrayOrder]

interface Made {
  numpy: string
  cases: LoadCase[]
  scalars: ScalarCase[]
  py2: Py2Case[]
}

const { found, missing } = numpyPythons()
for (const why of missing) t.comment(`skipped: ${why}`)
if (found.length === 0) t.pass('skipped: no python3 with numpy')

/** A fresh ArrayBuffer holding a copy of bytes, at an offset (1: misaligned for every type wider than a byte). */
function fresh(bytes: Uint8Array, offset = 0): Uint8Array {
  const view = new Uint8Array(new ArrayBuffer(bytes.length + offset), offset, bytes.length)
  view.set(bytes)
  return view
}

/** The multi-byte parts of a dtype are in the other byte order than the machine's. */
function foreign(spec: string): boolean {
  const d = DType.of(spec)
  return d.byteorder === '>' && d.kind !== 'S' && d.kind !== 'V' && d.kind !== 'O'
}

/** Everything that is wrong with one loaded case, as text (none: an empty list). */
function problems(c: LoadCase, got: unknown, passed: Uint8Array[], major: 1 | 2): string[] {
  const [spec, layout, , oob, , , expected, shape, order, strides, readonly] = c
  if (!(got instanceof NDArray)) return [`loaded ${String(got)}, not an NDArray`]
  const out: string[] = []
  const dtype = DType.of(spec)
  const native = dtype.withByteOrder('<').str
  if (got.dtype.str !== native) out.push(`dtype ${got.dtype.str}, expected ${native}`)
  if (JSON.stringify(got.shape) !== JSON.stringify(shape)) out.push(`shape ${got.shape}, expected ${shape}`)
  // numpy keeps a Fortran object array Fortran; picklewire's object arrays are always C order (documented).
  if (dtype.kind !== 'O') {
    if (JSON.stringify(got.strides) !== JSON.stringify(strides)) out.push(`strides ${got.strides}, expected ${strides}`)
    if (got.order !== order) out.push(`order ${got.order}, expected ${order}`)
  }
  if (!oob && got.readonly !== readonly) out.push(`readonly ${got.readonly}, numpy's writeable is ${!readonly}`)
  if (got.copied !== foreign(spec)) out.push(`copied ${got.copied}, expected ${foreign(spec)}`)
  const mismatch = firstMismatch(got.flat(), expected)
  if (mismatch) out.push(mismatch)
  // numpy sends no buffer for object, datetime64 and timedelta64 arrays (they refuse the buffer
  // protocol), nor numpy 1.x for an array that is neither C- nor F-contiguous.
  const buffered = dtype.kind !== 'O' && dtype.kind !== 'M' && dtype.kind !== 'm' && !(layout === 'k' && major === 1)
  if (oob && passed.length !== (buffered ? 1 : 0)) out.push(`${passed.length} out-of-band buffers`)
  if (oob && buffered) {
    const ab = passed[0]!.buffer
    if (foreign(spec)) {
      if (got.bytes().buffer === ab) out.push('a byte-swapped array still views the buffer passed')
    } else if (got.bytes().buffer !== ab || got.bytes().byteOffset !== passed[0]!.byteOffset) {
      out.push('not a view of the buffer passed')
    } else if (got.nbytes > 0) {
      // Zero-copy, proven: a write through the array lands in the caller's memory, and back.
      const bytes = got.bytes()
      bytes[0] ^= 0xff
      if (passed[0]![0] !== bytes[0]) out.push('a write through the array did not reach the buffer passed')
      passed[0]![bytes.length - 1] ^= 0x0f
      if (got.bytes()[bytes.length - 1] !== passed[0]![bytes.length - 1]) out.push('a write into the buffer passed did not show in the array')
    }
  }
  return out
}

function checkInterpreter(t: Test, py: NumpyPython, made: Made): void {
  t.test('arrays: every dtype, layout and protocol', async (t) => {
    const byDtype = new Map<string, LoadCase[]>()
    for (const c of made.cases) byDtype.set(c[0], [...(byDtype.get(c[0]) ?? []), c])
    for (const [spec, cases] of byDtype) {
      const failures: string[] = []
      for (const c of cases) {
        const passed = c[5].map((b) => fresh(b))
        const got = loads(c[4], { buffers: passed })
        for (const p of problems(c, got, passed, py.major)) failures.push(`${c[1]} protocol ${c[2]}${c[3] ? ' out of band' : ''}: ${p}`)
      }
      t.same(failures, [], `${spec}: ${cases.length} pickles (6 layouts x protocols 0-5, 5 out of band)`)
    }
  })

  t.test('a misaligned out-of-band buffer is copied once; a one-byte type is still a view', async (t) => {
    let copies = 0
    let views = 0
    for (const c of made.cases.filter((c) => c[3] && c[1] === 'c' && c[5].length === 1)) {
      const [passed] = c[5].map((b) => fresh(b, 1))
      const got = loads(c[4], { buffers: [passed!] }) as NDArray
      const unitBytes = (got.data as Uint8Array).BYTES_PER_ELEMENT
      t.equal(firstMismatch(got.flat(), c[6]), null, `${c[0]}: the values`)
      if (unitBytes > 1 || foreign(c[0])) {
        copies++
        t.equal(got.copied, true, `${c[0]}: copied`)
        t.equal(got.bytes().byteOffset % unitBytes, 0, `${c[0]}: the copy is aligned`)
      } else {
        views++
        t.equal(got.copied, false, `${c[0]}: not copied`)
        t.equal(got.bytes().buffer, passed!.buffer, `${c[0]}: a view at offset 1`)
      }
    }
    t.ok(copies > 10 && views >= 3, `${copies} copied, ${views} views`)
  })

  t.test('numpy scalars: plain values by default, NumpyScalar with lossless: true, numpy\'s bytes back', async (t) => {
    const failures: string[] = []
    const again: Uint8Array[] = []
    for (const [spec, protocol, data, plain, typeName] of made.scalars) {
      const kind = DType.of(spec).kind
      const value = loads(data)
      const where = `${typeName} (${spec}) protocol ${protocol}`
      if (kind === 'M' || kind === 'm') {
        if (!(value instanceof NumpyScalar) || !sameElement(value.value, plain)) failures.push(`${where}: ${String(value)}, expected NumpyScalar of ${String(plain)}`)
      } else {
        const type = { b: 'boolean', i: 'number', u: 'number', f: 'number', c: 'object', S: 'object', U: 'string' }[kind as string]
        const bigOk = (kind === 'i' || kind === 'u') && typeof value === 'bigint'
        if ((typeof value !== type && !bigOk) || !sameElement(value, plain)) failures.push(`${where}: ${String(value)}, expected ${String(plain)}`)
        if (kind === 'c' && !(value instanceof Complex)) failures.push(`${where}: not a Complex`)
        if (bigOk && Number.isSafeInteger(Number(value))) failures.push(`${where}: a safe integer came back as bigint`)
      }
      const kept = loads(data, { lossless: true })
      if (!(kept instanceof NumpyScalar) || !sameElement(kept.value, plain)) {
        failures.push(`${where} lossless: ${String(kept)}`)
        continue
      }
      if (kept.dtype.str !== spec) failures.push(`${where} lossless: dtype ${kept.dtype.str}`)
      const back = dumps(kept, { protocol, numpy: py.major === 2 ? '2' : '1' })
      if (Buffer.compare(Buffer.from(back), Buffer.from(data)) !== 0) failures.push(`${where}: dumped back, not numpy's bytes`)
      again.push(back)
    }
    t.same(failures, [], `${made.scalars.length} scalar pickles`)
    // numpy loads each dump back as the very scalar type and value.
    const script = `
import pickle, sys, struct, numpy as np
data = sys.stdin.buffer.read(); at = 0; out = []
while at < len(data):
    (n,) = struct.unpack_from('<I', data, at); out.append(pickle.loads(data[at + 4:at + 4 + n])); at += 4 + n
print(' '.join(type(x).__name__ for x in out))`
    const framed = Buffer.concat(again.flatMap((b) => [Buffer.from(Uint32Array.of(b.length).buffer), Buffer.from(b)]))
    const names = runPython(script, framed, py.python).toString().trim().split(' ')
    t.same(names, made.scalars.map((s) => s[4]), 'numpy loads every one as its own type')
  })

  t.test('Python 2 pickles (str data), loaded with encoding: \'latin1\' as numpy does', async (t) => {
    for (const [spec, data, expected, shape, order] of made.py2) {
      const got = loads(data, { encoding: 'latin1' }) as NDArray
      t.type(got, NDArray)
      t.equal(got.dtype.str, DType.of(spec).withByteOrder('<').str, `${spec}: dtype`)
      t.same(got.shape, shape, `${spec}: shape`)
      t.equal(got.order, order, `${spec}: order`)
      t.equal(firstMismatch(got.flat(), expected), null, `${spec}: values`)
    }
  })

  t.test('a large array out of band is a view (64 MiB of float64)', async (t) => {
    const out = runPython(`
import numpy as np, pickle, sys
bufs = []
data = pickle.dumps(np.arange(8 * 2**20, dtype='f8'), protocol=5, buffer_callback=bufs.append)
sys.stdout.buffer.write(data)`, undefined, py.python)
    const memory = new Float64Array(8 * 2 ** 20)
    for (let i = 0; i < memory.length; i++) memory[i] = i
    const got = loads(new Uint8Array(out), { buffers: [memory] }) as NDArray
    t.equal(got.bytes().buffer, memory.buffer, 'data is the very memory passed')
    t.equal(got.copied, false)
    t.same(got.shape, [8 * 2 ** 20])
    t.equal(got.get(8 * 2 ** 20 - 1), 8 * 2 ** 20 - 1)
  })
}

for (const py of found) {
  t.test(`numpy ${py.version} (${py.python})`, async (t) => {
    const made = loads(runCases(py.python, 'make'), { dict: 'object' }) as Made
    t.equal(made.numpy, py.version)
    checkInterpreter(t, py, made)
  })
}
