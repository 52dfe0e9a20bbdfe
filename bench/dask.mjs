// The Dask benchmark (issue 8): gathering a 64 MiB float64 numpy array from a Dask cluster into
// Node with picklewire's DaskClient, against the stock Python client gathering the same key in
// the same run. One scheduler and one worker on loopback, started here with Dask's own commands
// (/usr/bin/python3 -m distributed.cli.dask_scheduler / dask_worker) and always stopped at the
// end. The arrays are built on the worker by tasks Node submits: numpy.random.random
// (incompressible: sent as it is) and numpy.zeros (the worker compresses it with lz4).
//
// The Python side is one /usr/bin/python3 process: distributed.Client(addr), a Future on each
// key, one warm-up gather, then N gathers timed with time.perf_counter; it prints its times and
// a few elements of what it gathered. Node then does the same (warm-up, N gathers, a full GC
// before each when run with --expose-gc), and checks its NDArray (dtype, length, those elements)
// so that what is timed is a correct gather. Both gather through the scheduler (Dask's default,
// direct=False). The bar of issue 8: Node within 1.2x of the Python client.

import { spawn, spawnSync } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { DaskClient } from '@picklewire/transport'
import { fmtBytes, fmtRate, fmtTimes, printTable } from './measure.mjs'

const PYTHON = process.env.PICKLEWIRE_DASK_PYTHON ?? '/usr/bin/python3'
const MiB = 2 ** 20
const BAR = 1.2

function plan({ quick }) {
  return quick ? { bytes: 16 * MiB, runs: 3 } : { bytes: 64 * MiB, runs: 8 }
}

/** Why the suite cannot run here, or null. */
function daskMissing() {
  const r = spawnSync(PYTHON, ['-c', 'import distributed, numpy'], { encoding: 'utf8', cwd: '/', timeout: 30_000 })
  if (r.error) return `${PYTHON} cannot be started (${r.error.message})`
  if (r.status !== 0) return `${PYTHON} cannot import distributed and numpy: ${r.stderr.trim().split('\n').pop()}`
  return null
}

/** Starts a Dask command; resolves with the first match of pattern in its log (stderr). */
function startDask(args, pattern, what, ms = 30_000) {
  // cwd '/': distributed must not see a directory named like one of its modules.
  const proc = spawn(PYTHON, args, { cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] })
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

/** The stock Python client: gathers each key (after a warm-up) `runs` times and prints JSON. */
const PY_GATHER = `
import json, sys, time
import numpy
from distributed import Client, Future
addr, runs, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
out = {}
with Client(addr, timeout=30) as client:
    for key in keys:
        fut = Future(key, client)
        fut.result(timeout=60)
        a = client.gather(fut)  # warm-up
        n = len(a)
        times = []
        for _ in range(runs):
            a = None
            t0 = time.perf_counter()
            a = client.gather(fut)
            times.append(time.perf_counter() - t0)
        idx = [0, 1, n // 2, n - 1]
        out[key] = {"times": times, "dtype": a.dtype.str, "shape": list(a.shape), "idx": idx,
                    "values": [float(a[i]) for i in idx]}
        del fut
print(json.dumps(out), flush=True)
`

/** Runs PY_GATHER with a bound; resolves with its JSON. */
function pythonGather(address, runs, keys, ms = 180_000) {
  return new Promise((resolve, reject) => {
    const proc = spawn(PYTHON, ['-c', PY_GATHER, address, String(runs), ...keys], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    proc.stdout.on('data', (d) => (out += d))
    proc.stderr.on('data', (d) => (err = (err + d).slice(-4000)))
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms)
    proc.once('error', (e) => (clearTimeout(timer), reject(e)))
    proc.once('exit', (code, signal) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`the Python client exited (${code ?? signal}${signal === 'SIGKILL' ? `, after ${ms} ms` : ''}):\n${err}`))
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()))
      } catch (e) {
        reject(new Error(`the Python client printed no JSON: ${e.message}\n${out}\n${err}`))
      }
    })
  })
}

function bestMedian(times) {
  const s = [...times].sort((a, b) => a - b)
  const mid = s.length >> 1
  return { best: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, runs: s.length }
}

/** Checks the NDArray Node gathered against what the Python client reported for that key. */
function check(a, py, what) {
  const fail = (why) => {
    throw new Error(`dask: ${what}: the Node client gathered a wrong value: ${why}`)
  }
  if (a == null || typeof a !== 'object' || !a.data) fail(`not an NDArray (${Object.prototype.toString.call(a)})`)
  if (a.dtype?.str !== py.dtype) fail(`dtype ${a.dtype?.str}, Python has ${py.dtype}`)
  if (String(a.shape) !== String(py.shape)) fail(`shape (${a.shape}), Python has (${py.shape})`)
  if (a.data.length !== py.shape[0]) fail(`length ${a.data.length}, Python has ${py.shape[0]}`)
  py.idx.forEach((i, k) => {
    if (a.data[i] !== py.values[k]) fail(`element ${i} is ${a.data[i]}, Python has ${py.values[k]}`)
  })
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
  let scheduler
  let worker
  let client
  const cleanup = () => {
    scheduler?.kill('SIGKILL')
    worker?.kill('SIGKILL')
  }
  process.once('exit', cleanup)
  try {
    log('  starting a scheduler and a worker')
    const s = await startDask(
      ['-m', 'distributed.cli.dask_scheduler', '--host', '127.0.0.1', '--port', '0', '--dashboard-address', '127.0.0.1:0', '--no-show'],
      /Scheduler at:\s+(\S+)/, 'dask_scheduler',
    )
    scheduler = s.proc
    const address = s.match[1]
    const w = await startDask(
      ['-m', 'distributed.cli.dask_worker', address, '--host', '127.0.0.1', '--nthreads', '1', '--no-nanny', '--dashboard-address', '127.0.0.1:0', '--memory-limit', '0'],
      /Registered to:/, 'dask_worker',
    )
    worker = w.proc
    const versions = spawnSync(PYTHON, ['-c', 'import sys, distributed, numpy\ntry:\n import lz4; l = lz4.__version__\nexcept ImportError: l = "none"\nprint(sys.version.split()[0], distributed.__version__, numpy.__version__, l)'],
      { encoding: 'utf8', cwd: '/', timeout: 30_000 }).stdout.trim().split(' ')

    client = await DaskClient.connect(address, { timeout: 10_000, rpcTimeout: 60_000 })
    const futures = arrays.map((a) => client.submit(a.fn, a.args, { key: a.key }))
    await Promise.all(futures.map((f) => f.wait({ timeout: 60_000 })))

    log(`  Python client: ${runs} gathers of each array`)
    const py = await pythonGather(address, runs, arrays.map((a) => a.key))

    const rows = []
    for (const [i, a] of arrays.entries()) {
      log(`  Node client: ${a.key}`)
      const f = futures[i]
      let [v] = await client.gather([f], { timeout: 60_000 }) // warm-up
      check(v, py[a.key], a.key)
      v = undefined
      const times = []
      for (let r = 0; r < runs; r++) {
        globalThis.gc?.()
        const t0 = performance.now()
        ;[v] = await client.gather([f], { timeout: 60_000 })
        times.push((performance.now() - t0) / 1000)
        check(v, py[a.key], a.key) // outside the timed region
        v = undefined
      }
      rows.push({ name: a.name, py: bestMedian(py[a.key].times), node: bestMedian(times) })
    }
    client.release(...futures)

    console.log(`Python ${versions[0]}, distributed ${versions[1]}, numpy ${versions[2]}, lz4 ${versions[3]}; one scheduler and one worker (1 thread) on loopback, tcp; ` +
      `both clients gather through the scheduler. N = ${runs} gathers per client and array after one warm-up; ` +
      `Python timed with time.perf_counter in its own process, Node with performance.now${globalThis.gc ? ' after a full GC' : ''}; ` +
      `Node's values checked (dtype, length, 4 elements) against what Python gathered.\n`)
    console.log(`### ${fmtBytes(bytes)} float64 array gathered from the worker (via the scheduler)\n`)
    const ratio = (x) => `${x.toFixed(2)}x`
    printTable(
      ['array', 'Python client (best / median)', 'Node client (best / median)', 'Node rate', 'Node / Python (best)', 'Node / Python (median)', `bar (<= ${BAR}x)`],
      rows.map((r) => {
        const rb = r.node.best / r.py.best
        const rm = r.node.median / r.py.median
        return [r.name, fmtTimes([r.py.best, r.py.median]), fmtTimes([r.node.best, r.node.median]), fmtRate(bytes, r.node.best),
          ratio(rb), ratio(rm), rb <= BAR && rm <= BAR ? 'met' : rb <= BAR ? 'met on best only' : 'not met']
      }),
    )
  } finally {
    try {
      await client?.close()
    } catch {}
    await stop(worker)
    await stop(scheduler)
    process.off('exit', cleanup)
  }
}
