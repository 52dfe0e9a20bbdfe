#!/usr/bin/env node
// picklewire's benchmarks: `npm run bench -- [load|dump|numpy|ws|browser|shm|dask|imports|tables] [--quick]`.
//
// Prints tables of times and ratios against named baselines measured in this one run:
// CPython's C pickle (one python3 process, bench/cpython.py, asked to time each workload
// right before JavaScript is timed on it, with numpy for the numpy suite), pickleparser, msgpackr
// and, for numpy arrays, one memcpy of the same bytes; for WebSocket messages, raw ws and raw
// websockets sending the same bytes (bench/ws.mjs); for worker threads, structured clone,
// transfer lists, piscina and a bare SharedArrayBuffer hand-off (bench/shm.mjs); for Dask, the
// stock Python client gathering the same key from the same local cluster (bench/dask.mjs).
// Progress goes to stderr, results to stdout. Run with --expose-gc (npm run bench does).

import { readFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CPython } from './cpython.mjs'
import { dumpsBuilt, runDump } from './dump.mjs'
import { runLoad } from './load.mjs'
import { hasGc, timingPolicy } from './measure.mjs'
import { numpyWorkloads, runNumpy } from './numpy.mjs'
import { workloads } from './workloads.mjs'
import { runWs } from './ws.mjs'
import { runBrowser } from './browser.mjs'
import { runShm } from './shm.mjs'
import { runDask } from './dask.mjs'
import { runImports } from './imports.mjs'
import { runTables } from './tables.mjs'

const here = dirname(fileURLToPath(import.meta.url))

const USAGE = `usage: node --expose-gc bench/run.mjs [load] [dump] [numpy] [ws] [browser] [shm] [dask] [imports] [tables] [--quick] [--only=NAME,...]
  load, dump     which benchmarks to run (default: every suite; dump needs the pickler built)
  numpy          numpy arrays (needs numpy in the CPython): out of band, in band, many small ones
  ws             picklewire over WebSocket against raw ws and raw websockets (Python rows need websockets)
  browser        Python -> a web page (headless chromium) against Python -> Node: 64 MiB arrays and 1 KiB
                 messages (skipped without chromium, or python3 with numpy and websockets)
  shm            worker threads: picklewire channels and ArenaPool against structured clone, transfer,
                 piscina and a bare SharedArrayBuffer hand-off
  dask           a 64 MiB numpy array gathered from a local Dask scheduler + worker: Node's DaskClient
                 against the stock Python client (skipped when the Dask Python cannot import distributed)
  imports        import time of each package entry point in fresh processes, against ws, piscina and
                 msgpackr imported alone
  tables         a 1,000,000-row pandas DataFrame out of band into columns (loads + readDataFrame) against
                 pandas' pickle.loads (needs the pandas 3 environment, PICKLEWIRE_TABLES_PYTHON)
  --quick        one tenth of the sizes and short timings: a smoke run of a few seconds
  --only=NAMES   only these workloads: ints, floats, dicts, strings, bytes, oob (all sizes) or oob16 ...,
                 f32 or f32list (numpy), or a numpy workload's name (np-oob256, np-inband256, np-list-oob, ...)
environment: PICKLEWIRE_PYTHON  the CPython to compare with (default python3)
             PICKLEWIRE_DASK_PYTHON  the Python with distributed for dask (default /usr/bin/python3)
             PICKLEWIRE_SHM_VALUES=python  shm: the picklewire ends load Python-typed values (default: JavaScript values)`

function parseArgs(argv) {
  const opts = { load: false, dump: false, numpy: false, ws: false, browser: false, shm: false, dask: false, imports: false, tables: false, quick: false, only: null }
  for (const a of argv) {
    if (a === '--') continue
    else if (a === 'load' || a === '--load') opts.load = true
    else if (a === 'dump' || a === '--dump') opts.dump = true
    else if (a === 'numpy' || a === '--numpy') opts.numpy = true
    else if (a === 'ws' || a === '--ws') opts.ws = true
    else if (a === 'browser' || a === '--browser') opts.browser = true
    else if (a === 'shm' || a === '--shm') opts.shm = true
    else if (a === 'dask' || a === '--dask') opts.dask = true
    else if (a === 'imports' || a === '--imports') opts.imports = true
    else if (a === 'tables' || a === '--tables') opts.tables = true
    else if (a === '--quick') opts.quick = true
    else if (a.startsWith('--only=')) opts.only = a.slice('--only='.length).split(',').filter(Boolean)
    else if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0) }
    else { console.error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`); process.exit(2) }
  }
  if (!opts.load && !opts.dump && !opts.numpy && !opts.ws && !opts.browser && !opts.shm && !opts.dask && !opts.imports && !opts.tables) {
    opts.load = opts.dump = opts.numpy = opts.ws = opts.browser = opts.shm = opts.dask = opts.imports = opts.tables = true
  }
  return opts
}

function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(here, '..', 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return '?'
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  let list = workloads(opts)
  let npList = numpyWorkloads(opts)
  if (opts.only) {
    const known = new Set([...list, ...npList].flatMap((w) => [w.name, w.kind]))
    for (const n of opts.only) if (!known.has(n)) { console.error(`unknown workload ${n}\n${USAGE}`); process.exit(2) }
    const picked = (w) => opts.only.includes(w.name) || opts.only.includes(w.kind)
    list = list.filter(picked)
    npList = npList.filter(picked)
  }
  const timing = timingPolicy(opts)
  const log = (msg) => process.stderr.write(`${msg}\n`)

  let dump = opts.dump
  if (dump && !dumpsBuilt()) {
    dump = false
    console.log('dumps not built yet: the dump benchmark is skipped (@picklewire/codec does not export dumps).\n')
  }
  if (!opts.load && !dump && !opts.numpy && !opts.ws && !opts.browser && !opts.shm && !opts.dask && !opts.imports && !opts.tables) return

  const loadAtStart = loadavg()
  if (!hasGc) log('warning: run with node --expose-gc so that each sample starts from a collected heap')
  const dir = join(here, '.fixtures', opts.quick ? 'quick' : 'full')
  log(`fixtures: ${dir}`)
  const py = new CPython()
  const cpython = await py.info()

  const cpu = cpus()
  console.log(`machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${process.platform}-${process.arch}`)
  console.log(`node ${process.version} (V8 ${process.versions.v8}), ${cpython.implementation} ${cpython.python}` +
    `${cpython.numpy ? ` with numpy ${cpython.numpy}` : ''}, pickleparser ${packageVersion('pickleparser')}, msgpackr ${packageVersion('msgpackr')}`)
  console.log(`mode: ${opts.quick ? 'quick (smoke run: small sizes, few samples)' : 'full'}; ` +
    `warm-up ${timing.warmup}+ calls and ${timing.warmup_time}+ s, then at least ${timing.min_runs} samples and up to ${timing.max_runs} within ${timing.min_time} s` +
    `${hasGc ? ', full GC before each sample of one call' : ''}`)

  try {
    if (opts.load && list.length) {
      console.log('\n## load: bytes pickled by CPython at protocol 5 -> value\n')
      log('load:')
      await runLoad({ list, py, dir, timing, log })
    }
    if (dump && list.length) {
      console.log('\n## dump: value -> pickle protocol 5 (msgpackr: msgpack)\n')
      log('dump:')
      await runDump({ list, py, dir, timing, log })
    }
    if (opts.numpy && npList.length) {
      console.log('\n## numpy: arrays pickled by CPython + numpy -> NDArray (load), NDArray -> pickle (dump)\n')
      if (!cpython.numpy) console.log(`skipped: ${process.env.PICKLEWIRE_PYTHON ?? 'python3'} has no numpy`)
      else {
        log('numpy:')
        await runNumpy({ list: npList, py, numpyVersion: cpython.numpy, dir, timing, log })
      }
    }
    if (opts.ws) {
      console.log('\n## ws: picklewire messages over WebSocket (loopback) against raw ws / websockets sending the same bytes\n')
      log('ws:')
      await runWs({ quick: opts.quick, log })
    }
    if (opts.browser) {
      console.log('\n## browser: Python -> a web page against Python -> Node (picklewire over WebSocket, loopback)\n')
      log('browser:')
      await runBrowser({ quick: opts.quick, log })
    }
    if (opts.shm) {
      console.log('\n## shm: worker threads, picklewire over shared memory against structured clone, transfer, piscina\n')
      log('shm:')
      await runShm({ quick: opts.quick, timing, log })
    }
    if (opts.dask) {
      console.log('\n## dask: a numpy array gathered from a local Dask cluster, Node client against the stock Python client\n')
      log('dask:')
      await runDask({ quick: opts.quick, log })
    }
    if (opts.imports) {
      console.log('\n## imports: each entry point imported alone in a fresh Node process\n')
      log('imports:')
      await runImports({ quick: opts.quick, log })
    }
    if (opts.tables) {
      console.log('\n## tables: a pandas DataFrame pickled out of band -> columns (readDataFrame), against pandas\' pickle.loads\n')
      log('tables:')
      await runTables({ quick: opts.quick, timing, log })
    }
  } finally {
    py.close()
  }
  const fmtLoad = (l) => l.map((x) => x.toFixed(2)).join(' ')
  console.log(`\nload average (1, 5, 15 min) at start: ${fmtLoad(loadAtStart)}; at end: ${fmtLoad(loadavg())} ` +
    `(on ${cpu.length} cores: anything else running shows up in the medians)`)
}

await main()
