/**
 * A job pipeline over shared memory (issue 6's example), as a classic worker pool is built
 * with channels: the main thread writes jobs into one pipe, several worker threads read them
 * from it (each job goes to exactly one worker), and write their results into another pipe
 * that the main thread reads.
 *
 * A job is a block of audio-like samples (a Float32Array) that the producer allocates in the
 * jobs pipe's arena and fills in place, so nothing is copied: the worker gets a view of the
 * same memory, measures the signal (mean, RMS, peak), removes its DC offset in place and
 * sends back only the small result. Run it alone with
 * `node packages/examples/dist/workers-pipeline.js [jobs] [MiB per job] [workers]`, or
 * through `npm run demo`.
 */
import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { createPipe, openPipe, reclaimOnExit, type PipeInit } from '@picklewire/transport/shm'

export interface PipelineOptions {
  /** Jobs to run. Default 64. */
  jobs?: number
  /** Float32 samples per job. Default 1 Mi (4 MiB). */
  samples?: number
  /** Worker threads. Default: the cores there are, at least 2. */
  workers?: number
}

export interface PipelineReport {
  jobs: number
  workers: number
  bytes: number
  seconds: number
  /** Jobs done by each worker, by its thread id. */
  perWorker: Map<number, number>
  /** Bytes copied by the producer (0: every job was filled in place). */
  bytesCopied: number
  /** The largest absolute DC offset error after the workers removed it (should be ~0). */
  worstResidual: number
}

/** What a worker is started with. */
/** A job: its samples are a view of the jobs arena, where the producer filled them. */
export interface Job {
  id: number
  samples: Float32Array
}

/** What a worker answers for a job. */
export interface JobResult {
  id: number
  worker: number
  mean: number
  rms: number
  peak: number
  residual: number
}

export interface PipelineWorkerData {
  jobs: PipeInit
  results: PipeInit
}

/** Runs the pipeline once and reports what it measured. */
export async function runPipeline(options: PipelineOptions = {}): Promise<PipelineReport> {
  const jobCount = options.jobs ?? 64
  const samples = options.samples ?? 1 << 20
  const workerCount = options.workers ?? Math.max(2, availableParallelism())
  // Room for a few jobs in flight per worker: the producer waits when the workers fall behind.
  const jobsInit = createPipe({ capacity: Math.max(4 * workerCount, 8) * samples * 4 })
  const resultsInit = createPipe({ capacity: 1 << 20 })
  const jobs = openPipe(jobsInit)
  const results = openPipe(resultsInit)
  const data: PipelineWorkerData = { jobs: jobsInit, results: resultsInit }
  const workers = Array.from({ length: workerCount }, () => {
    const w = new Worker(new URL('./workers-pipeline-worker.js', import.meta.url), { workerData: data })
    reclaimOnExit(w, jobs, results)
    return w
  })
  const exits = workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('error', reject)
    w.once('exit', () => resolve())
  }))

  // Five test signals: tones with a DC offset that the workers will measure and remove.
  const tones = Array.from({ length: 5 }, (_, k) => Float32Array.from({ length: samples }, (_, i) => k - 2 + Math.sin(i * 0.001 * (k + 1))))
  const started = performance.now()
  const producing = (async () => {
    for (let id = 0; id < jobCount; id++) {
      // The producer's data is made where it will be sent from: in the jobs arena.
      const signal = await jobs.allocArray(Float32Array, samples)
      signal.set(tones[id % 5]!)
      await jobs.send({ id, samples: signal }) // arrives as a Float32Array over the same memory
    }
    await jobs.close() // the workers finish what is queued, then stop
  })()

  const perWorker = new Map<number, number>()
  let worstResidual = 0
  for (let k = 0; k < jobCount; k++) {
    const r = await results.receive()
    const v = r.value as JobResult
    perWorker.set(v.worker, (perWorker.get(v.worker) ?? 0) + 1)
    worstResidual = Math.max(worstResidual, Math.abs(v.residual))
    r.release()
  }
  await producing
  const seconds = (performance.now() - started) / 1000
  await Promise.all(exits)
  await results.close()
  return { jobs: jobCount, workers: workerCount, bytes: jobCount * samples * 4, seconds, perWorker, bytesCopied: jobs.stats().bytesCopied, worstResidual }
}

function print(r: PipelineReport): void {
  const mib = r.bytes / 2 ** 20
  console.log(`${r.jobs} jobs of ${(mib / r.jobs).toFixed(0)} MiB through ${r.workers} workers in ${(r.seconds * 1000).toFixed(0)} ms: ` +
    `${(r.jobs / r.seconds).toFixed(0)} jobs/s, ${(r.bytes / r.seconds / 1e9).toFixed(2)} GB/s of samples`)
  console.log(`jobs per worker: ${[...r.perWorker.values()].join(', ')}; bytes copied to send the jobs: ${r.bytesCopied}; ` +
    `largest DC residual after the workers removed it: ${r.worstResidual.toExponential(1)}`)
}

/** The demo's part: the pipeline, briefly, and what it measured. */
export async function runWorkersDemo(): Promise<void> {
  console.log('\nA job pipeline over shared memory: jobs from one pipe to several worker threads, results to another.')
  print(await runPipeline({ jobs: 64, samples: 1 << 20 }))
  const { runPiscinaExample } = await import('./workers-piscina.js')
  await runPiscinaExample({ tasks: 4, megapixels: 4, print: true })
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [jobs, mib, workers] = process.argv.slice(2).map(Number)
  print(await runPipeline({ jobs: jobs || undefined, samples: mib ? mib * 2 ** 18 : undefined, workers: workers || undefined }))
}
