/**
 * A Dask cluster driven from Node. It starts a local scheduler and worker
 * with Dask's own commands:
 *
 *   /usr/bin/python3 -m distributed.cli.dask_scheduler --host 127.0.0.1 --port 0 --dashboard-address 127.0.0.1:0
 *   /usr/bin/python3 -m distributed.cli.dask_worker tcp://127.0.0.1:<port> --host 127.0.0.1 --nthreads 2 --no-nanny --dashboard-address 127.0.0.1:0
 *
 * then submits a small graph from Node: two arrays built on the worker, added, reduced; an array
 * scattered from Node and scaled there; a map of many calls taken as they complete; a task that
 * fails. Results come back as NDArrays over the frames they arrived in. The client learns the
 * scheduler's distributed version at connect and writes graphs in the form it reads (2022.12
 * to 2023.3, and 2024.11 on; see docs/dask.md).
 *
 * Run it alone with `node packages/examples/dist/dask-cluster.js`, or through `npm run demo`.
 * To use a cluster that is already running, pass its scheduler's address instead:
 * `node packages/examples/dist/dask-cluster.js tcp://scheduler-host:8786` (or set DASK_SCHEDULER).
 * Dask comes from Debian: apt-get install -y python3-distributed python3-numpy python3-lz4; set
 * PICKLEWIRE_DASK_PYTHON to run another interpreter's Dask (scripts/dask-trixie.sh makes one
 * with trixie's 2024.12.1).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { NDArray } from '@picklewire/codec'
import { DaskClient, DaskRemoteError } from '@picklewire/transport/dask'
import { canRun } from './needs.js'

/** Debian's python3-distributed loads with the system interpreter; override with PICKLEWIRE_DASK_PYTHON. */
function python(): string {
  return process.env.PICKLEWIRE_DASK_PYTHON ?? '/usr/bin/python3'
}


/** Starts a Dask command and resolves with the first match of pattern in its log (Dask logs to stderr). */
function start(args: string[], pattern: RegExp, what: string, ms = 30_000): Promise<{ proc: ChildProcess; match: RegExpMatchArray }> {
  const proc = spawn(python(), args, { cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] })
  const log: string[] = []
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`${what} did not start within ${ms} ms`), ms)
    const fail = (why: string): void => {
      clearTimeout(timer)
      proc.kill('SIGKILL')
      reject(new Error(`${why}\n${log.slice(-20).join('\n')}`))
    }
    proc.once('exit', (code) => fail(`${what} exited (${code})`))
    proc.once('error', (err) => fail(`${what}: ${err.message}`))
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      log.push(line)
      const match = line.match(pattern)
      if (match) {
        clearTimeout(timer)
        proc.removeAllListeners('exit')
        resolve({ proc, match })
      }
    })
  })
}

async function stop(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

function show(a: unknown): string {
  if (!(a instanceof NDArray)) return String(a)
  const items = a.flat().slice(0, 5).map(String).join(', ')
  return `NDArray ${a.dtype.str} shape (${a.shape.join(', ')}) [${items}${a.size > 5 ? ', ...' : ''}] (${a.copied ? 'copied' : 'a view over the received frame'})`
}

/** Submits the graph to the scheduler at address and prints what comes back. */
async function runGraph(address: string): Promise<void> {
  const client = await DaskClient.connect(address, { timeout: 10_000, rpcTimeout: 60_000 })
  try {
    console.log(`  connected to distributed ${client.daskVersion} on Python ${String(client.versions.packages.get('python'))} (graphs sent as '${client.graphForm}')`)
    const n = 1_000_000
    const a = client.submit('numpy.arange', [n, 0, -1, 'float64'])
    const b = client.submit('numpy.linspace', [0, 1, n])
    const sum = client.submit('numpy.add', [a, b])
    const total = client.submit('numpy.sum', [sum])
    const mean = client.submit('numpy.mean', [sum])
    const started = performance.now()
    const [arrays, t, m] = await client.gather([sum, total, mean], { timeout: 60_000 })
    console.log(`  numpy.add(arange, linspace) of ${n.toLocaleString('en')} elements, built and added on the worker:`)
    console.log(`    ${show(arrays)}`)
    console.log(`  numpy.sum -> ${String(t)}, numpy.mean -> ${String(m)} (gathered in ${(performance.now() - started).toFixed(0)} ms)`)

    const [signal] = await client.scatter([new Float32Array(8).map((_, i) => i * 0.5)], { timeout: 60_000 })
    const scaled = client.submit('numpy.multiply', [signal, 3])
    const norm = client.submit('numpy.linalg:norm', [scaled])
    console.log(`  a Float32Array scattered from Node, times 3 on the worker: ${show(await scaled.result({ timeout: 60_000 }))}`)
    console.log(`  numpy.linalg.norm of it: ${String(await norm.result({ timeout: 60_000 }))}`)

    const squares = client.map('builtins.pow', [[2, 3, 4, 5], [10, 10, 10, 10]])
    const seen: string[] = []
    for await (const f of client.asCompleted(squares)) seen.push(String(await f.result({ timeout: 60_000 })))
    console.log(`  map(pow, [2, 3, 4, 5], [10, ...]) in one update-graph, as completed: ${seen.join(', ')}`)

    const bad = client.submit('numpy.reshape', [signal, [3, 3]])
    try {
      await bad.wait({ timeout: 60_000 })
    } catch (err) {
      if (!(err instanceof DaskRemoteError)) throw err
      console.log(`  a failing task rejects with the Python error: ${err.exceptionType}: ${err.exceptionText}`)
      const last = err.traceback.trim().split('\n').pop()
      if (last) console.log(`    its traceback ends: ${last.trim()}`)
    }
    client.release(a, b, sum, total, mean, signal!, scaled, norm, bad, ...squares)
  } finally {
    await client.close()
  }
}

/**
 * Starts a local scheduler and worker (or uses the scheduler at DASK_SCHEDULER), runs the graph,
 * prints the results, and stops what it started. Prints what is missing and returns when the
 * interpreter cannot import distributed.
 */
export async function runDaskDemo(address = process.env.DASK_SCHEDULER): Promise<void> {
  console.log('Dask: a graph submitted from Node to a Dask cluster, results gathered as typed views')
  if (address) {
    console.log(`  using the scheduler at ${address}`)
    await runGraph(address)
    return
  }
  const need = { python: python(), variable: 'PICKLEWIRE_DASK_PYTHON', modules: ['distributed', 'numpy'] }
  if (!canRun('the Dask demo (a local cluster driven from Node)', need)) return
  let scheduler: ChildProcess | undefined
  let worker: ChildProcess | undefined
  const cleanup = (): void => {
    scheduler?.kill('SIGKILL')
    worker?.kill('SIGKILL')
  }
  process.once('exit', cleanup)
  try {
    const s = await start(
      ['-m', 'distributed.cli.dask_scheduler', '--host', '127.0.0.1', '--port', '0', '--dashboard-address', '127.0.0.1:0', '--no-show'],
      /Scheduler at:\s+(\S+)/, 'dask_scheduler',
    )
    scheduler = s.proc
    const schedulerAddress = s.match[1]!
    const w = await start(
      ['-m', 'distributed.cli.dask_worker', schedulerAddress, '--host', '127.0.0.1', '--nthreads', '2', '--no-nanny', '--dashboard-address', '127.0.0.1:0', '--memory-limit', '0'],
      /Registered to:/, 'dask_worker',
    )
    worker = w.proc
    console.log(`  started a scheduler at ${schedulerAddress} and one worker`)
    await runGraph(schedulerAddress)
  } finally {
    await stop(worker)
    await stop(scheduler)
    process.off('exit', cleanup)
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runDaskDemo(process.argv[2] ?? process.env.DASK_SCHEDULER)
}
