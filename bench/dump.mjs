// The dump benchmark (issue 3): picklewire's dumps against CPython's C pickle.dumps at
// protocol 5 and msgpackr's pack, on the same data built in each language.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import * as codec from '@picklewire/codec'
import { pack } from 'msgpackr'
import { fmtBytes, fmtCell, fmtRatio, measure, printTable } from './measure.mjs'
import { makeValue, mismatch } from './workloads.mjs'

/** Whether the built codec has a pickler yet (it is written after the unpickler). */
export function dumpsBuilt() {
  return typeof codec.dumps === 'function'
}

/** Rows: the workloads, with the dicts both as Maps and as plain objects. */
function dumpRows(list) {
  const rows = []
  for (const w of list) {
    if (w.kind === 'dicts') {
      rows.push({ w, label: `${w.label} (Map)`, asObject: false })
      rows.push({ w, label: `${w.label} (object)`, asObject: true })
      rows.push({ w, label: `${w.label} (object), fast`, asObject: true, fast: true })
    } else if (w.kind === 'strings') {
      rows.push({ w, label: w.label, asObject: false })
      rows.push({ w, label: `${w.label}, fast`, asObject: false, fast: true })
    } else {
      rows.push({ w, label: w.label, asObject: false })
    }
  }
  return rows
}

const NOTES = {
  inband: 'msgpack has no out-of-band buffers: msgpackr packs the bytes into its output (a copy), so that row shows what out-of-band saves rather than like against like.',
}

/**
 * Runs the dump benchmark, workload by workload: CPython (`py`, from cpython.mjs) builds
 * the value, writes its pickle into `dir` and times pickle.dumps, then JavaScript is timed.
 */
export async function runDump({ list, py, dir, timing, log }) {
  const results = []
  const notes = new Set()
  let fx = null
  let pyTime = null
  let pyFast = null
  for (const row of dumpRows(list)) {
    const { w } = row
    if (fx?.name !== w.name) {
      log(`  ${w.label}: CPython`)
      fx = { name: w.name, ...(await py.fixture(dir, w)) }
      pyTime = await py.time('dump', w.name, timing)
      pyFast = null
    }
    if (row.fast && pyFast === null) {
      log(`  ${w.label}: CPython, Pickler.fast`)
      pyFast = await py.time('dump', w.name, timing, { fast: true })
    }
    const pyRow = row.fast ? pyFast : pyTime
    const raw = makeValue(w, { dictsAsObject: row.asObject })
    const expected = w.kind === 'dicts' ? makeValue(w) : raw
    const isOob = w.kind === 'oob'
    const value = isOob ? new codec.PickleBuffer(raw) : raw
    const options = isOob ? { protocol: 5, bufferCallback: () => false } : { protocol: 5, fast: row.fast === true }

    log(`  ${row.label}: picklewire, msgpackr`)
    let pw
    let pwBytes
    let same = 'n/a'
    try {
      const out = codec.dumps(value, options)
      pwBytes = out.byteLength
      same = row.fast
        ? (createHash('sha256').update(out).digest('hex') === pyRow.sha256 ? 'yes' : 'no')
        : (Buffer.from(out.buffer, out.byteOffset, out.byteLength).equals(readFileSync(fx.file)) ? 'yes' : 'no')
      const buffers = []
      const again = isOob ? codec.dumps(value, { protocol: 5, bufferCallback: (b) => { buffers.push(b); return false } }) : out
      const wrong = mismatch(w, codec.loads(again, { buffers }), expected)
      if (wrong) throw new Error(`it does not load back: ${wrong}`)
      pw = measure(() => codec.dumps(value, options), timing)
    } catch (err) {
      pw = { na: true, why: err.message }
    }

    const mpValue = isOob ? raw : value
    const mpBytes = pack(mpValue).byteLength
    const mp = measure(() => pack(mpValue), timing)
    if (isOob) { mp.mark = ' (b)'; notes.add('inband') }

    results.push({ row, pw, pwBytes, same, py: pyRow, mp, mpBytes })
  }

  const header = ['workload', 'picklewire', 'out', 'same bytes', 'CPython', 'out', 'msgpackr', 'out', 'vs CPython', 'vs msgpackr']
  printTable(header, results.map(({ row, pw, pwBytes, same, py, mp, mpBytes }) => [
    row.label,
    fmtCell(pw), pw.na ? 'n/a' : fmtBytes(pwBytes), same,
    fmtCell(py), fmtBytes(py.bytes),
    fmtCell(mp), fmtBytes(mpBytes),
    fmtRatio(py, pw), fmtRatio(mp, pw),
  ]))
  console.log()
  console.log('Times are best / median of N samples per call; "out" is the output size (the pickle stream only,')
  console.log('for out-of-band rows); "same bytes": picklewire wrote exactly the bytes CPython wrote for that value;')
  console.log('"vs X" is X\'s best time over picklewire\'s (>1: picklewire is faster). ", fast" rows: both picklers without')
  console.log('a memo (picklewire\'s fast option against CPython\'s Pickler.fast = True), bytes compared by SHA-256.')
  console.log(`N (picklewire, CPython, msgpackr): ${results.map(({ row, pw, py, mp }) => `${row.w.name}${row.asObject ? '/object' : ''}${row.fast ? '/fast' : ''} ${pw.runs ?? '-'}/${py.runs}/${mp.runs}`).join(', ')}`)
  if (notes.has('inband')) console.log(`(b) ${NOTES.inband}`)
  for (const { row, pw } of results) {
    if (pw.na) console.log(`picklewire n/a on ${row.label}: ${pw.why}`)
  }
  return results
}
