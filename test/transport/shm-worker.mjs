// The worker side of the shared-memory tests (test/transport/shm-*.test.ts): one scenario per
// run, named in workerData.scenario, over the channel (or pipe) in workerData.
import { parentPort, threadId, workerData } from 'node:worker_threads'
import { PickleBuffer } from '@picklewire/codec'
import { openChannel, openPipe } from '@picklewire/transport'
import { openArenaBuffer } from '../../packages/transport/dist/shm/arena.js'
// internal: the arenas of a channel's memory, for the scenario that holds their locks
import { openPipeMemory } from '../../packages/transport/dist/shm/link.js'

const TIMEOUT = { timeout: 20_000 }
const view32 = (pb) => {
  const raw = pb.raw()
  return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
}

const scenarios = {
  // Checks the order of n integers, then answers with what it saw.
  async count(ch, { n }) {
    let expect = 0
    let bad = 0
    for (;;) {
      const m = await ch.receive(TIMEOUT)
      if (m.value === 'end') break
      if (m.value !== expect) bad++
      expect++
      m.release()
    }
    await ch.send(new Map([['count', expect], ['bad', bad]]))
  },

  // Both at once: checks the order of n integers from the main thread while it sends its own n.
  async duplex(ch, { n }) {
    const counting = (async () => {
      let expect = 0
      let bad = 0
      for (;;) {
        const m = await ch.receive(TIMEOUT)
        if (m.value === 'end') return new Map([['count', expect], ['bad', bad]])
        if (m.value !== expect) bad++
        expect++
        m.release()
      }
    })()
    for (let i = 0; i < n; i++) await ch.send(i, TIMEOUT)
    await ch.send('end')
    await ch.send(await counting)
    await ch.receive(TIMEOUT) // the main thread's acknowledgement
  },

  // Sends n integers, then 'end'.
  async emit(ch, { n }) {
    for (let i = 0; i < n; i++) await ch.send(i, TIMEOUT)
    await ch.send('end')
    await ch.receive(TIMEOUT) // the main thread's acknowledgement
  },

  // Writes through the views it received, sends one back as it is (zero copy), reports its counters.
  async touch(ch) {
    const m = await ch.receive(TIMEOUT)
    const data = m.value.get('data')
    const f = view32(data)
    f[0] = 42
    f[1] = f[1] * 2
    const shared = data.raw().buffer instanceof SharedArrayBuffer
    await ch.send(new Map([['back', data], ['shared', shared], ['stats', new Map(Object.entries(ch.stats()).filter(([, v]) => typeof v === 'number'))]]))
    m.release()
    await ch.receive(TIMEOUT)
  },

  // Sends and receives n messages with buffers of `size` bytes at the same time (both ways).
  async chatter(ch, { n, size }) {
    const receiving = (async () => {
      let bad = 0
      for (let k = 0; k < n; k++) {
        const m = await ch.receive(TIMEOUT)
        const b = m.value.get('b').raw()
        if (m.value.get('i') !== k || b.length !== size || b[0] !== (k & 255) || b[size - 1] !== (k & 255)) bad++
        m.release()
      }
      return bad
    })()
    for (let i = 0; i < n; i++) {
      await ch.send(new Map([['i', i], ['b', new PickleBuffer(new Uint8Array(size).fill(i & 255))]]), TIMEOUT)
    }
    const bad = await receiving
    await ch.send(new Map([['bad', bad], ['copied', ch.stats().bytesCopied]]))
    await ch.receive(TIMEOUT)
  },

  // Holds `hold` messages from the main thread, sends `count` in-place buffers, then waits, exits or throws.
  async stream(ch, { hold, count, size, then }) {
    const held = []
    for (let k = 0; k < hold; k++) held.push(await ch.receive(TIMEOUT))
    for (let i = 0; count === -1 || i < count; i++) {
      const a = await ch.alloc(size)
      a.fill(i & 255)
      await ch.send(new Map([['i', i], ['b', new PickleBuffer(a)]]))
    }
    // One block allocated and never sent: it must be reclaimed too.
    await ch.alloc(size)
    parentPort.postMessage({ sent: count, held: held.length })
    if (then === 'exit') process.exit(3)
    if (then === 'throw') throw new Error('the worker failed on purpose')
    await new Promise(() => setTimeout(() => {}, 60_000))
  },

  // Receives with for await until the channel closes, checking the order of integers; answers with what it saw.
  async iterate(ch) {
    let count = 0
    let bad = 0
    for await (const m of ch) {
      if (m.value !== count) bad++
      count++
      m.release()
      if (count % 1000 === 0) await ch.send(count) // progress, so that the sender can wait for a drained ring
    }
    parentPort.postMessage({ count, bad })
  },

  // Echoes until 'stop'.
  async echo(ch) {
    for (;;) {
      const m = await ch.receive(TIMEOUT)
      if (m.value === 'stop') break
      await ch.send(m.value)
    }
    await ch.close()
  },

  // A pipe job worker: takes jobs, doubles their data in place, sends results; `die` after that many jobs.
  async jobs(_, { jobs, results, die }) {
    const inbox = openPipe(jobs)
    const outbox = openPipe(results)
    let done = 0
    parentPort.postMessage('ready')
    for await (const job of inbox) {
      if (done === die) process.exit(4) // dies holding this job's block
      const f = view32(job.value.get('data'))
      for (let i = 0; i < f.length; i++) f[i] *= 2
      await outbox.send(new Map([['id', job.value.get('id')], ['data', job.value.get('data')]]), TIMEOUT)
      job.release()
      done++
    }
    parentPort.postMessage({ done })
  },

  // Receives, counting each message in shared[0] as soon as it has it (the count survives the
  // thread). After `stopAt` messages: 'exit' writes the time into times[0] and exits at once;
  // 'pause' tells the parent and receives no more (the parent terminates it); 'close' closes
  // the channel, tells the parent, and waits.
  async countAndDie(ch, { counter, times, stopAt, then }) {
    const shared = new Int32Array(counter)
    const when = new Float64Array(times)
    for (;;) {
      const m = await ch.receive()
      m.release()
      const n = Atomics.add(shared, 0, 1) + 1
      Atomics.notify(shared, 0)
      if (n < stopAt) continue
      if (then === 'exit') {
        when[0] = performance.timeOrigin + performance.now()
        process.exit(0)
      }
      if (then === 'close') await ch.close()
      parentPort.postMessage(then === 'close' ? 'closed' : 'paused')
      await new Promise(() => setTimeout(() => {}, 60_000))
    }
  },

  // Takes the locks of both of its channel's arenas and waits to be terminated holding them, as
  // a thread stopped by worker.terminate() inside a critical section (of its close(), say).
  async lockChannelAndHang(_ch, { sabs, ringBytes }) {
    const me = threadId + 1
    for (const sab of sabs) {
      if (!openPipeMemory(sab, ringBytes).arena.mutex.tryLock(me)) throw new Error('could not take the lock')
    }
    parentPort.postMessage('locked')
    await new Promise(() => setTimeout(() => {}, 60_000))
  },

  // Takes an arena's lock and dies holding it, with a block allocated.
  async lockAndDie(_, { sab }) {
    const arena = openArenaBuffer(sab)
    const me = threadId + 1
    arena.tryAlloc(1000, me)
    if (!arena.mutex.tryLock(me)) throw new Error('could not take the lock')
    parentPort.postMessage('locked')
    await new Promise(() => setTimeout(() => {}, 60_000))
  },

}

const { scenario, channel, args = {} } = workerData
const ch = channel === undefined ? null : openChannel(channel)
await scenarios[scenario](ch, args)
