// The shared-memory benchmark (issue 6): a small object holding a Float32Array payload sent to
// a worker thread and answered with a number, timed per round trip, against the ways Node
// offers: a bare SharedArrayBuffer hand-off (the floor: the bytes are already shared, only
// their place is posted), one memcpy into a SharedArrayBuffer plus that hand-off (the floor of
// a copy), structured clone, transfer lists, piscina's run and Piscina.move. Then messages per
// second for 1 KiB objects, and the latency of one tiny message, for both signalling modes.
//
// Every round trip ends when the worker has the value (for picklewire: loaded, an NDArray over
// the arena) and has read its first and last element, and its answer is back. The "copies"
// column counts the payload's bytes copied per message: picklewire's from its own counters,
// the others from what the mechanism does (structured clone serializes then deserializes).

import { performance } from 'node:perf_hooks'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { ArenaPool, DEFAULT_SIGNALLING, createChannel, openChannel } from '@picklewire/transport/shm'
import { fmtBytes, fmtRate, fmtTimes, printTable } from './measure.mjs'

const KiB = 1024
const MiB = 2 ** 20

function plan({ quick }) {
  return quick
    ? { sizes: [4 * KiB, 1 * MiB, 16 * MiB], small: 2000, smallRuns: 3, pings: 2000 }
    : { sizes: [4 * KiB, 1 * MiB, 64 * MiB, 256 * MiB], small: 20_000, smallRuns: 5, pings: 20_000 }
}

const touch = (x) => x[0] + x[x.length - 1]

/** A 1 KiB object: pickled it is about 1 KiB, as is its structured clone. */
/** What values come back as on every picklewire end here: the default ('javascript'), or PICKLEWIRE_SHM_VALUES=python. */
const VALUES = process.env.PICKLEWIRE_SHM_VALUES === 'python' ? { values: 'python' } : {}

/** A field of a received object: a plain object ('javascript') or a Map ('python'). */
const field = (v, k) => (v instanceof Map ? v.get(k) : v[k])

function smallObject(i) {
  return { id: i, name: `sensor-${i % 100}`, ok: true, values: Array.from({ length: 110 }, (_, k) => k * 0.5 + i), tags: ['a', 'b', 'c'] }
}

// ---- the worker thread ----

/** postMessage baselines: clone, transfer (bounced back), SharedArrayBuffer hand-off, small messages. */
function postWorker() {
  let sab = null
  let count = 0
  let expect = 0
  parentPort.on('message', (m) => {
    switch (m.k) {
      case 'clone': return parentPort.postMessage(touch(m.x))
      case 'bounce': touch(m.x); return parentPort.postMessage(m, [m.x.buffer])
      case 'sab-init': sab = m.sab; return parentPort.postMessage(0)
      case 'sab': return parentPort.postMessage(touch(new Float32Array(sab, m.off, m.len)))
      case 'small-start': count = 0; expect = m.n; return undefined
      case 'small': if (++count === expect) parentPort.postMessage(count); return undefined
      case 'ping': return parentPort.postMessage(m.i)
    }
  })
}

/** The channel's end: answers every payload with a number, counts small messages, echoes pings. */
async function channelWorker() {
  const ch = openChannel(workerData.channel, VALUES)
  let expect = 0
  let count = 0
  for await (const m of ch) {
    const v = m.value
    // The answer goes first, then the blocks go back: the data is read before release (its
    // memory is the sender's to reuse afterwards), and the release is off the round trip.
    if (typeof v === 'number') await ch.send(v) // a ping
    else if (field(v, 'x') !== undefined) await ch.send(touch(field(v, 'x').data ?? field(v, 'x')))
    else if (field(v, 'start') !== undefined) { expect = field(v, 'start'); count = 0 }
    else if (++count === expect) await ch.send(count)
    m.release()
  }
}

// ---- measuring ----

/**
 * Best and median seconds per round trip of the async fn, with measure()'s policy: warm-up,
 * then samples of `batch` calls (doubled until a sample lasts min_sample), a GC before each
 * sample of one call.
 */
async function measureAsync(fn, t) {
  const warmEnd = performance.now() + t.warmup_time * 1000
  for (let i = 0; i < t.warmup || performance.now() < warmEnd; i++) await fn()
  let batch = 1
  for (;;) {
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) await fn()
    if ((performance.now() - t0) / 1000 >= t.min_sample || batch >= 1 << 16) break
    batch *= 2
  }
  const samples = []
  let total = 0
  while (samples.length < t.min_runs || (total < t.min_time && samples.length < t.max_runs)) {
    if (batch === 1) globalThis.gc?.()
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) await fn()
    const dt = (performance.now() - t0) / 1000 / batch
    samples.push(dt)
    total += dt * batch
  }
  samples.sort((a, b) => a - b)
  const mid = samples.length >> 1
  return { best: samples[0], median: samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2 }
}

/** A worker answering postMessage, and a way to await its next answer. */
function startPostWorker() {
  const worker = new Worker(new URL(import.meta.url), { workerData: { role: 'post' } })
  const answers = []
  let waiting = null
  worker.on('message', (m) => {
    if (waiting) {
      const w = waiting
      waiting = null
      w(m)
    } else answers.push(m)
  })
  const next = () => (answers.length ? Promise.resolve(answers.shift()) : new Promise((resolve) => (waiting = resolve)))
  return { worker, next, post: (m, transfer) => worker.postMessage(m, transfer) }
}

function startChannel(options) {
  const { port1, port2 } = createChannel(options)
  const worker = new Worker(new URL(import.meta.url), { workerData: { role: 'channel', channel: port2 }, transferList: [port2.port] })
  return { worker, ch: openChannel(port1, VALUES) }
}

async function payloadTable(size, { timing, log }) {
  const n = size / 4
  const rows = []
  const source = new Float32Array(n).fill(1.5) // a payload in ordinary memory
  const row = async (name, copies, setup) => {
    log(`  ${fmtBytes(size)}: ${name}`)
    const { fn, copied, done } = await setup()
    const m = await measureAsync(fn, timing)
    rows.push({ name, m, copies: copied ? copied() : copies })
    await done?.()
  }

  const post = startPostWorker()
  const sab = new SharedArrayBuffer(size)
  new Float32Array(sab).fill(1.5)
  post.post({ k: 'sab-init', sab })
  await post.next()
  await row('SharedArrayBuffer hand-off (floor)', 0, () => ({
    fn: () => (post.post({ k: 'sab', off: 0, len: n }), post.next()),
  }))
  const shared = new Float32Array(sab)
  await row('memcpy into SharedArrayBuffer + hand-off', size, () => ({
    fn: () => (shared.set(source), post.post({ k: 'sab', off: 0, len: n }), post.next()),
  }))
  await row('structured clone (postMessage)', 2 * size, () => ({
    fn: () => (post.post({ k: 'clone', id: 1, x: source }), post.next()),
  }))
  let bouncing = new Float32Array(n).fill(1.5)
  await row('transfer (postMessage, transferred back)', 0, () => ({
    fn: async () => {
      post.post({ k: 'bounce', id: 1, x: bouncing }, [bouncing.buffer])
      bouncing = (await post.next()).x
    },
  }))
  await post.worker.terminate()

  const capacity = Math.max(4 * MiB, 3 * size)
  for (const signalling of ['atomics', 'port']) {
    const { worker, ch } = startChannel({ capacity, signalling })
    const before = () => ch.stats().bytesCopied
    let c0 = 0
    await row(`picklewire channel (${signalling}), allocated in the arena`, 0, () => {
      c0 = before()
      return {
        fn: async () => {
          const x = await ch.allocArray(Float32Array, n)
          await ch.send({ id: 1, x })
          ;(await ch.receive()).release()
        },
        copied: () => (ch.stats().bytesCopied - c0) / Math.max(1, ch.stats().messagesSent),
      }
    })
    if (signalling === 'atomics') {
      await row(`picklewire channel (${signalling}), copied in`, size, () => ({
        fn: async () => {
          await ch.send({ id: 1, x: source })
          ;(await ch.receive()).release()
        },
      }))
    }
    await ch.close()
    await worker.terminate()
  }

  const pool = new ArenaPool({ filename: new URL('./shm-task.mjs', import.meta.url).href, minThreads: 1, maxThreads: 1, taskCapacity: capacity, ...VALUES })
  const Piscina = pool.piscina.constructor
  await row('piscina run (structured clone)', 2 * size, () => ({ fn: () => pool.piscina.run({ id: 1, x: source }, { name: 'plain' }) }))
  let moving = new Float32Array(n).fill(1.5)
  await row('piscina Piscina.move (moved back)', 0, () => ({
    fn: async () => {
      moving = await pool.piscina.run(Piscina.move(moving), { name: 'move' })
    },
  }))
  const c0 = pool.stats().bytesCopied
  await row('picklewire ArenaPool.run, allocated in the arena', 0, () => ({
    fn: async () => {
      const x = await pool.allocArray(Float32Array, n)
      pool.release(await pool.run({ id: 1, x }, { name: 'arena' }))
    },
    copied: () => (pool.stats().bytesCopied - c0) / Math.max(1, pool.stats().messagesSent),
  }))
  await pool.destroy()
  return rows
}

function printPayload(size, rows) {
  const floor = rows[0].m
  const clone = rows.find((r) => r.name.startsWith('structured clone')).m
  const ratio = (a, b) => {
    const r = a / b
    return r >= 100 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
  }
  console.log(`\n### ${fmtBytes(size)} Float32Array in a small object, one round trip\n`)
  printTable(
    ['method', 'time (best / median)', 'rate', 'bytes copied', 'time / floor', 'clone / time'],
    rows.map((r) => [r.name, fmtTimes([r.m.best, r.m.median]), fmtRate(size, r.m.best), r.copies === 0 ? '0' : `${(r.copies / size).toFixed(0)}x ${fmtBytes(size)}`,
      ratio(r.m.best, floor.best), ratio(clone.best, r.m.best)]),
  )
}

/** Messages per second for 1 KiB objects: a stream of n, then one answer. */
async function smallTable({ small, smallRuns, log }) {
  const rows = []
  const best = async (name, once) => {
    log(`  1 KiB objects: ${name}`)
    await once() // warm-up
    const rates = []
    for (let r = 0; r < smallRuns; r++) {
      const t0 = performance.now()
      await once()
      rates.push(small / ((performance.now() - t0) / 1000))
    }
    rates.sort((a, b) => b - a)
    rows.push({ name, best: rates[0], median: rates[rates.length >> 1] })
  }
  const objects = Array.from({ length: 64 }, (_, i) => smallObject(i))
  const post = startPostWorker()
  await best('structured clone (postMessage)', async () => {
    post.post({ k: 'small-start', n: small })
    for (let i = 0; i < small; i++) post.post({ k: 'small', v: objects[i & 63] })
    await post.next()
  })
  await post.worker.terminate()
  for (const signalling of ['atomics', 'port']) {
    const { worker, ch } = startChannel({ signalling })
    await best(`picklewire channel (${signalling})`, async () => {
      await ch.send(new Map([['start', small]]))
      for (let i = 0; i < small; i++) await ch.send(objects[i & 63])
      ;(await ch.receive()).release()
    })
    await ch.close()
    await worker.terminate()
  }
  const clone = rows[0].best
  printTable(['1 KiB objects, one way', 'messages/s (best / median)', 'vs clone'],
    rows.map((r) => [r.name, `${(r.best / 1000).toFixed(0)}k / ${(r.median / 1000).toFixed(0)}k`, `${(r.best / clone).toFixed(2)}x`]))
}

/** Round trips per second of one number: what waking the other thread costs. */
async function pingTable({ pings, log }) {
  const rows = []
  const measureRuns = async (name, once) => {
    log(`  ping: ${name}`)
    await once(pings / 10)
    const t0 = performance.now()
    await once(pings)
    rows.push({ name, us: ((performance.now() - t0) / pings) * 1000 })
  }
  const post = startPostWorker()
  await measureRuns('postMessage', async (k) => {
    for (let i = 0; i < k; i++) {
      post.post({ k: 'ping', i })
      await post.next()
    }
  })
  await post.worker.terminate()
  for (const signalling of ['atomics', 'port']) {
    const { worker, ch } = startChannel({ signalling })
    await measureRuns(`picklewire channel (${signalling})`, async (k) => {
      for (let i = 0; i < k; i++) {
        await ch.send(i)
        ;(await ch.receive()).release()
      }
    })
    await ch.close()
    await worker.terminate()
  }
  printTable(['one number there and back', 'round trip'], rows.map((r) => [r.name, `${r.us.toFixed(1)} µs`]))
}

/** Runs the suite; tables go to stdout. */
export async function runShm({ quick, timing, log }) {
  const p = plan({ quick })
  console.log(`Default signalling: ${DEFAULT_SIGNALLING}. "floor": the payload is already in a SharedArrayBuffer and only its place is posted.`)
  // The message-rate and latency tables run first, each after a full collection: run after the
  // payload tables, they measured the garbage those leave behind (256 MiB arrays, their
  // clones) as much as the carriers. Every contender runs under the same conditions either way.
  globalThis.gc?.()
  console.log('\n### 1 KiB objects, streamed one way (then one answer)\n')
  await smallTable({ small: p.small, smallRuns: p.smallRuns, log })
  globalThis.gc?.()
  console.log('\n### signalling latency\n')
  await pingTable({ pings: p.pings, log })
  for (const size of p.sizes) {
    globalThis.gc?.()
    printPayload(size, await payloadTable(size, { timing, log }))
  }
}

if (!isMainThread && workerData?.role === 'post') postWorker()
else if (!isMainThread && workerData?.role === 'channel') await channelWorker()
