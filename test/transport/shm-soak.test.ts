// The receiving worker dies while this thread sends in a tight loop: the send in progress
// rejects with CLOSED within 100 ms of the death, and the sender's counters account for every
// message: what the worker received is exactly what this side was told was sent, less what
// it reports as never received. The worker counts each message in a SharedArrayBuffer as soon
// as it has it, so its count survives it. Bounded: a few trials per mode, well under a minute.
import t from 'tap'
import { Worker } from 'node:worker_threads'
import { createChannel, openChannel, type Signalling } from '@picklewire/transport'

const WORKER = new URL('./shm-worker.mjs', import.meta.url)
const MODES: Signalling[] = ['atomics', 'port']
const TRIALS = 3
/** How soon after the death the sender must know: the bound the carriers promise. */
const DETECT_MS = 100
const CAPACITY = 1 << 20

const now = (): number => performance.timeOrigin + performance.now()

/** Rejects instead of hanging when p does not settle in 20 s. */
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing in 20 s`)), 20_000)))
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

for (const signalling of MODES) {
  for (const death of ['exit', 'terminate'] as const) {
    const how = death === 'exit' ? 'exits (process.exit) right after a receive' : 'stops receiving and is terminated (worker.terminate())'
    t.test(`${signalling}: the receiving worker ${how} during a tight send loop`, async (t) => {
      const lags: number[] = []
      for (let trial = 0; trial < TRIALS; trial++) {
        const counter = new SharedArrayBuffer(4)
        const times = new SharedArrayBuffer(8)
        const received = new Int32Array(counter)
        const stopAt = 1000 + Math.floor(Math.random() * 10_000)
        const { port1, port2 } = createChannel({ signalling, capacity: CAPACITY })
        const args = { counter, times, stopAt, then: death === 'exit' ? 'exit' : 'pause' }
        const worker = new Worker(WORKER, { workerData: { scenario: 'countAndDie', channel: port2, args }, transferList: [port2.port] })
        const ch = openChannel(port1)
        let terminatedAt = NaN
        worker.on('message', (m) => {
          if (m !== 'paused') return
          terminatedAt = now()
          void worker.terminate()
        })
        let exitAt = NaN
        const exited = new Promise((resolve) => worker.once('exit', () => resolve((exitAt = now()))))

        let told = 0
        let failure: unknown
        let failedAt = NaN
        const payload = { i: 0, text: 'a small message' }
        for (;;) {
          payload.i = told
          try {
            // The timeout only turns a hang (the bug this guards against) into a failure.
            await ch.send(payload, { timeout: 10_000 })
          } catch (err) {
            failedAt = now()
            failure = err
            break
          }
          told++
        }
        await bounded(exited, 'the worker exit')
        await bounded(ch.closed, 'the channel noticing the death')
        // terminate() asks Node to stop the thread, which takes Node a while under load: the
        // worker is dead when its 'exit' event comes, and the lag is counted from then.
        const diedAt = death === 'exit' ? new Float64Array(times)[0]! : exitAt
        const lag = failedAt - diedAt
        if (death === 'terminate') t.comment(`trial ${trial}: terminate() to exit ${(exitAt - terminatedAt).toFixed(1)} ms, to the failed send ${(failedAt - terminatedAt).toFixed(1)} ms`)
        lags.push(lag)
        const got = Atomics.load(received, 0)
        const s = ch.stats()
        t.match(failure, { name: 'TransportError', code: 'CLOSED', message: /exited/ }, `trial ${trial}: the send in progress fails with CLOSED`)
        // After terminate() the send fails from the port's close, which Node delivers around the
        // exit event (before it, in every run so far): the check holds it to the exit + DETECT_MS.
        t.ok(lag < DETECT_MS, `trial ${trial}: the sender knew ${lag.toFixed(1)} ms after the death (${death === 'exit' ? 'its process.exit()' : "its 'exit' event"}; bound ${DETECT_MS} ms)`)
        t.equal(got, stopAt, `trial ${trial}: the worker received ${stopAt} messages before it died`)
        t.equal(s.messagesSent, told, `trial ${trial}: messagesSent is the number of sends that resolved (${told})`)
        t.equal(told - s.messagesUndelivered, got,
          `trial ${trial}: sent (${told}) less reported undelivered (${s.messagesUndelivered}) is exactly what the worker received`)
        await t.rejects(ch.send('after'), { code: 'CLOSED' }, `trial ${trial}: later sends fail at once`)
        await ch.settle()
        t.equal(ch.stats().arenas.out.freeBytes, CAPACITY, `trial ${trial}: every block the worker had not received is reclaimed`)
        await ch.close()
      }
      t.comment(`${signalling}, ${death}: detection lag over ${TRIALS} trials: ${lags.map((l) => l.toFixed(1)).join(', ')} ms`)
    })
  }
}
