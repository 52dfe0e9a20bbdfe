// The load benchmark (issue 2): picklewire's loads against CPython's C pickle.loads and the
// pickleparser package, on pickles that CPython wrote at protocol 5.

import { readFileSync } from 'node:fs'
import * as codec from '@picklewire/codec'
import { Parser } from 'pickleparser'
import { fmtBytes, fmtCell, fmtCellRate, fmtRatio, measure, printTable } from './measure.mjs'
import { makeValue, mismatch } from './workloads.mjs'

/**
 * One table row per workload, plus the dicts again as plain objects: picklewire returns
 * Maps by default (keys of any type), pickleparser plain objects; each is compared in
 * both forms so that neither is measured doing less work than the other.
 */
function loadRows(list) {
  const rows = []
  for (const w of list) {
    if (w.kind === 'dicts') {
      rows.push({ w, label: `${w.label} → Map`, pw: { dict: 'map' }, pp: { unpicklingTypeOfDictionary: 'Map' } })
      rows.push({ w, label: `${w.label} → object`, pw: { dict: 'object' }, pp: { unpicklingTypeOfDictionary: 'object' } })
    } else if (w.kind === 'bytes') {
      rows.push({ w, label: w.label, pw: {}, pp: {} })
      rows.push({ w, label: `${w.label}, view (b)`, pw: { copyBytes: false }, pp: {} })
    } else {
      rows.push({ w, label: w.label, pw: {}, pp: {} })
    }
  }
  return rows
}

const NOTES = {
  view: 'pickleparser returns bytes as a view into the pickle (no copy); CPython and picklewire return a copy, as Python\'s bytes is a separate object, so that row does not compare like with like.',
  copyBytes: 'picklewire with copyBytes: false returns bytes as a view into the pickle too, like pickleparser; CPython\'s time is still its copy.',
  oobRate: 'out-of-band rows count the out-of-band bytes in MB/s; the pickle itself is a few bytes. The time is what matters: it must not grow with the size.',
}

/**
 * Runs the load benchmark, workload by workload: CPython (`py`, a CPython from
 * cpython.mjs) writes the fixture into `dir` and times it, then JavaScript is timed on it.
 * Returns the rows as data for callers that want them.
 */
export async function runLoad({ list, py, dir, timing, log }) {
  const results = []
  const notes = new Set()
  let fx = null
  let pyTime = null
  for (const row of loadRows(list)) {
    const { w } = row
    if (fx?.name !== w.name) {
      log(`  ${w.label}: CPython`)
      fx = { name: w.name, ...(await py.fixture(dir, w)) }
      pyTime = await py.time('load', w.name, timing)
    }
    const data = new Uint8Array(readFileSync(fx.file))
    // The out-of-band buffers are memory the receiver already holds (zeros, as CPython's
    // bytearray(n) was): NEXT_BUFFER hands each over as it is, whatever it contains.
    const oob = fx.oob.map((n) => new Uint8Array(n))
    const expected = w.kind === 'oob' ? oob[0] : makeValue(w)
    const total = fx.bytes + fx.oob.reduce((a, b) => a + b, 0)
    if (w.kind === 'oob') notes.add('oobRate')

    log(`  ${row.label}: picklewire, pickleparser`)
    const pwOptions = { ...row.pw, buffers: oob }
    const pwLoad = () => codec.loads(data, pwOptions)
    const pwWrong = mismatch(w, pwLoad(), expected)
    if (pwWrong) throw new Error(`picklewire loaded ${w.name} wrongly: ${pwWrong}`)
    const pw = measure(pwLoad, timing)

    let pp
    // A Parser per call: its `buffers` option is an iterator, used up by one parse.
    const ppLoad = () => new Parser({ ...row.pp, buffers: oob[Symbol.iterator]() }).parse(data)
    let ppWrong
    try {
      ppWrong = mismatch(w, ppLoad(), expected)
    } catch (err) {
      ppWrong = `it throws: ${err.message}`
    }
    if (ppWrong) {
      pp = { na: true, why: ppWrong }
    } else {
      pp = measure(ppLoad, timing)
      if (w.kind === 'bytes' && row.pw.copyBytes !== false) { pp.mark = ' (a)'; notes.add('view') }
      if (row.pw.copyBytes === false) notes.add('copyBytes')
    }

    results.push({ row, bytes: fx.bytes, total, pw, py: pyTime, pp })
  }

  const header = ['workload', 'pickle', 'picklewire', 'MB/s', 'CPython', 'MB/s', 'pickleparser', 'MB/s', 'vs CPython', 'vs pickleparser']
  printTable(header, results.map(({ row, bytes, total, pw, py, pp }) => [
    row.label, fmtBytes(bytes),
    fmtCell(pw), fmtCellRate(pw, total),
    fmtCell(py), fmtCellRate(py, total),
    fmtCell(pp), fmtCellRate(pp, total),
    fmtRatio(py, pw), fmtRatio(pp, pw),
  ]))
  console.log()
  console.log('Times are best / median of N samples per call; MB/s is from the best time; "vs X" is X\'s best')
  console.log('time over picklewire\'s (>1: picklewire is faster).')
  console.log(`N (picklewire, CPython, pickleparser): ${results.map(({ row, pw, py, pp }) => `${row.w.name}${row.pw.dict === 'object' ? '/object' : ''}${row.pw.copyBytes === false ? '/view' : ''} ${pw.runs}/${py.runs}/${pp.runs ?? '-'}`).join(', ')}`)
  const batched = results.filter(({ pw }) => pw.batch > 1)
  if (batched.length) console.log(`Samples of calls under 1 ms time a batch of calls and divide: ${batched.map(({ row, pw, py, pp }) => `${row.w.name}${row.pw.copyBytes === false ? '/view' : ''} ${pw.batch}/${py.batch}/${pp.batch ?? '-'}`).join(', ')}.`)
  if (notes.has('view')) console.log(`(a) ${NOTES.view}`)
  if (notes.has('copyBytes')) console.log(`(b) ${NOTES.copyBytes}`)
  if (notes.has('oobRate')) console.log(`Note: ${NOTES.oobRate}`)
  for (const { row, pp } of results) {
    if (pp.na) console.log(`pickleparser n/a on ${row.label}: ${pp.why}`)
  }
  const oobRows = results.filter(({ row }) => row.w.kind === 'oob')
  if (oobRows.length > 1) {
    const first = oobRows[0]
    const last = oobRows[oobRows.length - 1]
    console.log(`Out-of-band: ${fmtBytes(last.total - last.bytes)} takes ${(last.pw.best / first.pw.best).toFixed(2)}x the time of ${fmtBytes(first.total - first.bytes)} ` +
      `(${(last.total / first.total).toFixed(0)}x the bytes) for picklewire, ${(last.py.best / first.py.best).toFixed(2)}x for CPython.`)
  }
  return results
}
