// The tables benchmark: a 1,000,000-row pandas DataFrame of 8 numeric and 2 str columns (read
// with strings: 'lazy', the default, and with strings: 'decode'), and the same without the str
// columns, pickled at protocol 5 out of band, loaded into columns (loads with ALLOW.pandas, then
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
  const results = []
  let py
  for (const [kind, strings] of [['strings', 'lazy'], ['strings', 'decode'], ['numeric', 'lazy']]) {
    const label = `${rows.toLocaleString('en')} rows, 8 numeric${kind === 'strings' ? ` + 2 str (strings: '${strings}')` : ''} columns, out of band`
    const file = join(dir, `tables-${kind}-${rows}.bin`)
    if (strings === 'lazy') {
      log(`  ${label}: pandas pickle.loads`)
      py = JSON.parse(execFileSync(PYTHON, [join(here, 'tables.py'), String(rows), kind, file, JSON.stringify(timing)], { encoding: 'utf8', maxBuffer: 1 << 26 }))
    }
    const [data, ...buffers] = readParts(file)
    const options = { allow: codec.ALLOW.pandas, buffers }
    const read = { strings }

    log(`  ${label}: picklewire`)
    const df = codec.readDataFrame(codec.loads(data, options), read)
    const columns = kind === 'strings' ? 10 : 8
    if (df.length !== rows || df.columns.length !== columns) throw new Error(`read ${df.columns.length} columns of ${df.length} rows`)
    const lazy = df.columns.filter((c) => c.values instanceof codec.LazyStrings)
    if (lazy.length !== (kind === 'strings' && strings === 'lazy' ? 2 : 0)) throw new Error(`${lazy.length} lazy string columns with strings: '${strings}'`)
    const copied = df.columns.filter((c) => c.copied).map((c) => c.name)
    const both = measure(() => codec.readDataFrame(codec.loads(data, options), read), timing)
    const loadOnly = measure(() => codec.loads(data, options), timing)
    const placeholder = codec.loads(data, options)
    const readOnly = measure(() => codec.readDataFrame(placeholder, read), timing)
    // Reading every value of the lazy str columns once, after the columns are read.
    const decodeAll = lazy.length ? measure(() => lazy.map((c) => c.values.toArray()), timing) : null
    results.push({ label, py, both, loadOnly, readOnly, copied, decodeAll })
  }
  const first = results[0].py
  printTable(['workload', 'pickle + buffers', 'picklewire: loads + readDataFrame', 'loads', 'readDataFrame', `pandas ${first.pandas} pickle.loads`, 'vs pandas', 'then toArray() of the str columns'],
    results.map((r) => [
      r.label, `${fmtBytes(r.py.pickle_bytes)} + ${fmtBytes(r.py.buffer_bytes)} in ${r.py.buffers}`,
      fmtCell(r.both), fmtCell(r.loadOnly), fmtCell(r.readOnly), fmtCell(r.py), fmtRatio(r.py, r.both), r.decodeAll ? fmtCell(r.decodeAll) : '',
    ]))
  console.log()
  console.log('Times are best / median per call; "vs pandas" is pandas\' best time over picklewire\'s loads + readDataFrame (>1:')
  console.log(`picklewire is faster). Columns: ${first.dtypes.join(', ')}. With strings: 'lazy' the str columns are LazyStrings over`)
  console.log('their arrow offsets and bytes (copied by the reader: ' + (results[0].copied.join(', ') || 'none') + '), decoded when read; the last column is one')
  console.log(`toArray() of each. With strings: 'decode' (copied: ${results[1].copied.join(', ') || 'none'}) every string is decoded up front. pandas`)
  console.log('keeps the arrow arrays as they are. The numeric columns are views of the buffers. The last row is the frame without the str columns.')
  console.log(`Python ${first.python}, numpy ${first.numpy}. N (picklewire both/loads/read, pandas): ${results.map((r) => `${r.both.runs}/${r.loadOnly.runs}/${r.readOnly.runs}, ${r.py.runs}`).join('; ')}`)
}
