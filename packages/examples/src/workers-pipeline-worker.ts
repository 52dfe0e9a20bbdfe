/**
 * A worker of the job pipeline (workers-pipeline.ts): takes jobs from the jobs pipe until it
 * is closed and empty, measures each signal and removes its DC offset in place (in the
 * producer's memory: the job is a view of it), and sends a small result to the results pipe.
 */
import { threadId, workerData } from 'node:worker_threads'
import { openPipe } from '@picklewire/transport/shm'
import type { Job, JobResult, PipelineWorkerData } from './workers-pipeline.js'

const { jobs: jobsInit, results: resultsInit } = workerData as PipelineWorkerData
const jobs = openPipe(jobsInit)
const results = openPipe(resultsInit)

for await (const job of jobs) {
  const { id, samples: x } = job.value as Job
  let sum = 0
  let squares = 0
  let peak = 0
  for (let i = 0; i < x.length; i++) {
    const s = x[i]!
    sum += s
    squares += s * s
    if (Math.abs(s) > peak) peak = Math.abs(s)
  }
  const mean = sum / x.length
  let residual = 0
  for (let i = 0; i < x.length; i++) residual += (x[i] = x[i]! - mean)
  const result: JobResult = { id, worker: threadId, mean, rms: Math.sqrt(squares / x.length), peak, residual: residual / x.length }
  await results.send(result)
  job.release()
}
