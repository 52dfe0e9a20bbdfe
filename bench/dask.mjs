// The Dask benchmark: gathering a 64 MiB float64 numpy array from a Dask cluster into
// Node with picklewire's DaskClient, against the stock Python client gathering the same key in
// the same run. One scheduler and one worker on loopback, started here with Dask's own commands
// (PICKLEWIRE_DASK_PYTHON, default /usr/bin/python3, -m distributed.cli.dask_scheduler /
// dask_worker) and always stopped at the end. The worker listens on 127.0.0.2 and both use
// distributed.comm.compression lz4, so that the worker compresses toward the scheduler on every
// version (from 2023.5 Dask never compresses between peers of one address, and its default
// compression is off). The arrays are built on the worker by tasks Node submits:
// numpy.random.random (incompressible: sent as it is) and numpy.zeros (lz4-compressed).
//
// Four gatherer processes take turns, one gather each per round, so that whatever else the
// machine is doing falls on all of them alike: the stock Python client (distributed.Client,
// Future(key), client.gather, timed with time.perf_counter); Node's DaskClient (this file run
// with --gatherer, a full GC before each gather, timed with performance.now); and the same Node
// process started with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so that glibc's malloc asks for
// transparent huge pages (madvise) for the big blocks it maps, as numpy does for its arrays: on
// a kernel whose THP mode is "madvise" this is what separates the two Node rows (see
// docs/dask.md, "Gathering 64 MiB"). A fourth, Node's DaskClient with warmReceive: true, reads a
// big message into memory whose pages were written while the process was idle (here: during
// the other clients' turns; see packages/transport/src/dask/warm-memory.ts); its first gather of
// a size is cold, and is the warm-up. No other process gets GLIBC_TUNABLES. Every Node gather is
// checked (dtype, shape, 4 elements) against what the Python client gathered. Both clients
// gather through the scheduler (Dask's default, direct=False). The bar: Node within 1.2x of the
// Python client.

import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { DaskClient } from '@picklewire/transport/dask'
import { fmtBytes, fmtRate, fmtTimes, printTable } from './measure.mjs'

const PYTHON = process.env.PICKLEWIRE_DASK_PYTHON ?? '/usr/bin/python3'
const MiB = 2 ** 20
const BAR = 1.2

function plan({ quick }) {
  return quick ? { bytes: 16 * MiB, runs: 3 } : { bytes: 64 * MiB, runs: 12 }
}

/** Why the suite cannot run here, or null. */
function daskMissing() {
  const r = spawnSync(PYTHON, ['-c', 'import distributed, numpy'], { encoding: 'utf8', cwd: '/', timeout: 30_000 })
  if (r.error) return `${PYTHON} cannot be started (${r.error.message})`
  if (r.status !== 0) return `${PYTHON} cannot import distributed and numpy: ${r.stderr.trim().split('\n').pop()}`
  return null
}

/** Starts a Dask command; resolves with the first match of pattern in its log (stderr). */
function startDask(args, pattern, what, env, ms = 30_000) {
  // cwd '/': distributed must not see a directory named like one of its modules.
  const proc = spawn(PYTHON, args, { cwd: '/', env, stdio: ['ignore', 'ignore', 'pipe'] })
  const log = []
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`${what} did not start within ${ms} ms`), ms)
    const fail = (why) => {
      clearTimeout(timer)
      proc.kill('SIGKILL')
      reject(new Error(`${why}\n${log.slice(-20).join('\n')}`))
    }
    proc.once('exit', (code) => fail(`${what} exited (${code})`))
    proc.once('error', (err) => fail(`${what}: ${err.message}`))
    createInterface({ input: proc.stderr }).on('line', (line) => {
      log.push(line)
      if (log.length > 200) log.shift()
      const match = line.match(pattern)
      if (match) {
        clearTimeout(timer)
        proc.removeAllListeners('exit')
        resolve({ proc, match })
      }
    })
  })
}

/** SIGTERM, then SIGKILL after 3 s; resolves when the process has exited. */
async function stop(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise((r) => proc.once('exit', () => r()))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

/** The stock Python client, one gather per request line (a key) on stdin; one JSON line per gather. */
const PY_GATHERER = `
import json, sys, time
import numpy
from distributed import Client, Future
addr, keys = sys.argv[1], sys.argv[2:]
with Client(addr, timeout=30) as client:
    futures = {key: Future(key, client) for key in keys}
    # Future(key, client) told the scheduler it wants the key up to 2024.x; later releases wait for this.
    client._send_to_scheduler({"op": "client-desires-keys", "keys": list(keys)})
    for f in futures.values():
        f.result(timeout=60)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        fut = futures[line.strip()]
        a = None
        t0 = time.perf_counter()
        a = client.gather(fut)
        seconds = time.perf_counter() - t0
        n = len(a)
        idx = [0, 1, n // 2, n - 1]
        print(json.dumps({"seconds": seconds, "dtype": a.dtype.str, "shape": list(a.shape), "idx": idx,
                          "values": [float(a[i]) for i in idx]}), flush=True)
`

/** KiB of this process's anonymous memory in transparent huge pages (Linux), or null. */
function anonHugeKiB() {
  try {
    const m = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

/**
 * The Node client as a gatherer process (`node --expose-gc bench/dask.mjs --gatherer <address>
 * <arrays JSON>`): submits the arrays' tasks under their keys (the scheduler has them in memory
 * already and computes nothing), then gathers one key per request line, a full GC before each.
 */
async function nodeGatherer(address, arrays, warm) {
  const client = await DaskClient.connect(address, { timeout: 10_000, rpcTimeout: 60_000, warmReceive: warm })
  const futures = new Map(arrays.map((a) => [a.key, client.submit(a.fn, a.args, { key: a.key })]))
  await Promise.all([...futures.values()].map((f) => f.wait({ timeout: 60_000 })))
  console.log(JSON.stringify({ ready: true }))
  for await (const line of createInterface({ input: process.stdin })) {
    const f = futures.get(line.trim())
    globalThis.gc?.()
    const t0 = performance.now()
    const [a] = await client.gather([f], { timeout: 60_000 })
    const seconds = (performance.now() - t0) / 1000
    const n = a.data.length
    const idx = [0, 1, n >> 1, n - 1]
    console.log(JSON.stringify({
      seconds, dtype: a.dtype.str, shape: a.shape, length: n, idx, values: idx.map((i) => a.data[i]),
      // Read while the array is alive: whether its memory came in huge pages.
      anonHugeKiB: anonHugeKiB(),
    }))
  }
  await client.close()
}

/** A gatherer process: one gather per request, answered with one JSON line; every wait bounded. */
class Gatherer {
  #lines = []
  #waiter = null
  #err = ''

  constructor(name, cmd, args, env) {
    this.name = name
    this.proc = spawn(cmd, args, { cwd: '/', env, stdio: ['pipe', 'pipe', 'pipe'] })
    this.proc.stdin.on('error', () => {})
    this.proc.once('error', (e) => (this.#err += `\n${e.message}`))
    this.proc.stderr.on('data', (d) => (this.#err = (this.#err + d).slice(-4000)))
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      if (this.#waiter) this.#waiter.resolve(line)
      else this.#lines.push(line)
    })
    this.exited = new Promise((r) => this.proc.once('exit', (code, signal) => {
      this.#waiter?.reject(new Error(`${name} exited (${code ?? signal}):\n${this.#err}`))
      r()
    }))
  }

  #next(ms, what) {
    if (this.#lines.length) return Promise.resolve(this.#lines.shift())
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.reject(new Error(`${this.name} exited:\n${this.#err}`))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${this.name}: no answer to ${what} within ${ms} ms\n${this.#err}`)), ms)
      const done = (f) => (x) => {
        clearTimeout(timer)
        this.#waiter = null
        f(x)
      }
      const fail = done(reject)
      this.#waiter = { resolve: done(resolve), reject: fail }
    })
  }

  async #json(ms, what) {
    const line = await this.#next(ms, what)
    try {
      return JSON.parse(line)
    } catch {
      throw new Error(`${this.name} printed ${JSON.stringify(line.slice(0, 200))} instead of JSON`)
    }
  }

  ready(ms = 90_000) {
    return this.#json(ms, 'starting')
  }

  gather(key, ms = 90_000) {
    this.proc.stdin.write(`${key}\n`)
    return this.#json(ms, `a gather of ${key}`)
  }

  /** Ends its stdin (it closes its client and exits); SIGKILL after 5 s. */
  async close() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    this.proc.stdin.end()
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000)
    // Bounded even if the process never started (no 'exit' then).
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 6000).unref())])
    clearTimeout(timer)
  }
}

function bestMedian(times) {
  const s = [...times].sort((a, b) => a - b)
  const mid = s.length >> 1
  return { best: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, runs: s.length }
}

/** Checks what a Node gatherer reported against what the Python client gathered for that key. */
function check(got, py, what) {
  const fail = (why) => {
    throw new Error(`dask: ${what}: the Node client gathered a wrong value: ${why}`)
  }
  if (got.dtype !== py.dtype) fail(`dtype ${got.dtype}, Python has ${py.dtype}`)
  if (String(got.shape) !== String(py.shape)) fail(`shape (${got.shape}), Python has (${py.shape})`)
  if (got.length !== py.shape[0]) fail(`length ${got.length}, Python has ${py.shape[0]}`)
  if (String(got.idx) !== String(py.idx)) fail(`elements ${got.idx} checked, Python reported ${py.idx}`)
  py.idx.forEach((i, k) => {
    if (got.values[k] !== py.values[k]) fail(`element ${i} is ${got.values[k]}, Python has ${py.values[k]}`)
  })
}

/** The glibc tunable that makes malloc ask for transparent huge pages (madvise) on the big blocks it maps (glibc 2.35+). */
const HUGE_TUNABLE = 'glibc.malloc.hugetlb=1'

function thpMode() {
  try {
    return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

/** Runs the suite; the table goes to stdout. */
export async function runDask({ quick, log }) {
  const missing = daskMissing()
  if (missing) {
    console.log(`skipped: ${missing}`)
    return
  }
  const { bytes, runs } = plan({ quick })
  const n = bytes / 8
  const arrays = [
    { name: `numpy.random.random(${n}) (incompressible, sent as it is)`, fn: 'numpy.random.random', args: [n], key: 'bench-dask-random' },
    { name: `numpy.zeros(${n}) (lz4-compressed by the worker)`, fn: 'numpy.zeros', args: [n], key: 'bench-dask-zeros' },
  ]
  // Every process runs without GLIBC_TUNABLES but the one Node gatherer that is given it.
  const stock = { ...process.env }
  delete stock.GLIBC_TUNABLES
  const daskEnv = { ...stock, DASK_DISTRIBUTED__COMM__COMPRESSION: 'lz4' }
  let scheduler
  let worker
  let client
  const gatherers = []
  const cleanup = () => {
    for (const g of gatherers) g.proc.kill('SIGKILL')
    scheduler?.kill('SIGKILL')
    worker?.kill('SIGKILL')
  }
  process.once('exit', cleanup)
  try {
    log('  starting a scheduler and a worker')
    const s = await startDask(
      ['-m', 'distributed.cli.dask_scheduler', '--host', '127.0.0.1', '--port', '0', '--dashboard-address', '127.0.0.1:0', '--no-show'],
      /Scheduler at:\s+(\S+)/, 'dask_scheduler', daskEnv,
    )
    scheduler = s.proc
    const address = s.match[1]
    const w = await startDask(
      ['-m', 'distributed.cli.dask_worker', address, '--host', '127.0.0.2', '--nthreads', '1', '--no-nanny', '--dashboard-address', '127.0.0.1:0', '--memory-limit', '0'],
      /Registered to:/, 'dask_worker', daskEnv,
    )
    worker = w.proc
    const versions = spawnSync(PYTHON, ['-c', 'import sys, distributed, numpy\ntry:\n import lz4; l = lz4.__version__\nexcept ImportError: l = "none"\nprint(sys.version.split()[0], distributed.__version__, numpy.__version__, l)'],
      { encoding: 'utf8', cwd: '/', timeout: 30_000 }).stdout.trim().split(' ')

    // The arrays, built once on the worker; the gatherers ask for the same keys.
    client = await DaskClient.connect(address, { timeout: 10_000, rpcTimeout: 60_000 })
    const futures = arrays.map((a) => client.submit(a.fn, a.args, { key: a.key }))
    await Promise.all(futures.map((f) => f.wait({ timeout: 60_000 })))

    log('  starting the gatherers: the Python client, the Node client, the Node client with huge pages, the Node client with warm receive memory')
    const self = fileURLToPath(import.meta.url)
    const spec = JSON.stringify(arrays.map(({ fn, args, key }) => ({ fn, args, key })))
    const python = new Gatherer('the Python client', PYTHON, ['-c', PY_GATHERER, address, ...arrays.map((a) => a.key)], stock)
    const node = new Gatherer('the Node client', process.execPath, ['--expose-gc', self, '--gatherer', address, spec], stock)
    const huge = new Gatherer(`the Node client (${HUGE_TUNABLE})`, process.execPath, ['--expose-gc', self, '--gatherer', address, spec],
      { ...stock, GLIBC_TUNABLES: HUGE_TUNABLE })
    const warm = new Gatherer('the Node client (warmReceive)', process.execPath, ['--expose-gc', self, '--gatherer', address, spec, '--warm'], stock)
    gatherers.push(python, node, huge, warm)
    await Promise.all(gatherers.map((g) => g.ready()))

    const rows = []
    const hugeKiB = {}
    for (const a of arrays) {
      log(`  ${a.key}: one warm-up each, then ${runs} rounds of one gather per client, in turns`)
      const ref = await python.gather(a.key)
      for (const g of [node, huge, warm]) check(await g.gather(a.key), ref, `${a.key} (${g.name})`)
      const times = new Map(gatherers.map((g) => [g, []]))
      for (let r = 0; r < runs; r++) {
        // Each client goes first in a third of the rounds.
        for (let k = 0; k < gatherers.length; k++) {
          const g = gatherers[(r + k) % gatherers.length]
          const got = await g.gather(a.key)
          if (g === python) {
            if (String(got.values) !== String(ref.values)) throw new Error(`dask: ${a.key}: the Python client's value changed`)
          } else check(got, ref, `${a.key} (${g.name})`)
          if (g === huge) hugeKiB[a.key] = Math.max(hugeKiB[a.key] ?? 0, got.anonHugeKiB ?? 0)
          times.get(g).push(got.seconds)
        }
      }
      const py = bestMedian(times.get(python))
      rows.push({ array: a.name, client: 'Python (distributed.Client)', m: py, py })
      rows.push({ array: '', client: 'Node (DaskClient)', m: bestMedian(times.get(node)), py })
      rows.push({ array: '', client: `Node, GLIBC_TUNABLES=${HUGE_TUNABLE}`, m: bestMedian(times.get(huge)), py })
      rows.push({ array: '', client: 'Node, warmReceive: true', m: bestMedian(times.get(warm)), py })
    }
    client.release(...futures)

    console.log(`Python ${versions[0]}, distributed ${versions[1]}, numpy ${versions[2]}, lz4 ${versions[3]}; one scheduler (127.0.0.1) and one worker (127.0.0.2, 1 thread) on loopback, tcp, distributed.comm.compression lz4; ` +
      `both clients gather through the scheduler. Four gatherer processes (the stock Python client; Node's DaskClient; the same Node process with ` +
      `GLIBC_TUNABLES=${HUGE_TUNABLE}, so that glibc's malloc asks for transparent huge pages as numpy does for its arrays; Node's DaskClient with ` +
      `warmReceive: true, which reads a big message into memory whose pages were written while the process was idle, here during the other clients' turns) take turns: ` +
      `one warm-up each, then N = ${runs} rounds of one gather per client, the first client rotating. ` +
      `Python timed with time.perf_counter, Node with performance.now after a full GC; every Node value checked (dtype, shape, 4 elements) against Python's. ` +
      `Transparent huge pages: ${thpMode()}; the Node process with the tunable had ` +
      `${Object.values(hugeKiB).map((k) => `${(k / 1024).toFixed(0)} MiB`).join(' / ')} of anonymous memory in huge pages while holding the array.\n`)
    console.log(`### ${fmtBytes(bytes)} float64 array gathered from the worker (via the scheduler)\n`)
    const ratio = (x) => `${x.toFixed(2)}x`
    printTable(
      ['array', 'client', 'best / median', 'rate (best)', '/ Python (best)', '/ Python (median)', `bar (<= ${BAR}x)`],
      rows.map((r) => {
        if (r.m === r.py) return [r.array, r.client, fmtTimes([r.m.best, r.m.median]), fmtRate(bytes, r.m.best), '', '', '']
        const rb = r.m.best / r.py.best
        const rm = r.m.median / r.py.median
        return [r.array, r.client, fmtTimes([r.m.best, r.m.median]), fmtRate(bytes, r.m.best),
          ratio(rb), ratio(rm), rb <= BAR && rm <= BAR ? 'met' : rb <= BAR ? 'met on best only' : 'not met']
      }),
    )
  } finally {
    await Promise.all(gatherers.map((g) => g.close()))
    try {
      await client?.close()
    } catch {}
    await stop(worker)
    await stop(scheduler)
    process.off('exit', cleanup)
  }
}

if (process.argv[2] === '--gatherer' && process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  await nodeGatherer(process.argv[3], JSON.parse(process.argv[4]), process.argv[5] === '--warm')
}
