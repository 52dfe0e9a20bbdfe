/**
 * Warm receive memory for Dask's tcp comm: once a big message is read (done()), a spare buffer
 * of the same size has its pages written on later event-loop turns, never while a message is
 * being read; the next message of about that size is read into it. Every buffer is handed out once (no two messages share memory), small messages and a
 * disabled WarmMemory get fresh memory, and an unused spare is dropped after idleMs.
 */
import { setTimeout as delay } from 'node:timers/promises'
import t from 'tap'
import { WarmMemory } from '@picklewire/transport'
import { TcpFrameReader, encodeTcpPrelude, resolveDaskLimits } from '../../packages/transport/dist/dask/framing.js'

const MiB = 2 ** 20

/** Waits until the spare is fully warm (or the time runs out). */
async function warmed(w: WarmMemory, size: number): Promise<boolean> {
  for (let i = 0; i < 2000 && w.warmBytes < size; i++) await delay(1)
  return w.warmBytes >= size
}

t.test('a big buffer leaves a spare that is warmed and handed out next, once', async (t) => {
  const w = new WarmMemory({ minBytes: 1 * MiB })
  t.teardown(() => w.drop())
  const first = w.take(8 * MiB)
  t.equal(first.byteLength, 8 * MiB)
  t.equal(w.stats.fresh, 1, 'the first buffer is fresh')
  await delay(20)
  t.equal(w.warmBytes, 0, 'nothing is warmed while the message is being read')
  w.done()
  t.ok(await warmed(w, 8 * MiB), 'once it is read, the spare is warmed on later turns')
  const second = w.take(8 * MiB)
  w.done()
  t.equal(w.stats.fromSpare, 1, 'the next buffer of that size is the spare')
  t.equal(w.stats.warmBytes, 8 * MiB, 'all of it warm')
  t.not(second.buffer, first.buffer, 'a different buffer from the first')
  // A size within a quarter below the spare's takes it too; its view is the size asked for.
  t.ok(await warmed(w, 8 * MiB))
  const third = w.take(7 * MiB)
  w.done()
  t.equal(third.byteLength, 7 * MiB)
  t.equal(w.stats.fromSpare, 2)
  t.not(third.buffer, second.buffer, 'never the same memory twice')
  // Writing to one does not show in another.
  first[100] = 1
  second[100] = 2
  third[100] = 3
  t.same([first[100], second[100], third[100]], [1, 2, 3])
})

t.test('sizes far from the spare, small sizes and a disabled WarmMemory get fresh memory', async (t) => {
  const w = new WarmMemory({ minBytes: 1 * MiB })
  t.teardown(() => w.drop())
  w.take(8 * MiB)
  w.done()
  t.ok(await warmed(w, 8 * MiB))
  w.take(4 * MiB) // half the spare: fresh, and a new 4 MiB spare replaces the 8 MiB one
  w.done()
  t.equal(w.stats.fromSpare, 0)
  t.equal(w.stats.fresh, 2)
  w.take(16 * MiB) // bigger than the spare: fresh
  w.done()
  t.equal(w.stats.fresh, 3)
  w.drop()
  w.take(64 * 1024) // under minBytes: fresh, and no spare
  w.done()
  t.equal(w.warmBytes, 0, 'no spare for a small message')
  const off = new WarmMemory({ maxBytes: 0 })
  off.take(8 * MiB)
  off.done()
  await delay(20)
  t.equal(off.warmBytes, 0, 'maxBytes 0: nothing warmed')
  t.equal(off.stats.fresh, 1)
})

t.test('an unused spare is dropped after idleMs', async (t) => {
  const w = new WarmMemory({ minBytes: 1 * MiB, idleMs: 400 })
  w.take(2 * MiB)
  w.done()
  t.ok(await warmed(w, 2 * MiB))
  await delay(1000)
  t.equal(w.warmBytes, 0, 'dropped')
  w.take(2 * MiB)
  t.equal(w.stats.fromSpare, 0, 'so the next message gets fresh memory')
  w.drop()
})

t.test('a small message read while a spare warms pauses the warming, and done() resumes it', async (t) => {
  const w = new WarmMemory({ minBytes: 1 * MiB })
  t.teardown(() => w.drop())
  w.take(32 * MiB)
  w.done()
  await delay(5)
  w.take(1000) // a small message starts: warming stops, the spare stays
  const paused = w.warmBytes
  t.ok(paused > 0 && paused < 32 * MiB, `partly warm (${paused} bytes)`)
  await delay(40)
  t.equal(w.warmBytes, paused, 'no warming while the message is read')
  w.done()
  t.ok(await warmed(w, 32 * MiB), 'resumed and finished once it is read')
  t.equal(w.take(32 * MiB).byteLength, 32 * MiB)
  t.equal(w.stats.fromSpare, 1)
})

t.test('options are checked', async (t) => {
  t.throws(() => new WarmMemory({ maxBytes: -1 }), TypeError)
  t.throws(() => new WarmMemory({ idleMs: 1.5 }), TypeError)
})

t.test('the tcp reader reads messages into the memory it is given, whole and in order', async (t) => {
  const w = new WarmMemory({ minBytes: 64 * 1024 })
  t.teardown(() => w.drop())
  const reader = new TcpFrameReader(resolveDaskLimits(), w)
  const frames = (seed: number) => [Uint8Array.from({ length: 100 }, (_, i) => (i + seed) & 0xff), Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7 + seed) & 0xff)]
  const seen: Uint8Array[][] = []
  for (let m = 0; m < 4; m++) {
    const bytes = Buffer.concat([encodeTcpPrelude(frames(m)), ...frames(m)])
    for (let at = 0; at < bytes.length; at += 65_536) seen.push(...reader.push(bytes.subarray(at, at + 65_536)))
    await warmed(w, 300_000)
  }
  t.equal(seen.length, 4)
  let wrong = 0
  seen.forEach((msg, m) => msg.forEach((f, i) => { if (Buffer.compare(f, frames(m)[i]!) !== 0) wrong++ }))
  t.equal(wrong, 0, 'every frame as sent')
  t.ok(w.stats.fromSpare >= 3, `messages after the first were read into warm spares (${w.stats.fromSpare})`)
  t.equal(new Set(seen.map((msg) => msg[1]!.buffer)).size, 4, 'each message in memory of its own')
})

t.test('a spare whose warming was paused and never resumed is still dropped after idleMs', async (t) => {
  const w = new WarmMemory({ minBytes: 1 * MiB, idleMs: 400 })
  w.take(64 * MiB)
  w.done()
  for (let i = 0; i < 200 && w.warmBytes === 0; i++) await delay(1)
  w.take(100) // a message starts and its comm dies: done() never comes
  t.ok(w.warmBytes > 0 && w.warmBytes < 64 * MiB, `a partly warmed spare is held (${w.warmBytes} bytes)`)
  await delay(800)
  t.equal(w.warmBytes, 0, 'dropped after idleMs all the same')
})
