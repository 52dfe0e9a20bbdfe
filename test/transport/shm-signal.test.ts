// The record ring's signalling and its fixed binary records: a sleeping receiver is woken once
// for a burst, not once a message; records are read in runs and survive every wrap of a small
// ring; a record's header carries each buffer's length, read-only flag and place.
import t, { type Test } from 'tap'
import { Worker } from 'node:worker_threads'
import { PickleBuffer } from '@picklewire/codec'
import { createChannel, openChannel, type Channel, type ChannelOptions } from '@picklewire/transport'

const WORKER = new URL('./shm-worker.mjs', import.meta.url)
const TIMEOUT = { timeout: 20_000 }

function start(t: Test, scenario: string, options: ChannelOptions = {}): { ch: Channel; worker: Worker } {
  const { port1, port2 } = createChannel(options)
  const worker = new Worker(WORKER, { workerData: { scenario, channel: port2, args: {} }, transferList: [port2.port] })
  const ch = openChannel(port1)
  t.teardown(async () => {
    await worker.terminate()
    await ch.close()
  })
  return { ch, worker }
}

/** Counts this thread's Atomics.notify calls while `fn` runs. */
async function countingNotifies<T>(fn: () => Promise<T>): Promise<{ result: T; notifies: number }> {
  const original = Atomics.notify
  let notifies = 0
  Atomics.notify = ((a: Int32Array, index: number, count?: number) => {
    notifies++
    return original(a, index, count)
  }) as typeof Atomics.notify
  try {
    return { result: await fn(), notifies }
  } finally {
    Atomics.notify = original
  }
}

t.test('a receiver asleep on an empty ring is woken by a burst, once per wake-up, and drains many records each time', async (t) => {
  const { ch, worker } = start(t, 'iterate', { ringBytes: 1 << 20 })
  const report = new Promise<{ count: number; bad: number }>((resolve) => worker.once('message', resolve))
  // The worker's first receive finds the ring empty and sleeps; a round trip makes sure it got there.
  const n = 5000
  const { notifies } = await countingNotifies(async () => {
    for (let round = 0; round < n / 1000; round++) {
      // 1,000 messages in one turn of this thread: the sends return without waiting (room in the ring).
      const sends: Promise<void>[] = []
      for (let i = 0; i < 1000; i++) sends.push(ch.send(round * 1000 + i))
      await Promise.all(sends)
      const progress = await ch.receive(TIMEOUT) // the worker drained the burst, and sleeps again
      t.equal(progress.value, (round + 1) * 1000)
      progress.release()
    }
  })
  t.ok(notifies >= 1, `the sleeping receiver was woken (${notifies} notifies)`)
  t.ok(notifies <= n / 10, `far fewer wake-ups than messages: ${notifies} for ${n}`)
  await ch.close()
  const { count, bad } = await report
  t.equal(count, n, 'every message arrived')
  t.equal(bad, 0, 'in order')
})

t.test('records of every size survive every wrap of a small ring, in both directions, inline or in a block of their own', async (t) => {
  // A 1 KiB ring: records over 256 bytes go in an arena block, the others wrap the ring every few messages.
  const { ch } = start(t, 'echo', { ringBytes: 1024, capacity: 64 * 1024 })
  let seed = 7
  const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  let bad = 0
  for (let i = 0; i < 3000; i++) {
    const length = Math.floor(random() ** 3 * 900)
    const text = String.fromCharCode(...Array.from({ length }, (_, k) => 97 + ((i + k) % 26)))
    // Some without awaiting, so that several records wait in the ring at once and are read as one run.
    const burst = 1 + (i % 5)
    for (let k = 0; k < burst; k++) await ch.send([i, k, text], TIMEOUT)
    for (let k = 0; k < burst; k++) {
      const m = await ch.receive(TIMEOUT)
      const v = m.value as unknown[]
      if (v[0] !== i || v[1] !== k || v[2] !== text) bad++
      m.release()
    }
  }
  t.equal(bad, 0, 'every record came back whole and in order')
  await ch.send('stop')
  const s = ch.stats()
  t.equal(s.arenas.out.freeBytes, s.arenas.out.capacity, 'blocks of large records were all freed')
})

t.test('a record says each buffer\'s length, read-only flag and place; ids increase', async (t) => {
  // Both ends in this thread: the records are read back as written.
  const { port1, port2 } = createChannel({ capacity: 1 << 20 })
  const a = openChannel(port1)
  const b = openChannel(port2)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const inPlace = await a.allocArray(Float64Array, 512)
  inPlace.fill(2.5)
  const copied = new PickleBuffer(new Uint8Array(3000).fill(9))
  const transferred = new Float32Array(1024).fill(4)
  const empty = new PickleBuffer(new Uint8Array(0))
  const frozen = new PickleBuffer(new Uint8Array(2048).fill(1), { readonly: true })
  await a.send([inPlace, copied, transferred, empty, frozen, 'small'], { transfer: [transferred.buffer], ...TIMEOUT })
  await a.send(1)
  const m = await b.receive(TIMEOUT)
  const m2 = await b.receive(TIMEOUT)
  t.ok(m2.id > m.id, 'ids increase')
  t.same(m.buffers.map((x) => x.byteLength), [4096, 3000, 4096, 2048], 'the out-of-band buffers, in pickle order (the empty one in band)')
  const v = m.value as unknown[]
  t.equal(v[5], 'small')
  const st = a.stats()
  t.equal(st.bytesCopied, 3000 + 2048, 'copied: the plain buffer and the read-only one')
  t.equal(st.bytesTransferred, 4096, 'transferred')
  t.equal(transferred.buffer.byteLength, 0, 'the transferred ArrayBuffer left this side')
  const views = m.buffers
  t.equal(new Float64Array(views[0]!.buffer, views[0]!.byteOffset, 512)[511], 2.5, 'the in-place block, as written')
  t.ok(views[0]!.buffer instanceof SharedArrayBuffer, 'a view over the arena')
  t.equal(views[1]![2999], 9)
  t.equal(new Float32Array(views[2]!.buffer, views[2]!.byteOffset, 1024)[1023], 4)
  t.equal(views[3]![0], 1)
  const pbs = (m.value as unknown[]).slice(0, 5)
  t.same(pbs.map((x) => (x instanceof PickleBuffer ? x.readonly : 'not a PickleBuffer')), ['not a PickleBuffer', false, 'not a PickleBuffer', 'not a PickleBuffer', true], 'read-only flags come through (the empty buffer went in band)')
  m.release()
  m2.release()
})
