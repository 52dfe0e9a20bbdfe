import t, { type Test } from 'tap'
import { Worker } from 'node:worker_threads'
import { PickleBuffer } from '@picklewire/codec'
import { createChannel, createPipe, openChannel, openPipe, reclaimOnExit, type Channel, type Received, type Signalling } from '@picklewire/transport'

const WORKER = new URL('./shm-worker.mjs', import.meta.url)
const TIMEOUT = { timeout: 20_000 }
const KiB = 1024

function start(t: Test, scenario: string, args: Record<string, unknown>, signalling: Signalling, capacity: number): { ch: Channel; worker: Worker; next: () => Promise<unknown> } {
  const { port1, port2 } = createChannel({ signalling, capacity })
  const worker = new Worker(WORKER, { workerData: { scenario, channel: port2, args }, transferList: [port2.port] })
  worker.on('error', () => {}) // the 'throw' scenario fails on purpose
  const next = inbox(worker)
  const ch = openChannel(port1)
  t.teardown(async () => {
    await worker.terminate()
    await ch.close()
  })
  return { ch, worker, next }
}

/** A promise that fails after 20 s instead of hanging the test. */
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in 20 s`)), 20_000)))
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}
/** The worker's messages in order, whenever they came: a listener from the start, so none is missed. */
function inbox(w: Worker): () => Promise<unknown> {
  const got: unknown[] = []
  const waiting: ((m: unknown) => void)[] = []
  w.on('message', (m) => (waiting.length > 0 ? waiting.shift()!(m) : got.push(m)))
  return () => bounded(got.length > 0 ? Promise.resolve(got.shift()) : new Promise((resolve) => waiting.push(resolve)), 'a worker message')
}
const exited = (w: Worker): Promise<number> => bounded(new Promise((resolve) => w.once('exit', resolve)), 'a worker exit')

/** Receives until CLOSED; returns how many arrived (each released at once). */
async function drain(ch: Channel): Promise<number> {
  let n = 0
  for (;;) {
    try {
      const m = await ch.receive(TIMEOUT)
      m.release()
      n++
    } catch (err) {
      if ((err as { code?: string }).code === 'CLOSED') return n
      throw err
    }
  }
}

for (const signalling of ['atomics', 'port'] as const) {
  for (const death of ['terminate', 'exit', 'throw'] as const) {
    t.test(`${signalling}, ${death}: a dead worker's blocks are reclaimed and the pending receive fails with CLOSED`, async (t) => {
      const capacity = 1024 * KiB
      const size = 16 * KiB
      const { ch, worker, next } = start(t, 'stream', { hold: 5, count: 20, size, then: death === 'terminate' ? 'wait' : death }, signalling, capacity)
      for (let k = 0; k < 5; k++) await ch.send(new PickleBuffer(new Uint8Array(size).fill(k)), TIMEOUT)
      let bad = 0
      for (let i = 0; i < 20; i++) {
        const m = await ch.receive(TIMEOUT)
        if ((m.value as Map<string, unknown>).get('i') !== i) bad++
        m.release()
      }
      t.equal(bad, 0, 'the stream arrived in order')
      const pending = ch.receive(TIMEOUT)
      const ready = await next()
      t.same(ready, { sent: 20, held: 5 }, 'the worker holds 5 messages of this side and one block of its own')
      t.ok(ch.stats().arenas.out.bytesInUse >= 5 * size, 'this side\'s arena holds what the worker kept')
      if (death === 'terminate') await worker.terminate()
      await t.rejects(pending, { code: 'CLOSED', message: /exited/ }, 'the receive that was waiting fails with CLOSED')
      await t.rejects(ch.send('more'), { code: 'CLOSED' }, 'so does a send')
      await t.rejects(ch.receive(), { code: 'CLOSED' }, 'and every later receive')
      await ch.settle()
      const s = ch.stats()
      t.equal(s.arenas.out.freeBytes, capacity, 'the blocks the worker held in this side\'s arena are free again')
      t.equal(s.arenas.in.freeBytes, capacity, 'so is the block it allocated and never sent')
      t.equal(s.bytesReclaimed, 6 * size, 'reclaimed: 5 held messages and one allocation, nothing twice')
      t.equal(s.bytesHeld, 0)
    })

    t.test(`${signalling}, ${death}: killed mid-stream with messages in flight, under backpressure`, async (t) => {
      const capacity = 64 * KiB
      const size = 12 * KiB
      // terminate: the worker streams without end and is killed while it waits for space;
      // exit and throw: it sends 40 and dies at once, its last messages still queued here.
      const { ch, worker } = start(t, 'stream', { hold: 0, count: death === 'terminate' ? -1 : 40, size, then: death }, signalling, capacity)
      const kept: Received[] = []
      for (let i = 0; i < 30; i++) {
        const m = await ch.receive(TIMEOUT)
        if (i < 2) kept.push(m) // held across the death
        else m.release()
      }
      if (death === 'terminate') await worker.terminate()
      const rest = await drain(ch)
      t.ok(death === 'terminate' || rest === 10, `the messages sent before it died arrive whole (${rest} more)`)
      t.equal((kept[1]!.value as Map<string, unknown>).get('i'), 1, 'messages kept across the death are still valid')
      for (const m of kept) m.release()
      await ch.settle()
      const s = ch.stats()
      t.equal(s.arenas.in.freeBytes, capacity, 'the dead worker\'s arena is whole again')
      t.equal(s.arenas.out.freeBytes, capacity)
      t.equal(s.bytesHeld, 0)
    })
  }
}

t.test('a pipe shared by workers: one dies holding a job, the others finish, everything is reclaimed', async (t) => {
  const capacity = 1024 * KiB
  const jobsInit = createPipe({ capacity })
  const resultsInit = createPipe({ capacity })
  const jobs = openPipe(jobsInit)
  const results = openPipe(resultsInit)
  const workers: Worker[] = []
  const spawn = (die: number): { w: Worker; next: () => Promise<unknown> } => {
    const w = new Worker(WORKER, { workerData: { scenario: 'jobs', args: { jobs: jobsInit, results: resultsInit, die } } })
    const next = inbox(w)
    reclaimOnExit(w, jobs, results)
    workers.push(w)
    return { w, next }
  }
  t.teardown(() => Promise.all(workers.map((w) => w.terminate())))
  const job = async (id: number): Promise<void> => {
    const f = await jobs.allocArray(Float32Array, 1024, TIMEOUT)
    f.fill(id)
    await jobs.send(new Map<string, unknown>([['id', id], ['data', new PickleBuffer(f)]]), TIMEOUT)
  }
  const doomed = spawn(0)
  const doomedExit = exited(doomed.w)
  t.equal(await doomed.next(), 'ready')
  await job(0)
  t.equal(await doomedExit, 4, 'the first worker died holding job 0')
  await new Promise((r) => setImmediate(r))
  t.equal(jobs.stats().arena.freeBytes, capacity, 'its block was reclaimed when it exited')
  const survivors = [spawn(-1), spawn(-1)]
  await Promise.all(survivors.map((s) => s.next()))
  const survivorExits = survivors.map((s) => exited(s.w))
  for (let id = 1; id < 30; id++) await job(id)
  await jobs.close()
  const seen = new Set<number>()
  let bad = 0
  for (let k = 0; k < 29; k++) {
    const r = await results.receive(TIMEOUT)
    const v = r.value as Map<string, unknown>
    const id = v.get('id') as number
    const raw = (v.get('data') as PickleBuffer).raw()
    const f = new Float32Array(raw.buffer, raw.byteOffset, 1024)
    if (f[0] !== 2 * id || f[1023] !== 2 * id) bad++
    seen.add(id)
    r.release()
  }
  t.equal(seen.size, 29, 'every other job was done once')
  t.equal(bad, 0, 'right')
  const done = await Promise.all(survivors.map((s) => s.next())) as { done: number }[]
  t.equal(done.reduce((n, d) => n + d.done, 0), 29, 'by the two survivors, which saw the pipe close and stopped')
  await Promise.all(survivorExits)
  t.equal(jobs.stats().arena.freeBytes, capacity, 'the jobs arena is whole')
  t.equal(results.stats().arena.freeBytes, capacity, 'the results arena is whole')
  await t.rejects(jobs.send(1), { code: 'CLOSED' })
  await t.rejects(jobs.receive(), { code: 'CLOSED' })
})

for (const signalling of ['atomics', 'port'] as const) {
  t.test(`${signalling}: a worker that exits marks its end in shared memory as it goes: this side knows before any event`, async (t) => {
    const counter = new SharedArrayBuffer(4)
    const times = new SharedArrayBuffer(8)
    const { port1, port2 } = createChannel({ signalling })
    const worker = new Worker(WORKER, { workerData: { scenario: 'countAndDie', channel: port2, args: { counter, times, stopAt: 1, then: 'exit' } }, transferList: [port2.port] })
    const ch = openChannel(port1)
    t.teardown(async () => {
      await worker.terminate()
      await ch.close()
    })
    await ch.send('one', TIMEOUT)
    // Block (not spin) until the worker has the message, so that its boot does not eat the
    // spin's time; then spin without yielding: no event (the port's close) can reach this
    // thread meanwhile, so what changes is read from the shared memory alone.
    Atomics.wait(new Int32Array(counter), 0, 0, 20_000)
    t.equal(Atomics.load(new Int32Array(counter), 0), 1, 'the worker received the message')
    const until = performance.now() + 10_000
    while (ch.open && performance.now() < until);
    t.equal(ch.open, false, 'the channel knows the other side is gone, with no event processed')
    await t.rejects(ch.send('two'), { code: 'CLOSED', message: /the other side's thread exited/ }, 'and a send fails with CLOSED')
    await bounded(ch.closed, 'the channel noticing the death')
    const s = ch.stats()
    t.equal(s.messagesSent, 1)
    t.equal(s.messagesUndelivered, 0, 'the one message sent was received')
  })
}

for (const signalling of ['atomics', 'port'] as Signalling[]) {
  t.test(`${signalling}: close() finishes when the other thread was terminated holding the arena locks`, async (t) => {
    const { port1, port2 } = createChannel({ signalling })
    const worker = new Worker(WORKER, { workerData: { scenario: 'lockChannelAndHang', channel: port2, args: { sabs: port2.sabs, ringBytes: port2.ringBytes } }, transferList: [port2.port] })
    const ch = openChannel(port1)
    const next = inbox(worker)
    t.equal(await bounded(next(), 'the worker to take the locks'), 'locked')
    const terminated = worker.terminate()
    // close() starts before this thread sees the port close: it waits on the dead thread's locks
    // until the port's close event breaks them.
    await bounded(ch.close(), 'close() with the locks of a terminated thread')
    await terminated
    t.equal(ch.open, false, 'closed')
    await t.resolves(bounded(ch.closed, 'closed'), 'and closed resolves')
  })
}
