// Timing and table printing shared by the load and dump benchmarks. The timing policy is the
// one bench/cpython.py applies to CPython, so that both sides are measured alike.

import { performance } from 'node:perf_hooks'

/** How long to measure: full runs and --quick smoke runs. Seconds, as cpython.py takes them. */
export function timingPolicy({ quick }) {
  return quick
    ? { warmup: 1, warmup_time: 0.05, min_runs: 3, max_runs: 10, min_time: 0.2, min_sample: 0.001 }
    : { warmup: 3, warmup_time: 0.3, min_runs: 10, max_runs: 100, min_time: 2, min_sample: 0.001 }
}

const collect = typeof globalThis.gc === 'function' ? globalThis.gc : () => {}

/** True when run with --expose-gc, so that each sample starts from a collected heap. */
export const hasGc = typeof globalThis.gc === 'function'

/**
 * Best and median seconds per call of fn. Warm-up: at least `warmup` calls and
 * `warmup_time` seconds, so that the JIT has optimized the loader. A sample then runs fn
 * `batch` times, the batch doubled until a sample lasts min_sample (the out-of-band loads
 * take microseconds, below what one reading of the clock can tell); the largest of three
 * such calibrations counts, so that one slow moment does not shrink it. A full GC runs
 * before each sample of one call, so that no sample pays for an earlier one's garbage;
 * results are dropped outside the timed region.
 */
export function measure(fn, t) {
  let r
  const warmEnd = performance.now() + t.warmup_time * 1000
  for (let i = 0; i < t.warmup || performance.now() < warmEnd; i++) r = fn()
  r = undefined
  let batch = 1
  for (let round = 0; round < 3; round++) {
    for (let b = 1; ; b *= 2) {
      const t0 = performance.now()
      for (let i = 0; i < b; i++) r = fn()
      const dt = (performance.now() - t0) / 1000
      r = undefined
      if (dt >= t.min_sample || b >= 1 << 20) {
        batch = Math.max(batch, b)
        break
      }
    }
    if (batch === 1) break
  }
  const samples = []
  let total = 0
  while (samples.length < t.min_runs || (total < t.min_time && samples.length < t.max_runs)) {
    if (batch === 1) collect()
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) r = fn()
    const dt = (performance.now() - t0) / 1000 / batch
    r = undefined
    samples.push(dt)
    total += dt * batch
  }
  samples.sort((a, b) => a - b)
  const mid = samples.length >> 1
  const median = samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2
  return { best: samples[0], median, runs: samples.length, batch }
}

/** Several times in the unit that suits the first, e.g. "12.3 / 12.9 ms". */
export function fmtTimes(values) {
  const [unit, scale] = values[0] >= 1 ? ['s', 1] : values[0] >= 1e-4 ? ['ms', 1e3] : ['µs', 1e6]
  const digits = (x) => (x >= 100 ? 0 : x >= 10 ? 1 : 2)
  return `${values.map((v) => (v * scale).toFixed(digits(values[0] * scale))).join(' / ')} ${unit}`
}

/** MB/s with MB = 10^6 bytes. */
export function fmtRate(bytes, seconds) {
  const r = bytes / seconds / 1e6
  if (r >= 1e6) return `${(r / 1e6).toFixed(1)} TB/s`
  if (r >= 1e4) return `${(r / 1e3).toFixed(0)} GB/s`
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)} GB/s`
  return `${r.toFixed(0)} MB/s`
}

export function fmtBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(n % (1024 * 1024) ? 1 : 0)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

/** How many times faster `ours` is than `theirs`, from best times (>1: ours is faster). */
export function fmtRatio(theirs, ours) {
  if (theirs == null || ours == null || theirs.na || ours.na) return 'n/a'
  const r = theirs.best / ours.best
  return r >= 100 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
}

/** One measurement as "best / median ms", or n/a; `mark` points at a footnote. */
export function fmtCell(m) {
  if (m == null || m.na) return `n/a${m?.mark ?? ''}`
  return `${fmtTimes([m.best, m.median])}${m.mark ?? ''}`
}

/** The rate of the best time, or n/a. */
export function fmtCellRate(m, bytes) {
  return m == null || m.na ? 'n/a' : fmtRate(bytes, m.best)
}

/** A Markdown table; rows are arrays of strings; the first column is left-aligned. */
export function printTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join(' | ')} |`
  console.log(line(header))
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`)
  for (const r of rows) console.log(line(r))
}
