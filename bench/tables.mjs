// The tables benchmark: a 1,000,000-row pandas DataFrame of 8 numeric and 2 str columns,
// pickled at protocol 5 out of band, loaded into columns (loads with ALLOW.pandas, then
// readDataFrame) against pandas' own pickle.loads of the same pickle and buffers, timed in
// the same run (bench/tables.py, in the pandas 3 environment of test/helpers/data-venvs.ts,
// or PICKLEWIRE_TABLES_PYTHON).

import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as codec from '@picklewire/codec'
import { fmtBytes, fmtCell, fmtRatio, measure, printTable } from './measure.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const PYTHON = process.env.PICKLEWIRE_TABLES_PYTHON ?? '/tmp/picklewire-data-venvs/pandas3/bin/python'

/** The pickle and its buffers from the file tables.py writes (each part after its 8-byte length). */
function readParts(file) {
  const all = readFileSync(file)
  const parts = []
  for (let at = 0; at < all.length;) {
    const n = Number(all.readBigUInt64LE(at))
    // Each part copied into memory of its own, as a receiver holds a message's buffers.
    parts.push(new Uint8Array(all.subarray(at + 8, at + 8 + n)))
    at += 8 + n
  }
  return parts
}

export async function runTables({ quick, timing, log }) {
  if (!existsSync(PYTHON)) {
    console.log(`skipped: no pandas Python at ${PYTHON} (run test/interop/table-readers.test.ts to build it, or set PICKLEWIRE_TABLES_PYTHON)`)
    return
  }
  const rows = quick ? 100_000 : 1_000_000
  const dir = join(here, '.fixtures', quick ? 'quick' : 'full')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `tables-${rows}.bin`)
  log(`  ${rows.toLocaleString('en')} rows: pandas pickle.loads`)
  const py = JSON.parse(execFileSync(PYTHON, [join(here, 'tables.py'), String(rows), file, JSON.stringify(timing)], { encoding: 'utf8', maxBuffer: 1 << 26 }))
  const [data, ...buffers] = readParts(file)
  const options = { allow: codec.ALLOW.pandas, buffers }

  log(`  ${rows.toLocaleString('en')} rows: picklewire`)
  const df = codec.readDataFrame(codec.loads(data, options))
  const copied = df.columns.filter((c) => c.copied).map((c) => c.name)
  if (df.length !== rows || df.columns.length !== 10) throw new Error(`read ${df.columns.length} columns of ${df.length} rows`)
  const loadOnly = measure(() => codec.loads(data, options), timing)
  const both = measure(() => codec.readDataFrame(codec.loads(data, options)), timing)
  const placeholder = codec.loads(data, options)
  const readOnly = measure(() => codec.readDataFrame(placeholder), timing)

  printTable(['workload', 'pickle + buffers', 'picklewire: loads + readDataFrame', 'loads', 'readDataFrame', `pandas ${py.pandas} pickle.loads`, 'vs pandas'], [[
    `${rows.toLocaleString('en')} rows, 8 numeric + 2 str columns, out of band`, `${fmtBytes(py.pickle_bytes)} + ${fmtBytes(py.buffer_bytes)} in ${py.buffers}`,
    fmtCell(both), fmtCell(loadOnly), fmtCell(readOnly), fmtCell(py), fmtRatio(py, both),
  ]])
  console.log()
  console.log('Times are best / median per call; "vs pandas" is pandas\' best time over picklewire\'s loads + readDataFrame (>1:')
  console.log(`picklewire is faster). Columns: ${py.dtypes.join(', ')}; copied by the reader: ${copied.join(', ') || 'none'}`)
  console.log('(the str columns, decoded from their arrow buffers into JavaScript strings); the numeric columns are views of')
  console.log(`the buffers. Python ${py.python}, numpy ${py.numpy}. N (picklewire both/loads/read, pandas): ${both.runs}/${loadOnly.runs}/${readOnly.runs}, ${py.runs}`)
}
