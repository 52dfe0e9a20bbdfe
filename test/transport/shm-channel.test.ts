import t, { type Test } from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { MessageChannel, Worker } from 'node:worker_threads'
import { NDArray, PickleBuffer } from '@picklewire/codec'
import { TransportError, createChannel, openChannel, type Channel, type ChannelOptions, type Received, type Signalling } from '@picklewire/transport'

const WORKER = new URL('./shm-worker.mjs', import.meta.url)
const TIMEOUT = { timeout: 20_000 }
const MODES: Signalling[] = ['atomics', 'port']

/** A worker running one scenario of shm-worker.mjs over a fresh channel; terminated when the test ends. */
function start(t: Test, scenario: string, args: Record<string, unknown> = {}, options: ChannelOptions = {}): { ch: Channel; worker: Worker } {
  const { port1, port2 } = createChannel(options)
  const worker = new Worker(WORKER, { workerData: { scenario, channel: port2, args }, transferList: [port2.port] })
  const ch = openChannel(port1)
  t.teardown(async () => {
    await worker.terminate()
    await ch.close()
  })
  return { ch, worker }
}

/** Rejects instead of hanging when p does not settle in 20 s. */
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing in 20 s`)), 20_000)))
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

const exited = (w: Worker): Promise<number> => {
  let timer: ReturnType<typeof setTimeout>
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the worker did not exit in 20 s')), 20_000)))
  return Promise.race([new Promise<number>((resolve) => w.once('exit', resolve)), limit]).finally(() => clearTimeout(timer))
}

for (const signalling of MODES) {
  t.test(`${signalling}: 100,000 messages arrive in send order, both ways at once`, async (t) => {
    const n = 100_000
    const { ch } = start(t, 'duplex', { n }, { signalling, ringBytes: 1 << 16 })
    const receiving = (async () => {
      let bad = 0
      for (let i = 0; i < n; i++) {
        const m = await ch.receive(TIMEOUT)
        if (m.value !== i) bad++
        m.release()
      }
      t.equal((await ch.receive(TIMEOUT)).value, 'end')
      return bad
    })()
    for (let i = 0; i < n; i++) await ch.send(i, TIMEOUT)
    await ch.send('end')
    t.equal(await receiving, 0, 'this side got every message of the worker, in order')
    const report = (await ch.receive(TIMEOUT)).value as Map<string, number>
    t.equal(report.get('count'), n, 'the worker got every message of this side')
    t.equal(report.get('bad'), 0, 'in order')
    const s = ch.stats()
    t.equal(s.messagesSent, n + 1)
    t.equal(s.messagesReceived, n + 2)
    t.equal(s.arenas.out.capacity, 64 * 2 ** 20, 'the default capacity, unchanged by the run: the arena never grows')
    t.equal(s.arenas.in.freeBytes, s.arenas.in.capacity, 'no block left behind')
    await ch.send('ack')
  })

  t.test(`${signalling}: a buffer allocated in the arena crosses without a copy; writes through the received view are seen here`, async (t) => {
    const { ch } = start(t, 'touch', {}, { signalling, capacity: 1 << 20 })
    const f = await ch.allocArray(Float32Array, 1024)
    f.fill(1.5)
    const before = ch.stats()
    t.equal(before.bytesHeld, 4096, 'the allocated block is held by this side')
    await ch.send(new Map<string, unknown>([['data', new PickleBuffer(f)], ['tag', 'in place']]), TIMEOUT)
    const m = await ch.receive(TIMEOUT)
    const v = m.value as Map<string, unknown>
    t.equal(f[0], 42, 'the worker wrote through its view into this side\'s memory')
    t.equal(f[1], 3, 'and read what was written here')
    t.equal(v.get('shared'), true, 'the worker\'s view was over a SharedArrayBuffer')
    const back = (v.get('back') as PickleBuffer).raw()
    t.equal(back.byteOffset, f.byteOffset, 'the buffer sent back is the same place in the arena')
    new Float32Array(back.buffer, back.byteOffset, 4)[2] = -1
    t.equal(f[2], -1, 'the same memory')
    const workerStats = v.get('stats') as Map<string, number>
    t.equal(workerStats.get('bytesCopied'), 0, 'the worker copied nothing, even sending it back')
    t.equal(workerStats.get('bytesReceived'), 4096)
    const s = ch.stats()
    t.equal(s.bytesCopied, 0, 'this side copied nothing')
    t.equal(s.bytesSent, 4096)
    m.release()
    t.equal(ch.stats().bytesHeld, 0, 'released')
    await ch.send('bye')
  })

  t.test(`${signalling}: a buffer from elsewhere is copied once; a transferred one is not copied`, async (t) => {
    const { ch } = start(t, 'echo', {}, { signalling, capacity: 1 << 20 })
    const plain = new Uint8Array(10_000).fill(9)
    await ch.send(new PickleBuffer(plain), TIMEOUT)
    t.equal(ch.stats().bytesCopied, 10_000, 'one copy into the arena')
    const echo = await ch.receive(TIMEOUT)
    t.same([...(echo.value as PickleBuffer).raw().subarray(0, 3)], [9, 9, 9])
    echo.release()
    const ab = new ArrayBuffer(8192)
    new Uint8Array(ab).fill(5)
    await ch.send([new PickleBuffer(new Uint8Array(ab, 4096, 4096)), 'x'], { transfer: [ab], ...TIMEOUT })
    t.equal(ab.byteLength, 0, 'the ArrayBuffer went to the worker')
    const s = ch.stats()
    t.equal(s.bytesCopied, 10_000, 'no more copies')
    t.equal(s.bytesTransferred, 4096)
    const back = await ch.receive(TIMEOUT)
    const list = back.value as unknown[]
    t.same([...(list[0] as PickleBuffer).raw().subarray(0, 3)], [5, 5, 5], 'the transferred bytes arrived (and came back copied once by the worker)')
    t.equal(list[1], 'x')
    back.release()
    await ch.send('stop')
  })

  t.test(`${signalling}: a tiny arena makes both sides wait, without loss or deadlock, while both send at once`, async (t) => {
    const n = 2000
    const size = 6000
    const options = { signalling, capacity: 16 * 1024, ringBytes: 1024, window: 4 }
    const { ch } = start(t, 'chatter', { n, size }, options)
    const receiving = (async () => {
      let bad = 0
      for (let k = 0; k < n; k++) {
        const m = await ch.receive(TIMEOUT)
        const v = m.value as Map<string, unknown>
        const b = (v.get('b') as PickleBuffer).raw()
        if (v.get('i') !== k || b.length !== size || b[0] !== (k & 255) || b[size - 1] !== (k & 255)) bad++
        m.release()
      }
      return bad
    })()
    for (let i = 0; i < n; i++) await ch.send(new Map<string, unknown>([['i', i], ['b', new PickleBuffer(new Uint8Array(size).fill(i & 255))]]), TIMEOUT)
    t.equal(await receiving, 0, `this side got ${n} messages, in order, intact`)
    const report = (await ch.receive(TIMEOUT)).value as Map<string, number>
    t.equal(report.get('bad'), 0, `so did the worker`)
    t.equal(report.get('copied'), n * size)
    await ch.send('done')
    const s = ch.stats()
    t.equal(s.arenas.out.capacity, 16 * 1024, 'the arena never grew')
    await ch.settle()
    t.equal(s.arenas.in.freeBytes, s.arenas.in.capacity, 'every block came back')
  })

  t.test(`${signalling}: CAPACITY for what can never fit; CLOSED after close, on both sides`, async (t) => {
    const { ch, worker } = start(t, 'echo', {}, { signalling, capacity: 64 * 1024 })
    const exit = exited(worker)
    await t.rejects(ch.send(new PickleBuffer(new Uint8Array(64 * 1024 + 1))), { code: 'CAPACITY', message: /^a buffer of 65537 bytes needs 65664 bytes of arena .* holds 65536 bytes/ },
      'one buffer larger than the arena')
    await t.rejects(ch.send([new PickleBuffer(new Uint8Array(40_000)), new PickleBuffer(new Uint8Array(40_000))]),
      { code: 'CAPACITY', message: /^the message's 2 buffers to copy together \(40000 \+ 40000 = 80000 bytes\) needs 80128 bytes of arena .* holds 65536 bytes/ },
      'a message whose buffers together are larger than the arena: the message names them and their sum')
    await t.rejects(ch.alloc(64 * 1024 + 1), { code: 'CAPACITY' }, 'an allocation larger than the arena')
    const held = await ch.alloc(40_000)
    await t.rejects(ch.alloc(40_000), { code: 'CAPACITY' }, 'a wait that only this side could end')
    t.ok(ch.free(held), 'freed without sending')
    t.equal(ch.stats().bytesHeld, 0)
    t.equal(ch.stats().bytesCopied, 0, 'the refused sends copied nothing')
    t.equal(ch.stats().arenas.out.freeBytes, 64 * 1024, 'and left nothing in the arena')
    await ch.send('hello', TIMEOUT)
    t.equal((await ch.receive(TIMEOUT)).value, 'hello', 'the channel still works')
    await ch.send('stop') // the worker closes its side
    await t.rejects(ch.receive(TIMEOUT), { code: 'CLOSED', message: /other side closed/ }, 'receive after the other side closed')
    await t.rejects(ch.send('more'), { code: 'CLOSED' }, 'send after the other side closed')
    await ch.close()
    await t.rejects(ch.receive(), { code: 'CLOSED', message: /this side closed/ }, 'receive after this side closed')
    await t.rejects(ch.alloc(10), { code: 'CLOSED' })
    t.equal(await exit, 0)
  })

  t.test(`${signalling}: received blocks are released when their views are garbage collected`, async (t) => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const { ch } = start(t, 'echo', {}, { signalling, capacity: 1 << 20 })
    for (let i = 0; i < 50; i++) {
      await ch.send(new PickleBuffer(new Uint8Array(8192).fill(i)), TIMEOUT)
      await ch.receive(TIMEOUT) // dropped without release()
    }
    t.ok(ch.stats().bytesHeld >= 50 * 8192, 'held while the views are alive')
    for (let k = 0; k < 20 && ch.stats().bytesHeld > 0; k++) {
      gc()
      await new Promise((r) => setTimeout(r, 10))
    }
    await ch.settle()
    const s = ch.stats()
    t.equal(s.bytesHeld, 0, 'all released by the garbage collector')
    t.ok(s.gcReleases >= 50)
    t.equal(s.arenas.in.freeBytes, s.arenas.in.capacity, 'the worker\'s arena is whole again')
    await ch.send('stop')
  })
}

t.test('NDArrays travel as views; release on collection waits for every array made from a block', async (t) => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const { ch } = start(t, 'echo', {}, { capacity: 1 << 20 })
  const f = await ch.allocArray(Float32Array, 64 * 64)
  for (let i = 0; i < f.length; i++) f[i] = i
  await ch.send(new Map<string, unknown>([['image', new NDArray(f, { shape: [64, 64] })]]), TIMEOUT)
  let m: Received | null = await ch.receive(TIMEOUT)
  let image: NDArray | null = (m.value as Map<string, unknown>).get('image') as NDArray
  t.same(image.shape, [64, 64])
  let data: Float32Array | null = image.data as Float32Array
  image = null
  t.ok(data.buffer instanceof SharedArrayBuffer, 'the array is a view over shared memory')
  t.equal(data.byteOffset, f.byteOffset, 'over the very block this side filled (sent there and back, never copied)')
  t.equal(data[4095], 4095)
  t.equal(ch.stats().bytesCopied, 0)
  m = null // keep only the Float32Array the NDArray was over
  const collect = async (): Promise<void> => {
    for (let k = 0; k < 5; k++) {
      gc()
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  await collect()
  t.equal(ch.stats().bytesHeld, 4 * 4096, 'a Float32Array made from the block keeps it held')
  t.equal(data[100], 100)
  data = null
  await collect()
  await ch.settle()
  t.equal(ch.stats().bytesHeld, 0, 'released once nothing can reach it')
  await ch.send('stop')
})

t.test('openChannel and createChannel check what they are given', async (t) => {
  t.throws(() => openChannel({} as never), TypeError)
  t.throws(() => createChannel({ signalling: 'pigeon' as never }), TypeError)
  t.throws(() => createChannel({ capacity: 10 }), TypeError)
  t.throws(() => createChannel({ ringBytes: 1000 }), TypeError)
  t.ok(new TransportError('CLOSED', 'x'))
})

for (const signalling of MODES) {
  t.test(`${signalling}: an end opens once: a second openChannel is refused while it is open, and after it closed`, async (t) => {
    const { port1, port2 } = createChannel({ signalling })
    const a = openChannel(port1)
    const b = openChannel(port2)
    t.teardown(async () => {
      await a.close()
      await b.close()
    })
    t.throws(() => openChannel(port1), { name: 'TypeError', message: /^channel end 0 \(port1 of createChannel\(\)\) is already open/ }, 'the same end again, in the same thread')
    t.throws(() => openChannel(port2), { name: 'TypeError', message: /^channel end 1 \(port2 of createChannel\(\)\) is already open/ }, 'the other end again')
    for (let i = 0; i < 3; i++) await b.send(i, TIMEOUT)
    const got: unknown[] = []
    for (let i = 0; i < 3; i++) {
      const m = await a.receive(TIMEOUT)
      got.push(m.value)
      m.release()
    }
    t.same(got, [0, 1, 2], 'the Channel that opened the end gets every message: none went to a second one')
    await a.close()
    t.throws(() => openChannel(port1), { name: 'TransportError', code: 'CLOSED', message: /^channel end 0 \(port1 of createChannel\(\)\) was closed/ }, 'a closed end does not reopen')
  })
}

t.test('an end open in a worker is refused in another thread too: the mark is in the shared memory', async (t) => {
  const { port1, port2 } = createChannel()
  const worker = new Worker(WORKER, { workerData: { scenario: 'echo', channel: port2, args: {} }, transferList: [port2.port] })
  const ch = openChannel(port1)
  t.teardown(async () => {
    await worker.terminate()
    await ch.close()
  })
  await ch.send('hello', TIMEOUT)
  t.equal((await ch.receive(TIMEOUT)).value, 'hello', 'the worker opened its end and answers')
  // The worker's end as it was posted, with a port of its own (the posted one went to the worker).
  const { port1: stray, port2: strayPeer } = new MessageChannel()
  t.teardown(() => {
    stray.close()
    strayPeer.close()
  })
  t.throws(() => openChannel({ ...port2, port: stray }), { name: 'TypeError', message: /^channel end 1 \(port2 of createChannel\(\)\) is already open/ })
  await ch.send('again', TIMEOUT)
  t.equal((await ch.receive(TIMEOUT)).value, 'again', 'the worker still gets every message')
  await ch.send('stop')
})

for (const signalling of MODES) {
  t.test(`${signalling}: messages the other side closed without receiving are counted in messagesUndelivered`, async (t) => {
    const counter = new SharedArrayBuffer(4)
    const { port1, port2 } = createChannel({ signalling })
    const worker = new Worker(WORKER, { workerData: { scenario: 'countAndDie', channel: port2, args: { counter, times: new SharedArrayBuffer(8), stopAt: 2, then: 'close' } }, transferList: [port2.port] })
    const closed = new Promise((resolve) => worker.once('message', resolve))
    const ch = openChannel(port1)
    t.teardown(async () => {
      await worker.terminate()
      await ch.close()
    })
    // Sent before the worker receives any: it takes two, then closes with three unreceived.
    for (let i = 0; i < 5; i++) await ch.send(i, TIMEOUT)
    t.equal(await closed, 'closed')
    t.equal(Atomics.load(new Int32Array(counter), 0), 2, 'the worker received two')
    await ch.closed
    const s = ch.stats()
    t.equal(s.messagesSent, 5)
    t.equal(s.messagesUndelivered, 3, 'the three messages the worker closed without receiving')
    await t.rejects(ch.send('more'), { code: 'CLOSED', message: /the other side closed the channel/ }, 'a clean close, not a death')
  })
}

for (const signalling of MODES) {
  t.test(`${signalling}: both ends in one thread: the other end's close() is a clean close, not a death`, async (t) => {
    const { port1, port2 } = createChannel({ signalling })
    const a = openChannel(port1)
    const b = openChannel(port2)
    t.teardown(() => a.close())
    for (let i = 0; i < 5; i++) await a.send(i, TIMEOUT)
    for (let i = 0; i < 2; i++) (await b.receive(TIMEOUT)).release()
    await b.close()
    await bounded(a.closed, 'a noticing the close')
    await t.rejects(a.send('more'), { code: 'CLOSED', message: /^the other side closed the channel$/ })
    const s = a.stats()
    t.equal(s.messagesUndelivered, 3, 'the three messages b closed without receiving')
    t.equal(s.bytesReclaimed, 0, 'nothing was reclaimed as from a dead thread')
  })
}
