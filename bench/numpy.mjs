// The numpy benchmark (issue 5): loading and dumping numpy arrays with picklewire against
// CPython's C pickle with numpy, and against one memcpy of the same bytes in JavaScript.
//
// Out of band (protocol 5 with buffers): the time must not grow with the array's size, since
// neither side touches the bytes. In band (protocol 4): the bytes are copied once into or out of
// the pickle, so one memcpy (Uint8Array.prototype.slice of as many bytes) is the floor.

import { readFileSync } from 'node:fs'
import * as codec from '@picklewire/codec'
import { fmtBytes, fmtCell, fmtRatio, measure, printTable } from './measure.mjs'

const MiB = 1024 * 1024

/**
 * The workloads; cpython.py builds the same values (make_f32, make_f32_list): float32 arrays of
 * i % 65536, and 10,000 arrays of 4x4 float32, arange(16) + k % 1000.
 */
export function numpyWorkloads({ quick }) {
  const oobSizes = quick ? [1, 4, 16] : [16, 64, 256]
  const inband = quick ? 16 : 256
  const n = quick ? 1000 : 10_000
  return [
    ...oobSizes.map((m) => ({ name: `np-oob${m}`, label: `float32, ${m} MiB, out of band`, kind: 'f32', size: m * MiB, protocol: 5, oob: true })),
    { name: `np-inband${inband}`, label: `float32, ${inband} MiB, in band (protocol 4)`, kind: 'f32', size: inband * MiB, protocol: 4, oob: false },
    { name: 'np-list-oob', label: `${n.toLocaleString('en')} arrays of 4x4 float32, out of band`, kind: 'f32list', n, protocol: 5, oob: true },
    { name: 'np-list-inband', label: `${n.toLocaleString('en')} arrays of 4x4 float32, protocol 4`, kind: 'f32list', n, protocol: 4, oob: false },
  ]
}

function makeF32(size) {
  const out = new Float32Array(size / 4)
  for (let i = 0; i < out.length; i++) out[i] = i % 65536
  return out
}

function makeF32List(n) {
  const out = new Array(n)
  for (let k = 0; k < n; k++) {
    const data = new Float32Array(16)
    for (let i = 0; i < 16; i++) data[i] = i + (k % 1000)
    out[k] = new codec.NDArray(data, { shape: [4, 4] })
  }
  return out
}

/** The JavaScript value of a workload (NDArrays), and the buffers a receiver would hold for its out-of-band pickle. */
function jsSide(w, oobSizes) {
  if (w.kind === 'f32') {
    const data = makeF32(w.size)
    return { value: new codec.NDArray(data), buffers: oobSizes.length ? [data] : [] }
  }
  const value = makeF32List(w.n)
  // As a receiver holds them: one region of memory, each array's 64 bytes a view into it.
  const region = new Uint8Array(oobSizes.reduce((a, b) => a + b, 0))
  let at = 0
  const buffers = oobSizes.map((size, k) => {
    const view = region.subarray(at, at + size)
    view.set(new Uint8Array(value[k].data.buffer))
    at += size
    return view
  })
  return { value, buffers }
}

/** Why a loaded value is not the workload's (null when it is). */
function mismatch(w, got, expected, buffers) {
  const arrays = w.kind === 'f32' ? [got] : got
  const want = w.kind === 'f32' ? [expected] : expected
  if (!Array.isArray(arrays) || arrays.length !== want.length) return 'not the list of arrays'
  for (let k = 0; k < arrays.length; k += Math.max(1, arrays.length >> 4)) {
    const a = arrays[k]
    const b = want[k]
    if (!(a instanceof codec.NDArray) || a.dtype.str !== '<f4' || a.shape.join() !== b.shape.join()) return `item ${k} is not a float32 array of shape ${b.shape}`
    const n = a.data.length
    for (const i of [0, 1, n >> 1, n - 1]) if (a.data[i] !== b.data[i]) return `item ${k} element ${i}: ${a.data[i]}, expected ${b.data[i]}`
    if (buffers.length && a.data.buffer !== buffers[k].buffer) return `item ${k} is not a view of the buffer passed`
  }
  return null
}

/**
 * Runs the numpy benchmark: CPython (`py`, from cpython.mjs) builds each workload with numpy,
 * writes its pickle into `dir` and times pickle.loads and pickle.dumps; then picklewire is timed
 * on the same bytes (load) and the same arrays (dump), and a memcpy of the array's bytes.
 */
export async function runNumpy({ list, py, numpyVersion, dir, timing, log }) {
  const names = Number(numpyVersion.split('.')[0]) >= 2 ? '2' : '1'
  const rows = []
  for (const w of list) {
    log(`  ${w.label}: CPython + numpy ${numpyVersion}`)
    const fx = await py.fixture(dir, w)
    const pyLoad = await py.time('load', w.name, timing)
    const pyDump = await py.time('dump', w.name, timing)
    const data = new Uint8Array(readFileSync(fx.file))
    const { value, buffers } = jsSide(w, fx.oob)

    log(`  ${w.label}: picklewire`)
    const loadOptions = { buffers }
    const wrong = mismatch(w, codec.loads(data, loadOptions), value, buffers)
    if (wrong) throw new Error(`picklewire loaded ${w.name} wrongly: ${wrong}`)
    const pwLoad = measure(() => codec.loads(data, loadOptions), timing)

    const dumpOptions = { protocol: w.protocol, numpy: names, bufferCallback: w.oob ? () => false : null }
    const out = codec.dumps(value, dumpOptions)
    const same = Buffer.from(out.buffer, out.byteOffset, out.byteLength).equals(data) ? 'yes' : 'no'
    const pwDump = measure(() => codec.dumps(value, dumpOptions), timing)

    // The floor for an in-band row: one copy of the array bytes, as loading or dumping must make.
    let memcpy = null
    if (!w.oob && w.kind === 'f32') {
      const src = value.bytes()
      memcpy = measure(() => src.slice(), timing)
    }
    rows.push({ w, fx, pyLoad, pyDump, pwLoad, pwDump, memcpy, same })
  }

  const header = ['workload', 'pickle', 'load: picklewire', 'CPython+numpy', 'vs CPython', 'dump: picklewire', 'same bytes', 'CPython+numpy', 'vs CPython', 'memcpy', 'load vs memcpy', 'dump vs memcpy']
  printTable(header, rows.map(({ w, fx, pyLoad, pyDump, pwLoad, pwDump, memcpy, same }) => [
    w.label, fmtBytes(fx.bytes),
    fmtCell(pwLoad), fmtCell(pyLoad), fmtRatio(pyLoad, pwLoad),
    fmtCell(pwDump), same, fmtCell(pyDump), fmtRatio(pyDump, pwDump),
    memcpy ? fmtCell(memcpy) : '-', memcpy ? fmtRatio(memcpy, pwLoad) : '-', memcpy ? fmtRatio(memcpy, pwDump) : '-',
  ]))
  console.log()
  console.log('Times are best / median per call; "vs CPython" is CPython\'s best time over picklewire\'s (>1: picklewire is')
  console.log('faster); "vs memcpy" is one JavaScript copy of the array\'s bytes (Uint8Array.slice) over picklewire\'s time:')
  console.log('1.00x would be a load or dump that costs exactly the one copy it must make. "pickle" is the pickle stream')
  console.log('only; out-of-band rows pass the array\'s memory as it is. "same bytes": picklewire\'s dump is the very')
  console.log(`pickle numpy ${numpyVersion} wrote (numpy: '${names}' names).`)
  console.log(`N (picklewire load/dump, CPython load/dump): ${rows.map(({ w, pwLoad, pwDump, pyLoad, pyDump }) => `${w.name} ${pwLoad.runs}/${pwDump.runs}/${pyLoad.runs}/${pyDump.runs}`).join(', ')}`)
  const oob = rows.filter(({ w }) => w.kind === 'f32' && w.oob)
  if (oob.length > 1) {
    const [first, last] = [oob[0], oob[oob.length - 1]]
    const grow = (a, b) => (b.best / a.best).toFixed(2)
    console.log(`Out of band: ${fmtBytes(last.w.size)} takes ${grow(first.pwLoad, last.pwLoad)}x (load) and ${grow(first.pwDump, last.pwDump)}x (dump) the time of ` +
      `${fmtBytes(first.w.size)} (${last.w.size / first.w.size}x the bytes) for picklewire; ${grow(first.pyLoad, last.pyLoad)}x and ${grow(first.pyDump, last.pyDump)}x for CPython.`)
  }
  return rows
}
