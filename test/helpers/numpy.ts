/**
 * The JavaScript side of test/interop/numpy_cases.py: the interpreters with numpy (numpy 2.x in
 * python3 on PATH, Debian's numpy 1.x in /usr/bin/python3), the same array formulas element for
 * element, the framing the check command reads, and a comparison of loaded elements with the
 * plain values numpy's tolist() gave.
 */
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { Complex, DType, NDArray, type NDArrayData } from '@picklewire/codec'
import { PYTHON } from './python.js'

export const CASES_PY = join(dirname(fileURLToPath(import.meta.url)), '..', 'interop', 'numpy_cases.py')

export interface NumpyPython {
  /** The interpreter's path or name. */
  python: string
  /** numpy.__version__ */
  version: string
  major: 1 | 2
}

function numpyVersion(python: string): string | null {
  try {
    return execFileSync(python, ['-c', 'import numpy; print(numpy.__version__)'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
  } catch {
    return null
  }
}

/**
 * The interpreters to test against, each with the reason it is missing when it is: numpy 2.x
 * (python3 on PATH, or PICKLEWIRE_PYTHON) and numpy 1.x (Debian's python3-numpy in
 * /usr/bin/python3, which .ci/run installs).
 */
export function numpyPythons(): { found: NumpyPython[]; missing: string[] } {
  const found: NumpyPython[] = []
  const missing: string[] = []
  for (const [python, major] of [[PYTHON, 2], ['/usr/bin/python3', 1]] as const) {
    const version = numpyVersion(python)
    if (version === null) missing.push(`${python} has no numpy (for numpy ${major}.x: apt-get install -y python3-numpy)`)
    else if (Number(version.split('.')[0]) !== major) missing.push(`${python} has numpy ${version}, not ${major}.x`)
    else found.push({ python, version, major })
  }
  return { found, missing }
}

/** Runs numpy_cases.py with a command and input; returns stdout. */
export function runCases(python: string, command: 'make' | 'check', input?: Uint8Array): Buffer {
  return execFileSync(python, [CASES_PY, command], { input, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] })
}

// ---- the formulas of numpy_cases.py ----

export const LAYOUTS: Record<string, readonly number[]> = { '1d': [5], c: [2, 3], f: [2, 3], k: [2, 3, 4], '0d': [], empty: [0, 3] }
const UNICODE = ['a', '\u00e9', '\u{1f642}', '\u6771']

function intValue(k: number, signed: boolean, bytes: number): bigint {
  const bits = BigInt(bytes * 8)
  const v = (BigInt(k) * 2654435761n + 12345n) % (1n << bits)
  return signed && v >= 1n << (bits - 1n) ? v - (1n << bits) : v
}

function f16bits(k: number): number {
  return ((k * 2654435761 + 12345) % 0x7c00) | (k % 2 ? 0x8000 : 0)
}

/** Element k (C order) written into data at item `at`, for a dtype, as numpy_cases.value makes it. */
function put(dtype: DType, data: NDArrayData, at: number, k: number): void {
  const n = dtype.itemsize
  switch (dtype.kind) {
    case 'b': (data as Uint8Array)[at] = k % 3 === 0 ? 1 : 0; break
    case 'i': case 'u': {
      const v = intValue(k, dtype.kind === 'i', n)
      if (n === 8) (data as BigInt64Array)[at] = v
      else (data as Int32Array)[at] = Number(v)
      break
    }
    case 'f':
      if (n === 2) (data as Uint16Array)[at] = f16bits(k)
      else if (n === 4) (data as Float32Array)[at] = k < 3 ? [NaN, -0, Infinity][k]! : k * 0.375 - 2.5
      else (data as Float64Array)[at] = (((k * 2654435761) % 2 ** 32) + 0.5) / 2 ** 32 * 1000 - 300
      break
    case 'c':
      (data as Float64Array)[at] = k * 0.5
      ;(data as Float64Array)[at + 1] = -k * 0.25 - 1
      break
    case 'S':
      for (let i = 0; i < k % 6; i++) (data as Uint8Array)[at + i] = 97 + (k % 26)
      break
    case 'U':
      for (let i = 0; i < k % 4; i++) (data as Uint32Array)[at + i] = UNICODE[(k + i) % 4]!.codePointAt(0)!
      break
    case 'M': case 'm':
      (data as BigInt64Array)[at] = k === 2 ? -(2n ** 63n) : BigInt(k * 1000 - 5)
      break
    case 'O':
      (data as unknown[])[at] = [k, `x${k}`, null, [k, 1.5]][k % 4]
      break
  }
}

/** Items of data per element, as the NDArray documents them. */
export function unitsPerElement(dtype: DType): number {
  if (dtype.kind === 'c') return 2
  if (dtype.kind === 'S' || dtype.kind === 'V') return dtype.itemsize
  if (dtype.kind === 'U') return dtype.itemsize / 4
  return 1
}

function emptyData(dtype: DType, units: number): NDArrayData {
  switch (dtype.kind) {
    case 'O': return new Array(units).fill(null)
    case 'b': case 'S': return new Uint8Array(units)
    case 'U': return new Uint32Array(units)
    case 'M': case 'm': return new BigInt64Array(units)
    case 'c': return dtype.itemsize === 8 ? new Float32Array(units) : new Float64Array(units)
    case 'f': return dtype.itemsize === 2 ? new Uint16Array(units) : dtype.itemsize === 4 ? new Float32Array(units) : new Float64Array(units)
    default: {
      const ctors = dtype.kind === 'i' ? [Int8Array, Int16Array, Int32Array, BigInt64Array] : [Uint8Array, Uint16Array, Uint32Array, BigUint64Array]
      return new ctors[Math.log2(dtype.itemsize)]!(units)
    }
  }
}

/** The array numpy_cases.make(dtype, layout) builds, made in JavaScript: same values, same layout. */
export function makeArray(spec: string, layout: string): NDArray {
  const dtype = DType.of(spec)
  const base = LAYOUTS[layout]!
  const n = base.reduce((a, b) => a * b, 1)
  const units = unitsPerElement(dtype)
  const data = emptyData(dtype, n * units)
  if (layout === 'f') {
    // Column-major memory: element (i, j) of C index i*cols + j sits at j*rows + i.
    const [rows, cols] = base as [number, number]
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) put(dtype, data, (j * rows + i) * units, i * cols + j)
    return new NDArray(data, { dtype, shape: base, order: 'F' })
  }
  for (let k = 0; k < n; k++) put(dtype, data, k * units, k)
  const a = new NDArray(data, { dtype, shape: base })
  return layout === 'k' ? a.transpose(1, 0, 2) : a
}

// ---- framing for numpy_cases.py check ----

/** count, then per case: JSON meta, buffer count, the pickle, the buffers (each u32-length-prefixed). */
export function frameCases(cases: readonly { meta: object; pickle: Uint8Array; buffers: readonly Uint8Array[] }[]): Uint8Array {
  const parts: Uint8Array[] = []
  const u32 = (n: number): Uint8Array => new Uint8Array(Uint32Array.of(n).buffer)
  const frame = (b: Uint8Array): void => void parts.push(u32(b.length), b)
  parts.push(u32(cases.length))
  for (const c of cases) {
    frame(new TextEncoder().encode(JSON.stringify(c.meta)))
    parts.push(u32(c.buffers.length))
    frame(c.pickle)
    for (const b of c.buffers) frame(b)
  }
  return Buffer.concat(parts)
}

// ---- comparing loaded elements with numpy's tolist() ----

function sameNumber(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b))
}

/** Whether an element as NDArray.get returns it equals the plain Python value numpy's tolist() gave. */
export function sameElement(got: unknown, expected: unknown): boolean {
  if (typeof expected === 'number') {
    if (typeof got === 'bigint') return Number.isInteger(expected) && got === BigInt(expected)
    return typeof got === 'number' && sameNumber(got, expected)
  }
  if (typeof expected === 'bigint') return got === expected
  if (expected instanceof Complex) return got instanceof Complex && sameNumber(got.real, expected.real) && sameNumber(got.imag, expected.imag)
  if (expected instanceof Uint8Array) return got instanceof Uint8Array && Buffer.compare(Buffer.from(got), Buffer.from(expected)) === 0
  return isDeepStrictEqual(got, expected)
}

/** The first element that differs, as text, or null. */
export function firstMismatch(got: readonly unknown[], expected: readonly unknown[]): string | null {
  if (got.length !== expected.length) return `${got.length} elements, expected ${expected.length}`
  for (let i = 0; i < got.length; i++) {
    if (!sameElement(got[i], expected[i])) return `element ${i}: ${String(got[i])}, expected ${String(expected[i])}`
  }
  return null
}
