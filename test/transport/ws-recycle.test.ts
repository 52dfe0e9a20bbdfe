/**
 * PickleSocket.recycle (docs/websocket.md, "Same host"): memory of a received value handed back
 * is filled by a later buffer of exactly its size, through a same-host file and from chunks;
 * values stay right across many messages; memory of another size, over recycleBytes or
 * recycled with recycleBytes 0 is not used; the oldest is dropped past the bound; misuse is a
 * TypeError or RangeError saying what recycle takes.
 */
import { existsSync } from 'node:fs'
import t from 'tap'
import { NDArray } from '@picklewire/codec'
import { connectPickleSocket, type ListenOptions, type PickleSocket } from '@picklewire/transport'
import { dataOf, pair, until, within } from './ws-helpers.js'

const MiB = 2 ** 20
const linux = process.platform === 'linux' && existsSync('/proc/self/fd')

/** n float32 elements that differ per message k. */
function pattern(n: number, k: number): Float32Array {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = ((i * 7 + k * 131) & 0xffff) - k
  return a
}

function matches(a: Float32Array, n: number, k: number): boolean {
  if (a.length !== n) return false
  for (let i = 0; i < n; i++) if (a[i] !== ((i * 7 + k * 131) & 0xffff) - k) return false
  return true
}

/** Sends message k of n float32 elements from a and returns what b received. */
async function roundOf(a: PickleSocket, b: PickleSocket, n: number, k: number): Promise<Float32Array> {
  await a.send(pattern(n, k))
  return dataOf(await within(20_000, b.receive(), `message ${k}`))
}

t.test('misuse: what recycle takes, and the recycleBytes option', async (t) => {
  const { b } = await pair(t, { sameHost: false })
  for (const bad of [42, 'bytes', null, undefined, {}, [1, 2]]) {
    t.throws(() => b.recycle(bad as unknown as ArrayBuffer), { name: 'TypeError', message: /recycle takes an ArrayBuffer or a view/ }, `${String(bad)}`)
  }
  t.throws(() => b.recycle(new SharedArrayBuffer(16) as unknown as ArrayBuffer), { name: 'TypeError', message: /got a SharedArrayBuffer/ })
  t.throws(() => b.recycle(new Float32Array(new SharedArrayBuffer(16))), { name: 'TypeError', message: /SharedArrayBuffer/ })
  const whole = new ArrayBuffer(64)
  t.throws(() => b.recycle(new Uint8Array(whole, 8)), { name: 'RangeError', message: /covers bytes 8 to 64 of an ArrayBuffer of 64/ })
  t.throws(() => b.recycle(new DataView(whole, 0, 32)), { name: 'RangeError', message: /covers bytes 0 to 32/ })
  t.throws(() => b.recycle(Buffer.from('pooled')), RangeError, 'a Buffer from the pool is part of a larger ArrayBuffer')
  t.doesNotThrow(() => b.recycle(whole))
  t.doesNotThrow(() => b.recycle(new Float64Array(whole)))
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { recycleBytes: -1 }), /recycleBytes must be an integer of at least 0/)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { recycleBytes: 1.5 }), TypeError)
})

for (const path of ['same host', 'chunks'] as const) {
  const options: ListenOptions = path === 'same host' ? {} : { sameHost: false, chunkBytes: 256 * 1024 }
  const skip = path === 'same host' && !linux ? 'Linux only' : false
  t.test(`${path}: 40 messages of 4 MiB, each received into the memory of the one before`, { skip }, async (t) => {
    const { a, b } = await pair(t, options, path === 'same host' ? {} : { sameHost: false, chunkBytes: 256 * 1024 })
    if (path === 'same host') await until('a proven to b', () => a.sameHost)
    const n = MiB
    let previous: ArrayBuffer | null = null
    let reused = 0
    for (let k = 0; k < 40; k++) {
      const got = await roundOf(a, b, n, k)
      if (!matches(got, n, k)) t.fail(`message ${k}: wrong values`)
      if (got.buffer === previous) reused++
      previous = got.buffer as ArrayBuffer
      b.recycle(got)
    }
    t.equal(reused, 39, 'every message after the first filled the memory handed back')
    t.equal(b.stats().buffersRecycled, 39)
    if (path === 'same host') t.equal(b.stats().buffersSameHostReceived, 40, 'all through files')
    else t.equal(b.stats().buffersSameHostReceived, 0, 'all as chunks')
    await a.close()
  })
}

t.test('memory of another size, or over recycleBytes, is not used; the oldest goes past the bound', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t, { recycleBytes: 8 * MiB })
  await until('a proven to b', () => a.sameHost)
  const four = await roundOf(a, b, MiB, 1)
  b.recycle(four)
  const two = await roundOf(a, b, MiB / 2, 2)
  t.ok(matches(two, MiB / 2, 2))
  t.not(two.buffer, four.buffer, 'a 2 MiB buffer does not take 4 MiB of recycled memory')
  t.equal(b.stats().buffersRecycled, 0)

  b.recycle(new ArrayBuffer(16 * MiB))
  const sixteen = await roundOf(a, b, 4 * MiB, 3)
  t.ok(matches(sixteen, 4 * MiB, 3))
  t.equal(b.stats().buffersRecycled, 0, 'memory over recycleBytes is not kept')

  // four is still kept (4 MiB); two and one more of 4 MiB pass the 8 MiB bound: four goes.
  b.recycle(two)
  const x = new ArrayBuffer(4 * MiB)
  b.recycle(x)
  const one = await roundOf(a, b, MiB, 4)
  t.ok(matches(one, MiB, 4))
  t.equal(one.buffer, x, 'the most recent memory of the size is taken')
  const next = await roundOf(a, b, MiB, 5)
  t.ok(matches(next, MiB, 5))
  t.not(next.buffer, four.buffer, 'the oldest was dropped past recycleBytes')
  const half = await roundOf(a, b, MiB / 2, 6)
  t.equal(half.buffer, two.buffer, 'the 2 MiB memory is still kept')
  t.ok(matches(half, MiB / 2, 6))
  t.equal(b.stats().buffersRecycled, 2)
  await a.close()
})

t.test('recycleBytes 0 keeps nothing; the same memory recycled twice is kept once', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t, { recycleBytes: 0 })
  await until('a proven to b', () => a.sameHost)
  const first = await roundOf(a, b, MiB, 1)
  b.recycle(first)
  const second = await roundOf(a, b, MiB, 2)
  t.not(second.buffer, first.buffer)
  t.equal(b.stats().buffersRecycled, 0)
  await a.close()

  const p = await pair(t)
  await until('a proven to b', () => p.a.sameHost)
  const m = await roundOf(p.a, p.b, MiB, 1)
  p.b.recycle(m)
  p.b.recycle(m.buffer as ArrayBuffer)
  const r1 = await roundOf(p.a, p.b, MiB, 2)
  const r2 = await roundOf(p.a, p.b, MiB, 3)
  t.equal(r1.buffer, m.buffer)
  t.not(r2.buffer, m.buffer, 'one memory never fills two live values')
  t.ok(matches(r1, MiB, 2) && matches(r2, MiB, 3), 'both values intact')
  await p.a.close()
})
