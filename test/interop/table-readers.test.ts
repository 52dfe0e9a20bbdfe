/**
 * readDataFrame, readSeries, readArrowTable and readArrowArray against pickles that pandas 2,
 * pandas 3 and pyarrow write (test/interop/make_table_pickles.py, in the environments of
 * test/helpers/data-venvs.ts) at protocols 2, 4, 5 and 5 out of band: the readers give the
 * column names, dtypes, values and index that pandas and pyarrow report; out-of-band numeric
 * columns are views of their buffers (a write through the view is seen in the buffer); and what
 * they cannot read is refused naming it. Arrow-backed string columns are compared in both modes
 * (strings: 'lazy', the default, and 'decode'); out of band, a lazy column's offsets and bytes are
 * views of their buffers.
 */
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import {
  ALLOW, LazyStrings, NDArray, PyObject, loads, readArrowArray, readArrowTable, readDataFrame, readSeries,
  type Column, type RangeIndexInfo, type StringsMode,
} from '@picklewire/codec'
import { dataVenvsOrSkip, type DataVenvName } from '../helpers/data-venvs.js'
import { REQUIRE_PYTHON, runPython } from '../helpers/python.js'

const SCRIPT = fileURLToPath(new URL('./make_table_pickles.py', import.meta.url))

interface ExpectedColumn { name: unknown; dtype: string; values: unknown[]; categories?: unknown[] }
type ExpectedIndex = ExpectedColumn | { range: [number, number, number]; name: unknown }
type Expected =
  | { kind: 'DataFrame'; columns: ExpectedColumn[]; index: ExpectedIndex; length: number }
  | ({ kind: 'Series'; index: ExpectedIndex } & ExpectedColumn)
  | { kind: 'Table'; columns: ExpectedColumn[]; length: number }
  | ({ kind: 'Array' } & ExpectedColumn)

interface Made {
  source: string
  case: string
  protocol: number
  oob: boolean
  data: Uint8Array
  buffers: Uint8Array[]
  expected: Expected | null
}

const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'))
const label = (m: Made): string => `${m.source} ${m.case} protocol ${m.protocol}${m.oob ? ' out of band' : ''}`

/** A column's values as make_table_pickles.py writes them: integers as strings, NaN as "NaN", missing as null. */
function reported(c: Column): unknown[] {
  if (c.values instanceof LazyStrings) return c.values.toArray()
  const kind = c.values.dtype.kind
  return Array.from(c.values.data as ArrayLike<unknown>, (v, i) => {
    if (c.valid && !c.valid[i]) return null
    if (kind === 'i' || kind === 'u' || kind === 'M' || kind === 'm') return String(v)
    if (kind === 'b') return Boolean(v)
    if (typeof v === 'number' && Number.isNaN(v)) return 'NaN'
    if (kind === 'O' && typeof v === 'number' && Number.isInteger(v)) return String(v)
    return v ?? null
  })
}

function sameColumn(t: Test, c: Column, want: ExpectedColumn, what: string): void {
  t.same({ name: c.name ?? null, dtype: c.dtype, values: reported(c) }, { name: want.name, dtype: want.dtype, values: want.values }, what)
  if (c.values instanceof LazyStrings) {
    const lazy = c.values
    t.same([...lazy], want.values, `${what}: iteration`)
    t.same(Array.from({ length: lazy.length }, (_, i) => lazy.get(i)), want.values, `${what}: get(i)`)
    t.equal(lazy.valid, c.valid, `${what}: the column's validity`)
  }
  if (want.categories) t.same(c.categories && reported(c.categories), want.categories, `${what}: categories`)
  else t.equal(c.categories, null, `${what}: no categories`)
}

function sameIndex(t: Test, index: Column | RangeIndexInfo, want: ExpectedIndex, what: string): void {
  if ('range' in want) t.same('kind' in index ? [index.start, index.stop, index.step, index.name] : index, [...want.range, want.name], `${what}: RangeIndex`)
  else if ('kind' in index) t.fail(`${what}: a RangeIndex, expected ${want.dtype}`)
  else sameColumn(t, index, want, `${what}: index`)
}

/** Whether a write through the column's view (or the given view) is seen in one of the given byte arrays (the pickle, its buffers). */
function writesThrough(c: Column | ArrayBufferView, buffers: readonly Uint8Array[]): boolean {
  const data = ArrayBuffer.isView(c) ? c : (c.values as NDArray).data as Uint8Array
  const bytes = new Uint8Array(data.buffer, data.byteOffset, 1)
  const home = buffers.find((b) => b.buffer === data.buffer && data.byteOffset >= b.byteOffset && data.byteOffset < b.byteOffset + b.byteLength)
  if (!home) return false
  const before = bytes[0]!
  bytes[0] = before ^ 0xff
  const seen = home[data.byteOffset - home.byteOffset] === (before ^ 0xff)
  bytes[0] = before
  return seen
}

const venvs = dataVenvsOrSkip(t, ['pandas2', 'pandas3'])
if (typeof venvs === 'string') {
  if (REQUIRE_PYTHON) t.end()
  else t.plan(0, venvs)
} else {
  const made: Made[] = []
  const sources: [string, DataVenvName, string][] = [['pandas2', 'pandas2', 'pandas'], ['pandas3', 'pandas3', 'pandas'], ['pyarrow', 'pandas3', 'pyarrow']]
  for (const [source, venv, lib] of sources) {
    const out = runPython(`import runpy, sys; sys.argv = [${JSON.stringify(SCRIPT)}, ${JSON.stringify(lib)}]; runpy.run_path(sys.argv[0], run_name='__main__')`, undefined, venvs[venv].python)
    for (const line of out.toString('utf8').trim().split('\n')) {
      const r = JSON.parse(line) as { case: string; protocol: number; oob: boolean; data: string; buffers: string[]; expected: Expected | null }
      made.push({ source, case: r.case, protocol: r.protocol, oob: r.oob, data: b64(r.data), buffers: r.buffers.map(b64), expected: r.expected })
    }
  }
  const load = (m: Made, copyBytes = true): unknown => loads(m.data, { allow: m.source === 'pyarrow' ? ALLOW.pyarrow : ALLOW.pandas, buffers: m.buffers, copyBytes })

  for (const mode of [undefined, 'lazy', 'decode'] as const) {
    const options = mode === undefined ? undefined : { strings: mode as StringsMode }
    t.test(`the readers give the columns, dtypes and index pandas and pyarrow report (strings: ${mode ?? 'default'})`, async (t) => {
      let checked = 0
      let lazyColumns = 0
      const modeOf = (c: Column, what: string): void => {
        if (c.values instanceof LazyStrings) {
          lazyColumns++
          t.not(mode, 'decode', `${what}: decoded, not lazy`)
          t.ok(['str', 'string', 'large_string'].includes(c.dtype), `${what}: a lazy column is a string column`)
        } else if (mode !== 'decode' && (c.dtype === 'string' || c.dtype === 'large_string') && what.startsWith('pyarrow')) {
          t.fail(`${what}: an arrow string column read with strings: ${mode ?? 'default'} is a LazyStrings`)
        }
      }
      for (const m of made) {
        const want = m.expected
        if (!want) continue
        const v = load(m)
        const what = label(m)
        if (want.kind === 'DataFrame') {
          const df = readDataFrame(v, options)
          t.equal(df.length, want.length, `${what}: length`)
          t.equal(df.columns.length, want.columns.length, `${what}: column count`)
          want.columns.forEach((w, i) => sameColumn(t, df.columns[i]!, w, `${what} column ${String(w.name)}`))
          df.columns.forEach((c) => modeOf(c, `${what} column ${String(c.name)}`))
          sameIndex(t, df.index, want.index, what)
        } else if (want.kind === 'Series') {
          const s = readSeries(v, options)
          sameColumn(t, s, want, what)
          modeOf(s, what)
          sameIndex(t, s.index, want.index, what)
        } else if (want.kind === 'Table') {
          const table = readArrowTable(v, options)
          t.equal(table.length, want.length, `${what}: length`)
          t.same(table.columns.map((c) => c.name), want.columns.map((c) => c.name), `${what}: names`)
          want.columns.forEach((w, i) => sameColumn(t, table.columns[i]!, w, `${what} column ${String(w.name)}`))
          table.columns.forEach((c) => modeOf(c, `${what} column ${String(c.name)}`))
        } else {
          const c = readArrowArray(v, options)
          sameColumn(t, c, want, what)
          modeOf(c, what)
        }
        checked++
      }
      t.equal(checked, made.filter((m) => m.expected).length, `${checked} pickles read`)
      t.ok(checked >= 4 * (7 * 2 + 5), 'every case at every protocol of pandas 2, pandas 3 and pyarrow')
      if (mode === 'decode') t.equal(lazyColumns, 0, 'no lazy columns')
      else t.ok(lazyColumns > 0, `${lazyColumns} lazy string columns`)
    })
  }

  t.test('out-of-band numeric columns are views of their buffers: a write through one is seen in the buffer', async (t) => {
    let copies = 0
    for (const m of made.filter((m) => m.oob && m.expected)) {
      // copyBytes false: what came in band is a view of the pickle too (when aligned there).
      const cols = m.expected!.kind === 'DataFrame' ? readDataFrame(load(m, false)).columns : m.expected!.kind === 'Table' ? readArrowTable(load(m, false)).columns : []
      for (const c of cols) {
        if (c.values instanceof LazyStrings) continue
        const numeric = 'iufMb'.includes(c.values.dtype.kind) && c.dtype !== 'bool' || c.dtype === 'bool' && m.source !== 'pyarrow'
        if (!numeric || c.categories) continue
        // Copied exactly when the column is strided in its block (a 2-D block from a C-ordered array) or joined from chunks.
        const views = [m.data, ...m.buffers]
        if (c.copied) t.notOk(writesThrough(c, views), `${label(m)} column ${String(c.name)}: a copy, not a view`)
        else t.ok(writesThrough(c, views), `${label(m)} column ${String(c.name)}: a write through the view is seen in the bytes it came in`)
        // numpy writes datetime64 arrays in band even out of band: a view of the pickle, or a copy when misaligned there.
        if (c.values.dtype.kind !== 'M') {
          if (m.case !== 'frame.wide') t.equal(c.copied, c.name === 'chunked', `${label(m)} column ${String(c.name)}: ${c.name === 'chunked' ? 'copied' : 'not copied'}`)
          if (!c.copied) t.ok(writesThrough(c, m.buffers), `${label(m)} column ${String(c.name)}: a view of an out-of-band buffer`)
        }
        if (c.copied) copies++
      }
    }
    t.ok(copies > 0, `${copies} copied columns among them`)
    const mixed = made.find((m) => m.source === 'pandas3' && m.case === 'frame.mixed' && m.oob)!
    const i64 = readDataFrame(load(mixed)).columns.find((c) => c.name === 'i64')!
    t.ok(i64.values instanceof NDArray && i64.values.data instanceof BigInt64Array && writesThrough(i64, mixed.buffers), 'an int64 column is a BigInt64Array over its out-of-band buffer')
  })

  t.test('out of band, a lazy string column is views of its offsets and bytes: a write through one is seen in the buffer', async (t) => {
    let lazy = 0
    for (const m of made.filter((m) => m.oob && m.expected && (m.source === 'pyarrow' || m.source === 'pandas3'))) {
      const v = load(m, false)
      const want = m.expected!
      const cols = want.kind === 'DataFrame' ? readDataFrame(v).columns : want.kind === 'Table' ? readArrowTable(v).columns : want.kind === 'Series' ? [readSeries(v)] : [readArrowArray(v)]
      for (const c of cols) {
        if (!(c.values instanceof LazyStrings)) continue
        const what = `${label(m)} column ${String(c.name)}`
        const joined = m.case === 'arrow.ChunkedArray'
        t.equal(c.copied, joined, `${what}: ${joined ? 'copied (chunks joined)' : 'not copied'}`)
        if (joined) {
          t.notOk(writesThrough(c.values.offsets, m.buffers) || writesThrough(c.values.data, m.buffers), `${what}: joined chunks are a copy`)
        } else {
          t.ok(writesThrough(c.values.offsets, m.buffers), `${what}: a write through the offsets is seen in an out-of-band buffer`)
          t.ok(writesThrough(c.values.data, m.buffers), `${what}: a write through the bytes is seen in an out-of-band buffer`)
          t.equal(c.values.offsets.length, c.values.length + 1, `${what}: length + 1 offsets`)
        }
        lazy++
      }
    }
    t.ok(lazy >= 4, `${lazy} lazy string columns checked`)
    // A write into the bytes is what the next get() reads: nothing was decoded up front.
    const array = made.find((m) => m.case === 'arrow.RecordBatch' && m.oob)!
    const label2 = readArrowTable(load(array, false)).columns[1]!.values as LazyStrings
    t.equal(label2.get(0), 'x', 'before the write')
    const at = Number(label2.offsets[0])
    label2.data[at] = 'Q'.charCodeAt(0)
    t.equal(label2.get(0), 'Q', 'get() reads the bytes as they are now')
    t.same(label2.toArray(), ['Q', 'y', null], 'toArray() too')
  })

  t.test('LazyStrings.get checks its index; the strings option is checked', async (t) => {
    const m = made.find((m) => m.case === 'arrow.Array.sliced-strings' && m.oob)!
    const s = readArrowArray(load(m)).values as LazyStrings
    t.ok(s instanceof LazyStrings, 'a LazyStrings by default')
    t.same([s.length, s.get(0), s.get(1), s.get(2), s.valid && [...s.valid]], [3, 'bb', null, 'été', [1, 0, 1]], 'a sliced array: its own items, nulls where missing')
    for (const bad of [-1, 3, 1.5, NaN]) t.throws(() => s.get(bad), { name: 'RangeError', message: `index must be an integer from 0 to 2, got ${String(bad)}` }, `get(${bad})`)
    t.same(readArrowArray(load(m), { strings: 'decode' }).values, new NDArray(['bb', null, 'été'], { dtype: 'O' }), "strings: 'decode' gives an object array of strings")
    const frame = made.find((m) => m.source === 'pandas3' && m.case === 'frame.mixed')!
    const table = made.find((m) => m.case === 'arrow.Table')!
    const series = made.find((m) => m.case === 'series.float')!
    const bads: [string, () => unknown][] = [
      ['readDataFrame', () => readDataFrame(load(frame), { strings: 'eager' as StringsMode })],
      ['readSeries', () => readSeries(load(series), { strings: 'eager' as StringsMode })],
      ['readArrowTable', () => readArrowTable(load(table), { strings: 'eager' as StringsMode })],
      ['readArrowArray', () => readArrowArray(load(m), { strings: 'eager' as StringsMode })],
    ]
    for (const [name, call] of bads) t.throws(call, { name: 'RangeError', message: `${name} option strings must be 'decode' or 'lazy', got "eager"` }, `${name}: an unknown strings mode`)
    t.throws(() => readDataFrame(load(frame), 'lazy' as never), { name: 'TypeError', message: 'readDataFrame options must be an object, got string' }, 'options that are not an object')
    t.throws(() => readArrowTable(load(table), { strings: true as never }), { name: 'RangeError', message: "readArrowTable option strings must be 'decode' or 'lazy', got true" })
    // Offsets a peer wrote wrong are refused when read, naming them.
    const bytes = new TextEncoder().encode('abcdé')
    const backwards = new LazyStrings(new Int32Array([0, 4, 2, 6]), bytes, null, 'a test column')
    t.same([backwards.get(0), backwards.get(2)], ['abcd', 'cdé'], 'good items still read')
    t.throws(() => backwards.get(1), { name: 'UnpicklingError', message: 'a test column: item 1 spans bytes 4 to 2, which run backwards' })
    t.throws(() => backwards.toArray(), { name: 'UnpicklingError', message: /item 1 spans bytes 4 to 2/ })
    const outside = new LazyStrings(new BigInt64Array([0n, 2n, 99n]), bytes, null, 'a test column')
    t.throws(() => outside.get(1), { name: 'UnpicklingError', message: 'a test column: offset 2 (99) is outside its 6 bytes' })
    t.throws(() => [...outside], { name: 'UnpicklingError' }, 'iteration too')
    const huge = new LazyStrings(new BigInt64Array([0n, 1n << 32n]), bytes, null, 'a test column')
    t.throws(() => huge.get(0), { name: 'UnpicklingError', message: 'a test column: offset 1 (4294967296) is outside its 6 bytes' })
    t.throws(() => new LazyStrings(new Int32Array([0, 1]), bytes, new Uint8Array(2)), { name: 'UnpicklingError', message: 'a string column: a validity mask of 2 items for 1 values' })
  })

  t.test('what the readers cannot read is refused naming it', async (t) => {
    for (const m of made.filter((m) => m.case === 'refuse.zone-aware')) {
      t.throws(() => readDataFrame(load(m)), { name: 'UnpicklingError', message: /pandas column "t": DatetimeArray with a pandas\..*DatetimeTZDtype placeholder \(a zone-aware dtype, say\) is not supported/ }, label(m))
    }
    for (const m of made.filter((m) => m.case === 'refuse.MultiIndex')) {
      t.throws(() => readSeries(load(m)), { name: 'UnpicklingError', message: /cannot read global pandas\..*MultiIndex as an index/ }, label(m))
    }
    const frame = made.find((m) => m.case === 'frame.ranged')!
    const series = made.find((m) => m.case === 'series.float')!
    const table = made.find((m) => m.case === 'arrow.Table')!
    t.throws(() => readDataFrame(load(series)), new TypeError(`readDataFrame expects a pandas DataFrame loaded with allow: ALLOW.pandas, got a ${(load(series) as PyObject).callable.module}.${(load(series) as PyObject).callable.name} placeholder`))
    t.throws(() => readSeries(load(frame)), TypeError, 'readSeries of a DataFrame')
    t.throws(() => readDataFrame(new Map()), { name: 'TypeError', message: 'readDataFrame expects a pandas DataFrame loaded with allow: ALLOW.pandas, got a Map' })
    t.throws(() => readArrowTable(load(frame)), TypeError, 'readArrowTable of a DataFrame')
    t.throws(() => readArrowArray(load(table)), { name: 'TypeError', message: 'readArrowArray expects a pyarrow Array or ChunkedArray loaded with allow: ALLOW.pyarrow, got a pyarrow.lib._reconstruct_table placeholder' })
    t.throws(() => readDataFrame(null), TypeError, 'readDataFrame(null)')
  })
}
